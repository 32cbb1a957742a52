"""Gallery index (jbim_reid.deploy.index, ``jbim-reid index build / search``): exactness, resume, refusal, recall."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchreid
from synthetic import person_image

from jbim_reid import CrossResolutionMatcher
from jbim_reid.cli import main
from jbim_reid.deploy.index import GalleryIndex, IndexMismatchError, build_index, list_gallery, recall_at_k
from jbim_reid.models import JBIM
from jbim_reid.utils.images import build_test_transform, load_rgb

pytest.importorskip("faiss")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "index_search.py"


def tiny_checkpoint(folder: Path, ratio: float, seed: int, calibrate_on=None) -> Path:
    """A random osnet_x0_25 JBIM (64x32) saved as a checkpoint; BN statistics from ``calibrate_on``."""
    torch.manual_seed(seed)
    model = JBIM(num_classes=3, backbone="osnet_x0_25", sr="espcn", ratio=ratio, height=64, width=32)
    if calibrate_on is not None:  # random BN statistics can map every image to nearly one feature
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None
        transform = build_test_transform(64, 32)
        x = torch.stack([transform(load_rgb(p)) for p in calibrate_on])
        model.train()
        with torch.no_grad():
            model.probe_features(x)
            model.gallery_features(x)
    model.eval()
    torchreid.utils.save_checkpoint({"state_dict": model.state_dict(), "epoch": 1,
                                     "jbim_kwargs": model.jbim_kwargs}, str(folder))
    return folder / "model.pth.tar-1"


@pytest.fixture(scope="module")
def caviar(data_root, tmp_path_factory):
    """Real CAVIAR: 8 ids, 2 small probes and 3 gallery crops each, plus two tiny anchor checkpoints."""
    folder = data_root / "caviar" / "CAVIAR4REID" / "cropped_images"
    if not folder.is_dir():
        pytest.skip(f"CAVIAR4REID not found under {folder}")
    ids = range(10, 18)
    probes = [str(folder / f"{pid:04d}{k:03d}.jpg") for pid in ids for k in (1, 2)]
    gallery = [str(folder / f"{pid:04d}{k:03d}.jpg") for pid in ids for k in (8, 9, 10)]
    tmp = tmp_path_factory.mktemp("anchors")
    checkpoints = [str(tiny_checkpoint(tmp / f"a{i}", ratio, 20 + i, calibrate_on=gallery + probes))
                   for i, ratio in enumerate((1 / 2, 1 / 4))]
    return probes, gallery, checkpoints


@pytest.mark.slow
def test_exact_index_search_equals_the_matcher_on_real_caviar(caviar, tmp_path, capsys):
    probes, gallery, checkpoints = caviar
    listing = tmp_path / "gallery.txt"
    listing.write_text("\n".join(gallery) + "\n")
    assert main(["index", "build", "--checkpoints", *checkpoints, "--gallery", str(listing),
                 "--out", str(tmp_path / "index"), "--shard-size", "10", "--batch-size", "7"]) == 0
    assert not (tmp_path / "index" / "shards").exists()
    expected = CrossResolutionMatcher(checkpoints).match(probes, gallery)
    assert np.ptp(expected.distances, axis=1).min() > 1e-3  # a real ranking, not ties

    index = GalleryIndex.load(str(tmp_path / "index"))
    assert index.paths == gallery and index.ratios == [0.5, 0.25]
    matcher = CrossResolutionMatcher(checkpoints)
    images, probe_hw = matcher._load_all(probes, "probes")
    feats = [matcher._features(m, images, "probe").numpy() for m in matcher.models]
    full = index.search(feats, probe_hw, k=len(gallery))
    np.testing.assert_array_equal(full.indices, expected.ranking)
    np.testing.assert_allclose(full.distances, np.take_along_axis(expected.distances, expected.ranking, 1),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(full.weights, expected.weights)
    # few candidates per anchor: the bound check widens them until the top 5 is certain
    top5 = index.search(feats, probe_hw, k=5, candidates=2)
    np.testing.assert_array_equal(top5.indices, expected.ranking[:, :5])

    out = tmp_path / "search.json"
    capsys.readouterr()
    assert main(["index", "search", str(tmp_path / "index"), *probes[:2], "--top-k", "3",
                 "--checkpoints", *checkpoints, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [r["path"] for r in report["probes"][0]["results"]] == [gallery[g] for g in expected.ranking[0, :3]]
    assert gallery[expected.ranking[1, 0]] in capsys.readouterr().out
    assert main(["index", "search", str(tmp_path / "index"), probes[0], "--index-type", "hnsw"]) == 0
    assert "recall@10 against exact search" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "index").glob("faiss_*.npy")) == ["faiss_hnsw16_0.npy",
                                                                                "faiss_hnsw16_1.npy"]
    cached = GalleryIndex.load(str(tmp_path / "index"))  # the cached structures give the same results
    hnsw = cached.search(feats, probe_hw, k=5, index_type="hnsw")
    np.testing.assert_array_equal(hnsw.indices, index.search(feats, probe_hw, k=5, index_type="hnsw").indices)


def test_build_resumes_after_an_interruption_and_refuses_other_checkpoints(tmp_path, monkeypatch, capsys):
    gallery_dir = tmp_path / "gallery"
    gallery_dir.mkdir()
    for pid in range(7):
        person_image(pid, (96 + 4 * pid, 40), seed=pid).save(gallery_dir / f"{pid:02d}.png")
    gallery = list_gallery(str(gallery_dir))
    assert [Path(p).name for p in gallery] == [f"{pid:02d}.png" for pid in range(7)]
    ckpt = str(tiny_checkpoint(tmp_path / "a", 0.5, 1))
    reference = build_index([ckpt], gallery, str(tmp_path / "ref"), shard_size=3, progress=False)

    calls, kill_at = [], [2]
    original = CrossResolutionMatcher._features

    def interrupted(self, model, images, role):
        calls.append(len(images))
        if len(calls) in kill_at:
            raise KeyboardInterrupt  # killed while embedding the second shard
        return original(self, model, images, role)

    monkeypatch.setattr(CrossResolutionMatcher, "_features", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_index([ckpt], gallery, str(tmp_path / "idx"), shard_size=3, progress=False)
    with pytest.raises(FileNotFoundError, match="build was interrupted"):
        GalleryIndex.load(str(tmp_path / "idx"))
    calls.clear()
    kill_at.clear()
    build_index([ckpt], gallery, str(tmp_path / "idx"), shard_size=3, progress=False)
    assert calls == [3, 1]  # the finished first shard was kept
    for name in ("features_0.npy", "hw.npy"):
        np.testing.assert_allclose(np.load(tmp_path / "idx" / name), np.load(tmp_path / "ref" / name), atol=1e-6)
    assert reference["checkpoints"][0]["ratio"] == 0.5
    np.testing.assert_array_equal(np.load(tmp_path / "idx" / "hw.npy")[:, 0], [96 + 4 * p for p in range(7)])

    other = str(tiny_checkpoint(tmp_path / "b", 0.5, 2))
    with pytest.raises(IndexMismatchError, match="built with other checkpoints"):
        GalleryIndex.load(str(tmp_path / "idx")).check_checkpoints([other])
    probe = tmp_path / "probe.png"
    person_image(1, (24, 12), seed=9).save(probe)
    assert main(["index", "search", str(tmp_path / "idx"), str(probe), "--checkpoints", other]) == 2
    assert "built with other checkpoints" in capsys.readouterr().err
    with pytest.raises(IndexMismatchError, match="unfinished build of another gallery"):
        (tmp_path / "new").mkdir()
        (tmp_path / "new" / "plan.json").write_text("{}")
        build_index([ckpt], gallery, str(tmp_path / "new"), progress=False)


def test_gallery_listing_errors_name_the_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder or list file"):
        list_gallery(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="no images"):
        list_gallery(str(tmp_path))


def clustered(num: int, dim: int, seed: int):
    rng = np.random.default_rng(seed)
    codes = rng.standard_normal((num // 4, 32)).astype(np.float32)
    proj = rng.standard_normal((32, dim)).astype(np.float32) / np.sqrt(32)
    feats = np.repeat(codes, 4, axis=0) @ proj + 0.5 * rng.standard_normal((num, dim)).astype(np.float32)
    probes = codes[rng.integers(0, num // 4, 50)] @ proj + 0.5 * rng.standard_normal((50, dim)).astype(np.float32)
    return feats.astype(np.float32), probes.astype(np.float32)


@pytest.mark.slow
def test_approximate_search_reaches_recall_at_10(tmp_path):
    """20,000 clustered random features here; the 200,000-feature case runs in benchmarks/index_search.py."""
    feats, probes = clustered(20_000, 64, 0)
    rng = np.random.default_rng(1)
    index = GalleryIndex([feats], rng.integers(60, 160, (20_000, 2)), [0.5])
    probe_hw = rng.integers(20, 60, (50, 2))
    exact = index.search([probes], probe_hw, k=10)
    dist = (probes ** 2).sum(1)[:, None] + (feats ** 2).sum(1)[None] - 2 * probes @ feats.T
    brute = np.argsort(dist, axis=1, kind="stable")[:, :10]
    assert recall_at_k(exact.indices, brute) == 1.0
    for index_type in ("ivf", "hnsw"):
        approx = index.search([probes], probe_hw, k=10, index_type=index_type)
        assert recall_at_k(approx.indices, exact.indices) >= 0.95, index_type
    assert recall_at_k(exact.indices[:, ::-1], exact.indices) == 1.0
    assert recall_at_k(exact.indices[:, :5], exact.indices[:, 5:]) == 0.0
