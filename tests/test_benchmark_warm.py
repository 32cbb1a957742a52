"""The accuracy benchmark's data-driven methods: ``jbim_auto`` (the recipe auto resolves to, sharing that
variant's runs) and ``jbim_warm`` (started from the split's kept plain + random resolution model)."""
import json
import sys

import pytest
from benchmark_scripts import load_benchmark
from synthetic import make_caviar

from jbim_reid.utils.fileio import load_torch_file

ARGS = ["--height", "32", "--width", "16", "--batch-size", "8", "--weights", "none", "--workers", "0",
        "--sr-epochs", "1"]


@pytest.fixture(scope="module")
def accuracy():
    return load_benchmark("accuracy")


@pytest.fixture(scope="module")
def data_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_caviar(root, num_two_cam=8, num_one_cam=1)
    return root


def test_recipe_variant_names_the_benchmarked_variant_of_each_recipe(accuracy):
    warm = sys.modules["accuracy_warm"]
    assert warm.recipe_variant({"ratio": 0.5, "train_ratios": [], "cross_stream_triplet": False}) == ""
    assert warm.recipe_variant({"ratio": 0.5, "train_ratios": [0.5, 1 / 3, 0.25],
                                "cross_stream_triplet": True}) == "xstream_multiratio"
    with pytest.raises(RuntimeError, match="no benchmark variant"):
        warm.recipe_variant({"ratio": 0.5, "train_ratios": [0.25], "cross_stream_triplet": False})


def test_warm_spec_takes_plain_plateau_then_stage1_ladder_then_joint(accuracy, data_tree, monkeypatch):
    monkeypatch.setenv("JBIM_DATA_ROOT", str(data_tree))
    args = accuracy.parse_args(["--datasets", "caviar", "--splits", "2", "--methods", "plain_resaug,jbim_warm",
                                "--epochs", "12", "--plateau", "--max-epochs", "40"])
    bench = accuracy._Benchmark(args, accuracy.Records("", {"recipe_fingerprint": "x", "command": ""}), "")
    bench.records.report["datasets"]["caviar"] = {}
    asked = []

    def evaluate(dataset, split_id, method, spec):
        asked.append((method, dict(spec)))
        if method == "plain_resaug":  # plateau at 18 epochs
            value = 10.0 + split_id + min(spec["plain"], 18) / 3
        else:  # stage-1 epochs help up to 6, the joint stage up to 12
            value = 20.0 + split_id + 2 * min(spec["him"], 6) + min(spec["joint"], 12) / 4
        return {"metrics": {"rank1": value, "mAP": value + 10}}

    monkeypatch.setattr(bench, "evaluate", evaluate)
    plateaus = {}
    spec = bench.spec_of("caviar", "jbim_warm", plateaus)
    assert spec == {"plain": 18, "him": 6, "lim": 6, "joint": 12}
    assert set(plateaus) == {"plain_resaug:plain", "jbim_warm:stage1", "jbim_warm:joint"}
    ladder = [s for m, s in asked if m == "jbim_warm" and s["joint"] == 12]
    assert sorted({s["him"] for s in ladder}) == [0, 6, 12] and all(s["him"] == s["lim"] for s in ladder)
    assert all(s["plain"] == 18 for m, s in asked if m == "jbim_warm")


def test_warm_epochs_given_by_stage_epochs_are_not_searched(accuracy, data_tree, monkeypatch, capsys):
    """--stage-epochs him=0,lim=0 (the initialisation carried through) runs the chosen warm recipe without
    the stage-1 search; only the joint stage is searched, and nothing with joint pinned too."""
    monkeypatch.setenv("JBIM_DATA_ROOT", str(data_tree))
    base = ["--datasets", "caviar", "--splits", "2", "--methods", "plain_resaug,jbim_warm", "--epochs", "12",
            "--plateau", "--max-epochs", "40"]
    asked = []

    def evaluate(dataset, split_id, method, spec):  # the joint stage helps up to 18 epochs
        asked.append(dict(spec))
        value = 20.0 + split_id + min(spec["joint"], 18) / 3
        return {"metrics": {"rank1": value, "mAP": value + 10}}

    for pins, joint, searched in (("plain=27,him=0,lim=0", 18, ["jbim_warm:joint"]),
                                  ("plain=27,him=0,lim=0,joint=12", 12, [])):
        args = accuracy.parse_args(base + ["--stage-epochs", pins])
        bench = accuracy._Benchmark(args, accuracy.Records("", {"recipe_fingerprint": "x", "command": ""}), "")
        bench.records.report["datasets"]["caviar"] = {}
        monkeypatch.setattr(bench, "evaluate", evaluate)
        plateaus, asked[:] = {}, []
        assert bench.spec_of("caviar", "jbim_warm", plateaus) == {"plain": 27, "him": 0, "lim": 0, "joint": joint}
        assert list(plateaus) == searched
        assert all(s["him"] == s["lim"] == 0 and s["plain"] == 27 for s in asked)
    with pytest.raises(SystemExit):
        accuracy.parse_args(["--datasets", "caviar", "--methods", "jbim,jbim_warm", "--stage-epochs", "him=0"])
    assert "jbim would train nothing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        accuracy.parse_args(["--datasets", "caviar", "--methods", "jbim_warm", "--stage-epochs", "joint=0"])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Number of gallery samples is quite small")
def test_auto_and_warm_runs_on_synthetic_data(accuracy, data_tree, tmp_path):
    out, save = tmp_path / "a.json", tmp_path / "save"
    argv = ["--data-root", str(data_tree), "--datasets", "caviar", "--splits", "1", "--epochs", "1",
            "--methods", "plain_resaug,jbim,jbim_auto,jbim_warm", "--out", str(out), "--save-dir", str(save)] + ARGS
    assert accuracy.main(argv) == 0
    split = json.loads(out.read_text())["datasets"]["caviar"]["splits"]["0"]
    auto = split["runs"]["jbim_auto"]["him=1,lim=1,joint=1"]
    assert auto["resolved_to"] == "jbim" and auto["reused_record_of"] == "jbim"
    assert auto["metrics"] == split["runs"]["jbim"]["him=1,lim=1,joint=1"]["metrics"]
    warm = split["runs"]["jbim_warm"]["plain=1,him=1,lim=1,joint=1"]
    assert warm["resolved_to"] == "jbim" and warm["seconds_plain"] > 0
    stages = split["stages"]
    plain = stages["plain_ra_e1"]["checkpoint"]
    assert plain and load_torch_file(plain)["state_dict"]  # kept for the warm start
    assert stages["him_warm_m1-2_w1_e1"]["starts_from"] == ["plain_ra_e1", "sr_m1-2"]
    assert stages["lim_warm_w1_e1"]["starts_from"] == ["plain_ra_e1"]
    him = load_torch_file(stages["him_warm_m1-2_w1_e1"]["checkpoint"])
    assert him["init_from"] == plain
    assert warm["seconds"] >= warm["seconds_plain"] + stages["joint_warm_m1-2_w1_h1_l1_e1"]["seconds"]
