"""``benchmarks/diagnose.py``: stage checkpoints re-tested as trained and with parts switched off (SR, FFN, a branch)."""
import json

import pytest
import torch
from benchmark_scripts import load_benchmark
from synthetic import make_caviar

from jbim_reid.engines import checkpoint_path
from jbim_reid.models import JBIM
from jbim_reid.utils.fileio import save_torch_file


@pytest.fixture(scope="module")
def diagnose():
    return load_benchmark("diagnose")


@pytest.mark.filterwarnings("ignore:Number of gallery samples is quite small")
def test_each_stage_is_tested_with_and_without_its_sr(diagnose, tmp_path):
    root = make_caviar(tmp_path / "data", num_two_cam=8, num_one_cam=0)
    split_dir = tmp_path / "run" / "caviar" / "split_0"
    torch.manual_seed(0)
    # a non-residual random SRCNN scrambles the probe: switching it off must change the probe features
    model = JBIM(4, backbone="osnet_x0_25", sr="srcnn_paper", variant="him", height=32, width=16)
    save_torch_file({"state_dict": model.state_dict(), "jbim_kwargs": model.jbim_kwargs, "epoch": 1},
                    checkpoint_path(str(split_dir / "him_m1-2_e1"), 1))
    rows = diagnose.diagnose(str(tmp_path / "run"), str(root), "caviar", [0], height=32, width=16)
    assert set(rows) == {"him (as trained)", "him, SR replaced by bicubic"}  # no joint checkpoint: skipped
    for per_split in rows.values():
        assert set(per_split) == {"0"} and 0 <= per_split["0"]["rank1"] <= 100
    assert rows["him (as trained)"]["0"] != rows["him, SR replaced by bicubic"]["0"]
    assert diagnose.newest_checkpoint(str(split_dir), "joint_") is None


def test_joint_model_ablations_compute_the_features_they_name(diagnose):
    torch.manual_seed(0)
    model = JBIM(4, backbone="osnet_x0_25", variant="jbim", height=32, width=16).eval()
    x = torch.rand(2, 3, 32, 16)
    with torch.no_grad():
        f_h = model.him(model.super_resolve(x))["bn"]
        f_l = model.lim(x)["bn"]
        fused = model.probe_features(x)
        expected = {"FFN replaced by concatenation": torch.cat([f_h, f_l], 1), "its HIM branch alone": f_h,
                    "its LIM branch alone": f_l}
        for ablation, feature in expected.items():
            changed = JBIM(4, backbone="osnet_x0_25", variant="jbim", height=32, width=16).eval()
            changed.load_state_dict(model.state_dict())
            diagnose.ABLATIONS["jbim"][ablation](changed)
            assert torch.allclose(changed.probe_features(x), feature, atol=1e-5), ablation
        assert not torch.allclose(fused, expected["FFN replaced by concatenation"], atol=1e-3)


def _data_and_joint_checkpoint(tmp_path, stage: str, epoch: int):
    """Synthetic CAVIAR under tmp_path/data and a random joint model saved as ``stage``'s checkpoint in
    the benchmark's layout (tmp_path/run/caviar/split_0); returns the data root."""
    root = make_caviar(tmp_path / "data", num_two_cam=8, num_one_cam=0)
    torch.manual_seed(0)
    model = JBIM(4, backbone="osnet_x0_25", variant="jbim", height=32, width=16)
    save_torch_file({"state_dict": model.state_dict(), "jbim_kwargs": model.jbim_kwargs, "epoch": epoch},
                    checkpoint_path(str(tmp_path / "run" / "caviar" / "split_0" / stage), epoch))
    return root


@pytest.mark.filterwarnings("ignore:Number of gallery samples is quite small")
def test_joint_checkpoint_gets_every_row(diagnose, tmp_path):
    root = _data_and_joint_checkpoint(tmp_path, "joint_m1-2_h1_l1_e1", 1)
    out = tmp_path / "diagnosis.json"
    assert diagnose.main(["--save-dir", str(tmp_path / "run"), "--data-root", str(root), "--splits", "0",
                          "--height", "32", "--width", "16", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert set(rows) == {diagnose.row_label("jbim", a) for a in diagnose.ABLATIONS["jbim"]}
    assert set(report["summary"]) == set(rows)
    assert report["command"].startswith("python benchmarks/diagnose.py --save-dir ")
    assert set(report["code_version"]) == {"commit", "dirty"} and report["machine"]["cpu_count"] >= 1
    assert "jbim, FFN replaced by concatenation" in rows and "jbim (as trained)" in rows
    assert all(0 <= per_split["0"]["mAP"] <= 100 for per_split in rows.values())
    # a variant's stage folders are found through its tag, and only them
    assert diagnose.diagnose(str(tmp_path / "run"), str(root), "caviar", [0], height=32, width=16,
                             tag="xsra") == {}
    assert diagnose.stage_prefixes("xsra") == {"him": "him_m1-2_xsra_e", "jbim": "joint_m1-2_xsra_h"}


@pytest.mark.filterwarnings("ignore:Number of gallery samples is quite small")
def test_stage_prefixes_address_one_rung_of_a_search(diagnose, tmp_path):
    root = _data_and_joint_checkpoint(tmp_path, "joint_warm_m1-2_w27_h6_l6_e2", 2)
    args = ["--save-dir", str(tmp_path / "run"), "--data-root", str(root), "--splits", "0", "--height", "32",
            "--width", "16"]
    out = tmp_path / "diagnosis.json"
    # the other rung is not taken for this one: nothing found is an error, and nothing is written
    assert diagnose.main(args + ["--jbim-stage", "joint_warm_m1-2_w27_h0_l0_e", "--out", str(out)]) == 2
    assert not out.exists()
    assert diagnose.main(args + ["--jbim-stage", "joint_warm_m1-2_w27_h6_l6_e", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["rows"]) == {diagnose.row_label("jbim", a) for a in diagnose.ABLATIONS["jbim"]}
    assert report["stage_prefixes"]["jbim"] == "joint_warm_m1-2_w27_h6_l6_e"
