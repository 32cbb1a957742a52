"""``benchmarks/accuracy.py`` and ``report.py``: arguments, verdict, plateau search, budget, resumable runs."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from benchmark_scripts import load_benchmark
from synthetic import make_caviar, make_viper

from jbim_reid.training.checks import load_config


@pytest.fixture(scope="module")
def accuracy():
    """The benchmark script imported as a module (``benchmarks/`` is not a package)."""
    return load_benchmark("accuracy")


@pytest.fixture(scope="module")
def accuracy_runs(accuracy):
    """``benchmarks/accuracy_runs.py`` as the script imported it (where ``SplitRunner`` finds ``run_stage``)."""
    return sys.modules[accuracy.SplitRunner.__module__]


@pytest.fixture(scope="module")
def data_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_caviar(root, num_two_cam=8, num_one_cam=1)
    make_viper(root, num_ids=12)
    return root


def summary(mean, std, splits=3):
    return {"num_splits": splits, "mean": {"rank1": mean}, "std": {"rank1": std}}


def test_verdict_holds_only_when_every_margin_beats_the_spread(accuracy):
    rows = {"plain": summary(20, 1), "lim_only": summary(30, 2), "him_only": summary(32, 2),
            "jbim": summary(40, 3)}
    line, checks = accuracy.ordering_verdict(rows)
    assert line.startswith("paper ordering on rank1 HOLDS")
    assert len(checks) == 5 and all(c["status"] == "clear" for c in checks)
    rows["jbim"] = summary(33, 3)  # above HIM-only by 1, less than the spread of 3
    line, checks = accuracy.ordering_verdict(rows)
    assert "holds only within the spread" in line
    by_pair = {(c["above"], c["below"]): c for c in checks}
    assert by_pair[("jbim", "him_only")]["status"] == "within spread"
    assert by_pair[("jbim", "him_only")]["margin"] == pytest.approx(1.0)
    rows["plain"] = summary(31, 1)  # plain above LIM-only
    line, checks = accuracy.ordering_verdict(rows)
    assert "DOES NOT HOLD" in line
    reversed_pairs = {(c["above"], c["below"]) for c in checks if c["status"] == "reversed"}
    assert reversed_pairs == {("lim_only", "plain")}


def test_verdict_skips_pairs_not_run(accuracy):
    line, checks = accuracy.ordering_verdict({"plain": summary(20, 0, 1), "jbim": summary(20, 0, 1)})
    assert [c["status"] for c in checks] == ["tied"] and "1 split" in line
    assert accuracy.ordering_verdict({"plain": summary(20, 0)})[1] == []


def test_missing_weights_file_is_a_clear_error(accuracy, data_tree, tmp_path, capsys):
    missing = tmp_path / "nope.pth"
    with pytest.raises(SystemExit) as err:
        accuracy.parse_args(["--data-root", str(data_tree), "--weights", str(missing)])
    assert err.value.code == 2
    message = capsys.readouterr().err
    assert str(missing) in message and "--weights none" in message


@pytest.mark.parametrize("argv, needle", [
    (["--methods", "jbim,srgan"], "srgan"),
    (["--datasets", "market"], "market"),
    (["--batch-size", "10"], "multiple of 4"),
])
def test_bad_arguments_name_the_value(accuracy, data_tree, capsys, argv, needle):
    with pytest.raises(SystemExit):
        accuracy.parse_args(["--data-root", str(data_tree), "--weights", "none"] + argv)
    assert needle in capsys.readouterr().err


def test_missing_dataset_folder_fails_before_training(accuracy, tmp_path, capsys):
    make_caviar(tmp_path)
    with pytest.raises(SystemExit):
        accuracy.parse_args(["--data-root", str(tmp_path), "--weights", "none",
                             "--datasets", "caviar,mlr_viper"])
    assert "viper/VIPeR/cam_a" in capsys.readouterr().err


def test_budgets(accuracy, data_tree):
    base = ["--data-root", str(data_tree), "--weights", "none"]
    default = accuracy.parse_args(base)
    assert (default.splits, default.epochs, default.height, default.width) == (2, 4, 128, 64)
    assert default.split_ids == [0, 1] and default.stepsize == 3
    assert default.datasets == ["caviar", "mlr_viper"] and default.methods == list(accuracy.DEFAULT_METHODS)
    paper = accuracy.parse_args(base + ["--paper", "--split-ids", "3,5"])
    assert (paper.splits, paper.split_ids, paper.epochs) == (2, [3, 5], 60)
    assert (paper.height, paper.width) == (256, 128)
    assert paper.stepsize == 40 and paper.weights == ""
    standard = accuracy.parse_args(base + ["--standard-run"])
    assert standard.split_ids_of == {"caviar": [0, 1, 2, 3, 4], "mlr_viper": [0, 1, 2]}
    assert {"plain", "plain_resaug", "jbim", "jbim_resaug", "plain_time_matched"} <= set(standard.methods)


def test_plateau_search_pairs_splits_and_stops_when_neither_metric_rises_beyond_noise(accuracy):
    calls = []
    difficulty = np.array([0.0, 8.0, -6.0])  # splits differ far more than the models do

    def evaluate(epochs):  # every split gains 2 rank-1 points per step until 27 epochs, then +-1 noise
        calls.append(epochs)
        level = 2.0 * min(len([e for e in (8, 12, 18, 27) if e <= epochs]), 4)
        noise = np.array([1.0, -1.0, 0.5]) * (epochs > 27) * (1 if epochs % 2 else -1)
        rank1 = 10 + difficulty + level + noise
        return {"rank1": list(rank1), "mAP": list(rank1 + 15 - (epochs > 27) * 0.2)}

    found = accuracy.plateau_search(evaluate, 8, 200, progress=lambda line: None)
    # the old rule (mean gain 2 vs split std ~5.7) would have stopped at 8
    assert found["status"] == "plateau" and found["epochs"] == 27
    assert [(t["epochs"], t["next_epochs"]) for t in found["trace"]] == [(8, 12), (12, 18), (18, 27), (27, 40)]
    first, last = found["trace"][0], found["trace"][-1]
    assert first["rank1"]["gain"] == pytest.approx(2.0) and first["rank1"]["noise"] == pytest.approx(0.0)
    assert first["rises"] and not last["rises"]
    assert last["rank1"]["gain"] <= last["rank1"]["noise"] and last["mAP"]["gain"] <= last["mAP"]["noise"]
    capped = accuracy.plateau_search(lambda e: {"rank1": [float(e)], "mAP": [float(e)]}, 8, 20,
                                     progress=lambda line: None)
    assert (capped["epochs"], capped["status"], len(capped["trace"])) == (18, "max_epochs", 2)  # 27 > 20
    assert accuracy.next_epochs(1) == 2 and accuracy.next_epochs(40) == 60


def test_plateau_step_keeps_going_when_only_map_rises_beyond_noise(accuracy):
    flat = {"rank1": [10.0, 14.0, 12.0], "mAP": [25.0, 30.0, 28.0]}
    rank1_noise = {"rank1": [12.0, 12.0, 12.0], "mAP": [25.1, 29.9, 28.0]}
    assert not accuracy.plateau_step(flat, rank1_noise)["rises"]  # +2, -2, 0: gain 0
    map_up = {"rank1": [10.4, 13.6, 12.0], "mAP": [27.0, 31.5, 30.1]}  # rank-1 flat, mAP up on every split
    step = accuracy.plateau_step(flat, map_up)
    assert step["rises"] and step["mAP"]["diffs"] == pytest.approx([2.0, 1.5, 2.1])
    with pytest.raises(ValueError, match="plateau step: paired_gain needs the same non-empty splits"):
        accuracy.plateau_step(flat, {"rank1": [1.0], "mAP": [1.0]})


def test_budget_planner_with_a_fake_cost_table(accuracy):
    costs = {"plain": 1.0, "bicubic": 2.0, "him": 3.0, "lim": 2.0, "joint": 5.0}
    # plain only, cheap: epochs capped at the maximum, then as many splits as fit
    plan = accuracy.plan_budget(10, ["plain"], ["caviar"], costs, max_splits=10, max_epochs=60)
    per_split = 60 * 1.0 + accuracy.STAGE_OVERHEAD_S
    assert plan["epochs"] == 60 and plan["splits"] == min(10, int(600 // per_split))
    assert plan["estimated_seconds"] <= 600
    # JBIM: one split, the most epochs that fit
    plan = accuracy.plan_budget(10, ["plain", "jbim"], ["caviar"], costs, max_splits=10, max_epochs=60)
    per_epoch = 1 + 3 + 2 + 5
    assert plan["splits"] == 1 and plan["epochs"] == int((600 - 4 * accuracy.STAGE_OVERHEAD_S) // per_epoch)
    assert plan["estimated_seconds"] <= 600
    # shared stages are counted once; 256x128 costs 4x the measured 128x64
    assert accuracy.stage_counts(["jbim", "him_only", "ensemble"]) == {"him": 1, "lim": 1, "joint": 3}
    big = accuracy.plan_budget(10, ["plain", "jbim"], ["caviar"], costs, 10, 60, pixels_scale=4.0)
    assert big["epochs"] < plan["epochs"] and big["estimated_seconds"] <= 600
    with pytest.raises(ValueError, match="--budget-min 1"):
        accuracy.plan_budget(1, ["jbim"], ["caviar", "mlr_viper"], costs, 10, 60)


def test_budget_from_the_command_line(accuracy, data_tree, tmp_path, capsys):
    base = ["--data-root", str(data_tree), "--weights", "none", "--datasets", "caviar"]
    args = accuracy.parse_args(base + ["--paper", "--budget-min", "10", "--methods", "plain"])
    assert args.plan["estimated_seconds"] <= 600 and args.epochs == args.plan["epochs"] <= 60
    assert args.split_ids == list(range(args.plan["splits"]))
    with pytest.raises(SystemExit):
        accuracy.parse_args(base + ["--budget-min", "10", "--plateau"])
    assert "--plateau" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        accuracy.parse_args(base + ["--budget-min", "0.1", "--methods", "jbim"])
    assert "not even one split" in capsys.readouterr().err


def _fake_report(path, seconds_per_epoch):
    stages = {f"{kind}_e4": {"seconds_per_epoch": s, "epochs": 4} for kind, s in seconds_per_epoch.items()}
    stages["him_lim_h4_l4"] = {"seconds_per_epoch": None, "epochs": 0}
    path.write_text(json.dumps({"datasets": {"caviar": {"splits": {"0": {"stages": stages}}}}}))
    return path


def test_measured_costs_replace_the_table(accuracy, tmp_path):
    report = _fake_report(tmp_path / "r.json",
                          {"plain": 2.0, "him_m1-2": 4.0, "lim": 3.0, "joint_m1-2_h4_l4": 6.0})
    assert accuracy.measured_costs(str(report)) == {"plain": 2.0, "him": 4.0, "lim": 3.0, "joint": 6.0}


ARGS = ["--height", "32", "--width", "16", "--batch-size", "8", "--weights", "none", "--workers", "0",
        "--sr-epochs", "1"]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Number of gallery samples is quite small")
def test_whole_run_on_synthetic_data(accuracy, data_tree, tmp_path, capsys):
    out, save = tmp_path / "accuracy.json", tmp_path / "save"
    argv = ["--data-root", str(data_tree), "--datasets", "caviar", "--splits", "1", "--epochs", "1",
            "--out", str(out), "--save-dir", str(save)] + ARGS
    assert accuracy.main(argv) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["epochs"] == 1 and report["settings"]["splits"] == {"caviar": [0]}
    assert report["code_version"]["commit"] and isinstance(report["code_version"]["dirty"], bool)
    assert report["machine"]["torch_threads"] >= 1 and report["total_seconds"] > 0
    entry = report["datasets"]["caviar"]
    split = entry["splits"]["0"]
    assert list(split["methods"]) == accuracy.DEFAULT_METHODS
    for method, metrics in split["methods"].items():
        for key in ("rank1", "rank5", "rank10", "mAP"):
            assert math.isfinite(metrics[key]) and 0.0 <= metrics[key] <= 100.0, (method, key)
        assert metrics["rank10"] >= metrics["rank5"] >= metrics["rank1"]
        assert metrics["seconds"] > 0
        assert entry["summary"][method]["mean"]["rank1"] == pytest.approx(metrics["rank1"])
    assert split["methods"]["jbim"]["epochs"] == {"him": 1, "lim": 1, "joint": 1}
    assert len(split["methods"]["ensemble"]["mean_anchor_weights"]) == 3
    alone = split["runs"]["ensemble"]["him=1,lim=1,joint=1"]["metrics"]["anchors"]
    assert list(alone) == ["1/2", "1/3", "1/4"] and alone["1/2"]["rank1"] == split["methods"]["jbim"]["rank1"]
    assert all(a["median_distance"] > 0 for a in alone.values())
    # shared stage-1 models are trained once; resaug methods train their own
    stages = split["stages"]
    assert {"plain_e1", "plain_ra_e1", "him_bicubic_e1", "lim_e1", "him_m1-2_e1", "him_lim_h1_l1",
            "joint_m1-2_h1_l1_e1", "joint_m1-3_h1_l1_e1", "joint_m1-4_h1_l1_e1", "him_m1-2_ra_e1", "lim_ra_e1",
            "joint_m1-2_ra_h1_l1_e1"} <= set(stages)
    assert stages["joint_m1-3_h1_l1_e1"]["starts_from"] == ["him_m1-2_e1", "lim_e1"]
    jbim_run = split["runs"]["jbim"]["him=1,lim=1,joint=1"]
    assert set(jbim_run["stages"]) == {"joint_m1-2_h1_l1_e1", "him_m1-2_e1", "lim_e1", "sr_m1-2"}
    # stage sr (SR pre-training) initialises HIM; its PSNR against bicubic is recorded
    assert stages["him_m1-2_e1"]["starts_from"] == ["sr_m1-2"]
    sr = stages["sr_m1-2"]["sr"]
    assert sr["psnr_gain"] == pytest.approx(sr["psnr_sr"] - sr["psnr_bicubic"])
    assert jbim_run["seconds"] == pytest.approx(sum(stages[n]["seconds"] for n in jbim_run["stages"]))
    # plain given JBIM's training time
    per_epoch = split["methods"]["plain"]["seconds"] / 1
    matched = split["methods"]["plain_time_matched"]["epochs"]["plain"]
    assert matched == max(1, round(jbim_run["seconds"] / per_epoch))
    assert entry["verdict"]["line"].startswith("paper ordering on rank1")
    assert (save / "caviar" / "split_0" / "joint_m1-2_h1_l1_e1.log").is_file()
    printed = capsys.readouterr().out
    assert "| JBIM + random resolution |" in printed and "| plain torchreid, JBIM's training time |" in printed
    # report.py regenerates the tables from the JSON
    assert load_benchmark("report").main([str(out)]) == 0
    table = capsys.readouterr().out
    assert "| JBIM | " in table and "him=1,lim=1,joint=1" in table
    assert report["code_version"]["commit"][:12] in table
    # re-run: everything is recorded, nothing is trained again
    assert accuracy.main(argv) == 0
    assert " stage " not in capsys.readouterr().out
    assert json.loads(out.read_text())["datasets"]["caviar"]["splits"]["0"]["methods"] == split["methods"]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Number of gallery samples is quite small")
def test_interrupted_plateau_run_resumes_from_its_records(accuracy, data_tree, tmp_path, monkeypatch, capsys):
    out = tmp_path / "a.json"
    argv = ["--data-root", str(data_tree), "--datasets", "caviar,mlr_viper", "--splits", "2", "--epochs", "1",
            "--plateau", "--max-epochs", "2", "--methods", "plain,plain_resaug", "--out", str(out)] + ARGS
    real_plain, trained = accuracy.SplitRunner.plain, set()

    def dies_on_the_third(self, epochs, resaug=False, name=""):
        trained.add((self.save_dir, epochs, resaug))
        if len(trained) == 3:
            raise KeyboardInterrupt  # the session is killed
        return real_plain(self, epochs, resaug, name)

    monkeypatch.setattr(accuracy.SplitRunner, "plain", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        accuracy.main(argv)
    runs = json.loads(out.read_text())["datasets"]["caviar"]["splits"]
    assert {k: list(v["runs"]["plain"]) for k, v in runs.items()} == {"0": ["plain=1"], "1": ["plain=1"]}
    monkeypatch.setattr(accuracy.SplitRunner, "plain", real_plain)
    capsys.readouterr()
    assert accuracy.main(argv) == 0
    printed = capsys.readouterr().out
    caviar = [line for line in printed.splitlines() if line.startswith("[caviar split")]
    assert not any("stage plain_e1 " in line for line in caviar)  # the two recorded runs are skipped
    assert any("stage plain_e2 " in line for line in caviar)
    report = json.loads(out.read_text())
    for dataset in ("caviar", "mlr_viper"):
        entry = report["datasets"][dataset]
        assert set(entry["plateau"]) == {"plain:plain", "plain_resaug:plain"}
        for search in entry["plateau"].values():
            assert search["epochs"] in (1, 2) and search["trace"][0]["epochs"] == 1
            method = search["probe"]
            assert entry["summary"][method]["epochs"] == f"plain={search['epochs']}"
            assert set(entry["splits"]["0"]["runs"][method]) == {"plain=1", "plain=2"}
    assert "Plateau search" in printed
    # another recipe may not mix into these records
    with pytest.raises(SystemExit) as err:
        accuracy.main(argv[:-len(ARGS)] + ["--height", "64"] + ARGS[2:])
    assert err.value.code == 2 and "height" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:Number of gallery samples is quite small")
def test_splits_run_apart_merge_into_one_record(accuracy, data_tree, tmp_path, capsys):
    save = tmp_path / "save"
    common = ["--data-root", str(data_tree), "--datasets", "caviar", "--epochs", "1", "--methods", "plain",
              "--save-dir", str(save)] + ARGS
    part = [tmp_path / "split0.json", tmp_path / "split1.json"]
    for split_id, out in enumerate(part):  # two processes, one split each
        assert accuracy.main(common + ["--split-ids", str(split_id), "--out", str(out)]) == 0
    capsys.readouterr()
    both = common + ["--split-ids", "0,1", "--out", str(part[0])]
    assert accuracy.main(both + ["--merge-from", str(part[1])]) == 0
    printed = capsys.readouterr().out
    assert "merged 1 run(s) and 1 stage(s)" in printed and " stage " not in printed  # nothing trained again
    report = json.loads(part[0].read_text())
    other = json.loads(part[1].read_text())["datasets"]["caviar"]["splits"]["1"]
    assert report["datasets"]["caviar"]["splits"]["1"]["runs"] == other["runs"]
    assert report["datasets"]["caviar"]["summary"]["plain"]["num_splits"] == 2
    assert report["merged_from"] == [{"path": str(part[1]), "runs": 1, "stages": 1}]
    assert any("--split-ids 1 " in c for c in report["commands"])
    # a recorded run is never replaced; records of another recipe or no records at all are refused
    assert accuracy.main(both + ["--merge-from", str(part[1])]) == 0
    assert "merged 0 run(s) and 0 stage(s)" in capsys.readouterr().out
    for bad, expected in ((common[:-len(ARGS)] + ["--height", "64"] + ARGS[2:], "height"), (None, "records JSON")):
        path = tmp_path / "bad.json"
        if bad is None:
            path.write_text("[1, 2]")
        else:
            assert accuracy.main(bad + ["--split-ids", "0", "--out", str(path), "--restart"]) == 0
        capsys.readouterr()
        with pytest.raises(SystemExit) as err:
            accuracy.main(both + ["--merge-from", str(path)])
        message = capsys.readouterr().err
        assert err.value.code == 2 and str(path) in message and expected in message
    assert json.loads(part[0].read_text())["datasets"] == report["datasets"]  # nothing lost


def test_a_rerun_stage_appends_to_its_log(accuracy, data_tree, monkeypatch, tmp_path):
    monkeypatch.setenv("JBIM_DATA_ROOT", str(data_tree))
    args = accuracy.parse_args(["--datasets", "caviar", "--splits", "1", "--batch-size", "8"])
    runner = accuracy.SplitRunner(accuracy.build_config(args, "caviar", 0), str(tmp_path))
    for text in ("epochs 1-3 before the crash", "epochs 4-6 after the resume"):
        with runner.logged("him_m1-2_e6"):
            print(text)
    log = (tmp_path / "him_m1-2_e6.log").read_text()
    assert "epochs 1-3 before the crash" in log and "epochs 4-6 after the resume" in log
    assert log.count("===== ") == 2  # each run of the stage starts with a dated header


def test_only_runs_with_a_learned_sr_record_the_sr_in_their_recipe(accuracy, monkeypatch, data_tree):
    monkeypatch.setenv("JBIM_DATA_ROOT", str(data_tree))
    plain = [accuracy._recipe(accuracy.parse_args(["--methods", "plain,plain_resaug,bicubic", "--sr", sr]))
             for sr in ("espcn", "srcnn_915")]
    assert plain[0] == plain[1] and "sr" not in plain[0]  # plain records go on under another --sr
    jbim = [accuracy._recipe(accuracy.parse_args(["--methods", "plain,jbim", "--sr", sr]))
            for sr in ("espcn", "srcnn_915")]
    assert jbim[0]["sr"] == "espcn" and accuracy._fingerprint(jbim[0]) != accuracy._fingerprint(jbim[1])


def _run(rank1, seconds=10.0):
    return {"metrics": {"rank1": rank1, "rank5": rank1 + 10, "rank10": rank1 + 20, "rank20": rank1 + 30,
                        "mAP": rank1 + 5}, "seconds": seconds}


def test_report_compares_runs_of_several_reports_on_the_same_splits():
    report_py = load_benchmark("report")
    plain = {"datasets": {"caviar": {"splits": {
        str(k): {"runs": {"plain": {"plain=12": _run(10.0 + k), "plain=18": _run(20.0 + k)}}} for k in range(5)}}}}
    jbim = {"datasets": {"caviar": {"splits": {
        "0": {"runs": {"jbim": {"him=12,lim=12,joint=12": _run(30.0, 60.0)}}},
        "1": {"runs": {"jbim": {"him=12,lim=12,joint=12": _run(34.0, 80.0)}}}}}}}
    rows = report_py.runs_on_splits([plain, jbim], "caviar", ["0", "1"])
    assert list(rows) == ["plain torchreid [plain=12]", "plain torchreid [plain=18]",
                          "JBIM [him=12,lim=12,joint=12]"]
    assert rows["plain torchreid [plain=12]"]["mean"]["rank1"] == pytest.approx(10.5)  # splits 0-1 only
    assert rows["JBIM [him=12,lim=12,joint=12]"]["std"]["rank1"] == pytest.approx(2.0)
    assert rows["JBIM [him=12,lim=12,joint=12]"]["seconds"] == pytest.approx(70.0)
    assert "JBIM" not in str(report_py.runs_on_splits([plain, jbim], "caviar", ["0", "1", "2"]))
    table = report_py.comparison_markdown([plain, jbim], "caviar", ["0", "1"])
    assert "| JBIM [him=12,lim=12,joint=12] | 32.0 ± 2.0 |" in table
    # paired: JBIM - plain=18 is +10 on split 0 and +13 on split 1 (mean 11.5, standard error 1.5)
    paired = report_py.comparison_markdown([plain, jbim], "caviar", ["0", "1"], baseline="plain torchreid [plain=18]")
    assert "| JBIM [him=12,lim=12,joint=12] | +11.5 ± 1.5 | +11.5 ± 1.5 | 2 / 0 |" in paired
    assert "| plain torchreid [plain=12] | -10.0 ± 0.0 | -10.0 ± 0.0 | 0 / 2 |" in paired
    one = report_py.comparison_markdown([plain, jbim], "caviar", ["1"], baseline="plain torchreid [plain=18]")
    assert "| JBIM [him=12,lim=12,joint=12] | 34.0 | 44.0 | 54.0 | 39.0 |" in one  # no spread on one split
    assert "| JBIM [him=12,lim=12,joint=12] | +13.0 | +13.0 | 1 / 0 |" in one
    with pytest.raises(KeyError, match="plain=99"):
        report_py.comparison_markdown([plain], "caviar", ["0", "1"], baseline="plain torchreid [plain=99]")


def test_stage_epochs_pin_kinds_and_plateau_searches_only_the_others(accuracy, data_tree, monkeypatch):
    monkeypatch.setenv("JBIM_DATA_ROOT", str(data_tree))
    base = ["--datasets", "caviar", "--splits", "2", "--methods", "jbim", "--stage-epochs", "him=12,lim=12"]
    args = accuracy.parse_args(base + ["--epochs", "8"])
    bench = accuracy._Benchmark(args, accuracy.Records("", {"recipe_fingerprint": "x", "command": ""}), "")
    assert bench.spec_of("caviar", "jbim", {}) == {"him": 12, "lim": 12, "joint": 8}
    asked = []

    def evaluate(dataset, split_id, method, spec):  # joint gains 3 per step until 18 epochs
        asked.append((method, dict(spec)))
        value = 10.0 + split_id + 3 * min(spec["joint"], 18) / 6
        return {"metrics": {"rank1": value, "mAP": value + 10}}

    args = accuracy.parse_args(base + ["--epochs", "8", "--plateau"])
    bench = accuracy._Benchmark(args, accuracy.Records("", {"recipe_fingerprint": "x", "command": ""}), "")
    bench.records.report["datasets"]["caviar"] = {}
    monkeypatch.setattr(bench, "evaluate", evaluate)
    plateaus = {}
    assert bench.spec_of("caviar", "jbim", plateaus) == {"him": 12, "lim": 12, "joint": 18}
    assert list(plateaus) == ["jbim:joint"] and plateaus["jbim:joint"]["fixed"] == {"him": 12, "lim": 12}
    assert {m for m, _ in asked} == {"jbim"} and all(s["him"] == 12 and s["lim"] == 12 for _, s in asked)
    for bad in ("sr=3", "him=0", "him"):
        with pytest.raises(SystemExit):
            accuracy.parse_args(base[:-1] + [bad])


def test_diagnosis_variants_train_their_own_stages_with_their_settings(accuracy, accuracy_runs, data_tree, monkeypatch,
                                                                      tmp_path):
    monkeypatch.setenv("JBIM_DATA_ROOT", str(data_tree))
    defaults = accuracy.parse_args([]).methods
    for variant in ("jbim_xstream", "jbim_xstream_resaug", "jbim_xstream_multiratio"):
        assert variant not in defaults  # run only when named
    args = accuracy.parse_args(["--datasets", "caviar", "--splits", "1", "--sr-epochs", "0", "--methods",
                                "jbim,jbim_xstream,jbim_multiratio,lim_only_xstream,jbim_resaug,jbim_xstream_resaug,"
                                "jbim_xstream_multiratio,jbim_genuine",
                                "--batch-size", "8"])
    trained, used_ratio = {}, {}

    def fake_run_stage(cfg, datamanager, stage, save_dir, *args, **kwargs):
        name = os.path.basename(save_dir)
        trained[name] = (stage, cfg.jbim.cross_stream_triplet, list(cfg.jbim.train_ratios),
                         "random_resolution" in cfg.data.transforms)
        used_ratio[name] = cfg.jbim.ratio
        return SimpleNamespace(last_results={"caviar": {"stage": name}}), save_dir

    monkeypatch.setattr(accuracy_runs, "run_stage", fake_run_stage)
    runner = accuracy.SplitRunner(accuracy.build_config(args, "caviar", 0), str(tmp_path))
    spec = {"him": 2, "lim": 3, "joint": 4}
    assert runner.method("lim_only_xstream", spec) == {"stage": "lim_xs_e3"}
    for method in args.methods:
        runner.method(method, spec)
    ratios = [0.5, 1 / 3, 0.25]
    assert trained == {
        "him_m1-2_e2": ("him", False, [], False), "lim_e3": ("lim", False, [], False),
        "joint_m1-2_h2_l3_e4": ("joint", False, [], False),
        "him_m1-2_xs_e2": ("him", True, [], False), "lim_xs_e3": ("lim", True, [], False),
        "joint_m1-2_xs_h2_l3_e4": ("joint", True, [], False),
        "him_m1-2_mr_e2": ("him", False, ratios, False), "lim_mr_e3": ("lim", False, ratios, False),
        "joint_m1-2_mr_h2_l3_e4": ("joint", False, ratios, False),
        "him_m1-2_ra_e2": ("him", False, [], True), "lim_ra_e3": ("lim", False, [], True),
        "joint_m1-2_ra_h2_l3_e4": ("joint", False, [], True),
        "him_m1-2_xsra_e2": ("him", True, [], True), "lim_xsra_e3": ("lim", True, [], True),
        "joint_m1-2_xsra_h2_l3_e4": ("joint", True, [], True),
        "him_m1-2_xsmr_e2": ("him", True, ratios, False), "lim_xsmr_e3": ("lim", True, ratios, False),
        "joint_m1-2_xsmr_h2_l3_e4": ("joint", True, ratios, False),
        # genuine: m = the training LR's genuine ratio, sqrt(40*16 / (96*40)) = 0.41 in the fixture
        "him_m0.41_gr_e2": ("him", False, [], False), "lim_gr_e3": ("lim", False, [], False),
        "joint_m0.41_gr_h2_l3_e4": ("joint", False, [], False)}
    assert {n: r for n, r in used_ratio.items() if "_gr_" in n} == {
        "him_m0.41_gr_e2": 0.41, "lim_gr_e3": 0.41, "joint_m0.41_gr_h2_l3_e4": 0.41}
    assert all(r == 0.5 for n, r in used_ratio.items() if "_gr_" not in n)
    assert accuracy.variant_of("jbim_xstream_resaug") == "xstream_resaug"  # the longest suffix, not "resaug"
    assert accuracy.base_of("jbim_xstream_resaug") == "jbim"
    assert accuracy.variant_of("jbim_xstream_multiratio") == "xstream_multiratio"
    assert runner.method_stages("jbim_xstream", spec) == ["joint_m1-2_xs_h2_l3_e4", "him_m1-2_xs_e2", "lim_xs_e3"]
    assert accuracy.search_plan("jbim_xstream") == [("him", "him_only_xstream"), ("lim", "lim_only_xstream"),
                                                     ("joint", "jbim_xstream")]
    assert accuracy.stage_counts(["jbim", "jbim_xstream", "lim_only_multiratio"]) == {"him": 2, "lim": 3, "joint": 2}
    # the ensemble of a variant fuses that variant's anchors (joint stages at m = 1/3, 1/4 of its own)
    assert runner.method_stages("ensemble_xstream", spec)[:3] == [
        "joint_m1-2_xs_h2_l3_e4", "joint_m1-3_xs_h2_l3_e4", "joint_m1-4_xs_h2_l3_e4"]
    assert accuracy.search_plan("ensemble_xstream")[-1] == ("joint", "jbim_xstream")
    assert accuracy.stage_counts(["ensemble_xstream"]) == {"him": 1, "lim": 1, "joint": 3}
    assert "ensemble_xstream" not in defaults


def test_nosr_variant_puts_bicubic_in_place_of_sr_and_shares_the_base_lim(accuracy, accuracy_runs, data_tree,
                                                                         monkeypatch, tmp_path):
    monkeypatch.setenv("JBIM_DATA_ROOT", str(data_tree))
    args = accuracy.parse_args(["--datasets", "caviar", "--splits", "1", "--sr-epochs", "3", "--methods",
                                "jbim_nosr", "--batch-size", "8"])
    assert "jbim_nosr" not in accuracy.parse_args([]).methods  # a diagnosis variant: run only when named
    trained = {}

    def fake_run_stage(cfg, datamanager, stage, save_dir, *args, **kwargs):
        name = os.path.basename(save_dir)
        trained[name] = (stage, cfg.jbim.sr, cfg.jbim.alpha, kwargs.get("sr_checkpoint", ""))
        return SimpleNamespace(last_results={"caviar": {"stage": name}}), save_dir

    monkeypatch.setattr(accuracy_runs, "run_stage", fake_run_stage)
    runner = accuracy.SplitRunner(accuracy.build_config(args, "caviar", 0), str(tmp_path))
    spec = {"him": 2, "lim": 3, "joint": 4}
    assert runner.method("jbim_nosr", spec) == {"stage": "joint_m1-2_bi_h2_l3_e4"}
    base_sr, base_alpha = args.sr, accuracy.build_config(args, "caviar", 0).jbim.alpha
    # no SR pre-training stage, bicubic and no SR loss where HIM is; the LIM is the base recipe's
    assert trained == {"him_m1-2_bi_e2": ("him", "bicubic", 0.0, ""),
                       "lim_e3": ("lim", base_sr, base_alpha, ""),
                       "joint_m1-2_bi_h2_l3_e4": ("joint", "bicubic", 0.0, "")}
    assert runner.method_stages("jbim_nosr", spec) == ["joint_m1-2_bi_h2_l3_e4", "him_m1-2_bi_e2", "lim_e3"]
    assert accuracy.stage_counts(["jbim", "jbim_nosr"]) == {"him": 2, "lim": 1, "joint": 2}


def test_mlr_viper_cpu_config_is_the_benchmarked_xstream_resaug_recipe(accuracy, accuracy_runs, data_tree):
    """``configs/mlr_viper/jbim_xstream_resaug_mobilenetv2_cpu.yaml`` trains what the README's MLR-VIPeR
    row ``jbim_xstream_resaug`` measured: every key equal but where data, weights and logs live."""
    path = Path(__file__).parent.parent / "configs" / "mlr_viper" / "jbim_xstream_resaug_mobilenetv2_cpu.yaml"
    args = accuracy.parse_args(["--data-root", str(data_tree), "--datasets", "mlr_viper", "--weights", "none",
                                "--sr", "espcn", "--sr-epochs", "20", "--sr-patience", "5", "--epochs", "12"])
    benchmarked = accuracy_runs._with(accuracy.build_config(args, "mlr_viper", 0), 12, "xstream_resaug")
    config = load_config(str(path))
    config.defrost()
    for key in ("data.root", "data.save_dir", "model.pretrained"):
        section, name = key.split(".")
        setattr(getattr(config, section), name, getattr(getattr(benchmarked, section), name))
    assert config == benchmarked


def test_records_being_written_do_not_make_the_code_dirty(accuracy, tmp_path, monkeypatch):
    records_module = sys.modules[accuracy.Records.__module__]
    repo = tmp_path / "repo"
    (repo / "benchmarks" / "results").mkdir(parents=True)
    (repo / "benchmarks" / "results" / "a.json").write_text("{}")
    (repo / "train.py").write_text("x = 1\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-qm", "init"]):
        subprocess.run(git + cmd, check=True)
    monkeypatch.setattr(records_module, "REPO_ROOT", repo)
    assert records_module.code_version()["dirty"] is False
    (repo / "benchmarks" / "results" / "a.json").write_text('{"runs": 1}')  # a benchmark records a run
    assert records_module.code_version()["dirty"] is False
    (repo / "train.py").write_text("x = 2\n")
    assert records_module.code_version()["dirty"] is True
