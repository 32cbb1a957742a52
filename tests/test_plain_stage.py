"""Stage ``plain`` of ``jbim-reid train`` (``jbim.stage_epochs.plain``): torchreid's model trained with random
resolution by its own triplet engine, tested, then the warm start of both JBIM branches; resumable and
bound to its config like every stage."""
import json
from pathlib import Path

import pytest
import torch
from synthetic import CPU_CONFIG, TINY_OPTIONS

import jbim_reid  # noqa: F401  (registers the datasets)
from jbim_reid.cli import main
from jbim_reid.config import get_default_config
from jbim_reid.engines import list_checkpoints
from jbim_reid.models.plain import build_plain_model
from jbim_reid.training.checks import check_training
from jbim_reid.utils.errors import ConfigError
from jbim_reid.utils.fileio import load_torch_file

WARM = ["jbim.stage_epochs", "{'plain': 2, 'him': 0, 'lim': 0, 'joint': 1}"]


def _train(root, save_dir, *extra):
    return main(["train", "--config-file", CPU_CONFIG, "data.root", str(root), "data.save_dir", str(save_dir),
                 *TINY_OPTIONS, *extra])


@pytest.fixture(scope="module")
def warm_run(caviar_root, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("warm")
    assert _train(caviar_root, save_dir, *WARM) == 0
    return save_dir


def test_plain_stage_trains_torchreid_model_with_random_resolution(warm_run):
    results = json.loads((warm_run / "stage_plain" / "results.json").read_text())
    assert results["stage"] == "plain" and 0 <= results["rank1"] <= 100 and 0 <= results["mAP"] <= 100
    assert "random_resolution" in results["config"]["data"]["transforms"]
    assert results["config"]["train"]["max_epoch"] == 2
    final = load_torch_file(warm_run / "stage_plain" / "model" / "model.pth.tar-2")
    assert final["stage"] == "plain" and final["epoch"] == 2 and "rng" in final
    assert "jbim_kwargs" not in final  # a torchreid model checkpoint, as jbim.init_from takes
    assert any(k.startswith("classifier.") for k in final["state_dict"])
    assert not any(k.split(".")[0] in ("him", "lim", "sr") for k in final["state_dict"])


def test_both_branches_start_from_the_plain_model(warm_run):
    plain_path = warm_run / "stage_plain" / "model" / "model.pth.tar-2"
    plain = load_torch_file(plain_path)["state_dict"]
    for part in ("him", "lim"):
        stage = load_torch_file(warm_run / f"stage_{part}" / "model" / "model.pth.tar-0")
        assert stage["init_from"] == str(plain_path)
        assert torch.equal(stage["state_dict"][f"{part}.backbone.conv1.conv.weight"], plain["conv1.conv.weight"])
    results = json.loads((warm_run / "results.json").read_text())
    assert results["init_from"] == str(plain_path) and results["stage"] == "all"
    # the JBIM stages' transforms are the config's: random resolution only trains the plain model
    assert "random_resolution" not in results["config"]["data"]["transforms"]


def test_rerun_skips_the_finished_plain_stage(caviar_root, warm_run, capsys):
    before = (warm_run / "stage_plain" / "model" / "model.pth.tar-2").stat().st_mtime_ns
    assert _train(caviar_root, warm_run, *WARM) == 0
    assert "stage plain: " in capsys.readouterr().out
    assert (warm_run / "stage_plain" / "model" / "model.pth.tar-2").stat().st_mtime_ns == before


def test_continues_a_killed_plain_stage_to_the_same_model(caviar_root, warm_run, tmp_path):
    """Killed after epoch 1 of 2 (the final checkpoint and results missing): the rerun continues from
    epoch 1, with the random state, to the same weights as the run that was not killed."""
    import shutil

    shutil.copytree(warm_run / "stage_plain", tmp_path / "stage_plain")
    (tmp_path / "stage_plain" / "model" / "model.pth.tar-2").unlink()
    (tmp_path / "stage_plain" / "results.json").unlink()
    assert [epoch for epoch, _ in list_checkpoints(str(tmp_path / "stage_plain"))] == [1]
    assert _train(caviar_root, tmp_path, *WARM, "jbim.stage", "plain") == 0
    assert not (tmp_path / "stage_sr").exists()  # jbim.stage plain runs that stage alone
    continued = load_torch_file(tmp_path / "stage_plain" / "model" / "model.pth.tar-2")["state_dict"]
    whole = load_torch_file(warm_run / "stage_plain" / "model" / "model.pth.tar-2")["state_dict"]
    assert continued.keys() == whole.keys() and all(torch.equal(continued[k], whole[k]) for k in whole)


def test_plain_stage_is_bound_to_its_config(caviar_root, warm_run, capsys):
    code = _train(caviar_root, warm_run, "jbim.stage_epochs", "{'plain': 2, 'him': 0, 'lim': 0, 'joint': 1}",
                  "loss.triplet.margin", "0.5")
    assert code == 2
    err = capsys.readouterr().err
    assert "stage_plain" in err and "loss.triplet.margin" in err


@pytest.mark.parametrize("options, message", [
    (["jbim.stage", "plain"], "jbim.stage_epochs.plain"),
    (WARM + ["jbim.init_from", "some/model.pth.tar-27"], "set one of them"),
    (WARM + ["jbim.stage", "him"], "run jbim.stage plain (or all) first"),
])
def test_plain_stage_misuse_is_one_clear_error(caviar_root, tmp_path, capsys, options, message):
    assert _train(caviar_root, tmp_path, *options) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "stage_him").exists() and not (tmp_path / "stage_plain").exists()


@pytest.mark.slow
def test_warm_start_trains_what_the_benchmark_measured(caviar_root, tmp_path):
    """`jbim-reid train` with the benchmark's config and stage epochs trains the accuracy benchmark's
    jbim_warm stage by stage, tensor for tensor: the plain + random resolution model, stage sr, the
    warm-started HIM and LIM and the joint model (epochs where both lr rules put the step at the same
    epoch: two thirds of 3 and of 6)."""
    from benchmark_scripts import load_benchmark

    accuracy = load_benchmark("accuracy")
    argv = ["--data-root", str(caviar_root), "--datasets", "caviar", "--splits", "1", "--epochs", "3",
            "--stage-epochs", "plain=6", "--methods", "plain_resaug,jbim_warm", "--height", "32", "--width", "16",
            "--batch-size", "8", "--weights", "none", "--workers", "0", "--sr-epochs", "1",
            "--out", str(tmp_path / "a.json"), "--save-dir", str(tmp_path / "bench")]
    assert accuracy.main(argv) == 0
    stages = json.loads((tmp_path / "a.json").read_text())["datasets"]["caviar"]["splits"]["0"]["stages"]

    config = tmp_path / "benchmark.yaml"
    config.write_text(load_benchmark("accuracy_runs").build_config(accuracy.parse_args(argv), "caviar", 0).dump())
    assert main(["train", "--config-file", str(config), "data.save_dir", str(tmp_path / "train"), "jbim.recipe",
                 "auto", "jbim.stage_epochs", "{'plain': 6, 'him': 3, 'lim': 3, 'joint': 3}"]) == 0
    pairs = {"plain_ra_e6": "stage_plain/model/model.pth.tar-6", "sr_m1-2": "stage_sr/model/sr_best.pth.tar",
             "him_warm_m1-2_w6_e3": "stage_him/model/model.pth.tar-3",
             "lim_warm_w6_e3": "stage_lim/model/model.pth.tar-3",
             "joint_warm_m1-2_w6_h3_l3_e3": "stage_joint/model/model.pth.tar-3"}
    for benchmark_stage, ours in pairs.items():
        measured = load_torch_file(stages[benchmark_stage]["checkpoint"])["state_dict"]
        trained = load_torch_file(tmp_path / "train" / ours)["state_dict"]
        assert trained.keys() == measured.keys(), benchmark_stage
        assert all(torch.equal(trained[k], measured[k]) for k in measured), benchmark_stage


WARM_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "caviar" / "jbim_mobilenetv2_cpu.yaml"
WARM_RECORD = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "accuracy_cpu_caviar_warm.json"


def test_warm_config_is_the_measured_recipe_key_for_key(caviar_root):
    """configs/caviar/jbim_mobilenetv2_cpu.yaml (the main job) trains, stage by stage, what the recorded jbim_warm
    command trained: the same keys (every key that shapes a model) for stage plain, stage sr and the
    joint stage. Set apart: the weights' path (the ImageNet MobileNetV2 either way, fetched or local),
    jbim.init_from (the plain model's path) and the recipe keys that jbim.recipe resolves."""
    import shlex

    from benchmark_scripts import load_benchmark

    from jbim_reid.training.checks import load_config
    from jbim_reid.training.fingerprint import fingerprint_keys
    from jbim_reid.training.plain_stage import plain_config
    from jbim_reid.training.recipe import resolve_recipe
    from jbim_reid.training.runner import stage_config

    command = json.loads(WARM_RECORD.read_text())["command"]
    argv = shlex.split(command)[2:]
    assert argv[argv.index("--weights") + 1].endswith("mobilenetv2_x1_0_imagenet.pth")
    argv[argv.index("--weights") + 1] = "none"  # checked above; the file need not be here
    argv[argv.index("--methods") + 1] = "plain_resaug,jbim_warm"
    accuracy, runs = load_benchmark("accuracy"), load_benchmark("accuracy_runs")
    args = accuracy.parse_args(argv + ["--data-root", str(caviar_root)])
    bench = runs.build_config(args, "caviar", 0)
    spec = {"plain": args.stage_epochs["plain"], "joint": args.epochs}
    benchmark_stages = {"plain": runs._with(bench, spec["plain"], "resaug"), "sr": runs._with(bench, ratio=0.5),
                        "joint": runs._with(bench, spec["joint"], "", ratio=0.5)}

    cfg = resolve_recipe(load_config(str(WARM_CONFIG), ["jbim.recipe", "paper"]))  # auto's choice on CAVIAR
    assert cfg.model.pretrained and cfg.jbim.stage_epochs == {"plain": 27, "him": 0, "lim": 0, "joint": 12}
    ours = {"plain": plain_config(stage_config(cfg, "plain")), "sr": cfg, "joint": stage_config(cfg, "joint")}
    apart = {"model.pretrained", "model.pretrained_path", "jbim.init_from", "jbim.ratio", "jbim.train_ratios",
             "jbim.cross_stream_triplet"}
    for stage, theirs in benchmark_stages.items():
        a, b = fingerprint_keys(ours[stage]), fingerprint_keys(theirs)
        differ = {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in apart}
        assert not differ, f"stage {stage}: config vs benchmark {differ}"
    assert cfg.jbim.ratio == 0.5 and not cfg.jbim.cross_stream_triplet and not list(cfg.jbim.train_ratios)


def test_train_anchors_refuses_a_plain_stage_it_would_not_run(caviar_root, tmp_path, capsys):
    code = main(["train-anchors", "--config-file", CPU_CONFIG, "data.root", str(caviar_root), "data.save_dir",
                 str(tmp_path), *TINY_OPTIONS, *WARM])
    assert code == 2
    assert "jbim.stage_epochs.plain" in capsys.readouterr().err
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # nothing trained


def test_plain_stage_under_torchrun_says_to_run_it_first_on_one_process(monkeypatch):
    from jbim_reid.engines import distributed
    from jbim_reid.training import plain_stage

    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    with pytest.raises(ConfigError, match="jbim.stage plain.*without torchrun"):
        plain_stage.run_plain_stage(None, None, "unused")


def test_fixbase_epochs_of_a_jbim_config_open_the_plain_models_classifier(caviar_root, tmp_path):
    """train.open_layers [fusion] (JBIM's part) with train.fixbase_epoch: the torchreid model of stage
    plain has no fusion head, so its classifier alone trains in the fixed-base epoch."""
    assert _train(caviar_root, tmp_path, "jbim.stage", "plain", "jbim.stage_epochs", "{'plain': 1}",
                  "train.fixbase_epoch", "1", "train.open_layers", "['fusion']") == 0
    plain = load_torch_file(tmp_path / "stage_plain" / "model" / "model.pth.tar-1")["state_dict"]
    torch.manual_seed(1)
    start = build_plain_model("osnet_x0_25", len(plain["classifier.weight"])).state_dict()
    assert torch.equal(plain["conv1.conv.weight"], start["conv1.conv.weight"])  # the base stayed fixed
    assert not torch.equal(plain["classifier.weight"], start["classifier.weight"])


def test_fixbase_check_lets_stage_plain_open_its_classifier(tmp_path):
    """train.open_layers [classifier] names no JBIM part: refused for stage him, accepted for stage plain,
    whose torchreid model has a classifier."""
    cfg = get_default_config()
    cfg.train.fixbase_epoch, cfg.train.open_layers, cfg.data.save_dir = 1, ["classifier"], str(tmp_path)
    cfg.jbim.stage = "him"
    with pytest.raises(ConfigError, match="train.open_layers"):
        check_training(cfg)
    cfg.jbim.stage = "plain"
    check_training(cfg)


@pytest.mark.slow
def test_plain_engine_trains_what_torchreids_own_engine_trains(caviar_root, tmp_path):
    """PlainTripletEngine (stage plain, and the benchmark's plain models) changes only torchreid's epoch
    loop: from the same seed, two epochs give ImageTripletEngine.run's model tensor for tensor."""
    import torchreid

    from jbim_reid.config import lr_scheduler_kwargs, optimizer_kwargs
    from jbim_reid.engines import PlainTripletEngine
    from jbim_reid.training.checks import load_config
    from jbim_reid.training.runner import build_datamanager

    cfg = load_config(CPU_CONFIG, ["data.root", str(caviar_root), *TINY_OPTIONS, "data.transforms",
                                   "['random_flip', 'random_resolution']"])
    trained = {}
    for name, engine_class in (("torchreid", torchreid.engine.ImageTripletEngine), ("plain", PlainTripletEngine)):
        datamanager = build_datamanager(cfg)
        torchreid.utils.set_random_seed(cfg.train.seed)
        model = build_plain_model(cfg.model.name, datamanager.num_train_pids, imagenet=False)
        optimizer = torchreid.optim.build_optimizer(model, **optimizer_kwargs(cfg))
        scheduler = torchreid.optim.build_lr_scheduler(optimizer, **lr_scheduler_kwargs(cfg))
        engine = engine_class(datamanager, model, optimizer, scheduler=scheduler, use_gpu=False)
        engine.run(save_dir=str(tmp_path / name), max_epoch=2, print_freq=100, ranks=[1])
        trained[name] = model.state_dict()
    assert trained["plain"].keys() == trained["torchreid"].keys()
    assert all(torch.equal(trained["plain"][k], trained["torchreid"][k]) for k in trained["torchreid"])
