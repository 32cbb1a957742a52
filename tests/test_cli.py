"""The jbim-reid CLI end to end on a synthetic CAVIAR tree, and the torchreid-style Python script."""
import json
from pathlib import Path

import pytest
import torch
import torchreid
from PIL import Image
from synthetic import CPU_CONFIG, TINY_OPTIONS

import jbim_reid
from jbim_reid.cli import COMMANDS, main
from jbim_reid.datasets import protocol_overrides

TINY = TINY_OPTIONS


@pytest.fixture(scope="module")
def trained(caviar_root, tmp_path_factory):
    """``jbim-reid train`` with the CPU config, ``stage: all``, tiny input, one epoch per stage."""
    save_dir = tmp_path_factory.mktemp("log")
    code = main(["train", "--config-file", CPU_CONFIG, "data.root", str(caviar_root),
                 "data.save_dir", str(save_dir)] + TINY)
    assert code == 0
    return save_dir


def read_results(folder):
    return json.loads((Path(folder) / "results.json").read_text())


@pytest.mark.slow
def test_train_all_runs_the_four_stages(trained):
    sr = read_results(trained / "stage_sr")
    assert sr["stage"] == "sr" and sr["checkpoint"].endswith("sr_best.pth.tar")
    assert Path(sr["checkpoint"]).is_file()
    for stage in ("him", "lim", "joint"):
        assert (trained / f"stage_{stage}" / "model" / "model.pth.tar-1").is_file()
        assert read_results(trained / f"stage_{stage}")["stage"] == stage
    results = read_results(trained)
    for key in ("rank1", "rank5", "rank10", "rank20", "mAP"):
        assert 0.0 <= results[key] <= 100.0
    assert results["rank20"] >= results["rank1"]
    assert results["config"]["jbim"]["stage"] == "all"
    assert results["config"]["model"]["name"] == "osnet_x0_25"
    assert (trained / "cmc_caviar.png").stat().st_size > 0
    joint = torch.load(trained / "stage_joint" / "model" / "model.pth.tar-1", weights_only=True)
    assert joint["jbim_kwargs"]["variant"] == "jbim" and joint["stage"] == "joint"
    him = torch.load(trained / "stage_him" / "model" / "model.pth.tar-1", weights_only=True)
    assert him["jbim_kwargs"]["variant"] == "him"


@pytest.mark.slow
def test_test_command_writes_results(trained, caviar_root, tmp_path):
    checkpoint = trained / "stage_joint" / "model" / "model.pth.tar-1"
    code = main(["test", "--config-file", CPU_CONFIG, "data.root", str(caviar_root),
                 "data.save_dir", str(tmp_path), "model.load_weights", str(checkpoint)] + TINY)
    assert code == 0
    results = read_results(tmp_path)
    assert results["checkpoint"] == str(checkpoint) and results["variant"] == "jbim"
    assert results["rank1"] == pytest.approx(read_results(trained)["rank1"])


@pytest.mark.slow
def test_test_command_loads_a_bare_state_dict_into_the_config_model(trained, caviar_root, tmp_path):
    full = torch.load(trained / "stage_joint" / "model" / "model.pth.tar-1", weights_only=True)
    bare = tmp_path / "bare.pth"
    torch.save({"state_dict": full["state_dict"]}, bare)  # no jbim_kwargs: architecture from config
    code = main(["test", "--config-file", CPU_CONFIG, "data.root", str(caviar_root),
                 "data.save_dir", str(tmp_path), "model.load_weights", str(bare)] + TINY)
    assert code == 0
    assert read_results(tmp_path)["mAP"] == pytest.approx(read_results(trained)["mAP"])


@pytest.mark.slow
def test_single_stage_joint_from_stage_checkpoints(trained, caviar_root, tmp_path, capsys):
    code = main(["train", "--config-file", CPU_CONFIG, "data.root", str(caviar_root),
                 "data.save_dir", str(tmp_path), "jbim.stage", "joint",
                 "jbim.him_checkpoint", str(trained / "stage_him" / "model" / "model.pth.tar-1"),
                 "jbim.lim_checkpoint", str(trained / "stage_lim" / "model" / "model.pth.tar-1")]
                + TINY)
    assert code == 0 and read_results(tmp_path)["stage"] == "joint"
    out = capsys.readouterr().out
    assert "into SRCNN" in out and out.count("into ReidBranch") == 2


def test_unknown_key_exits_2_naming_the_key(capsys):
    assert main(["train", "--config-file", CPU_CONFIG, "train.max_epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert "train.max_epochs" in err and "Traceback" not in err


def test_test_without_weights_exits_2(capsys, tmp_path):
    assert main(["test", "--config-file", CPU_CONFIG, "data.save_dir", str(tmp_path)]) == 2
    assert "model.load_weights" in capsys.readouterr().err


def test_commands_table_holds_train_and_test():
    assert {"train", "test"} <= set(COMMANDS)
    for help_text, function, *add_arguments in COMMANDS.values():  # (help, fn) or (help, fn, add_arguments)
        assert help_text and callable(function) and all(callable(a) for a in add_arguments)
    with pytest.raises(SystemExit):
        main(["no-such-command"])


@pytest.mark.slow
def test_torchreid_style_script_with_visrank(caviar_root, tmp_path):
    assert jbim_reid.__version__
    with protocol_overrides(seed=0):
        datamanager = torchreid.data.ImageDataManager(
            root=str(caviar_root), sources="caviar", targets="caviar", height=32, width=16,
            batch_size_train=8, batch_size_test=16, workers=0, num_instances=2,
            train_sampler="RandomIdentitySampler", use_gpu=False)
    model = torchreid.models.build_model("jbim_osnet_x0_25", num_classes=datamanager.num_train_pids,
                                         pretrained=False)
    optimizer = torchreid.optim.build_optimizer(model, optim="adam", lr=3.5e-4)
    engine = torchreid.engine.JBIMEngine(datamanager, model, optimizer)
    engine.run(save_dir=str(tmp_path), max_epoch=1, print_freq=100)
    engine.run(save_dir=str(tmp_path), test_only=True, visrank=True, visrank_topk=3)
    ranked = list((tmp_path / "visrank_caviar").glob("*"))
    assert ranked and len(ranked) == engine.last_results["caviar"]["distmat"].shape[0]
    # torchreid's own row is (topk + 1) * width + topk * 10 + 90 pixels wide; the LR | SR panel
    # in front of it makes every written image wider than that
    torchreid_row_width = 4 * 16 + 3 * 10 + 90
    assert all(Image.open(path).width > torchreid_row_width for path in ranked)
    assert engine.last_results["caviar"]["q_hw"].shape[1] == 2


def test_complexity_command_counts_probe_path_above_gallery_path(tmp_path, capsys):
    code = main(["complexity", "--config-file", CPU_CONFIG, "data.save_dir", str(tmp_path),
                 "data.height", "64", "data.width", "32"])
    assert code == 0
    report = json.loads((tmp_path / "complexity.json").read_text())
    rows = list(report["models"].values())
    probe, gallery = rows
    # the probe path runs the SR module on top of both backbones; the gallery path does not
    assert probe["macs_g"] > gallery["macs_g"] > 0
    assert "52.96" in capsys.readouterr().out


@pytest.mark.parametrize("opts, named", [
    (["jbim.ratio", "1.5"], "jbim.ratio"),
    (["data.sources", "['market1501']"], "data.sources"),
    (["data.sources", "['caviar', 'mlr_viper']"], "exactly one"),
    (["jbim.him_checkpoint", "x.pth"], "jbim.him_checkpoint"),
])
def test_bad_values_exit_2_naming_the_key(opts, named, capsys):
    assert main(["train", "--config-file", CPU_CONFIG] + opts) == 2
    assert named in capsys.readouterr().err


def test_bad_protocol_value_exits_2_naming_mlr(caviar_root, tmp_path, capsys):
    code = main(["train", "--config-file", CPU_CONFIG, "data.root", str(caviar_root),
                 "data.save_dir", str(tmp_path), "mlr.lr_mode", "nope"] + TINY)
    assert code == 2
    err = capsys.readouterr().err
    assert "mlr" in err and "nope" in err


def test_fixbase_without_layers_of_the_stage_exits_2(caviar_root, tmp_path, capsys):
    code = main(["train", "--config-file", CPU_CONFIG, "data.root", str(caviar_root),
                 "data.save_dir", str(tmp_path), "jbim.stage", "him", "train.fixbase_epoch", "1",
                 "train.open_layers", "['fusion']"] + TINY)
    assert code == 2
    assert "train.open_layers" in capsys.readouterr().err


def test_test_command_rejects_weights_of_another_model(caviar_root, tmp_path, capsys):
    other = tmp_path / "other.pth"
    torch.save({"state_dict": torch.nn.Linear(3, 3).state_dict()}, other)
    code = main(["test", "--config-file", CPU_CONFIG, "data.root", str(caviar_root),
                 "data.save_dir", str(tmp_path), "model.load_weights", str(other)] + TINY)
    assert code == 2
    assert "does not fit" in capsys.readouterr().err


def test_model_from_weights_takes_a_bare_state_dict_and_names_what_is_missing(tmp_path):
    from jbim_reid.training.checks import ConfigError, load_config
    from jbim_reid.training.runner import build_model, model_from_weights, read_load_weights

    base = ["model.pretrained", "False"] + TINY
    source = build_model(load_config(CPU_CONFIG, base), num_classes=5).eval()
    state = source.state_dict()
    bare = tmp_path / "bare.pth"
    torch.save(state, bare)
    cfg = load_config(CPU_CONFIG, base + ["model.load_weights", str(bare)])
    model = model_from_weights(cfg, read_load_weights(cfg, "test"), num_classes=5)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    # without its classifiers it fits only when they are ignored (export: identities unknown)
    headless = tmp_path / "headless.pth"
    torch.save({k: v for k, v in state.items() if "classifier." not in k}, headless)
    cfg = load_config(CPU_CONFIG, base + ["model.load_weights", str(headless)])
    checkpoint = read_load_weights(cfg, "test")
    with pytest.raises(ConfigError, match=r"headless\.pth' does not fit .*classifier"):
        model_from_weights(cfg, checkpoint, num_classes=5)
    assert model_from_weights(cfg, checkpoint, num_classes=1, ignore=("classifier.",)) is not None
    with pytest.raises(ConfigError, match="jbim-reid export needs model.load_weights"):
        read_load_weights(load_config(CPU_CONFIG, base), "jbim-reid export")
