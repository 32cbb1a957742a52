"""JBIM model: shapes, SR registry, joint-learning gradients, probe/gallery paths, weights loading."""

import pytest
import torch
import torch.nn.functional as F
import torchreid
from torch import nn

from jbim_reid.models import (JBIM, MODEL_BUILDERS, SR_MODELS, FusionHead, build_sr, load_jbim_checkpoint,
                              load_pretrained_weights)

H, W = 32, 16


def small(**kwargs):
    torch.manual_seed(0)
    kwargs.setdefault("backbone", "osnet_x0_25")
    return JBIM(kwargs.pop("num_classes", 5), height=H, width=W, **kwargs)


@pytest.mark.slow
def test_resnet50_forward_backward_shapes():
    model = JBIM(3, backbone="resnet50", height=64, width=32)
    x_lr, x_hr = torch.randn(2, 3, 64, 32), torch.randn(2, 3, 64, 32)
    out = model(x_lr, x_hr)
    assert out["him_hr_feat"].shape == (2, 2048) and out["lim_lr_bn"].shape == (2, 2048)
    assert out["fus_lr_feat"].shape == (2, 4096) and out["fus_hr_logits"].shape == (2, 3)
    assert out["sr_h2l"].shape == (2, 3, 64, 32)
    sum(v.sum() for k, v in out.items() if k.endswith("logits")).backward()
    assert model.sr.body[0].weight.grad is not None
    model.eval()
    assert model(x_lr).shape == (2, 4096) and model.feature_dim == 4096


def test_osnet_forward_shapes_train_and_eval():
    model = small()
    x = torch.randn(4, 3, H, W)
    out = model(x, x.flip(0))
    streams = {"him_hr", "him_h2l", "him_lr", "lim_lr", "lim_h2l"}
    for s in streams:
        assert out[f"{s}_feat"].shape == (4, 512) and out[f"{s}_logits"].shape == (4, 5)
    assert out["fus_lr_feat"].shape == out["fus_hr_feat"].shape == (4, 1024)
    model.eval()
    assert model(x, role="probe").shape == model(x, role="gallery").shape == (4, 1024)
    with pytest.raises(ValueError, match="role"):
        model(x, role="query")


@pytest.mark.parametrize("variant,dim", [("jbim", 1024), ("him", 512), ("lim", 512),
                                         ("him_lim", 1024)])
def test_variant_feature_dims(variant, dim):
    model = small(variant=variant).eval()
    assert model.feature_dim == dim
    assert model.probe_features(torch.randn(2, 3, H, W)).shape == (2, dim)


def test_fusion_dim_and_head():
    assert small(fusion_dim=64).eval().probe_features(torch.randn(2, 3, H, W)).shape == (2, 64)
    head = FusionHead(8, 4, num_classes=3)
    fused, logits = head(torch.randn(5, 8), torch.randn(5, 4))
    assert fused.shape == (5, 12) and logits.shape == (5, 3) and (fused >= 0).all()


def test_reid_loss_reaches_sr_parameters():
    model = small(variant="him")
    x_lr = torch.randn(4, 3, H, W)
    out = model(x_lr, torch.randn(4, 3, H, W))
    loss = F.cross_entropy(out["him_lr_logits"], torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for p in model.sr.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_bnneck_bias_stays_frozen_after_open_all_layers():
    model = small()
    torchreid.utils.open_all_layers(model)
    names = {n for n, _ in model.named_parameters()}
    assert "him.neck.bias" not in names and "him.neck.weight" in names
    assert torch.equal(model.him.neck.bias, torch.zeros(512))
    assert model.him.classifier.bias is None


class Recorder(nn.Module):
    def __init__(self, log, name):
        super().__init__()
        self.log, self.name = log, name

    def forward(self, x):
        self.log.append(self.name)
        return x


def test_probe_goes_through_sr_and_gallery_through_downsampling(monkeypatch):
    model = small().eval()
    log = []
    model.sr = Recorder(log, "sr")
    down = model.synthesize_lr
    monkeypatch.setattr(model, "synthesize_lr",
                        lambda x, hw=None, ratio=None: log.append("down") or down(x, hw))
    x = torch.randn(2, 3, H, W)
    model.probe_features(x)
    assert log == ["sr"]
    log.clear()
    model.gallery_features(x)
    assert log == ["down"]


def test_probe_and_gallery_features_follow_the_paper_formulas():
    model = small().eval()
    x = torch.randn(2, 3, H, W)
    with torch.no_grad():
        sr = model.pixels.from_pixels(model.sr(model.pixels.to_pixels(x)))  # SR in pixel space
        probe = model.fusion(model.him(sr)["bn"], model.lim(x)["bn"])[0]
        gallery = model.fusion(model.him(x)["bn"], model.lim(model.synthesize_lr(x))["bn"])[0]
        assert torch.allclose(model.probe_features(x), probe, atol=1e-6)
        assert torch.allclose(model.gallery_features(x), gallery, atol=1e-6)
        assert not torch.allclose(probe, gallery, atol=1e-3)


def test_synthesize_lr_keeps_size_and_removes_detail():
    model = small(ratio=0.25)
    x = torch.randn(2, 3, H, W)
    y = model.synthesize_lr(x)
    assert y.shape == x.shape and not torch.allclose(x, y)
    assert y.std() < x.std()  # low-pass: noise is smoothed away
    flat = torch.full((1, 3, H, W), 0.7)
    assert torch.allclose(model.synthesize_lr(flat), flat, atol=1e-5)
    assert not torch.allclose(model.synthesize_lr(x, ratio=0.5), y)


@pytest.mark.parametrize("name", sorted(SR_MODELS))
def test_sr_registry_keeps_size(name):
    kwargs = {"depth": 3, "channels": 8} if name == "vdsr" else {}
    sr = build_sr(name, **kwargs)
    x = torch.randn(2, 3, 20, 12)
    assert sr(x).shape == x.shape
    if name == "bicubic":
        assert sr(x) is x
    elif not name.endswith("_paper"):
        assert torch.allclose(sr(x), x, atol=0.1)  # residual nets start near the identity


@pytest.mark.parametrize("name,kernels", [("srcnn_paper", (9, 5, 5)), ("srcnn_915_paper", (9, 1, 5))])
def test_paper_srcnn_outputs_the_image_not_a_residual(name, kernels):
    sr = build_sr(name)
    assert not sr.residual and tuple(c.kernel_size[0] for c in sr.body[::2]) == kernels
    for conv in sr.body[::2]:  # all-zero weights: the paper's SRCNN gives its last bias, no input
        nn.init.zeros_(conv.weight)
        nn.init.constant_(conv.bias, 0.25)
    assert torch.allclose(sr(torch.rand(1, 3, 16, 8)), torch.full((1, 3, 16, 8), 0.25))
    assert build_sr(name.replace("_paper", "")).residual


def test_sr_plain_srcnn_and_unknown_name():
    assert build_sr("srcnn", residual=False)(torch.randn(1, 3, 16, 8)).shape == (1, 3, 16, 8)
    with pytest.raises(KeyError, match=r"'nosuch_sr'.*bicubic.*espcn.*srcnn.*vdsr"):
        build_sr("nosuch_sr")


def test_unknown_variant_and_bad_ratio():
    with pytest.raises(ValueError, match="variant 'both'"):
        small(variant="both")
    with pytest.raises(ValueError, match="ratio"):
        small(ratio=2.0)


def _save_state(path, module, prefix="", wrap=False, extra=None):
    state = {prefix + k: v + 1.0 if v.is_floating_point() else v for k, v in module.state_dict().items()}
    state.update(extra or {})
    torch.save({"state_dict": state} if wrap else state, path)
    return state


def test_load_pretrained_weights_reports_loaded_and_skipped(tmp_path):
    source = small().him.backbone
    path = tmp_path / "w.pth"
    _save_state(path, source, prefix="module.", wrap=True,
                extra={"classifier.weight": torch.zeros(1000, 128), "fc.0.weight": torch.zeros(2, 2)})
    target = small().him.backbone
    loaded, skipped = load_pretrained_weights(target, str(path))
    assert "conv1.conv.weight" in loaded and set(skipped) == {"classifier.weight", "fc.0.weight"}
    assert torch.equal(target.conv1.conv.weight, source.conv1.conv.weight + 1.0)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_pretrained_weights(target, str(tmp_path / "missing.pth"))


def test_pretrained_paths_fill_both_backbones_and_overrides(tmp_path):
    ref = small()
    both, him_only, sr_file = tmp_path / "both.pth", tmp_path / "him.pth", tmp_path / "sr.pth"
    _save_state(both, ref.him.backbone)
    torch.save({k: torch.zeros_like(v) for k, v in ref.him.backbone.state_dict().items()}, him_only)
    _save_state(sr_file, ref.sr)
    model = small(backbone_pretrained_path=str(both), him_pretrained_path=str(him_only),
                  sr_pretrained_path=str(sr_file))
    expected = ref.him.backbone.conv1.conv.weight + 1.0
    assert torch.equal(model.lim.backbone.conv1.conv.weight, expected)
    assert model.him.backbone.conv1.conv.weight.abs().sum() == 0
    assert torch.equal(model.sr.body[0].weight, ref.sr.body[0].weight + 1.0)


def test_builders_use_torchreid_signature(tmp_path):
    assert {"jbim_resnet50", "jbim_osnet_x1_0", "jbim_osnet_x0_25",
            "jbim_mobilenetv2_x1_0"} <= set(MODEL_BUILDERS)
    model = MODEL_BUILDERS["jbim_osnet_x0_25"](num_classes=7, loss="softmax", pretrained=False,
                                               use_gpu=False)
    assert isinstance(model, JBIM) and model.him.classifier.out_features == 7
    assert model.jbim_kwargs["backbone"] == "osnet_x0_25"


def test_load_jbim_checkpoint_rebuilds_model(tmp_path):
    model = small(variant="him_lim", ratio=0.25).eval()
    path = tmp_path / "ckpt.pth.tar"
    torch.save({"state_dict": model.state_dict(), "jbim_kwargs": model.jbim_kwargs, "epoch": 1}, path)
    again = load_jbim_checkpoint(str(path))
    assert again.variant == "him_lim" and again.ratio == 0.25 and not again.training
    x = torch.randn(2, 3, H, W)
    with torch.no_grad():
        assert torch.allclose(again.probe_features(x), model.probe_features(x))
    torch.save({"state_dict": model.state_dict()}, tmp_path / "plain.pth")
    with pytest.raises(KeyError, match="jbim_kwargs"):
        load_jbim_checkpoint(str(tmp_path / "plain.pth"))


def test_without_synthetic_lr_only_him_loses_its_h2l_stream():
    """Table 7's ablation removes HIM's x^{h2l} stream and L_sr only: LIM keeps x^{h2l} and the FFN's
    HR side stays F_fus(HIM(x^h), LIM(x^{h2l})), the gallery's test feature."""
    model = small().eval()  # eval: no dropout, deterministic BN, so the streams can be recomputed
    x_lr, x_hr = torch.randn(4, 3, H, W), torch.randn(4, 3, H, W)
    with torch.no_grad():
        out = model.forward_train(x_lr, x_hr, synthetic_lr=False)
        x_h2l = model.synthesize_lr(x_hr)
        expected_hr = model.fusion(model.him(x_hr)["bn"], model.lim(x_h2l)["bn"])[0]
    assert not any(k.startswith("him_h2l") for k in out) and "sr_h2l" not in out
    assert {"lim_lr_bn", "lim_h2l_bn", "him_hr_bn", "him_lr_bn"} <= set(out)
    assert not any(k.startswith("lim_hr") for k in out)
    assert torch.allclose(out["fus_hr_feat"], expected_hr, atol=1e-6)
    assert torch.allclose(out["fus_hr_feat"], model.gallery_features(x_hr), atol=1e-6)
    only_lim = model.forward_train(x_lr, x_hr, branches=("lim",), synthetic_lr=False)
    assert {k.rsplit("_", 1)[0] for k in only_lim} == {"lim_lr", "lim_h2l"}


def test_sr_module_runs_on_pixels_with_the_data_normalisation(tmp_path):
    """F_sr sees [0, 1] RGB: a net that clamps to [0, 1] leaves real images unchanged (it would
    cut normalised tensors), and a net that outputs grey 0.5 gives the normalised grey."""
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    model = small(norm_mean=mean, norm_std=std).eval()
    pixels = torch.rand(2, 3, H, W)
    x = (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    model.sr = Clamp()
    assert torch.allclose(model.super_resolve(x), x, atol=1e-5)
    model.sr = Grey()
    grey = (0.5 - torch.tensor(mean)) / torch.tensor(std)
    assert torch.allclose(model.super_resolve(x)[:, :, 3, 4], grey.expand(2, 3), atol=1e-6)
    assert model.jbim_kwargs["norm_mean"] == list(mean) and model.jbim_kwargs["norm_std"] == list(std)
    path = tmp_path / "ckpt.pth.tar"
    ref = small(norm_mean=mean, norm_std=std).eval()
    torch.save({"state_dict": ref.state_dict(), "jbim_kwargs": ref.jbim_kwargs}, path)
    again = load_jbim_checkpoint(str(path))
    assert "pixels.mean" not in again.state_dict()  # not saved: rebuilt from jbim_kwargs
    assert torch.allclose(again.pixels.std.flatten(), torch.tensor(std))
    with pytest.raises(ValueError, match="norm_std"):
        small(norm_std=(0.2, 0.0, 0.3))


class Clamp(nn.Module):
    def forward(self, x):
        return x.clamp(0, 1)


class Grey(nn.Module):
    def forward(self, x):
        return torch.full_like(x, 0.5)


def test_sr_pretrained_path_takes_bare_sr_weights_or_a_stage_sr_checkpoint(tmp_path):
    ref = small()
    bare, stage = tmp_path / "srcnn.pth", tmp_path / "stage_sr.pth.tar"
    state = {k: v + 1.0 for k, v in ref.sr.state_dict().items()}
    torch.save(state, bare)
    torch.save({"state_dict": {f"sr.{k}": v for k, v in state.items()}, "stage": "sr"}, stage)
    for path in (bare, stage):
        model = small(sr_pretrained_path=str(path))
        assert torch.equal(model.sr.body[0].weight, ref.sr.body[0].weight + 1.0), path


def test_bicubic_sr_ignores_an_sr_weight_file_quietly(tmp_path, recwarn):
    checkpoint = tmp_path / "him.pth.tar"
    torch.save({"state_dict": {f"sr.{k}": v for k, v in small().sr.state_dict().items()}}, checkpoint)
    model = small(sr="bicubic")
    assert "sr" not in model.load_weights(sr_path=str(checkpoint))
    assert not [w for w in recwarn if "nothing was loaded" in str(w.message)]


def test_synthesize_lr_takes_one_ratio_per_image():
    model = small(ratio=0.5)
    x = torch.rand(3, 3, H, W)
    hw = torch.tensor([[H, W], [H, W], [H // 2, W // 2]])
    mixed = model.synthesize_lr(x, hw, ratio=[0.5, 0.25, 0.5])
    for i, m in enumerate((0.5, 0.25, 0.5)):
        assert torch.allclose(mixed[i:i + 1], model.synthesize_lr(x[i:i + 1], hw[i:i + 1], ratio=m))
    assert torch.allclose(model.synthesize_lr(x, hw, ratio=torch.tensor([0.5] * 3)),
                          model.synthesize_lr(x, hw))
    with pytest.raises(ValueError, match="2 ratios for a batch of 3"):
        model.synthesize_lr(x, hw, ratio=[0.5, 0.25])
    with pytest.raises(ValueError, match="ratios must be in"):
        model.synthesize_lr(x, hw, ratio=1.5)


def test_train_ratios_draw_the_synthetic_lr_ratio_per_image(monkeypatch):
    assert small(ratio=0.25).train_ratios == [0.25]  # default: the anchor's ratio
    model = small(ratio=0.5, train_ratios=(0.5, 1 / 3, 0.25))
    assert model.jbim_kwargs["train_ratios"] == [0.5, 1 / 3, 0.25]
    seen = []
    down = model.synthesize_lr
    monkeypatch.setattr(model, "synthesize_lr",
                        lambda x, hw=None, ratio=None: seen.append(ratio) or down(x, hw, ratio))
    torch.manual_seed(0)
    x = torch.randn(16, 3, H, W)
    model.forward_train(x, x, branches=("lim",))
    assert len(seen) == 1 and len(seen[0]) == 16 and set(seen[0]) == {0.5, 1 / 3, 0.25}
    model.eval()
    seen.clear()
    model.gallery_features(x)
    assert seen == [None]  # the gallery's down_m keeps the anchor's ratio m
    with pytest.raises(ValueError, match="train_ratios"):
        small(train_ratios=(0.5, 0.0))


def test_synthetic_lr_ratio_is_taken_of_the_genuine_size():
    """An image of half the network size, upscaled, then shrunk by 1/2 of its genuine size must lose
    detail; shrinking the network-size tensor by 1/2 would give the genuine image back."""
    model = small(ratio=0.5)
    genuine = torch.rand(1, 3, H // 2, W // 2)
    x = F.interpolate(genuine, size=(H, W), mode="bicubic", align_corners=False)
    on_tensor = model.synthesize_lr(x)  # hw unknown: the tensor size
    on_genuine = model.synthesize_lr(x, hw=torch.tensor([[H // 2, W // 2]]))
    err_tensor = (on_tensor - x).pow(2).mean()
    err_genuine = (on_genuine - x).pow(2).mean()
    assert err_genuine > 5 * err_tensor


def test_synthetic_lr_sizes_per_image_and_no_shift_at_one_third():
    model = small(ratio=1 / 3)
    ramp = torch.linspace(0, 1, W).expand(1, 3, H, W).contiguous()
    x = torch.cat([ramp, ramp])
    out = model.synthesize_lr(x, hw=torch.tensor([[H, W], [H // 2, W // 2]]))
    assert not torch.allclose(out[0], out[1])  # each image shrunk to its own genuine size
    centre = (torch.arange(W, dtype=torch.float32) * out[0, 0, H // 2]).sum() / out[0, 0, H // 2].sum()
    expected = (torch.arange(W, dtype=torch.float32) * ramp[0, 0, 0]).sum() / ramp[0, 0, 0].sum()
    assert abs(centre - expected) < 0.35  # explicit sizes: no content shift (scale_factor shifts it)
