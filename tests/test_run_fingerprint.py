"""A finished (or unfinished) run is bound to its config: re-running ``jbim-reid train`` into its save dir
with another model, ratio or SR net stops (exit code 2) instead of skipping stages it never trained;
keys that do not change what is trained (logging, loader workers) still skip; ``--force-new`` starts over."""
import json
import shutil
from pathlib import Path

import pytest
from synthetic import CPU_CONFIG, TINY_OPTIONS

from jbim_reid.cli import main
from jbim_reid.training.checks import ConfigError, load_config
from jbim_reid.training.fingerprint import FINGERPRINT_ENTRY, OPERATIONAL_KEYS, config_fingerprint
from jbim_reid.training.resume import check_same_config
from jbim_reid.utils.fileio import load_torch_file

TINY = TINY_OPTIONS
STAGES = ("sr", "him", "lim", "joint")


@pytest.fixture(scope="module")
def finished(caviar_root, tmp_path_factory):
    """A finished ``jbim-reid train`` (``jbim.stage all``, one epoch per stage) and its options."""
    save_dir = tmp_path_factory.mktemp("log")
    args = ["--config-file", CPU_CONFIG, "data.root", str(caviar_root), "data.save_dir", str(save_dir)] + TINY
    assert main(["train"] + args) == 0
    return {"args": args, "save_dir": save_dir}


def checkpoint(save_dir: Path, stage: str) -> Path:
    folder = save_dir / f"stage_{stage}" / "model"
    return folder / ("sr_best.pth.tar" if stage == "sr" else "model.pth.tar-1")


def outputs(save_dir: Path) -> dict:
    """Every output file's bytes (the lock file records each run's PID)."""
    return {p: p.read_bytes() for p in sorted(save_dir.rglob("*")) if p.is_file() and p.name != ".lock"}


def copy_of(finished, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished["save_dir"], copy)
    return copy


@pytest.mark.slow
def test_every_stage_records_the_fingerprint_of_its_config_and_the_same_config_skips(finished, capsys):
    save_dir = finished["save_dir"]
    for stage in STAGES:
        recorded = load_torch_file(checkpoint(save_dir, stage))[FINGERPRINT_ENTRY]
        results = json.loads((save_dir / f"stage_{stage}" / "results.json").read_text())
        assert results[FINGERPRINT_ENTRY] == recorded
        assert recorded["keys"]["model.name"] == "osnet_x0_25" and len(recorded["fingerprint"]) == 16
        assert "data.save_dir" not in recorded["keys"] and "train.print_freq" not in recorded["keys"]
    top = json.loads((save_dir / "results.json").read_text())
    assert top[FINGERPRINT_ENTRY] == load_torch_file(checkpoint(save_dir, "joint"))[FINGERPRINT_ENTRY]
    before = outputs(save_dir)
    capsys.readouterr()
    assert main(["train"] + finished["args"]) == 0
    assert capsys.readouterr().out.count("exists, skipped") == 4
    assert outputs(save_dir) == before


@pytest.mark.slow
@pytest.mark.parametrize("key, value, then, now", [
    ("model.name", "osnet_x0_5", "'osnet_x0_25'", "'osnet_x0_5'"),
    ("jbim.ratio", "0.25", "0.5", "0.25"),
    ("jbim.sr", "srcnn", "'srcnn_915'", "'srcnn'"),
])
def test_another_model_ratio_or_sr_stops_and_leaves_the_run_alone(key, value, then, now, finished, capsys):
    save_dir = finished["save_dir"]
    before = outputs(save_dir)
    capsys.readouterr()
    assert main(["train"] + finished["args"] + [key, value]) == 2
    err = capsys.readouterr().err
    assert f"{key} was {then}, now {now}" in err and "--force-new" in err and "data.save_dir" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert outputs(save_dir) == before  # results.json and every checkpoint untouched


@pytest.mark.slow
@pytest.mark.parametrize("key, value", [("train.print_freq", "7"), ("data.workers", "1")])
def test_keys_that_do_not_change_the_training_still_skip(key, value, finished, capsys):
    assert key in OPERATIONAL_KEYS
    for stage in STAGES:
        assert key not in load_torch_file(checkpoint(finished["save_dir"], stage))[FINGERPRINT_ENTRY]["keys"]
    before = outputs(finished["save_dir"])
    capsys.readouterr()
    assert main(["train"] + finished["args"] + [key, value]) == 0
    assert capsys.readouterr().out.count("exists, skipped") == 4
    assert outputs(finished["save_dir"]) == before


@pytest.mark.slow
def test_an_unfinished_stage_continues_only_with_its_config(finished, tmp_path, capsys):
    """Two epochs for stage joint: its epoch-1 checkpoint was trained for one (another lr schedule)."""
    copy = copy_of(finished, tmp_path)
    args = finished["args"] + ["data.save_dir", str(copy), "jbim.stage_epochs", "{'joint': 2}"]
    capsys.readouterr()
    assert main(["train"] + args) == 2
    captured = capsys.readouterr()
    assert "train.max_epoch was 1, now 2" in captured.err and str(checkpoint(copy, "joint")) in captured.err
    assert captured.out.count("exists, skipped") == 3  # sr, him and lim were trained with this config
    assert not (copy / "stage_joint" / "model" / "model.pth.tar-2").exists()


@pytest.mark.slow
def test_force_new_trains_again_with_the_new_config(finished, tmp_path, capsys):
    copy = copy_of(finished, tmp_path)
    (copy / "notes.txt").write_text("kept")
    args = finished["args"] + ["data.save_dir", str(copy), "jbim.ratio", "0.25"]
    assert main(["train"] + args) == 2
    capsys.readouterr()
    assert main(["train", "--force-new"] + args) == 0
    out = capsys.readouterr().out
    assert "exists, skipped" not in out and f"removed '{copy / 'stage_sr'}'" in out
    for stage in STAGES:
        assert load_torch_file(checkpoint(copy, stage))[FINGERPRINT_ENTRY]["keys"]["jbim.ratio"] == 0.25
    assert json.loads((copy / "results.json").read_text())["config"]["jbim"]["ratio"] == 0.25
    assert (copy / "notes.txt").read_text() == "kept"  # only what training wrote is deleted
    # the flag may follow the options too; it cannot be combined with model.resume
    assert main(["train"] + args + ["jbim.stage", "him", "model.resume", "x.pth", "--force-new"]) == 2
    assert "--force-new deletes the earlier stages" in capsys.readouterr().err


def test_checkpoints_without_a_fingerprint_are_accepted_and_others_must_match(tmp_path):
    cfg = load_config(CPU_CONFIG, TINY)
    fingerprint = config_fingerprint(cfg)
    check_same_config({"state_dict": {}}, fingerprint, "old.pth.tar")  # written before runs recorded one
    check_same_config({FINGERPRINT_ENTRY: fingerprint}, fingerprint, "same.pth.tar")
    other = config_fingerprint(load_config(CPU_CONFIG, TINY + ["train.lr", "0.1", "jbim.alpha", "2.0"]))
    with pytest.raises(ConfigError, match=r"'other.pth.tar' was trained with another config \(jbim.alpha was "
                                          r"2.0, now 1.0; train.lr was 0.1, now 0.0015\)"):
        check_same_config({FINGERPRINT_ENTRY: other}, fingerprint, "other.pth.tar")


@pytest.mark.slow
def test_train_anchors_binds_finished_anchors_to_their_config_too(caviar_root, tmp_path, capsys):
    args = ["--config-file", CPU_CONFIG, "data.root", str(caviar_root), "data.save_dir", str(tmp_path),
            "ensemble.anchors", "[0.5]", "ensemble.splits", "[0]"] + TINY
    assert main(["train-anchors"] + args) == 0
    final = tmp_path / "split_0" / "anchor_1_2" / "stage_joint" / "model" / "model.pth.tar-1"
    assert load_torch_file(final)[FINGERPRINT_ENTRY]["keys"]["jbim.ratio"] == 0.5
    capsys.readouterr()
    assert main(["train-anchors"] + args + ["jbim.alpha", "2.0"]) == 2
    err = capsys.readouterr().err
    assert str(final) in err and "jbim.alpha was 1.0, now 2.0" in err and "--force-new" in err, err
    assert main(["train-anchors"] + args + ["train.print_freq", "7"]) == 0
    assert f"anchor 1/2 (1/1): '{final}' exists, skipped" in capsys.readouterr().out
    assert main(["train-anchors", "--force-new"] + args + ["jbim.alpha", "2.0"]) == 0
    assert load_torch_file(final)[FINGERPRINT_ENTRY]["keys"]["jbim.alpha"] == 2.0
