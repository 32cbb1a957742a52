"""Checkpoints every epoch, resume of model / optimizer / scheduler / epoch / random state, fallback."""
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import make_caviar
from test_engine import make_engine

from jbim_reid.cli import main
from jbim_reid.engines import checkpoint_path, list_checkpoints, rng_state, set_rng_state
from jbim_reid.utils.fileio import load_torch_file, save_torch_file

CPU_CONFIG = str(Path(__file__).parent.parent / "configs" / "caviar" / "jbim_osnet_x0_25_cpu.yaml")
TINY = ["data.height", "32", "data.width", "16", "train.batch_size", "8", "sampler.num_instances", "2",
        "data.workers", "0", "train.print_freq", "100", "test.batch_size", "32", "train.stepsize", "[2]"]
METRICS = ("rank1", "rank5", "rank10", "rank20", "mAP")


def test_random_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.normal()  # a cached gaussian is part of numpy's state
    save_torch_file({"rng": rng_state()}, tmp_path / "rng.pth")
    expected = (random.random(), np.random.normal(), torch.rand(3))
    set_rng_state(load_torch_file(tmp_path / "rng.pth")["rng"])
    again = (random.random(), np.random.normal(), torch.rand(3))
    assert again[:2] == expected[:2] and torch.equal(again[2], expected[2])


@pytest.mark.parametrize("freq, keep, eval_freq, expected", [
    (1, 2, -1, [2, 3]), (2, 0, -1, [2, 3]), (0, 0, 1, [1, 2, 3]), (1, 0, -1, [1, 2, 3])])
def test_checkpoint_frequency_and_retention(freq, keep, eval_freq, expected, tmp_path):
    engine = make_engine(sr="srcnn_915")
    engine.run(save_dir=str(tmp_path), max_epoch=3, print_freq=100, checkpoint_freq=freq,
               keep_checkpoints=keep, eval_freq=eval_freq)
    assert [epoch for epoch, _ in list_checkpoints(str(tmp_path))] == expected
    assert not [p for p in (tmp_path / "model").iterdir() if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def stage_run(tmp_path_factory):
    """``jbim-reid train`` of stage him, 3 epochs, default retention (the last 2 checkpoints)."""
    root = make_caviar(tmp_path_factory.mktemp("data"), num_two_cam=8, num_one_cam=0)
    save_dir = tmp_path_factory.mktemp("reference")
    args = ["train", "--config-file", CPU_CONFIG, "data.root", str(root), "jbim.stage", "him",
            "train.max_epoch", "3"] + TINY
    assert main(args + ["data.save_dir", str(save_dir)]) == 0
    return {"args": args, "save_dir": save_dir}


def metrics(folder):
    results = json.loads((Path(folder) / "results.json").read_text())
    return {k: results[k] for k in METRICS}


@pytest.mark.slow
def test_damaged_last_checkpoint_falls_back_and_resumes_exactly(stage_run, tmp_path, capsys):
    reference = stage_run["save_dir"]
    assert [e for e, _ in list_checkpoints(str(reference))] == [2, 3]
    copy = tmp_path / "run"
    (copy / "model").mkdir(parents=True)
    for epoch in (2, 3):
        Path(checkpoint_path(str(copy), epoch)).write_bytes(Path(checkpoint_path(str(reference), epoch)).read_bytes())
    last = Path(checkpoint_path(str(copy), 3))
    last.write_bytes(last.read_bytes()[:1000])  # as a disk-full or a copy cut short would leave it
    capsys.readouterr()
    assert main(stage_run["args"] + ["data.save_dir", str(copy)]) == 0
    out = capsys.readouterr().out
    assert f"'{last}'" in out and "falling back to the previous checkpoint" in out
    assert f"Resumed from '{checkpoint_path(str(copy), 2)}' (epoch 2 finished)" in out
    assert metrics(copy) == metrics(reference)
    ours = load_torch_file(last)["state_dict"]
    theirs = load_torch_file(checkpoint_path(str(reference), 3))["state_dict"]
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


@pytest.mark.slow
def test_finished_stage_is_skipped(stage_run, capsys):
    reference = stage_run["save_dir"]
    def stamps():  # every output file; the lock file records each run's PID
        return {p: p.stat().st_mtime_ns for p in reference.rglob("*") if p.is_file() and p.name != ".lock"}

    before = stamps()
    assert main(stage_run["args"] + ["data.save_dir", str(reference)]) == 0
    assert "exists, skipped" in capsys.readouterr().out
    assert stamps() == before


@pytest.mark.slow
def test_checkpoints_of_another_model_are_not_overwritten(stage_run, tmp_path, capsys):
    copy = tmp_path / "run"
    (copy / "model").mkdir(parents=True)
    theirs = Path(checkpoint_path(str(copy), 2))
    theirs.write_bytes(Path(checkpoint_path(str(stage_run["save_dir"]), 2)).read_bytes())
    capsys.readouterr()
    assert main(stage_run["args"] + ["data.save_dir", str(copy), "jbim.sr", "srcnn"]) == 2
    err = capsys.readouterr().err
    assert str(theirs) in err and "another model" in err and "'srcnn_915' vs 'srcnn'" in err
    assert [e for e, _ in list_checkpoints(str(copy))] == [2]
    assert main(stage_run["args"] + ["data.save_dir", str(tmp_path / "new"), "jbim.sr", "srcnn",
                                     "model.resume", str(theirs)]) == 2
    assert "another model" in capsys.readouterr().err


@pytest.mark.slow
def test_model_resume_continues_a_single_stage(stage_run, tmp_path, capsys):
    reference = stage_run["save_dir"]
    start = checkpoint_path(str(reference), 2)
    assert main(stage_run["args"] + ["data.save_dir", str(tmp_path), "model.resume", start]) == 0
    assert f"Resumed from '{start}' (epoch 2 finished)" in capsys.readouterr().out
    assert [e for e, _ in list_checkpoints(str(tmp_path))] == [3]
    assert metrics(tmp_path) == metrics(reference)
