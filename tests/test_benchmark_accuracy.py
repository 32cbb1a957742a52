"""``benchmarks/accuracy.py``: argument checks, the ordering verdict, and a whole run on synthetic data."""
import importlib.util
import json
import math
from pathlib import Path

import pytest
from synthetic import make_caviar, make_viper

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "accuracy.py"


@pytest.fixture(scope="module")
def accuracy():
    """The benchmark script imported as a module (``benchmarks/`` is not a package)."""
    spec = importlib.util.spec_from_file_location("benchmark_accuracy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    assert default.datasets == ["caviar", "mlr_viper"] and default.methods == list(accuracy.METHODS)
    paper = accuracy.parse_args(base + ["--paper", "--split-ids", "3,5"])
    assert (paper.splits, paper.split_ids, paper.epochs) == (2, [3, 5], 60)
    assert (paper.height, paper.width) == (256, 128)
    assert paper.stepsize == 40 and paper.weights == ""


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Number of gallery samples is quite small")
def test_whole_run_on_synthetic_data(accuracy, data_tree, tmp_path, capsys):
    out, save = tmp_path / "accuracy.json", tmp_path / "save"
    code = accuracy.main(["--data-root", str(data_tree), "--datasets", "caviar,mlr_viper", "--splits", "1",
                          "--epochs", "1", "--height", "32", "--width", "16", "--batch-size", "8",
                          "--weights", "none", "--workers", "0", "--out", str(out), "--save-dir", str(save)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["settings"]["epochs_per_stage"] == 1 and report["settings"]["splits"] == [0]
    assert report["machine"]["torch_threads"] >= 1 and report["total_seconds"] > 0
    for dataset in ("caviar", "mlr_viper"):
        entry = report["datasets"][dataset]
        split = entry["splits"]["0"]
        assert list(split["methods"]) == list(accuracy.METHODS)
        for method, metrics in split["methods"].items():
            for key in ("rank1", "rank5", "rank10", "mAP"):
                assert math.isfinite(metrics[key]) and 0.0 <= metrics[key] <= 100.0, (dataset, method, key)
            assert metrics["rank10"] >= metrics["rank5"] >= metrics["rank1"]
            assert entry["summary"][method]["mean"]["rank1"] == pytest.approx(metrics["rank1"])
            assert split["timing"]["methods"][method]["seconds"] > 0
        weights = split["methods"]["ensemble"]["mean_anchor_weights"]
        assert len(weights) == 3 and all(0 < w <= 1 for w in weights)
        stages = split["timing"]["stages"]
        # shared stage-1 models are trained once and reused
        assert set(stages) == {"plain", "him_bicubic", "lim", "him_m1-2", "him_lim", "joint_m1-2",
                               "joint_m1-3", "joint_m1-4"}
        assert stages["him_lim"]["epochs"] == 0 and stages["joint_m1-3"]["starts_from"] == ["him_m1-2", "lim"]
        assert set(split["timing"]["methods"]["jbim"]["stages"]) == {"joint_m1-2", "him_m1-2", "lim"}
        assert entry["verdict"]["line"].startswith("paper ordering on rank1")
    assert not list(save.rglob("model")), "checkpoints are deleted after each split by default"
    assert (save / "caviar" / "split_0" / "joint_m1-2.log").is_file()
    printed = capsys.readouterr().out
    assert "| JBIM 3-anchor ensemble |" in printed and "verdict (caviar)" in printed
    assert "total time" in printed
