"""Unit tests for jbim_reid.datasets on tiny synthetic fixtures (no shared data)."""
import json
import multiprocessing as mp
import os
from collections import Counter
from pathlib import Path

import pytest
import synthetic
import torch
import torchreid
from PIL import Image

from jbim_reid.datasets import (CAVIAR, DATASETS, MLRCUHK03, MLRPRID, MLRSYSU, MLRMarket1501, MLRProtocol,
                                MLRVIPeR)
from jbim_reid.datasets import cache as cache_mod
from jbim_reid.datasets import genuine_size, make_mlr_dataset, protocol_overrides
from jbim_reid.datasets.simulate import downsample, lr_size


def _ids(items):
    return {it[1] for it in items}


def _check_probes(ds):
    """Every probe has its true match in the gallery under another camid."""
    cams = {}
    for _, pid, camid, _ in ds.gallery:
        cams.setdefault(pid, set()).add(camid)
    for _, pid, camid, _ in ds.query:
        assert cams[pid] - {camid}


# ---------------------------------------------------------------- protocol
def test_protocol_defaults_and_validation():
    p = MLRProtocol()
    assert p.ratios == (0.5, 1 / 3, 0.25) and p.seed == 0 and p.gallery == "one_random"
    with pytest.raises(ValueError, match="Unknown lr_mode 'x'; expected one of"):
        MLRProtocol(lr_mode="x")
    with pytest.raises(ValueError, match="interpolation"):
        MLRProtocol(interpolation="lanczos")
    with pytest.raises(ValueError, match="ratios"):
        MLRProtocol(ratios=(0.5, 1.5))
    with pytest.raises(ValueError, match="gallery"):
        MLRProtocol(gallery="two")
    with pytest.raises(ValueError, match="seed"):
        MLRProtocol(seed=-1)
    assert MLRProtocol(cache_dir="/a").short_hash() == MLRProtocol().short_hash()
    assert MLRProtocol(seed=1).short_hash() != MLRProtocol().short_hash()


def test_protocol_overrides_nest_and_restore(tmp_path):
    synthetic.make_viper(tmp_path, num_ids=8)
    with protocol_overrides(seed=5, cache_dir=str(tmp_path / "c")):
        with protocol_overrides(interpolation="nearest"):
            ds = MLRVIPeR(root=tmp_path, verbose=False)
            assert ds.protocol.seed == 5 and ds.protocol.interpolation == "nearest"
        assert MLRVIPeR(root=tmp_path, verbose=False).protocol.interpolation == "bicubic"
    assert MLRProtocol().seed == 0
    with pytest.raises(ValueError, match="Unknown protocol field"):
        with protocol_overrides(sead=1):
            pass


# ---------------------------------------------------------------- simulation / cache
def test_downsample_size():
    img = Image.new("RGB", (48, 128))
    assert downsample(img, 1 / 3).size == (16, 43)
    assert lr_size((3, 2), 0.25) == (1, 1)


def test_cache_root_fallback_when_read_only(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_mod.resolve_cache_root(data) == data / "jbim_cache"
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)  # tests run as root: is_writable_dir honours the mode bits, not just os.access
    try:
        got = cache_mod.resolve_cache_root(ro)
        assert got.parent == tmp_path / "xdg" / "jbim_reid" and not (ro / "jbim_cache").exists()
        assert cache_mod.resolve_cache_root(ro, tmp_path / "explicit") == tmp_path / "explicit"
    finally:
        os.chmod(ro, 0o755)


def _try_lock(path, queue):
    import fcntl

    with open(path, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            queue.put("acquired")
        except BlockingIOError:
            queue.put("blocked")


def test_file_lock_excludes_other_processes(tmp_path):
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    with cache_mod.file_lock(tmp_path / ".lock"):
        proc = ctx.Process(target=_try_lock, args=(str(tmp_path / ".lock"), queue))
        proc.start()
        assert queue.get(timeout=30) == "blocked"
        proc.join()
    proc = ctx.Process(target=_try_lock, args=(str(tmp_path / ".lock"), queue))
    proc.start()
    assert queue.get(timeout=30) == "acquired"
    proc.join()


def test_read_only_root_builds_into_fallback(tmp_path, monkeypatch):
    root = synthetic.make_viper(tmp_path / "data", num_ids=6)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    for d in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        os.chmod(d, 0o555)
    try:
        ds = MLRVIPeR(root=root, verbose=False)
        assert str(ds.split_path).startswith(str(tmp_path / "xdg"))
        assert not (root / "jbim_cache").exists() and not (root / "viper" / "splits.json").exists()
    finally:
        for d in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
            os.chmod(d, 0o755)


# ---------------------------------------------------------------- CAVIAR
@pytest.mark.parametrize("underscore", [False, True])
def test_caviar_split(tmp_path, underscore):
    root = synthetic.make_caviar(tmp_path, num_two_cam=6, num_one_cam=2, underscore=underscore)
    ds = CAVIAR(root=root, split_id=3, cache_dir=tmp_path / "c", verbose=False)
    assert ds.num_train_pids == 3 and sorted(_ids(ds.train)) == [0, 1, 2]
    assert len(ds.train) == 60 and len(ds.query) == 30 and len(ds.gallery) == 3
    assert {c for _, _, c, _ in ds.query} == {1} and {c for _, _, c, _ in ds.gallery} == {0}
    assert all(p in ds.lr_paths for p, *_ in ds.query) and not any(p in ds.lr_paths for p, *_ in ds.gallery)
    assert all(os.path.dirname(p).endswith("cropped_images") for p, *_ in ds.query)  # genuine, no copy
    _check_probes(ds)
    assert ds.lr_ratio_histogram() == {"genuine": 30}
    item = ds[0]
    assert item["hw"].tolist() == list(genuine_size(item["impath"]))


def test_lr_ratio_is_the_median_genuine_ratio_of_lr_to_hr_items(tmp_path):
    root = synthetic.make_caviar(tmp_path, num_two_cam=6, num_one_cam=2, hr_size=(96, 40), lr_size=(48, 20))
    ds = CAVIAR(root=root, split_id=0, cache_dir=tmp_path / "c", verbose=False)
    assert ds.lr_ratio() == pytest.approx(0.5)  # train: LR 48x20 against HR 96x40
    assert ds.lr_ratio(ds.query + ds.gallery) == pytest.approx(0.5)
    assert ds.lr_ratio(ds.gallery) is None  # no LR side
    hr_only = [it for it in ds.train if it[0] not in ds.lr_paths]
    assert ds.lr_ratio(hr_only) is None


def test_caviar_train_test_disjoint(tmp_path):
    root = synthetic.make_caviar(tmp_path)
    ds = CAVIAR(root=root, cache_dir=tmp_path / "c", verbose=False)
    train_people = {os.path.basename(p)[:4] for p, *_ in ds.train}
    test_people = {os.path.basename(p)[:4] for p, *_ in ds.query + ds.gallery}
    assert not train_people & test_people and len(train_people | test_people) == 6


def test_caviar_rejects_other_lr_camera(tmp_path):
    root = synthetic.make_caviar(tmp_path)
    with pytest.raises(ValueError, match="lr_camid 0"):
        CAVIAR(root=root, lr_camid=0, cache_dir=tmp_path / "c")


# ---------------------------------------------------------------- MLR-VIPeR / determinism / JSON
def test_viper_split_lr_and_json(tmp_path):
    root = synthetic.make_viper(tmp_path, num_ids=12)
    ds = MLRVIPeR(root=root, split_id=1, cache_dir=tmp_path / "c", verbose=False)
    assert ds.num_train_pids == 6 and len(ds.query) == 6 and len(ds.gallery) == 6
    _check_probes(ds)
    for impath, *_ in ds.query:
        ratio = ds.lr_ratios[impath]
        assert impath.endswith(".png") and Path(impath).is_file()
        assert genuine_size(impath) == lr_size((128, 48), ratio)
    split = json.loads(ds.split_path.read_text())
    assert split["protocol"] == MLRProtocol(lr_mode="camera").recorded()
    assert set(split["protocol"]) == {"seed", "lr_mode", "lr_camid", "ratios", "ratio_per", "interpolation",
                                      "train_lr", "gallery"}
    assert split["version"] == 1 and split["split_id"] == 1 and split["dataset"] == "mlr_viper"
    assert {"path", "pid", "camid", "lr", "ratio"} == set(split["query"][0])
    assert not split["query"][0]["path"].startswith("/")
    hist = ds.lr_ratio_histogram()
    assert sum(hist.values()) == 6 and set(hist) <= {"1/2", "1/3", "1/4"}


def test_determinism_and_seeds(tmp_path):
    root = synthetic.make_viper(tmp_path, num_ids=12)
    a = MLRVIPeR(root=root, seed=7, cache_dir=tmp_path / "a", verbose=False)
    b = MLRVIPeR(root=root, seed=7, cache_dir=tmp_path / "b", verbose=False)
    assert a.split_path.read_bytes() == b.split_path.read_bytes()
    c = MLRVIPeR(root=root, seed=8, cache_dir=tmp_path / "a", verbose=False)
    assert c.split_path != a.split_path
    assert c.split_path.read_bytes() != a.split_path.read_bytes()
    d = MLRVIPeR(root=root, seed=7, split_id=2, cache_dir=tmp_path / "a", verbose=False)
    assert json.loads(d.split_path.read_text())["train"] != json.loads(a.split_path.read_text())["train"]


def test_gallery_all_and_market_multi_camera(tmp_path):
    root = synthetic.make_market1501(tmp_path, num_ids=8, cams=3, per_cam=2)
    ds = MLRMarket1501(root=root, lr_mode="camera", lr_camid=2, gallery="all", cache_dir=tmp_path / "c",
                       verbose=False)
    assert len(ds.query) == 4 * 2 and len(ds.gallery) == 4 * 4  # cam 3 LR; cams 1-2 all in the gallery
    assert {c for *_, c, _ in ds.query} == {2} and {c for *_, c, _ in ds.gallery} == {0, 1}
    _check_probes(ds)


def test_split_reloaded_as_is_and_checked(tmp_path):
    root = synthetic.make_viper(tmp_path, num_ids=8)
    ds = MLRVIPeR(root=root, cache_dir=tmp_path / "c", verbose=False)
    split = json.loads(ds.split_path.read_text())
    split["gallery"] = split["gallery"][:-1]
    removed = {it["pid"] for it in split["gallery"]}
    split["query"] = [it for it in split["query"] if it["pid"] in removed]
    ds.split_path.write_text(json.dumps(split))
    again = MLRVIPeR(root=root, cache_dir=tmp_path / "c", verbose=False)
    assert len(again.gallery) == 3 and len(again.query) == 3  # the file is used, not regenerated
    split["version"] = 0
    ds.split_path.write_text(json.dumps(split))
    with pytest.raises(ValueError, match="version 0"):
        MLRVIPeR(root=root, cache_dir=tmp_path / "c")
    split["version"] = 1
    split["query"] = split["query"] + [dict(split["gallery"][0])]  # probe in its own gallery camera
    ds.split_path.write_text(json.dumps(split))
    with pytest.raises(ValueError, match="no true match"):
        MLRVIPeR(root=root, cache_dir=tmp_path / "c")


def test_deleted_lr_file_is_regenerated(tmp_path):
    root = synthetic.make_viper(tmp_path, num_ids=6)
    ds = MLRVIPeR(root=root, cache_dir=tmp_path / "c", verbose=False)
    lr = ds.query[0][0]
    os.remove(lr)
    MLRVIPeR(root=root, cache_dir=tmp_path / "c", verbose=False)
    assert genuine_size(lr) == lr_size((128, 48), ds.lr_ratios[lr])


def test_split_id_range(tmp_path):
    root = synthetic.make_viper(tmp_path, num_ids=6)
    MLRVIPeR(root=root, split_id=9, cache_dir=tmp_path / "c", verbose=False)
    with pytest.raises(ValueError, match="split_id 10 out of range; expected 0..9"):
        MLRVIPeR(root=root, split_id=10, cache_dir=tmp_path / "c")


def test_protocol_options(tmp_path):
    root = synthetic.make_viper(tmp_path, num_ids=12)
    kw = dict(root=root, cache_dir=tmp_path / "c", verbose=False)
    per_id = MLRVIPeR(ratio_per="id", **kw)
    for subset in (per_id.train, per_id.query):  # train and test pids are separate label spaces
        by_pid = {}
        for p, pid, *_ in subset:
            if p in per_id.lr_ratios:
                by_pid.setdefault(pid, set()).add(per_id.lr_ratios[p])
        assert by_pid and all(len(v) == 1 for v in by_pid.values())
    no_train_lr = MLRVIPeR(train_lr=False, **kw)
    assert not any(p in no_train_lr.lr_paths for p, *_ in no_train_lr.train)
    assert len(no_train_lr.query) == 6
    mixed = MLRVIPeR(lr_mode="per_id", ratios=(0.5,), interpolation="area", **kw)
    assert {c for *_, c, _ in mixed.query} == {0, 1}
    _check_probes(mixed)
    assert mixed.lr_ratio_histogram() == {"1/2": 6}
    lr0 = MLRVIPeR(lr_camid=0, **kw)
    assert {c for *_, c, _ in lr0.query} == {0}
    with pytest.raises(ValueError, match="lr_mode 'camera_pair' is not supported"):
        MLRVIPeR(lr_mode="camera_pair", **kw)
    with pytest.raises(ValueError, match="lr_camid 5"):
        MLRVIPeR(lr_camid=5, **kw)


def test_explicit_protocol_object(tmp_path):
    root = synthetic.make_viper(tmp_path, num_ids=8)
    ds = MLRVIPeR(root=root, protocol=MLRProtocol(seed=4, cache_dir=str(tmp_path / "c")), verbose=False)
    assert ds.protocol.seed == 4 and ds.protocol.lr_mode == "camera"


def _build(root, cache, barrier, queue):
    barrier.wait()  # both processes start building at the same moment
    ds = MLRVIPeR(root=root, split_id=0, cache_dir=cache, verbose=False)
    queue.put((ds.split_path.read_bytes(), sorted(ds.lr_paths)))


def test_concurrent_builds(tmp_path):
    root = synthetic.make_viper(tmp_path, num_ids=60)
    ctx = mp.get_context("fork")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_build, args=(str(root), str(tmp_path / "c"), barrier, queue))
             for _ in range(2)]
    for p in procs:
        p.start()
    (a, la), (b, lb) = queue.get(timeout=60), queue.get(timeout=60)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert a == b and la == lb and len(la) == 60
    json.loads(a)
    for p in la:
        Image.open(p).load()  # complete PNGs
    assert not list((tmp_path / "c").rglob("*.tmp"))


# ---------------------------------------------------------------- other datasets
def test_prid_keeps_two_camera_ids(tmp_path):
    root = synthetic.make_prid(tmp_path, num_shared=10, extra_a=3, extra_b=5)
    with pytest.warns(UserWarning, match="do not exist"):  # torchreid's PRID expects 200 shared ids
        ds = MLRPRID(root=root, cache_dir=tmp_path / "c", verbose=False)
    # torchreid pairs the file numbers 1-200 of both cameras: here 1-13 exist in both (7 / 6 split);
    # cam_b's 14-15 are one-camera ids and are dropped
    assert ds.num_train_pids == 7 and len(ds.query) == 6 and len(ds.gallery) == 6
    names = {os.path.basename(p).split(".")[0] for p, *_ in ds.train + ds.gallery}
    assert all(int(n.split("_")[1]) <= 13 for n in names)
    assert not (root / "prid2011" / "splits_single_shot.json").exists()


def test_market_half_images(tmp_path):
    root = synthetic.make_market1501(tmp_path, num_ids=8, cams=3, per_cam=2)
    ds = MLRMarket1501(root=root, cache_dir=tmp_path / "c", verbose=False)
    assert ds.num_train_pids == 4 and len(_ids(ds.gallery)) == 4 and len(ds.gallery) == 4
    per_pid = Counter(pid for p, pid, *_ in ds.train if p in ds.lr_paths)
    assert set(per_pid.values()) == {3}  # half of 6 images
    _check_probes(ds)
    split = json.loads(ds.split_path.read_text())
    assert len(ds.query) + split["dropped_probes"] == 12


def test_cuhk03_camera_pair(tmp_path):
    root = synthetic.make_cuhk03(tmp_path, num_pairs=2, ids_per_pair=53)
    ds = MLRCUHK03(root=root, cache_dir=tmp_path / "c", verbose=False)
    assert ds.num_train_pids == 6 and len(_ids(ds.query)) == 100 and len(ds.gallery) == 100
    lr_cams = {c for p, _, c, _ in ds.query}
    assert len(lr_cams) == 2 and {c // 2 for c in lr_cams} == {0, 1}
    assert len(ds.query) == 100 * 4  # labeled + detected, 2 images each, LR view
    _check_probes(ds)


@pytest.mark.parametrize("folders", [False, True])
def test_sysu_layouts(tmp_path, folders):
    root = synthetic.make_sysu(tmp_path, num_ids=8, per_id_folders=folders)
    ds = MLRSYSU(root=root, cache_dir=tmp_path / "c", verbose=False)
    assert ds.num_train_pids == 4 and len(ds.query) == 12 and len(ds.gallery) == 4
    _check_probes(ds)


def test_make_mlr_dataset_generic(tmp_path):
    cls = make_mlr_dataset("viper2", torchreid.data.datasets.image.VIPeR, num_train_ids=3)
    assert cls.name == "mlr_viper2" and issubclass(cls, torchreid.data.ImageDataset)
    root = synthetic.make_viper(tmp_path, num_ids=8)
    ds = cls(root=root, cache_dir=tmp_path / "c", verbose=False)
    assert ds.num_train_pids == 3 and len(ds.gallery) == 5


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("cls,expected", [(CAVIAR, "cropped_images"), (MLRVIPeR, "cam_a"),
                                          (MLRPRID, "single_shot"), (MLRCUHK03, "images_labeled"),
                                          (MLRSYSU, "SYSU-ReID"), (MLRMarket1501, "market1501")])
def test_missing_layout_names_path(tmp_path, monkeypatch, cls, expected):
    monkeypatch.setattr(cls, "dataset_url", None)  # no download attempt (tests/test_dataset_fetch.py)
    with pytest.raises(FileNotFoundError) as err:
        cls(root=tmp_path, cache_dir=tmp_path / "c")
    msg = str(err.value)
    assert str(tmp_path) in msg and expected in msg and "Expected layout" in msg


@pytest.mark.filterwarnings("ignore:The current data structure is deprecated")
def test_bad_torchreid_layout_is_wrapped(tmp_path):
    (tmp_path / "market1501").mkdir()
    with pytest.raises(RuntimeError, match="Market1501 could not read.*Expected layout"):
        MLRMarket1501(root=tmp_path, cache_dir=tmp_path / "c")


def test_unreadable_image_names_file(tmp_path):
    root = synthetic.make_caviar(tmp_path)
    ds = CAVIAR(root=root, cache_dir=tmp_path / "c", verbose=False)
    Path(ds.train[0][0]).write_bytes(b"not an image")
    with pytest.raises(OSError, match=os.path.basename(ds.train[0][0])):
        ds[0]


# ---------------------------------------------------------------- torchreid integration
def test_registration():
    import jbim_reid  # noqa: F401  (registers on import)

    registry = getattr(torchreid.data.datasets, "__image_datasets")
    for name, cls in DATASETS.items():
        assert registry[name] is cls


def test_image_data_manager_batch(tmp_path, capsys):
    import jbim_reid  # noqa: F401

    root = synthetic.make_caviar(tmp_path)
    with protocol_overrides(cache_dir=str(tmp_path / "c")):
        dm = torchreid.data.ImageDataManager(root=str(root), sources="caviar", targets="caviar", split_id=2,
                                             height=64, width=32, workers=0, batch_size_train=8,
                                             batch_size_test=8, use_gpu=False)
    assert "LR ratios: genuine: 30" in capsys.readouterr().out
    batch = next(iter(dm.train_loader))
    assert batch["img"].shape == (8, 3, 64, 32) and batch["hw"].shape == (8, 2)
    assert batch["hw"].dtype == torch.int64 and batch["is_lr"].dtype == torch.bool
    for hw, path in zip(batch["hw"], batch["impath"]):
        assert tuple(hw.tolist()) == genuine_size(path)
    q = next(iter(dm.test_loader["caviar"]["query"]))
    assert bool(q["is_lr"].all()) and (q["hw"][:, 0] == 40).all()


def test_lr_images_are_upscaled_bicubically_hr_images_as_the_transform_does(tmp_path):
    import torchvision.transforms as T

    root = synthetic.make_caviar(tmp_path)
    transform = T.Compose([T.Resize((64, 32)), T.ToTensor()])  # torchreid's Resize: bilinear
    ds = CAVIAR(root=root, cache_dir=tmp_path / "c", verbose=False, mode="query", transform=transform)
    item = ds[0]
    assert item["is_lr"]
    with Image.open(item["impath"]) as im:
        raw = im.convert("RGB")
    bicubic = T.ToTensor()(raw.resize((32, 64), Image.BICUBIC))
    assert torch.allclose(item["img"], bicubic)
    assert not torch.allclose(item["img"], transform(raw))  # not torchreid's bilinear upscale
    hr = CAVIAR(root=root, cache_dir=tmp_path / "c", verbose=False, mode="gallery", transform=transform)
    with Image.open(hr[0]["impath"]) as im:
        assert torch.allclose(hr[0]["img"], transform(im.convert("RGB")))


def test_pair_views(tmp_path):
    import torchvision.transforms as T

    root = synthetic.make_caviar(tmp_path)
    ds = CAVIAR(root=root, cache_dir=tmp_path / "c", verbose=False, pair_views=True,
                transform=T.Compose([T.Resize((32, 16)), T.ToTensor()]))
    for i in range(0, len(ds), 7):
        item = ds[i]
        assert item["img_lr"].shape == item["img_hr"].shape == (3, 32, 16)
        own = "img_lr" if item["is_lr"] else "img_hr"
        assert torch.equal(item[own], item["img"])
        # genuine sizes of both views (synthetic CAVIAR: HR 96x40, LR 40x16)
        assert item["hw_hr"].tolist() == [96, 40] and item["hw_lr"].tolist() == [40, 16]
    # partner: same pid, other resolution, other camid
    for i in range(len(ds)):
        partner = ds._partner(i)
        _, pid, camid, _ = ds.train[i]
        match = [it for it in ds.train if it[0] == partner][0]
        assert match[1] == pid and match[2] != camid
        assert (partner in ds.lr_paths) != (ds.train[i][0] in ds.lr_paths)
    assert "img_lr" not in CAVIAR(root=root, cache_dir=tmp_path / "c", verbose=False, mode="query")[0]
