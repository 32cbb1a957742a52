"""Ranked lists with the LR probe at its genuine size (jbim_reid.evaluation.visualize)."""
import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from synthetic import person_image
from torch import nn

from jbim_reid.evaluation.visualize import (GAP, compose_panel, sr_images_from_model,
                                            visualize_cross_resolution_ranks)

WIDTH, HEIGHT, TOPK = 32, 64, 3
LR_H, LR_W = 24, 12


def lr_pattern(seed):
    """An RGB LR image of 6 x 6 blocks in distinct colours: any resizing would show."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (LR_H // 6, LR_W // 6, 3), dtype=np.uint8)
    return np.kron(blocks, np.ones((6, 6, 1), dtype=np.uint8))


@pytest.fixture
def tiny_set(tmp_path):
    query, gallery = [], []
    for pid in range(2):
        path = tmp_path / "query" / f"{pid:04d}_c1.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(lr_pattern(pid)).save(path)
        query.append((str(path), pid, 0, 0))
    for pid in range(4):
        path = tmp_path / "gallery" / f"{pid:04d}_c2.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        person_image(pid, (64, 32)).save(path)
        gallery.append((str(path), pid, 1, 0))
    distmat = np.random.default_rng(0).random((2, 4))
    sr = {q[0]: np.full((40, 20, 3), (200, 30, 60), dtype=np.uint8) for q in query}  # RGB, any size
    return query, gallery, distmat, sr


def test_rows_written_with_lr_at_genuine_size(tmp_path, tiny_set):
    query, gallery, distmat, sr = tiny_set
    paths = visualize_cross_resolution_ranks(distmat, query, gallery, sr, tmp_path / "ranks", width=WIDTH,
                                             height=HEIGHT, topk=TOPK)
    assert [p.name for p in paths] == ["0000_c1.jpg", "0001_c1.jpg"]
    torchreid_row_w = (TOPK + 1) * WIDTH + TOPK * 10 + 90  # torchreid's grid for topk
    for pid, path in enumerate(paths):
        assert path.is_file() and path.stat().st_size > 0
        img = cv2.imread(str(path))
        assert img.shape == (HEIGHT, 3 * GAP + LR_W + WIDTH + torchreid_row_w, 3)
        y0 = (HEIGHT - LR_H) // 2
        lr_bgr = cv2.cvtColor(lr_pattern(pid), cv2.COLOR_RGB2BGR).astype(float)
        region = img[y0:y0 + LR_H, GAP:GAP + LR_W].astype(float)
        assert np.abs(region - lr_bgr).mean() < 4  # the LR pixels themselves (JPEG noise only)
        assert img[:y0 - 2, GAP:GAP + LR_W].min() > 240  # white padding above: not stretched
        assert img[:, GAP + LR_W + 2:2 * GAP + LR_W - 2].min() > 240  # white gap to its right
        sr_region = img[5:HEIGHT - 5, 2 * GAP + LR_W + 5:2 * GAP + LR_W + WIDTH - 5].astype(float)
        np.testing.assert_allclose(sr_region.mean(axis=(0, 1)), (60, 30, 200), atol=6)  # BGR of the SR


def test_query_indices_and_missing_sr(tmp_path, tiny_set):
    query, gallery, distmat, sr = tiny_set
    paths = visualize_cross_resolution_ranks(distmat, query, gallery, lambda p: sr[p], tmp_path / "one",
                                             width=WIDTH, height=HEIGHT, topk=2, query_indices=[1])
    assert [p.name for p in paths] == ["0001_c1.jpg"]
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["0001_c1.jpg"]
    with pytest.raises(KeyError, match="sr_images has no entry for query image .*0000_c1.png"):
        visualize_cross_resolution_ranks(distmat, query, gallery, {}, tmp_path / "none", width=WIDTH,
                                         height=HEIGHT, topk=2)
    assert not (tmp_path / "none").exists()  # failed before torchreid wrote anything
    with pytest.raises(ValueError, match=r"distmat has shape \(2, 3\); expected \(2, 4\)"):
        visualize_cross_resolution_ranks(distmat[:, :3], query, gallery, sr, tmp_path / "x")


def test_compose_panel_grows_for_a_tall_lr_image():
    lr = np.zeros((80, 10, 3), dtype=np.uint8)
    out = compose_panel(lr, np.zeros((5, 5, 3), dtype=np.uint8), np.zeros((64, 50, 3), dtype=np.uint8), 32, 64)
    assert out.shape == (80, 10 + 32 + 50 + 3 * GAP, 3)
    assert (out[:, GAP:GAP + 10] == 0).all()  # the whole LR image, unscaled
    assert (out[:8, 2 * GAP + 10:2 * GAP + 42] == 255).all()  # SR centred, padded above


class TinySR(nn.Module):
    """Stand-in model: an SR that brightens, at a 16 x 8 input size."""

    height, width = 16, 8

    def __init__(self):
        super().__init__()
        self.sr = nn.Identity()


def test_sr_images_from_model_returns_rgb_uint8(tmp_path):
    path = tmp_path / "p.png"
    Image.fromarray(np.full((8, 4, 3), (250, 10, 120), dtype=np.uint8)).save(path)
    sr = sr_images_from_model(TinySR())(str(path))
    assert sr.shape == (16, 8, 3) and sr.dtype == np.uint8
    np.testing.assert_allclose(sr.reshape(-1, 3).mean(axis=0), (250, 10, 120), atol=2)


def test_sr_images_from_real_jbim(tmp_path):
    from jbim_reid.models import JBIM

    torch.manual_seed(0)
    model = JBIM(num_classes=2, backbone="osnet_x0_25", ratio=0.5, height=64, width=32)
    model.train()
    path = tmp_path / "p.png"
    person_image(1, (16, 8)).save(path)
    sr = sr_images_from_model(model)(str(path))
    assert sr.shape == (64, 32, 3) and sr.dtype == np.uint8
    assert model.training and model.sr.training  # the model's mode is left as it was
