"""JBIMEngine: loss terms per stage, ablations, evaluation, checkpoints (fake in-memory datamanager)."""
import glob
import os

import numpy as np
import pytest
import torch
import torchreid
from torch.utils.data import DataLoader, Dataset

from jbim_reid.engines import JBIMEngine
from jbim_reid.models import JBIM, load_jbim_checkpoint

H, W = 32, 16


class FakeCrossResolutionDataset(Dataset):
    """In-memory dataset with the cross-resolution item contract (``hw``, ``is_lr``, ``pair_views``).

    Identity ``p`` has ``per_id`` HR images (camid 0, genuine size 64x32) and ``per_id`` LR images
    (camid 1, genuine size 16x8); pixels are a per-id colour plus noise.
    """

    def __init__(self, num_ids: int = 4, per_id: int = 2, mode: str = "train", side: str = "both",
                 seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.mode, self.pair_views = mode, False
        self.items = []
        for pid in range(num_ids):
            colour = torch.rand(3, 1, 1, generator=gen) * 2 - 1
            for is_lr in (False, True):
                if side != "both" and is_lr != (side == "lr"):
                    continue
                for _ in range(per_id):
                    img = colour + 0.3 * torch.randn(3, H, W, generator=gen)
                    hw = (16, 8) if is_lr else (64, 32)
                    self.items.append((img, pid, int(is_lr), hw, is_lr))
        self.data = [(f"fake_{i}.jpg", it[1], it[2], 0) for i, it in enumerate(self.items)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        img, pid, camid, hw, is_lr = self.items[index]
        item = {"img": img, "pid": pid, "camid": camid, "hw": torch.LongTensor(hw), "is_lr": is_lr,
                "impath": self.data[index][0], "dsetid": 0}
        if self.pair_views and self.mode == "train":
            partners = [it for it in self.items if it[1] == pid and it[4] != is_lr]
            other, other_hw = partners[index % len(partners)][0], partners[index % len(partners)][3]
            item["img_lr"], item["img_hr"] = (img, other) if is_lr else (other, img)
            item["hw_hr"] = torch.LongTensor(hw if not is_lr else other_hw)
        return item


class FakeDataManager:
    """The attributes of ``torchreid.data.ImageDataManager`` that ``JBIMEngine`` uses."""

    data_type = "image"
    sources = targets = ["fake"]
    height, width = H, W

    def __init__(self, num_ids: int = 4, batch_size: int = 8):
        train = FakeCrossResolutionDataset(num_ids, mode="train")
        self.query = FakeCrossResolutionDataset(num_ids, mode="query", side="lr", seed=1)
        self.gallery = FakeCrossResolutionDataset(num_ids, per_id=1, mode="gallery", side="hr", seed=2)
        self.num_train_pids = num_ids
        self.train_loader = DataLoader(train, batch_size=batch_size, shuffle=True, drop_last=True)
        self.test_loader = {"fake": {"query": DataLoader(self.query, batch_size=5),
                                     "gallery": DataLoader(self.gallery, batch_size=5)}}

    def fetch_test_loaders(self, name):
        return self.query.data, self.gallery.data


def make_engine(variant="jbim", stage="joint", sr="srcnn", lr=1e-3, **kwargs):
    torch.manual_seed(0)
    dm = FakeDataManager()
    model = JBIM(dm.num_train_pids, backbone="osnet_x0_25", sr=sr, variant=variant, height=H, width=W)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    return JBIMEngine(dm, model, optimizer, stage=stage, **kwargs)


def batch(engine):
    return next(iter(engine.train_loader))


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def changed(before, module):
    return any(not torch.equal(b, p) for b, p in zip(before, module.parameters()))


def test_joint_step_returns_every_term_as_float():
    engine = make_engine()
    summary = engine.forward_backward(batch(engine))
    for key in ("loss", "loss_him_reid", "loss_sr", "loss_lim", "loss_fus", "acc", "acc_him_reid",
                "acc_lim", "acc_fus"):
        assert isinstance(summary[key], float), key
    expected = (summary["loss_him_reid"] + summary["loss_sr"] + summary["loss_lim"]
                + 3.0 * summary["loss_fus"])
    assert summary["loss"] == pytest.approx(expected, rel=1e-5)


def test_training_makes_synthetic_lr_from_the_genuine_hr_size():
    engine = make_engine()
    seen = []
    synthesize = engine.model.synthesize_lr
    engine.model.synthesize_lr = lambda x, hw=None, ratio=None: seen.append(hw) or synthesize(x, hw, ratio)
    engine.forward_backward(batch(engine))
    assert len(seen) == 1 and (torch.as_tensor(seen[0]) == torch.tensor([64, 32])).all()


def test_stage_him_trains_sr_and_him_only():
    engine = make_engine(stage="him")
    model = engine.model
    sr, him, lim, fus = params(model.sr), params(model.him), params(model.lim), params(model.fusion)
    summary = engine.forward_backward(batch(engine))
    assert set(summary) >= {"loss_him_reid", "loss_sr"} and "loss_lim" not in summary
    assert "loss_fus" not in summary
    assert changed(sr, model.sr) and changed(him, model.him)
    assert not changed(lim, model.lim) and not changed(fus, model.fusion)


def test_stage_lim_trains_lim_only():
    engine = make_engine(variant="lim", stage="lim")
    lim = params(engine.model.lim)
    summary = engine.forward_backward(batch(engine))
    assert set(summary) == {"loss", "loss_lim", "acc_lim", "acc"}
    assert changed(lim, engine.model.lim)


def test_alpha_zero_still_trains_sr_through_reid():
    engine = make_engine(stage="him", alpha=0.0)
    sr = params(engine.model.sr)
    summary = engine.forward_backward(batch(engine))
    assert "loss_sr" not in summary
    assert changed(sr, engine.model.sr)


@pytest.mark.parametrize("variant,stage,kwargs", [
    ("him", "joint", {}),
    ("lim", "joint", {}),
    ("him_lim", "joint", {}),
    ("jbim", "joint", {"sr": "bicubic"}),
    ("jbim", "joint", {"synthetic_lr": False}),
    ("jbim", "joint", {"beta": 0.0}),
    ("jbim", "joint", {"weight_t": 0.0}),
])
def test_each_ablation_builds_and_steps(variant, stage, kwargs):
    engine = make_engine(variant=variant, stage=stage, **kwargs)
    summary = engine.forward_backward(batch(engine))
    assert np.isfinite(summary["loss"])
    if kwargs.get("synthetic_lr") is False:
        assert "loss_sr" not in summary
    if kwargs.get("beta") == 0.0:
        assert "loss_fus" not in summary
    if kwargs.get("weight_t") == 0.0:
        assert "acc_fus" in summary


def test_stage_needs_its_branch():
    with pytest.raises(ValueError, match="lim"):
        make_engine(variant="him", stage="lim")
    with pytest.raises(ValueError, match="stage"):
        make_engine(stage="everything")


def test_requires_pair_views_dataset():
    dm = FakeDataManager()
    dm.train_loader = DataLoader(torch.utils.data.TensorDataset(torch.zeros(2, 3, H, W)))
    model = JBIM(4, backbone="osnet_x0_25", height=H, width=W)
    with pytest.raises(TypeError, match="pair_views"):
        JBIMEngine(dm, model, torch.optim.Adam(model.parameters()))


def test_engine_switches_pair_views_on_and_has_a_scheduler():
    engine = make_engine()
    assert engine.train_loader.dataset.pair_views is True
    assert engine.scheduler is not None and "model" in engine.get_model_names()
    assert torchreid.engine.JBIMEngine is JBIMEngine


def test_evaluation_uses_probe_path_for_query_and_gallery_path_for_gallery():
    engine = make_engine()
    calls = []
    model = engine.model
    probe, gallery = model.probe_features, model.gallery_features
    model.probe_features = lambda x: calls.append(("probe", len(x))) or probe(x)
    gallery_hw = []
    model.gallery_features = lambda x, hw=None: (calls.append(("gallery", len(x)))
                                                 or gallery_hw.append(hw) or gallery(x, hw))
    engine.run(test_only=True)
    q, g = len(engine.datamanager.query), len(engine.datamanager.gallery)
    assert sum(n for role, n in calls if role == "probe") == q
    assert sum(n for role, n in calls if role == "gallery") == g
    # down_m of the gallery path is taken of the genuine sizes, which the engine passes on
    assert all(hw is not None and (torch.as_tensor(hw) == torch.tensor([64, 32])).all()
               for hw in gallery_hw)
    res = engine.last_results["fake"]
    assert res["distmat"].shape == (q, g)
    assert res["q_hw"].shape == (q, 2) and (res["q_hw"] == [16, 8]).all()
    assert res["g_hw"].shape == (g, 2) and (res["g_hw"] == [64, 32]).all()
    assert res["cmc"][-1] == pytest.approx(1.0) and 0 <= res["mAP"] <= 1
    assert set(res) >= {"q_pids", "g_pids", "q_camids", "g_camids"}


def test_evaluation_ranks_with_the_project_evaluator(monkeypatch):
    import jbim_reid.metrics as metrics

    seen = {}

    def fake_evaluator(distmat, q_pids, g_pids, q_camids, g_camids, **kwargs):
        seen["shape"] = distmat.shape
        return np.array([0.25, 1.0]), 0.5

    monkeypatch.setattr(metrics, "get_rank_evaluator", lambda: fake_evaluator)
    engine = make_engine()
    rank1, mAP = engine._evaluate("fake", *engine.test_loader["fake"].values())
    assert (rank1, mAP) == (0.25, 0.5) and seen["shape"] == (8, 4)


@pytest.mark.slow
def test_train_checkpoint_reload_gives_identical_features(tmp_path):
    engine = make_engine()
    engine.run(save_dir=str(tmp_path), max_epoch=1, print_freq=100)
    path = tmp_path / "model" / "model.pth.tar-1"
    assert path.is_file() and (tmp_path / "model").is_dir()
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint["jbim_kwargs"]["backbone"] == "osnet_x0_25" and checkpoint["epoch"] == 1
    reloaded = load_jbim_checkpoint(str(path))
    engine.model.eval()
    x = torch.randn(3, 3, H, W)
    with torch.no_grad():
        assert torch.allclose(reloaded.probe_features(x), engine.model.probe_features(x))
        assert torch.allclose(reloaded.gallery_features(x), engine.model.gallery_features(x))

    resumed = make_engine()
    assert resumed.resume(str(path)) == 1
    resumed.model.eval()
    with torch.no_grad():
        assert torch.allclose(resumed.model.probe_features(x), engine.model.probe_features(x))
    assert glob.glob(os.path.join(tmp_path, "events.out.tfevents*"))


@pytest.mark.parametrize("cross_stream", [True, False])
def test_cross_stream_triplet_compares_resolutions(cross_stream):
    # Within each stream the ids are far apart, but the LR stream sits far from the HR stream:
    # only a triplet mined across streams sees that an LR feature is not close to its HR match.
    engine = make_engine(stage="him", variant="him", weight_x=0.0, cross_stream_triplet=cross_stream)
    pids = torch.tensor([0, 0, 1, 1])
    hr = torch.tensor([[0.0, 0.0], [0.0, 0.1], [10.0, 0.0], [10.0, 0.1]])
    lr = hr + torch.tensor([0.0, 100.0])
    out = {"him_hr_feat": hr, "him_hr_logits": torch.zeros(4, 4),
           "him_lr_feat": lr, "him_lr_logits": torch.zeros(4, 4)}
    summary = {}
    loss = engine._cls_terms(out, "him", "him_reid", (("hr", "hr"), ("lr", "lr")),
                             {"hr": pids, "lr": pids}, summary)
    if cross_stream:  # one pooled triplet, weighted by the 2 streams pooled (the paper's total)
        pooled = torchreid.losses.TripletLoss(margin=0.3)(torch.cat([hr, lr]), torch.cat([pids, pids]))
        assert pooled.item() > 50.0 and loss.item() == pytest.approx(2 * pooled.item(), rel=1e-6)
    else:
        assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_paper_losses_by_default_one_triplet_per_stream():
    engine = make_engine()
    assert engine.cross_stream_triplet is False
    from jbim_reid.config import engine_kwargs, get_default_config

    assert engine_kwargs(get_default_config())["cross_stream_triplet"] is False


@pytest.mark.parametrize("cross_stream", [True, False])
def test_him_triplet_weight_is_three_streams(cross_stream):
    """Identical streams: per-stream triplets sum to 3x one stream's; the pooled one must too."""
    engine = make_engine(stage="him", variant="him", weight_x=0.0, cross_stream_triplet=cross_stream)
    pids = torch.tensor([0, 0, 1, 1])
    feat = torch.tensor([[0.0, 0.0], [0.0, 2.0], [1.0, 0.0], [1.0, 2.0]])  # positives far: loss > 0
    out = {f"him_{s}_{k}": v for s in ("hr", "h2l", "lr")
           for k, v in (("feat", feat), ("logits", torch.zeros(4, 4)))}
    one = torchreid.losses.TripletLoss(margin=0.3)(feat, pids).item()
    loss = engine._cls_terms(out, "him", "him_reid", (("hr", "hr"), ("h2l", "hr"), ("lr", "lr")),
                             {"hr": pids, "lr": pids}, {})
    assert one > 0 and loss.item() == pytest.approx(3 * one, rel=1e-5)


def test_sr_loss_is_the_pixel_mse_of_eq_2():
    """L_sr compares F_sr(x^{h2l}) with x^h in [0, 1] RGB, not in normalised units."""
    engine = make_engine(stage="him", variant="him", sr="bicubic")
    data = batch(engine)
    summary = engine.forward_backward(data)
    pixels = engine.model.pixels
    x_hr = data["img_hr"]
    x_h2l = engine.model.synthesize_lr(x_hr, data["hw_hr"])
    expected = torch.nn.functional.mse_loss(pixels.to_pixels(x_h2l), pixels.to_pixels(x_hr))
    assert summary["loss_sr"] == pytest.approx(expected.item(), rel=1e-4)


def test_without_synthetic_lr_lim_keeps_its_h2l_stream():
    engine = make_engine(synthetic_lr=False)
    engine.model.ratio, engine.model.train_ratios = 0.25, [0.25]  # 1/2 of 64x32 is the 32x16 tensor
    seen = []
    lim = engine.model.lim.forward
    engine.model.lim.forward = lambda x: seen.append(x) or lim(x)
    data = batch(engine)
    summary = engine.forward_backward(data)
    assert "loss_sr" not in summary and len(seen) == 2  # LIM: real LR and synthetic LR streams
    x_h2l = engine.model.synthesize_lr(data["img_hr"], data["hw_hr"])
    assert torch.allclose(seen[1], x_h2l) and not torch.allclose(seen[1], data["img_hr"])
