"""The ESPCN-style SR module (convs at 1/scale of the network size, sub-pixel upscaling, bicubic skip)."""
import pytest
import torch

from jbim_reid.models import JBIM, build_sr


def test_espcn_keeps_the_size_starts_near_identity_and_learns_details():
    torch.manual_seed(0)
    sr = build_sr("espcn")
    x = torch.randn(2, 3, 64, 32)
    y = sr(x)
    assert y.shape == x.shape
    assert 0 < (y - x).abs().max() < 0.05  # last layer starts near zero: close to the bicubic input
    # the residual is sub-pixel: one low-resolution cell drives a scale x scale block of output pixels
    with torch.no_grad():
        sr.body[-2].weight.normal_(std=0.1)
    delta = sr(x) - x
    assert delta.abs().mean() > 0.01
    cells = delta.reshape(2, 3, 16, 4, 8, 4)  # 4 x 4 blocks of the 64 x 32 output
    assert cells.std(dim=(3, 5)).mean() > 0  # not a plain nearest upscaling of one value per block


def test_espcn_runs_at_a_fraction_of_srcnn_cost_and_names_a_bad_size():
    espcn, srcnn = build_sr("espcn"), build_sr("srcnn")
    # multiply-adds per output pixel: convs at 1/16 of the pixels
    macs = lambda m, frac: frac * sum(c.weight.numel() for c in m.modules() if isinstance(c, torch.nn.Conv2d))  # noqa: E731
    assert macs(espcn, 1 / 16) * 20 < macs(srcnn, 1.0)
    with pytest.raises(ValueError, match="multiple of it, got 30x16"):
        espcn(torch.zeros(1, 3, 30, 16))
    assert build_sr("espcn", scale=2).scale == 2


def test_jbim_with_espcn_gives_probe_features():
    model = JBIM(num_classes=3, backbone="osnet_x0_25", sr="espcn", height=64, width=32).eval()
    with torch.no_grad():
        assert model.probe_features(torch.randn(2, 3, 64, 32)).shape == (2, model.feature_dim)
