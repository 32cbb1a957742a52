"""Integration tests of the cross-resolution datasets on the real data (``JBIM_DATA_ROOT``)."""
import json
import os
import re

import pytest
import torchreid

from jbim_reid.datasets import CAVIAR, MLRPRID, MLRVIPeR, protocol_overrides
from jbim_reid.datasets.cache import is_writable_dir


def _person(relpath: str, name: str) -> str:
    """Identity of an image from its file name (train / test disjointness check)."""
    base = os.path.basename(relpath)
    if name == "caviar":
        return base[:4]
    if name == "mlr_viper":
        return base.split("_")[0]
    return re.search(r"person_(\d+)", base).group(1)


# name -> (class, train ids, train images, probes, gallery images)
EXPECTED = {
    "caviar": (CAVIAR, 25, 500, 250, 25),
    "mlr_viper": (MLRVIPeR, 316, 632, 316, 316),
    "mlr_prid": (MLRPRID, 100, 200, 100, 100),  # the 200 ids seen by both PRID cameras, 100 / 100
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_split(data_root, tmp_path, name):
    cls, n_train, n_train_imgs, n_query, n_gallery = EXPECTED[name]
    a = cls(root=data_root, split_id=4, cache_dir=tmp_path / "a", verbose=False)
    assert a.num_train_pids == n_train and len(a.train) == n_train_imgs
    assert len(a.query) == n_query and len(a.gallery) == n_gallery
    assert len({pid for _, pid, _, _ in a.gallery}) == n_gallery  # one HR image per test id
    split = json.loads(a.split_path.read_text())
    train_people = {_person(it["path"], name) for it in split["train"]}
    test_people = {_person(it["path"], name) for it in split["query"] + split["gallery"]}
    assert not train_people & test_people
    assert a.mean_genuine_area(a.query) < a.mean_genuine_area(a.gallery)
    gallery_cams = {}
    for _, pid, camid, _ in a.gallery:
        gallery_cams.setdefault(pid, set()).add(camid)
    assert all(gallery_cams[pid] - {camid} for _, pid, camid, _ in a.query)
    b = cls(root=data_root, split_id=4, cache_dir=tmp_path / "b", verbose=False)
    assert a.split_path.read_bytes() == b.split_path.read_bytes()


def test_caviar_default_cache_falls_back_on_read_only_data(data_root, tmp_path, monkeypatch):
    """Without cache_dir, a data root marked read-only (chmod 555) sends the cache to XDG_CACHE_HOME."""
    if is_writable_dir(data_root) or (data_root / "jbim_cache").exists():
        pytest.skip(f"{data_root} is writable or already has a jbim_cache: no fallback to test")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    ds = CAVIAR(root=data_root, verbose=False)
    assert str(ds.split_path).startswith(str(tmp_path / "xdg"))
    assert not (data_root / "jbim_cache").exists()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_batch_through_datamanager(data_root, tmp_path, name):
    import jbim_reid  # noqa: F401  (registers the datasets)

    with protocol_overrides(cache_dir=str(tmp_path)):
        dm = torchreid.data.ImageDataManager(root=str(data_root), sources=name, targets=name, split_id=0,
                                             height=64, width=32, workers=0, batch_size_train=16,
                                             batch_size_test=16, use_gpu=False)
    batch = next(iter(dm.train_loader))
    assert batch["img"].shape == (16, 3, 64, 32) and batch["hw"].shape == (16, 2)
    query = next(iter(dm.test_loader[name]["query"]))
    gallery = next(iter(dm.test_loader[name]["gallery"]))
    assert bool(query["is_lr"].all()) and not bool(gallery["is_lr"].any())
    assert query["hw"].prod(1).float().mean() < gallery["hw"].prod(1).float().mean()
