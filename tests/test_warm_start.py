"""JBIM from a torchreid model: a checkpoint written by torchreid's own engine loads (numpy ``rank1``),
``jbim.init_from`` initialises both backbones, and ``jbim.stage_epochs`` 0 carries that through."""
import json

import pytest
import torch
import torchreid
from synthetic import CPU_CONFIG, TINY_OPTIONS

import jbim_reid  # noqa: F401  (registers the datasets)
from jbim_reid.cli import main
from jbim_reid.models import JBIM
from jbim_reid.training.checks import load_config
from jbim_reid.training.runner import stage_config
from jbim_reid.utils.fileio import load_torch_file

TINY = TINY_OPTIONS


@pytest.fixture(scope="module")
def torchreid_checkpoint(caviar_root, tmp_path_factory):
    """``model.pth.tar-1`` of osnet_x0_25 trained one epoch by torchreid's ``ImageTripletEngine``."""
    save_dir = tmp_path_factory.mktemp("plain")
    dm = torchreid.data.ImageDataManager(root=str(caviar_root), sources="caviar", targets="caviar", height=32,
                                         width=16, batch_size_train=8, batch_size_test=16, workers=0,
                                         train_sampler="RandomIdentitySampler", num_instances=2)
    model = torchreid.models.build_model("osnet_x0_25", num_classes=dm.num_train_pids, loss="triplet",
                                         pretrained=False)
    optimizer = torchreid.optim.build_optimizer(model, optim="adam", lr=3e-4)
    scheduler = torchreid.optim.build_lr_scheduler(optimizer, lr_scheduler="single_step", stepsize=20)
    engine = torchreid.engine.ImageTripletEngine(dm, model, optimizer, scheduler=scheduler, use_gpu=False)
    engine.run(save_dir=str(save_dir), max_epoch=1, eval_freq=-1, test_only=False, ranks=[1])
    path = save_dir / "model" / "model.pth.tar-1"
    assert path.is_file()
    return path


def test_torchreid_engine_checkpoint_loads_safely(torchreid_checkpoint):
    """torchreid stores rank1 as a numpy scalar; only numpy's scalar globals are let through."""
    loaded = load_torch_file(torchreid_checkpoint)
    assert float(loaded["rank1"]) >= 0 and "conv1.conv.weight" in loaded["state_dict"]


def test_torchreid_checkpoint_as_backbone_weights(torchreid_checkpoint):
    model = JBIM(5, backbone="osnet_x0_25", sr="bicubic", height=32, width=16,
                 him_pretrained_path=str(torchreid_checkpoint))
    state = load_torch_file(torchreid_checkpoint)["state_dict"]
    assert torch.equal(model.him.backbone.conv1.conv.weight, state["conv1.conv.weight"])


def test_init_from_and_zero_stage_epochs_go_straight_to_the_joint_stage(caviar_root, torchreid_checkpoint,
                                                                          tmp_path):
    code = main(["train", "--config-file", CPU_CONFIG, "data.root", str(caviar_root), "data.save_dir",
                 str(tmp_path), "jbim.init_from", str(torchreid_checkpoint),
                 "jbim.stage_epochs", "{'him': 0, 'lim': 0, 'joint': 1}"] + TINY)
    assert code == 0
    state = load_torch_file(torchreid_checkpoint)["state_dict"]
    for part in ("him", "lim"):
        stage = load_torch_file(tmp_path / f"stage_{part}" / "model" / "model.pth.tar-0")
        assert stage["init_from"] == str(torchreid_checkpoint)
        assert torch.equal(stage["state_dict"][f"{part}.backbone.conv1.conv.weight"], state["conv1.conv.weight"])
        assert not (tmp_path / f"stage_{part}" / "model" / "model.pth.tar-1").exists()
    joint = load_torch_file(tmp_path / "stage_joint" / "model" / "model.pth.tar-1")
    assert joint["recipe"]["mode"] == "auto" and "measured" in joint["recipe"]
    sr = load_torch_file(tmp_path / "stage_sr" / "model" / "sr_best.pth.tar")
    assert sr["recipe"] == joint["recipe"]  # every checkpoint knows how its model was trained
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["init_from"] == str(torchreid_checkpoint) and results["recipe"] == joint["recipe"]


def test_init_from_a_jbim_checkpoint_stops_before_any_stage(caviar_root, tmp_path, capsys):
    jbim_file = tmp_path / "jbim.pth"
    model = JBIM(5, backbone="osnet_x0_25", sr="bicubic", height=32, width=16)
    torch.save({"state_dict": model.state_dict(), "jbim_kwargs": model.jbim_kwargs}, jbim_file)
    code = main(["train", "--config-file", CPU_CONFIG, "data.root", str(caviar_root), "data.save_dir",
                 str(tmp_path / "log"), "jbim.init_from", str(jbim_file)] + TINY)
    assert code == 2
    err = capsys.readouterr().err
    assert str(jbim_file) in err and "JBIM checkpoint" in err
    assert not (tmp_path / "log" / "stage_sr").exists()


def test_init_from_another_backbone_is_refused(caviar_root, torchreid_checkpoint, tmp_path, capsys):
    code = main(["train", "--config-file", CPU_CONFIG, "data.root", str(caviar_root), "data.save_dir",
                 str(tmp_path), "model.name", "mobilenetv2_x1_0", "jbim.init_from",
                 str(torchreid_checkpoint)] + TINY)
    assert code == 2
    err = capsys.readouterr().err
    assert str(torchreid_checkpoint) in err and "does not fit backbone" in err


def test_stage_epochs_scale_the_lr_steps():
    cfg = load_config(CPU_CONFIG, ["train.max_epoch", "12", "train.stepsize", "[8]",
                                   "jbim.stage_epochs", "{'him': 6, 'joint': 0}"])
    assert stage_config(cfg, "him").train.max_epoch == 6 and list(stage_config(cfg, "him").train.stepsize) == [4]
    assert stage_config(cfg, "lim") is cfg
    with pytest.raises(Exception, match="jbim.stage_epochs"):
        load_config(CPU_CONFIG, ["jbim.stage_epochs", "{'sr': 3}"])
