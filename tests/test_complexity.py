"""Model complexity through torchreid (jbim_reid.evaluation.complexity)."""
import pytest
import torch
import torchreid
from torch import nn

from jbim_reid.evaluation.complexity import complexity_table, model_complexity


def test_hand_computed_module():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2), nn.Linear(2, 7))
    model.train()
    # conv: 4 x 6 x 2 outputs x (3*3*3 + 1 bias) = 1344 MACs, 112 params;
    # linears: 2 x (48 + 1) = 98 MACs, 98 params and 7 x (2 + 1) = 21 MACs, 21 params
    result = model_complexity(model, height=8, width=4)
    assert result["params_m"] == pytest.approx((112 + 98 + 21) / 1e6)
    assert result["macs_g"] == pytest.approx((1344 + 98 + 21) / 1e9)
    assert result["total_params_m"] == pytest.approx(231 / 1e6)
    assert model.training  # torchreid restores the mode


def test_matches_torchreid_on_osnet():
    model = torchreid.models.build_model("osnet_x0_25", num_classes=10, pretrained=False)
    params, flops = torchreid.utils.compute_model_complexity(model, (1, 3, 64, 32))
    result = model_complexity(model, height=64, width=32)
    assert result["params_m"] == pytest.approx(params / 1e6)
    assert result["macs_g"] == pytest.approx(flops / 1e9)
    assert result["total_params_m"] > result["params_m"]  # the classifier is not used at test time


def test_jbim_roles():
    from jbim_reid.models import JBIM

    model = JBIM(num_classes=3, backbone="osnet_x0_25", ratio=0.5, height=64, width=32)
    probe = model_complexity(model, height=64, width=32)
    assert model_complexity(model, height=64, width=32, role="probe") == probe
    gallery = model_complexity(model, height=64, width=32, role="gallery")
    assert probe["macs_g"] > gallery["macs_g"] > 0  # the probe path runs the SR module on top
    assert probe["params_m"] > gallery["params_m"]
    with pytest.raises(ValueError, match="Unknown role 'both'"):
        model_complexity(model, role="both")


def test_complexity_table():
    table = complexity_table({"JBIM (OSNet x0.25), ours": {"params_m": 1.234, "macs_g": 0.5678}})
    lines = table.strip().split("\n")
    assert lines[0] == "| model | params (M) | MACs (G) |"
    assert lines[2] == "| JBIM (ResNet-50), paper Table 2 | 52.96 | 13.96 |"
    assert lines[3] == "| JBIM (OSNet x0.25), ours | 1.23 | 0.57 |"
    assert len(complexity_table({"m": {"params_m": 1, "macs_g": 1}}, include_paper=False).strip().split("\n")) == 3
    with pytest.raises(ValueError, match="row 'm' lacks \\['macs_g'\\]"):
        complexity_table({"m": {"params_m": 1}})


def test_input_reaches_the_model_at_the_requested_size():
    seen = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            seen.append(tuple(x.shape))
            return self.fc(x.mean(dim=(2, 3)))

    model_complexity(Probe(), height=20, width=10)
    assert seen == [(1, 3, 20, 10)]
    assert torch.is_grad_enabled()
