"""``random_resolution``: the transform, its range, and its hook into torchreid's datamanager."""
import random

import numpy as np
import pytest
import synthetic
import torch
import torchreid
import torchvision.transforms as T
from PIL import Image

import jbim_reid  # noqa: F401  (registration)
from jbim_reid.config import get_default_config
from jbim_reid.datasets import CAVIAR, protocol_overrides
from jbim_reid.training.checks import ConfigError
from jbim_reid.training.runner import build_datamanager
from jbim_reid.transforms import (DEFAULT_RANGE, RandomResolution, current_range, resolution_aug_range,
                                  split_leading_random_resolution)


def _image(h=40, w=16, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))


def test_ratio_is_of_the_genuine_size_and_the_size_is_kept():
    img = _image(40, 16)
    out = RandomResolution.apply(img, 0.5)
    assert out.size == img.size
    expected = img.resize((8, 20), Image.BICUBIC).resize((16, 40), Image.BICUBIC)
    assert np.array_equal(np.asarray(out), np.asarray(expected))
    # its content is a 20x8 image: shrinking it to 20x8 again and back changes almost nothing
    again = RandomResolution.apply(out, 0.5)
    assert np.abs(np.asarray(again, float) - np.asarray(out, float)).mean() < \
        np.abs(np.asarray(out, float) - np.asarray(img, float)).mean() / 3
    assert RandomResolution.apply(img, 1.0) is img


def test_range_is_respected(monkeypatch):
    drawn = []
    real_apply = RandomResolution.apply
    monkeypatch.setattr(RandomResolution, "apply",
                        staticmethod(lambda img, r: drawn.append(r) or real_apply(img, r)))
    step = RandomResolution((0.3, 0.6))
    random.seed(0)
    for _ in range(200):
        assert step(_image(24, 12)).size == (12, 24)
    assert min(drawn) >= 0.3 and max(drawn) <= 0.6
    assert max(drawn) - min(drawn) > 0.25  # uniform over the range, not a constant


@pytest.mark.parametrize("bad", [(0, 1), (0.5, 0.25), (0.5, 1.5), (0.5,), "x"])
def test_bad_range_is_an_error(bad):
    with pytest.raises(ValueError, match="resolution_aug_range"):
        RandomResolution(bad)


def test_range_setting_nests_and_restores():
    assert current_range() == DEFAULT_RANGE
    with resolution_aug_range([0.5, 0.5]):
        assert current_range() == (0.5, 0.5)
        with resolution_aug_range((0.3, 0.9)):
            assert current_range() == (0.3, 0.9)
        assert current_range() == (0.5, 0.5)
    assert current_range() == DEFAULT_RANGE


def _datamanager(root, cache, transforms):
    with protocol_overrides(cache_dir=str(cache)):
        return torchreid.data.ImageDataManager(
            root=str(root), sources="caviar", targets="caviar", height=32, width=16, workers=0,
            batch_size_train=8, batch_size_test=8, use_gpu=False, transforms=transforms)


def test_plain_torchreid_datamanager_picks_it_up(tmp_path, capsys):
    root = synthetic.make_caviar(tmp_path)
    with resolution_aug_range((0.25, 0.5)):
        dm = _datamanager(root, tmp_path / "c", ["random_flip", "random_crop", "random_resolution"])
    assert "+ random resolution" in capsys.readouterr().out
    first = dm.transform_tr.transforms[0]
    assert isinstance(first, RandomResolution) and first.ratio_range == (0.25, 0.5)
    assert not any(isinstance(t, RandomResolution) for t in dm.transform_te.transforms)
    assert dm.train_loader.dataset.transform is dm.transform_tr
    batch = next(iter(dm.train_loader))
    assert batch["img"].shape == (8, 3, 32, 16)
    # off when not listed
    plain = _datamanager(root, tmp_path / "c", ["random_flip", "random_crop"])
    assert not any(isinstance(t, RandomResolution) for t in plain.transform_tr.transforms)


def test_config_key_reaches_the_transform(tmp_path):
    root = synthetic.make_caviar(tmp_path)
    cfg = get_default_config()
    cfg.merge_from_list(["data.root", str(root), "data.height", "32", "data.width", "16", "data.workers", "0",
                         "use_gpu", "False", "train.batch_size", "8", "mlr.cache_dir", str(tmp_path / "c"),
                         "data.transforms", "['random_resolution']",
                         "data.resolution_aug_range", "[0.5, 0.75]"])
    dm = build_datamanager(cfg)
    assert dm.transform_tr.transforms[0].ratio_range == (0.5, 0.75)
    cfg.data.resolution_aug_range = [0.0, 1.0]
    with pytest.raises(ConfigError, match="data.resolution_aug_range"):
        build_datamanager(cfg)


def _fixed(ratio):
    return T.Compose([RandomResolution((ratio, ratio)), T.Resize((96, 40)), T.ToTensor()])


def test_dataset_applies_it_to_the_genuine_lr_image_before_the_upscale(tmp_path):
    root = synthetic.make_caviar(tmp_path)  # LR images are 40x16, HR 96x40
    ds = CAVIAR(root=root, cache_dir=tmp_path / "c", verbose=False, mode="query", transform=_fixed(0.5))
    item = ds[0]
    assert item["is_lr"] and item["hw"].tolist() == [40, 16]
    with Image.open(item["impath"]) as im:
        raw = im.convert("RGB")
    expected = RandomResolution.apply(raw, 0.5).resize((40, 96), Image.BICUBIC)
    assert torch.allclose(item["img"], T.ToTensor()(expected))


def test_split_takes_only_a_leading_step_and_leaves_the_transform_alone():
    transform = _fixed(0.5)
    step, rest = split_leading_random_resolution(transform)
    assert step is transform.transforms[0] and len(transform.transforms) == 3
    assert [type(t) for t in rest.transforms] == [T.Resize, T.ToTensor]
    later = T.Compose([T.Resize((96, 40)), RandomResolution((0.5, 0.5)), T.ToTensor()])
    assert split_leading_random_resolution(later) == (None, later)
    assert split_leading_random_resolution(None) == (None, None)


def test_dataset_follows_a_replaced_transform(tmp_path):
    root = synthetic.make_caviar(tmp_path)
    ds = CAVIAR(root=root, cache_dir=tmp_path / "c", verbose=False, mode="query", transform=_fixed(0.25))
    blurred = ds[0]["img"]
    ds.transform = _fixed(1.0)
    with Image.open(ds[0]["impath"]) as im:
        raw = im.convert("RGB")
    assert torch.allclose(ds[0]["img"], T.ToTensor()(raw.resize((40, 96), Image.BICUBIC)))
    assert not torch.allclose(ds[0]["img"], blurred)


def test_both_views_of_a_pair_get_it(tmp_path):
    root = synthetic.make_caviar(tmp_path)
    sharp = CAVIAR(root=root, cache_dir=tmp_path / "c", verbose=False, pair_views=True,
                   transform=_fixed(1.0))
    blurred = CAVIAR(root=root, cache_dir=tmp_path / "c", verbose=False, pair_views=True,
                     transform=_fixed(0.25))

    def detail(x):  # mean absolute horizontal gradient: lower after a resolution loss
        return (x[..., 1:] - x[..., :-1]).abs().mean().item()

    for i in range(0, len(sharp), 5):
        random.seed(i)
        a = sharp[i]
        random.seed(i)
        b = blurred[i]  # same partner drawn
        for view in ("img_lr", "img_hr"):
            assert detail(b[view]) < 0.8 * detail(a[view]), (i, view)
