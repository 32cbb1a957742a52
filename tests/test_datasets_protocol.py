"""Published MLR protocols: MLR-SYSU's 3 images per camera and random LR camera; official id splits."""
import json
from collections import Counter

import pytest
import synthetic

from jbim_reid.config import get_default_config
from jbim_reid.config.kwargs import protocol_kwargs
from jbim_reid.datasets import MLRCUHK03, MLRSYSU, MLRMarket1501, MLRProtocol, MLRVIPeR


def _split(ds):
    return json.loads(ds.split_path.read_text())


def test_new_fields_keep_older_split_hashes():
    # split files written before images_per_camera / id_split existed stay valid
    old_keys = {"seed", "lr_mode", "lr_camid", "ratios", "ratio_per", "interpolation", "train_lr", "gallery"}
    assert set(MLRProtocol(lr_mode="camera", images_per_camera=0).recorded()) == old_keys
    assert MLRProtocol(images_per_camera=3).recorded()["images_per_camera"] == 3
    assert MLRProtocol(id_split="official").short_hash() != MLRProtocol().short_hash()
    with pytest.raises(ValueError, match="images_per_camera"):
        MLRProtocol(images_per_camera=-2)
    with pytest.raises(ValueError, match="id_split"):
        MLRProtocol(id_split="published")


def test_sysu_three_random_images_per_camera_and_a_random_lr_camera(tmp_path):
    root = synthetic.make_sysu(tmp_path, num_ids=8, per_cam=5)
    drawn, kept = set(), set()
    for split_id in range(6):
        ds = MLRSYSU(root=root, split_id=split_id, cache_dir=tmp_path / "c", verbose=False)
        split = _split(ds)
        assert split["protocol"]["images_per_camera"] == 3 and split["protocol"]["lr_mode"] == "random_camera"
        lr_camid = split["drawn"]["lr_camid"]
        drawn.add(lr_camid)
        per_person_camera = Counter((it["pid"], it["camid"]) for it in split["train"])
        assert set(per_person_camera.values()) == {3}  # of 5 on disk
        assert {it["camid"] for it in split["query"]} == {lr_camid}
        assert len(ds.query) == 4 * 3 and len(ds.gallery) == 4
        assert all(it["lr"] == (it["camid"] == lr_camid) for it in split["train"])
        kept.add(frozenset(it["path"] for it in split["train"]))
    assert drawn == {0, 1}  # the LR camera is drawn per split
    assert len(kept) > 1  # and so are the images
    again = MLRSYSU(root=root, split_id=5, cache_dir=tmp_path / "other", verbose=False)
    assert _split(again) == split  # seeded: the same split from scratch
    everything = MLRSYSU(root=root, images_per_camera=0, lr_mode="camera", lr_camid=1,
                         cache_dir=tmp_path / "c", verbose=False)
    assert len(everything.query) == 4 * 5 and "drawn" not in _split(everything)


def _classic_splits(root, test_persons_per_split):
    """torchreid's ``splits_classic_labeled.json``: per split, test items under query / gallery."""
    splits = []
    for persons in test_persons_per_split:
        test = [[f"/anywhere/images_labeled/{pair}_{pid:03d}_{view}_01.png", i, view - 1]
                for i, (pair, pid) in enumerate(persons) for view in (1, 2)]
        splits.append({"train": [], "query": test, "gallery": test})
    (root / "cuhk03" / "splits_classic_labeled.json").write_text(json.dumps(splits))


def test_cuhk03_official_split_reads_the_classic_test_ids(tmp_path):
    root = synthetic.make_cuhk03(tmp_path, num_pairs=2, ids_per_pair=53)
    everyone = [(pair, pid) for pair in (1, 2) for pid in range(1, 54)]
    official = [everyone[6:], everyone[:100]]  # split 0 and split 1 of the "published" list
    _classic_splits(root, official)
    for split_id, persons in enumerate(official):
        ds = MLRCUHK03(root=root, split_id=split_id, id_split="official", cache_dir=tmp_path / "c",
                       verbose=False)
        split = _split(ds)
        assert split["protocol"]["id_split"] == "official"
        test_people = {it["path"].split("/")[-1][:5] for it in split["query"] + split["gallery"]}
        assert test_people == {f"{pair}_{pid:03d}" for pair, pid in persons}
        train_people = {it["path"].split("/")[-1][:5] for it in split["train"]}
        assert not train_people & test_people and len(train_people) == 6 and ds.num_train_pids == 6


def test_cuhk03_official_split_without_torchreid_files_names_the_file(tmp_path):
    root = synthetic.make_cuhk03(tmp_path, num_pairs=2, ids_per_pair=53)
    with pytest.raises(FileNotFoundError, match="splits_classic_labeled.json"):
        MLRCUHK03(root=root, id_split="official", cache_dir=tmp_path / "c", verbose=False)


def test_market_official_split_is_the_published_train_test_ids(tmp_path):
    root = synthetic.make_market1501(tmp_path, num_ids=8, cams=3, per_cam=2)  # ids 1-4 train, 5-8 test
    for split_id in (0, 1):
        ds = MLRMarket1501(root=root, split_id=split_id, id_split="official", cache_dir=tmp_path / "c",
                           verbose=False)
        split = _split(ds)
        train_ids = {int(it["path"].split("/")[-1][:4]) for it in split["train"]}
        test_ids = {int(it["path"].split("/")[-1][:4]) for it in split["query"] + split["gallery"]}
        assert train_ids == {1, 2, 3, 4} and test_ids == {5, 6, 7, 8}
        assert all("bounding_box_train" in it["path"] for it in split["train"])
    random_ids = set()
    for split_id in range(4):
        split = _split(MLRMarket1501(root=root, split_id=split_id, cache_dir=tmp_path / "c", verbose=False))
        random_ids.add(frozenset(int(it["path"].split("/")[-1][:4]) for it in split["train"]))
    assert len(random_ids) > 1  # the default still draws the ids per split


def test_official_split_is_refused_where_none_is_published(tmp_path):
    root = synthetic.make_viper(tmp_path, num_ids=8)
    with pytest.raises(ValueError, match="mlr_viper: id_split 'official' is not supported"):
        MLRVIPeR(root=root, id_split="official", cache_dir=tmp_path / "c", verbose=False)


def test_config_keys_reach_the_protocol():
    cfg = get_default_config()
    assert protocol_kwargs(cfg)["images_per_camera"] is None and protocol_kwargs(cfg)["id_split"] == "random"
    cfg.merge_from_list(["mlr.images_per_camera", "2", "mlr.id_split", "official",
                         "mlr.lr_mode", "random_camera"])
    fields = protocol_kwargs(cfg)
    assert MLRProtocol(**fields).images_per_camera == 2 and fields["id_split"] == "official"
