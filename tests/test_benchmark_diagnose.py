"""``benchmarks/diagnose.py``: stage checkpoints re-tested as trained and with the SR module switched off."""
import pytest
import torch
from benchmark_scripts import load_benchmark
from synthetic import make_caviar

from jbim_reid.engines import checkpoint_path
from jbim_reid.fileio import save_torch_file
from jbim_reid.models import JBIM

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
