"""Crash tests: ``jbim-reid train`` / ``train-anchors`` killed with SIGKILL and run again.

A training subprocess on a tiny synthetic CAVIAR (OSNet-x0.25, 32x16 input, workers 0) is killed at
several moments (mid-epoch, while a checkpoint is written, between stages, after a joint checkpoint of
train-anchors); re-running the same command must finish with the metrics and weights of an
uninterrupted run.
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from synthetic import make_caviar

REPO = Path(__file__).resolve().parent.parent
CPU_CONFIG = str(REPO / "configs" / "caviar" / "jbim_osnet_x0_25_cpu.yaml")
TINY = ["data.height", "32", "data.width", "16", "train.max_epoch", "2", "train.batch_size", "8",
        "sampler.num_instances", "2", "data.workers", "0", "train.print_freq", "100",
        "test.batch_size", "32", "train.stepsize", "[1]"]
METRICS = ("rank1", "rank5", "rank10", "rank20", "mAP")
pytestmark = pytest.mark.slow


def jbim_reid(args, crash=None, module=False):
    """Run the CLI in a subprocess; ``crash`` is a ``JBIM_CRASH`` spec of tests/crash_hook.py."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    env.pop("JBIM_CRASH", None)
    if crash:
        env["JBIM_CRASH"] = crash
    head = ["-m", "jbim_reid.cli"] if module else ["-c", "import crash_hook; crash_hook.main()"]
    return subprocess.run([sys.executable, *head, *args], env=env, capture_output=True, text=True,
                          timeout=600)


def metrics(folder):
    results = json.loads((Path(folder) / "results.json").read_text())
    return {k: results[k] for k in METRICS}


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = make_caviar(tmp_path_factory.mktemp("data"), num_two_cam=8, num_one_cam=0)
    reference = tmp_path_factory.mktemp("reference")
    args = ["train", "--config-file", CPU_CONFIG, "data.root", str(root), "data.save_dir",
            str(reference)] + TINY
    done = jbim_reid(args, module=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"root": root, "reference": reference}


def test_train_all_killed_three_times_finishes_like_an_uninterrupted_run(setup, tmp_path):
    save_dir = tmp_path / "run"
    args = ["train", "--config-file", CPU_CONFIG, "data.root", str(setup["root"]), "data.save_dir",
            str(save_dir)] + TINY
    him, lim = save_dir / "stage_him" / "model", save_dir / "stage_lim" / "model"
    # 1. mid-epoch: 4 ids x 20 images in batches of 8 -> 10 steps per epoch; step 13 is in epoch 2
    killed = jbim_reid(args, crash="batch::13")
    assert killed.returncode == -signal.SIGKILL
    assert sorted(p.name for p in him.iterdir()) == ["model.pth.tar-1"]
    # 2. while the second LIM checkpoint is written: a partial temporary file, never a partial checkpoint
    killed = jbim_reid(args, crash="during:stage_lim/model:2")
    assert killed.returncode == -signal.SIGKILL
    assert "Resumed from" in killed.stdout and "model.pth.tar-1' (epoch 1 finished)" in killed.stdout
    assert sorted(p.name for p in lim.iterdir() if not p.name.startswith(".")) == ["model.pth.tar-1"]
    assert [p for p in lim.iterdir() if p.name.startswith(".model.pth.tar-2.")]
    # 3. between stages: LIM finished, joint not started
    killed = jbim_reid(args, crash="after:stage_lim/results.json:1")
    assert killed.returncode == -signal.SIGKILL
    assert "stage him: " in killed.stdout and "exists, skipped" in killed.stdout
    assert not (save_dir / "stage_joint").exists()
    assert not any(p.name.startswith(".") for p in lim.iterdir())  # the partial write was removed
    done = jbim_reid(args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("exists, skipped") == 3  # stages sr, him, lim
    assert metrics(save_dir) == metrics(setup["reference"])
    for stage in ("him", "lim", "joint"):
        assert metrics(save_dir / f"stage_{stage}") == metrics(setup["reference"] / f"stage_{stage}")
    checkpoint = Path("stage_joint") / "model" / "model.pth.tar-2"
    assert_same_weights(save_dir / checkpoint, setup["reference"] / checkpoint)


def test_train_anchors_killed_after_a_joint_checkpoint_finishes_like_an_uninterrupted_run(setup, tmp_path):
    # one split and one anchor at jbim.ratio 1/2: the same stages as `train` (each reseeded)
    args = ["train-anchors", "--config-file", CPU_CONFIG, "data.root", str(setup["root"]),
            "data.save_dir", str(tmp_path), "ensemble.splits", "[0]", "ensemble.anchors", "[0.5]"] + TINY
    killed = jbim_reid(args, crash="after:stage_joint/model:1")
    assert killed.returncode == -signal.SIGKILL
    anchor = tmp_path / "split_0" / "anchor_1_2"
    assert sorted(p.name for p in (anchor / "stage_joint" / "model").iterdir()) == ["model.pth.tar-1"]
    done = jbim_reid(args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Resumed from" in done.stdout and done.stdout.count("exists, skipped") == 3  # sr, him, lim
    assert metrics(anchor) == metrics(setup["reference"])
    assert_same_weights(anchor / "stage_joint" / "model" / "model.pth.tar-2",
                        setup["reference"] / "stage_joint" / "model" / "model.pth.tar-2")
