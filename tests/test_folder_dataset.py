"""Tests of ``crossres_folder`` (jbim_reid.datasets.folder) on tiny synthetic folders, and on real
CAVIAR re-laid into its layout (integration, ``JBIM_DATA_ROOT``)."""
import json
import os
from pathlib import Path

import pytest
import synthetic
import torch
import torchreid
import yaml

from jbim_reid.config import get_default_config
from jbim_reid.config.kwargs import folder_kwargs
from jbim_reid.datasets import (CAVIAR, DATASETS, CrossResolutionFolder, FolderOptions, folder_overrides,
                                genuine_size, image_check_options, protocol_overrides)
from jbim_reid.cli import main
from jbim_reid.training.recipe import PAPER_RECIPE, choose_recipe, measure_training_data
from jbim_reid.utils.errors import DataError

REPO = Path(__file__).parent.parent
HR, LR = (64, 32), (24, 12)
TRAIN_IDS, TEST_IDS = (1, 2, 3), (10, 11, 12)


def _write(root, specs, name="custom"):
    """Write ``(subset, pid, camid, (h, w), ext)`` images as Market-1501 names; return the data root."""
    for k, (subset, pid, camid, size, ext) in enumerate(specs):
        person = str(pid) if pid < 0 else f"{pid:04d}"
        path = Path(root) / name / subset / f"{person}_c{camid}s1_{k:06d}_00.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        synthetic.person_image(max(pid, 0), size, seed=k).save(path)
    for subset in ("train", "query", "gallery"):
        (Path(root) / name / subset).mkdir(parents=True, exist_ok=True)
    return Path(root)


def _standard():
    """LR = camera 2: train ids with 2 HR (cam 1) + 2 LR (cam 2) images; test ids with 2 LR probes, an HR
    image in query/ and an LR image in gallery/ (both left out), one HR gallery image; distractor
    99 in the gallery; pid -1 junk in every folder; mixed-case extensions."""
    specs = []
    for pid in TRAIN_IDS:
        specs += [("train", pid, 1, HR, "jpg"), ("train", pid, 1, HR, "PNG"),
                  ("train", pid, 2, LR, "jpeg"), ("train", pid, 2, LR, "bmp")]
    for pid in TEST_IDS:
        specs += [("query", pid, 2, LR, "JPG"), ("query", pid, 2, LR, "png"), ("query", pid, 1, HR, "jpg"),
                  ("gallery", pid, 1, HR, "jpg")]
    specs += [("gallery", 10, 2, LR, "jpg"), ("gallery", 99, 3, HR, "jpg")]
    specs += [(subset, -1, 1, HR, "jpg") for subset in ("train", "query", "gallery")]
    return specs


def _folder(root, cache, **kwargs):
    kwargs.setdefault("lr_cameras", [2])
    return CrossResolutionFolder(root=root, cache_dir=cache, verbose=False, **kwargs)


def _ids(items):
    return {it[1] for it in items}


@pytest.fixture
def standard(tmp_path):
    return _write(tmp_path / "data", _standard())


# ---------------------------------------------------------------- sides, ids, sizes
def test_lr_by_camera(standard, tmp_path):
    with pytest.warns(UserWarning, match="left out 3 HR image"):
        ds = _folder(standard, tmp_path / "c")
    assert ds.num_train_pids == 3 and _ids(ds.train) == {0, 1, 2} and len(ds.train) == 12
    assert _ids(ds.query) == set(TEST_IDS) and len(ds.query) == 6 and {c for *_, c, _ in ds.query} == {2}
    assert _ids(ds.gallery) == set(TEST_IDS) | {99}  # the distractor id is kept
    assert len(ds.gallery) == 4 and {c for *_, c, _ in ds.gallery} == {1, 3}
    assert all(p in ds.lr_paths for p, *_ in ds.query) and not any(p in ds.lr_paths for p, *_ in ds.gallery)
    assert {camid for p, _, camid, _ in ds.train if p in ds.lr_paths} == {2}
    assert not any(os.path.basename(p).startswith("-1_") for p, *_ in ds.train + ds.query + ds.gallery)
    assert {os.path.splitext(p)[1] for p, *_ in ds.train} == {".jpg", ".PNG", ".jpeg", ".bmp"}
    assert ds.lr_ratio_histogram() == {"genuine": 6}
    assert ds.lr_ratio() == pytest.approx((24 * 12 / (64 * 32)) ** 0.5)


@pytest.mark.parametrize("mode", ["train", "query", "gallery"])
def test_items_carry_genuine_size_and_side(standard, tmp_path, mode):
    ds = _folder(standard, tmp_path / "c", mode=mode)
    for i in range(len(ds)):
        item = ds[i]
        assert item["hw"].tolist() == list(genuine_size(item["impath"]))
        assert item["hw"].tolist() == list(LR if item["camid"] == 2 else HR)
        assert item["is_lr"] == (item["camid"] == 2)


def test_lr_by_height_whatever_the_camera(tmp_path):
    specs = [("train", 1, 1, (32, 16), "jpg"), ("train", 1, 2, (33, 16), "jpg"),  # 32 px: LR; 33: HR
             ("train", 2, 2, LR, "jpg"), ("train", 2, 1, HR, "jpg"),
             ("query", 10, 1, LR, "jpg"), ("query", 11, 2, LR, "jpg"), ("query", 10, 1, HR, "jpg"),
             ("gallery", 10, 2, HR, "jpg"), ("gallery", 11, 1, HR, "jpg")]
    root = _write(tmp_path / "data", specs)
    with pytest.warns(UserWarning, match="left out 1 HR image"):
        ds = _folder(root, tmp_path / "c", lr_cameras=[], lr_max_height=32)
    heights = {p: genuine_size(p)[0] for p, *_ in ds.train + ds.query + ds.gallery}
    assert ds.lr_paths == {p for p, h in heights.items() if h <= 32}
    assert sorted(c for _, _, c, _ in ds.query) == [1, 2]  # LR probes from both cameras
    assert {c for p, _, c, _ in ds.train if p in ds.lr_paths} == {1, 2}
    assert all(heights[p] > 32 for p, *_ in ds.gallery) and len(ds.gallery) == 2


def test_market_and_plain_names_give_pid_and_camid(tmp_path):
    root = tmp_path / "data"
    names = {"train": ["0007_c1s1_000451_03.jpg", "0007_c12_x.png", "0008_c3.bmp", "0008_c12s2_9.JPEG"],
             "query": ["0020_c12_probe.jpg"], "gallery": ["0020_c3s1_000001_01.jpg", "0000_c3_d.jpg"]}
    for subset, files in names.items():
        for fname in files:
            size = LR if "_c12" in fname else HR
            path = root / "custom" / subset / fname
            path.parent.mkdir(parents=True, exist_ok=True)
            synthetic.person_image(1, size).save(path)
    (root / "custom" / "train" / "notes.txt").write_text("not an image: ignored")
    ds = _folder(root, tmp_path / "c", lr_cameras=[12])
    by_name = {os.path.basename(p): (pid, camid) for p, pid, camid, _ in ds.train + ds.query + ds.gallery}
    assert by_name == {"0007_c1s1_000451_03.jpg": (0, 1), "0007_c12_x.png": (0, 12), "0008_c3.bmp": (1, 3),
                       "0008_c12s2_9.JPEG": (1, 12), "0020_c12_probe.jpg": (20, 12),
                       "0020_c3s1_000001_01.jpg": (20, 3), "0000_c3_d.jpg": (0, 3)}


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("fname", ["abc.jpg", "0001_x1_a.png", "0001c1_a.jpg", "0001_c_a.jpg"])
def test_bad_file_name_names_the_file(standard, tmp_path, fname):
    synthetic.person_image(1, HR).save(standard / "custom" / "query" / fname)
    with pytest.raises(ValueError, match=f"unexpected file name '.*query/{fname}'.*expected <pid>_c<camid>"):
        _folder(standard, tmp_path / "c")


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"'{tmp_path / 'data' / 'custom'}' not found"):
        _folder(tmp_path / "data", tmp_path / "c")
    root = _write(tmp_path / "data", [("train", 1, 1, HR, "jpg")])
    os.rmdir(root / "custom" / "gallery")
    with pytest.raises(FileNotFoundError, match=f"'{root / 'custom' / 'gallery'}' not found.*Expected layout"):
        _folder(root, tmp_path / "c")
    with pytest.raises(FileNotFoundError, match=f"'{root / 'shop'}' not found"):
        _folder(root, tmp_path / "c", name="shop")


@pytest.mark.parametrize("case, keep, message", [
    ("no LR query", lambda s: not (s[0] == "query" and s[2] == 2), "no LR image in '.*/custom/query'"),
    ("no HR gallery", lambda s: not (s[0] == "gallery" and s[2] != 2), "no HR image in '.*/custom/gallery'"),
    ("no LR train", lambda s: not (s[0] == "train" and s[2] == 2), "no LR image in '.*/custom/train'"),
    ("no HR train", lambda s: not (s[0] == "train" and s[2] != 2), "no HR image in '.*/custom/train'"),
])
def test_empty_side_is_named(tmp_path, case, keep, message):
    root = _write(tmp_path / "data", [s for s in _standard() if keep(s)])
    with pytest.raises(ValueError, match=message):
        _folder(root, tmp_path / "c")


def test_unmatched_query_dropped_with_warning_or_error(tmp_path):
    specs = _standard() + [("query", 20, 2, LR, "jpg"), ("query", 20, 2, LR, "png")]
    root = _write(tmp_path / "data", specs)
    with pytest.warns(UserWarning, match=r"dropped 2 query image\(s\) of id\(s\) \[20\]"):
        ds = _folder(root, tmp_path / "c")
    assert _ids(ds.query) == set(TEST_IDS) and ds.split["dropped_query"] == 2
    with pytest.raises(ValueError, match=r"id\(s\) \[20\].*folder.drop_unmatched_query"):
        _folder(root, tmp_path / "c", drop_unmatched_query=False)


def test_gallery_match_must_be_under_another_camera(tmp_path):
    """By height, an LR probe and its only HR gallery image may share a camera: torchreid ignores that match."""
    specs = [("train", 1, 1, LR, "jpg"), ("train", 1, 2, HR, "jpg"),
             ("query", 10, 1, LR, "jpg"), ("gallery", 10, 2, HR, "jpg"),
             ("query", 11, 1, LR, "jpg"), ("gallery", 11, 1, HR, "jpg")]
    root = _write(tmp_path / "data", specs)
    with pytest.warns(UserWarning, match=r"of id\(s\) \[11\]"):
        ds = _folder(root, tmp_path / "c", lr_cameras=[], lr_max_height=30)
    assert _ids(ds.query) == {10} and _ids(ds.gallery) == {10, 11}


@pytest.mark.parametrize("options", [{"lr_cameras": [2], "lr_max_height": 30}, {"lr_cameras": []}])
def test_exactly_one_lr_rule(standard, tmp_path, options):
    with pytest.raises(ValueError, match="exactly one of folder.lr_cameras .* and folder.lr_max_height"):
        _folder(standard, tmp_path / "c", **options)


@pytest.mark.parametrize("options, key", [
    ({"lr_cameras": "2"}, "folder.lr_cameras"), ({"lr_cameras": [True]}, "folder.lr_cameras"),
    ({"lr_cameras": [], "lr_max_height": -1}, "folder.lr_max_height"),
    ({"drop_unmatched_query": "no"}, "folder.drop_unmatched_query"), ({"name": "../x"}, "folder.name"),
])
def test_bad_option_values_name_the_key(options, key):
    with pytest.raises(ValueError, match=f"Invalid {key}"):
        FolderOptions(**{"lr_cameras": [1], **options})


def test_split_id_other_than_zero_is_rejected(standard, tmp_path):
    assert CrossResolutionFolder.num_splits == 1
    with pytest.raises(ValueError, match="split_id 1 out of range.*expected 0"):
        _folder(standard, tmp_path / "c", split_id=1)


# ---------------------------------------------------------------- pair views, record, options
def test_pair_views_pair_lr_and_hr_of_one_id(standard, tmp_path):
    import torchvision.transforms as T

    ds = _folder(standard, tmp_path / "c", pair_views=True, transform=T.Compose([T.Resize((32, 16)), T.ToTensor()]))
    for i in range(len(ds)):
        item = ds[i]
        assert item["img_lr"].shape == item["img_hr"].shape == (3, 32, 16)
        assert torch.equal(item["img_lr" if item["is_lr"] else "img_hr"], item["img"])
        assert item["hw_lr"].tolist() == list(LR) and item["hw_hr"].tolist() == list(HR)
        partner_path = ds._partner(i)
        partner = next(it for it in ds.train if it[0] == partner_path)
        assert partner[1] == item["pid"] and partner[2] != item["camid"]
        assert (partner[0] in ds.lr_paths) != item["is_lr"]


def test_record_json_holds_the_options_and_items(standard, tmp_path):
    ds = _folder(standard, tmp_path / "c")
    assert ds.split_path.parent.parent == tmp_path / "c" / "crossres_folder" / "splits"
    record = json.loads(ds.split_path.read_text())
    assert record["options"] == {"name": "custom", "lr_cameras": [2], "lr_max_height": 0,
                                 "drop_unmatched_query": True}
    assert record["dataset"] == "crossres_folder" and record["simulated"] is False
    assert [(os.path.join(str(standard), it["path"]), it["pid"], it["camid"], 0) for it in record["train"]] == ds.train
    assert {it["path"] for it in record["query"] if it["lr"]} == {os.path.relpath(p, standard) for p, *_ in ds.query}
    other = _folder(standard, tmp_path / "c", lr_cameras=[], lr_max_height=30)
    assert other.split_path != ds.split_path and ds.split_path.is_file()
    assert json.loads(other.split_path.read_text())["options"]["lr_max_height"] == 30


def test_cache_dir_defaults_to_the_protocols(standard, tmp_path):
    with protocol_overrides(cache_dir=str(tmp_path / "mlr_cache")):
        ds = CrossResolutionFolder(root=standard, lr_cameras=[2], verbose=False)
    assert str(ds.split_path).startswith(str(tmp_path / "mlr_cache" / "crossres_folder"))


def test_folder_overrides_set_defaults_nest_and_restore(tmp_path):
    root = _write(tmp_path / "data", _standard(), name="shop")
    with folder_overrides(name="shop", lr_cameras=[1]):
        with folder_overrides(lr_cameras=[2]):
            ds = CrossResolutionFolder(root=root, cache_dir=tmp_path / "c", verbose=False)
            assert ds.options == FolderOptions(name="shop", lr_cameras=(2,))
        # keyword arguments win over the block's defaults
        assert CrossResolutionFolder(root=root, cache_dir=tmp_path / "c", verbose=False,
                                     lr_cameras=[2]).options.name == "shop"
    with pytest.raises(FileNotFoundError, match="custom"):  # back to name 'custom'
        CrossResolutionFolder(root=root, cache_dir=tmp_path / "c", lr_cameras=[2])
    with pytest.raises(ValueError, match="Unknown folder option.*lr_camera"):
        with folder_overrides(lr_camera=[1]):
            pass


# ---------------------------------------------------------------- image check, torchreid, config
@pytest.mark.parametrize("rule", [{"lr_cameras": [2]}, {"lr_cameras": [], "lr_max_height": 30}])
def test_skip_bad_images_skips_a_corrupt_train_image(standard, tmp_path, rule):
    ds = _folder(standard, tmp_path / "c", **rule)
    bad = [p for p, pid, *_ in ds.train if pid == 1]  # every image of the middle id
    for path in bad:
        Path(path).write_bytes(b"not an image")
    with pytest.raises(DataError, match=os.path.basename(bad[0])):
        _folder(standard, tmp_path / "c", **rule)
    with image_check_options(skip_bad_images=True), pytest.warns(UserWarning, match="skipped 4 unreadable"):
        ds = _folder(standard, tmp_path / "c", **rule)
    assert len(ds.train) == 8 and not set(bad) & {p for p, *_ in ds.train}
    assert _ids(ds.train) == {0, 1} and ds.num_train_pids == 2  # relabelled


def test_registered_and_built_by_image_data_manager(standard, tmp_path):
    import jbim_reid  # noqa: F401  (registers the datasets)

    assert DATASETS["crossres_folder"] is CrossResolutionFolder
    assert getattr(torchreid.data.datasets, "__image_datasets")["crossres_folder"] is CrossResolutionFolder
    with protocol_overrides(cache_dir=str(tmp_path / "c")), folder_overrides(lr_cameras=[2]):
        dm = torchreid.data.ImageDataManager(root=str(standard), sources="crossres_folder",
                                             targets="crossres_folder", height=64, width=32, workers=0,
                                             batch_size_train=4, batch_size_test=4, num_instances=2,
                                             train_sampler="RandomIdentitySampler", use_gpu=False)
    assert dm.num_train_pids == 3
    batch = next(iter(dm.train_loader))
    assert batch["img"].shape == (4, 3, 64, 32) and batch["hw"].shape == (4, 2)
    for hw, is_lr, path in zip(batch["hw"], batch["is_lr"], batch["impath"]):
        assert tuple(hw.tolist()) == genuine_size(path) and bool(is_lr) == (hw[0].item() == LR[0])
    query = next(iter(dm.test_loader["crossres_folder"]["query"]))
    gallery = next(iter(dm.test_loader["crossres_folder"]["gallery"]))
    assert bool(query["is_lr"].all()) and not bool(gallery["is_lr"].any())


def test_config_node_and_template(tmp_path):
    defaults = folder_kwargs(get_default_config())
    assert set(defaults) == set(FolderOptions.__dataclass_fields__)
    with pytest.raises(ValueError, match="exactly one of folder.lr_cameras"):  # the user must choose
        FolderOptions(**defaults)
    template = REPO / "configs" / "custom" / "jbim_mobilenetv2_cpu.yaml"
    raw = yaml.safe_load(template.read_text())
    assert not {"ratio", "train_ratios", "cross_stream_triplet"} & set(raw["jbim"])
    caviar = yaml.safe_load((REPO / "configs" / "caviar" / "jbim_mobilenetv2_cpu.yaml").read_text())
    for key in ("model", "sampler", "train", "test", "use_gpu"):
        assert raw[key] == caviar[key], key
    cfg = get_default_config()
    cfg.merge_from_file(str(template))
    assert list(cfg.data.sources) == list(cfg.data.targets) == ["crossres_folder"]
    assert (cfg.data.height, cfg.data.width, cfg.model.name) == (128, 64, "mobilenetv2_x1_0")
    specs = [(subset, pid, 2 - cam, size, ext) for subset, pid, cam, size, ext in _standard() if cam != 3]
    root = _write(tmp_path / "data", specs, name=cfg.folder.name)  # LR = camera 1, as the template says
    with folder_overrides(**folder_kwargs(cfg)):
        ds = CrossResolutionFolder(root=root, cache_dir=tmp_path / "c", verbose=False)
    assert ds.options.lr_cameras == (1,) and {c for *_, c, _ in ds.query} == {1}


# ---------------------------------------------------------------- real CAVIAR, re-laid
def relay_caviar(caviar: CAVIAR, root: Path, name: str = "caviar_folder") -> Path:
    """Symlink ``caviar``'s train / query / gallery images into ``<root>/<name>/{train,query,gallery}/``
    as ``PPPP_c<camid>_<file name>``, PPPP the CAVIAR person id (no image is copied)."""
    for subset in ("train", "query", "gallery"):
        folder = root / name / subset
        folder.mkdir(parents=True)
        for path, _, camid, _ in getattr(caviar, subset):
            base = os.path.basename(path)
            os.symlink(path, folder / f"{base[:4]}_c{camid}_{base}")
    return root


@pytest.mark.integration
def test_relaid_caviar_matches_the_caviar_class(data_root, tmp_path):
    caviar = CAVIAR(root=data_root, split_id=0, cache_dir=tmp_path / "c", verbose=False)
    root = relay_caviar(caviar, tmp_path / "data")
    assert all(p.is_symlink() for p in (root / "caviar_folder").rglob("*.jpg"))
    folder = CrossResolutionFolder(root=root, name="caviar_folder", lr_cameras=[1], cache_dir=tmp_path / "c",
                                   verbose=False)
    for subset in ("train", "query", "gallery"):
        theirs = {p: (pid, camid, p in caviar.lr_paths) for p, pid, camid, _ in getattr(caviar, subset)}
        ours = {os.path.realpath(p): (pid, camid, p in folder.lr_paths)
                for p, pid, camid, _ in getattr(folder, subset)}
        assert ours.keys() == {os.path.realpath(p) for p in theirs}, subset
        theirs = {os.path.realpath(p): v for p, v in theirs.items()}
        assert {p: v[1:] for p, v in ours.items()} == {p: v[1:] for p, v in theirs.items()}, subset
        pairs = {(theirs[p][0], ours[p][0]) for p in ours}  # same ids up to relabelling: a bijection
        assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs}), subset
    assert (folder.num_train_pids, len(folder.train), len(folder.query), len(folder.gallery)) == (25, 500, 250, 25)
    for mode in ("train", "query", "gallery"):
        a = CAVIAR(root=data_root, split_id=0, cache_dir=tmp_path / "c", verbose=False, mode=mode)
        b = CrossResolutionFolder(root=root, name="caviar_folder", lr_cameras=[1], cache_dir=tmp_path / "c",
                                  verbose=False, mode=mode)
        sizes_a = {os.path.realpath(a[i]["impath"]): (a[i]["hw"].tolist(), a[i]["is_lr"]) for i in range(len(a))}
        sizes_b = {os.path.realpath(b[i]["impath"]): (b[i]["hw"].tolist(), b[i]["is_lr"]) for i in range(len(b))}
        assert sizes_a == sizes_b, mode
    assert folder.lr_ratio() == pytest.approx(caviar.lr_ratio())
    assert folder.lr_ratio_histogram() == caviar.lr_ratio_histogram() == {"genuine": 250}
    # jbim.recipe auto measures the same statistics and resolves the same recipe on both
    assert measure_training_data(folder) == measure_training_data(caviar)
    assert choose_recipe(measure_training_data(folder)) == PAPER_RECIPE


@pytest.mark.integration
@pytest.mark.slow
def test_relaid_caviar_trains_one_epoch_per_stage_with_the_recipe_of_caviar(data_root, tmp_path, capsys):
    caviar = CAVIAR(root=data_root, split_id=0, cache_dir=tmp_path / "c", verbose=False)
    root = relay_caviar(caviar, tmp_path / "data", name="custom")
    template = str(Path(__file__).parent.parent / "configs" / "custom" / "jbim_mobilenetv2_cpu.yaml")
    common = ["data.root", str(root), "mlr.cache_dir", str(tmp_path / "c"), "model.pretrained", "False",
              "model.name", "osnet_x0_25", "data.height", "32", "data.width", "16", "data.workers", "0",
              "train.max_epoch", "1", "jbim.sr_max_epoch", "1", "train.print_freq", "100",
              "jbim.stage_epochs", "{'plain': 1, 'joint': 1}"]
    assert main(["recipe", "--config-file", template] + common) == 0
    assert json.loads(capsys.readouterr().out)["chosen"] == PAPER_RECIPE
    assert main(["train", "--config-file", template, "data.save_dir", str(tmp_path / "log")] + common) == 0
    results = json.loads((tmp_path / "log" / "results.json").read_text())
    assert results["recipe"]["chosen"] == PAPER_RECIPE and "crossres_folder" in results["datasets"]
    assert results["datasets"]["crossres_folder"]["num_query"] == 250
