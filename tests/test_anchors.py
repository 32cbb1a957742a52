"""``jbim-reid train-anchors`` and ``jbim-reid ensemble`` end to end on a tiny synthetic CAVIAR."""
import contextlib
import io
import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from synthetic import person_image

from jbim_reid import cli
from jbim_reid.commands.anchors import (ENSEMBLE_COMMANDS, add_ensemble_config, anchor_checkpoint, anchor_dir,
                                        anchor_label, resolve_splits, run_ensemble, shared_lim_dir,
                                        train_anchors)
from jbim_reid.config import get_default_config
from jbim_reid.evaluation.reports import METRICS
from jbim_reid.training import checks

CPU_CONFIG = str(Path(__file__).parent.parent / "configs" / "caviar" / "jbim_osnet_x0_25_cpu.yaml")
TINY = ["data.height", "32", "data.width", "16", "train.max_epoch", "1", "train.batch_size", "8",
        "sampler.num_instances", "2", "data.workers", "0", "train.print_freq", "100",
        "test.batch_size", "32", "ensemble.anchors", "[0.5, 0.25]", "ensemble.splits", "[0, 1]"]
ANCHORS = {"1/2": 0.5, "1/4": 0.25}


def make_look_alike_caviar(root: Path, num_ids: int = 12, num_looks: int = 3) -> Path:
    """CAVIAR4REID where ids share ``num_looks`` colours, so that ranks are not all 100%.

    ``synthetic.make_caviar`` gives each id its own colour: every model then ranks perfectly and a
    comparison of results could not fail. Ids 1..num_ids have both cameras (001-010 HR 96x40,
    011-020 LR 40x16); one more id has the HR camera only.
    """
    folder = root / "caviar" / "CAVIAR4REID" / "cropped_images"
    folder.mkdir(parents=True)
    for pid in range(1, num_ids + 2):
        for n in range(1, 21 if pid <= num_ids else 11):
            size = (96, 40) if n <= 10 else (40, 16)
            person_image(pid % num_looks + 1, size, seed=pid * 100 + n).save(folder / f"{pid:04d}{n:03d}.jpg")
    return root


def load(opts, config_file=CPU_CONFIG):
    """``checks.load_config`` once the ``ensemble`` node is in the defaults; until then the same by hand."""
    if "ensemble" in get_default_config():
        return checks.load_config(config_file, opts)
    cfg = add_ensemble_config(get_default_config())
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    cfg.freeze()
    return cfg


def command(name, opts):
    """``jbim-reid <name> --config-file CPU_CONFIG opts`` through ``cli.main`` when it is merged."""
    if name in cli.COMMANDS:
        return cli.main([name, "--config-file", CPU_CONFIG] + list(opts))
    return ENSEMBLE_COMMANDS[name][1](load(opts))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Trains 2 anchors on 2 splits (1 epoch per stage), then evaluates the ensemble."""
    root = make_look_alike_caviar(tmp_path_factory.mktemp("data"))
    save_dir = tmp_path_factory.mktemp("ensemble")
    opts = TINY + ["data.root", str(root), "data.save_dir", str(save_dir)]
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        assert command("train-anchors", opts) == 0
    assert command("ensemble", opts) == 0
    return {"cfg": load(opts), "opts": opts, "save_dir": save_dir, "log": log.getvalue(),
            "report": json.loads((save_dir / "ensemble.json").read_text())}


@pytest.mark.slow
def test_train_anchors_writes_each_anchor_and_shares_lim(run):
    cfg, save_dir = run["cfg"], run["save_dir"]
    for split in (0, 1):
        lim = Path(shared_lim_dir(cfg, split)) / "model" / "model.pth.tar-1"
        assert lim.is_file()
        for label, ratio in ANCHORS.items():
            folder = Path(anchor_dir(cfg, split, ratio))
            assert folder == save_dir / f"split_{split}" / f"anchor_{label.replace('/', '_')}"
            final = Path(anchor_checkpoint(cfg, split, ratio))
            assert final == folder / "stage_joint" / "model" / "model.pth.tar-1" and final.is_file()
            assert (folder / "stage_him" / "model" / "model.pth.tar-1").is_file()
            assert not (folder / "stage_lim").exists()  # LIM comes from the split's shared stage
            assert lim.stat().st_mtime <= final.stat().st_mtime
            checkpoint = torch.load(final, weights_only=True)
            assert checkpoint["jbim_kwargs"]["ratio"] == ratio and checkpoint["stage"] == "joint"
            results = json.loads((folder / "results.json").read_text())
            assert results["anchor"] == label and results["split_id"] == split
            assert results["config"]["data"]["split_id"] == split
            assert results["config"]["jbim"]["ratio"] == ratio


@pytest.mark.slow
def test_train_anchors_logs_progress_and_lim_reuse(run):
    log = run["log"]
    assert log.count("LIM stage trained once") == 2 and log.count("reused by all 2 anchors") == 2
    assert log.count("stage lim ->") == 2 and log.count("stage him ->") == 4
    assert "stages ['sr', 'him', 'lim', 'joint']" in log and log.count("stage sr ->") == 4
    for where in ("split 0 (1/2), anchor 1/2 (1/2)", "split 1 (2/2), anchor 1/4 (2/2)"):
        assert f"{where}: training" in log and f"{where}: done" in log


@pytest.mark.slow
def test_train_anchors_resumes_an_unfinished_anchor(run, tmp_path, capsys):
    copy = tmp_path / "ensemble"
    shutil.copytree(run["save_dir"], copy)
    cfg = load(run["opts"] + ["data.save_dir", str(copy)])
    Path(anchor_checkpoint(cfg, 1, 0.25)).unlink()
    assert train_anchors(cfg) == 0
    out = capsys.readouterr().out
    assert Path(anchor_checkpoint(cfg, 1, 0.25)).is_file()
    assert "split 1 (2/2), anchor 1/4 (2/2): training" in out
    assert "stage him: " in out and "stage lim: " in out  # finished stages of that anchor are reused
    assert out.count("stage him") == out.count("stage lim") == out.count("stage joint ->") == 1
    assert out.count("exists, skipped") == 3 + 3  # three finished anchors, sr, him and the shared LIM


@pytest.mark.slow
def test_train_anchors_rerun_skips_finished_anchors(run, capsys):
    finals = [Path(anchor_checkpoint(run["cfg"], s, m)) for s in (0, 1) for m in ANCHORS.values()]
    before = [f.stat().st_mtime_ns for f in finals]
    assert train_anchors(run["cfg"]) == 0
    out = capsys.readouterr().out
    assert out.count("exists, skipped") == 4  # the four anchors; no shared LIM stage is needed
    assert "stage lim" not in out and "stage him" not in out
    assert [f.stat().st_mtime_ns for f in finals] == before


@pytest.mark.slow
def test_ensemble_json_has_every_subset_and_weighting(run):
    report = run["report"]
    assert report["dataset"] == "caviar" and report["settings"]["anchors"] == ANCHORS
    assert report["settings"]["splits"] == [0, 1] and report["settings"]["sigma"] == 0.5
    assert report["config"]["ensemble"]["weighting"] == "both"
    subsets = {"1/2", "1/4", "1/2 + 1/4"}
    for split in ("0", "1"):
        entry = report["splits"][split]
        assert set(entry) == {"anchors", "gaussian", "uniform"}
        assert set(entry["anchors"]) == set(ANCHORS)
        assert set(entry["gaussian"]) == subsets and set(entry["uniform"]) == subsets
        for group in entry.values():
            for result in group.values():
                assert set(result) == set(METRICS)
                assert all(math.isfinite(v) and 0 <= v <= 100 for v in result.values())
                assert result["rank1"] <= result["rank5"] <= result["rank20"]
    for scheme in ("anchors", "gaussian", "uniform"):
        for name, summary in report["summary"][scheme].items():
            values = [report["splits"][s][scheme][name]["rank1"] for s in ("0", "1")]
            assert summary["num_splits"] == 2
            assert summary["mean"]["rank1"] == pytest.approx(sum(values) / 2, abs=1e-3)
            assert summary["std"]["rank1"] == pytest.approx(abs(values[0] - values[1]) / 2, abs=1e-3)
    # the look-alike ids keep the numbers away from 100%, so the equalities below can fail
    assert any(r["mAP"] < 99 for s in report["splits"].values() for r in s["anchors"].values())


@pytest.mark.slow
def test_one_anchor_subset_equals_that_anchor_alone(run):
    for split in (0, 1):
        for label, ratio in ANCHORS.items():
            trained = json.loads((Path(anchor_dir(run["cfg"], split, ratio)) / "results.json").read_text())
            entry = run["report"]["splits"][str(split)]
            for metric in METRICS:
                assert entry["anchors"][label][metric] == pytest.approx(trained[metric], abs=1e-3)
                for scheme in ("gaussian", "uniform"):
                    assert entry[scheme][label][metric] == pytest.approx(trained[metric], abs=1e-3)


@pytest.mark.slow
def test_ensemble_writes_markdown_and_plot(run):
    save_dir = run["save_dir"]
    markdown = (save_dir / "ensemble.md").read_text()
    for row in ("| 1/2 |", "| 1/4 |", "| 1/2 + 1/4 (gaussian) |", "| 1/2 + 1/4 (uniform) |"):
        assert row in markdown
    png = save_dir / "ensemble_cmc.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_missing_checkpoint_names_the_path_and_the_command(tmp_path, capsys):
    opts = TINY + ["data.root", str(tmp_path / "no_data"), "data.save_dir", str(tmp_path / "log")]
    expected = Path(anchor_checkpoint(load(opts), 0, 0.5))
    if "ensemble" in cli.COMMANDS:
        assert cli.main(["ensemble", "--config-file", CPU_CONFIG] + opts) == 2
        message = capsys.readouterr().err
    else:
        with pytest.raises(FileNotFoundError) as error:
            run_ensemble(load(opts))
        message = str(error.value)
    assert str(expected) in message and "jbim-reid train-anchors" in message
    assert not (tmp_path / "log" / "ensemble.json").exists()


def test_ensemble_config_round_trips_through_yaml_and_opts(tmp_path):
    cfg = add_ensemble_config(get_default_config())
    assert cfg.ensemble.anchors == pytest.approx([1 / 2, 1 / 3, 1 / 4])
    assert (cfg.ensemble.sigma, cfg.ensemble.weighting, cfg.ensemble.subsets) == (0.5, "both", "all")
    assert cfg.ensemble.splits == [] and cfg.ensemble.save_plots is True
    path = tmp_path / "cfg.yaml"
    path.write_text(cfg.dump())
    assert yaml.safe_load(path.read_text())["ensemble"]["anchors"] == cfg.ensemble.anchors
    again = add_ensemble_config(get_default_config())
    again.merge_from_file(str(path))
    again.merge_from_list(["ensemble.anchors", "[0.5, 0.3333]", "ensemble.splits", "[3]",
                           "ensemble.weighting", "uniform"])
    assert [anchor_label(m) for m in again.ensemble.anchors] == ["1/2", "1/3"]
    assert again.ensemble.splits == [3] and again.ensemble.weighting == "uniform"
    assert add_ensemble_config(again) is again and again.ensemble.splits == [3]  # idempotent


def test_anchor_names_and_default_splits():
    assert [anchor_label(m) for m in (0.5, 0.3333, 1 / 3, 0.25, 0.3, 1.0, 0.37, 0.12345)] == \
        ["1/2", "1/3", "1/3", "1/4", "3/10", "1", "0.37", "0.12345"]
    cfg = load(["data.save_dir", os.path.join("log", "x")])
    assert anchor_dir(cfg, 2, 1 / 3) == os.path.join("log", "x", "split_2", "anchor_1_3")
    assert anchor_dir(cfg, 0, 0.37) == os.path.join("log", "x", "split_0", "anchor_0p37")
    assert resolve_splits(cfg) == list(range(10))  # CAVIAR has 10 splits
    assert resolve_splits(load(["ensemble.splits", "[4, 7]"])) == [4, 7]


@pytest.mark.parametrize("opts, words", [
    (["ensemble.anchors", "[0.5, 0.5]"], ["ensemble.anchors", "1/2"]),
    (["ensemble.anchors", "[1.5]"], ["ensemble.anchors", "1.5"]),
    (["ensemble.weighting", "median"], ["ensemble.weighting", "median", "both"]),
    (["ensemble.subsets", "pairs"], ["ensemble.subsets", "pairs", "full"]),
    (["ensemble.splits", "[10]"], ["ensemble.splits", "10", "0..9"]),
])
def test_bad_ensemble_options_are_named(opts, words, tmp_path):
    cfg = load(opts + ["data.save_dir", str(tmp_path)])
    with pytest.raises(checks.ConfigError) as error:
        run_ensemble(cfg)
    assert all(word in str(error.value) for word in words)
