"""One loading rule for every weight file on every path, checked before any stage trains.

A file must fill every tensor of the part it initialises, by name and shape, except those the part may
miss by design (classifiers sized for other identities, BatchNorm counters); otherwise it is refused
with a CheckpointError (exit code 2) naming the file, its config key, how many tensors fit and what the
file looks like it holds, instead of training from the few keys that happened to match.
"""
import re
from pathlib import Path

import pytest
import torch
import torchreid
from http_server import refused_url
from synthetic import make_caviar

from jbim_reid import CrossResolutionMatcher
from jbim_reid.cli import main
from jbim_reid.models import JBIM, imagenet
from jbim_reid.training.checks import load_config
from jbim_reid.training.runner import build_model
from jbim_reid.utils.fileio import CheckpointError

CPU_CONFIG = str(Path(__file__).parent.parent / "configs" / "caviar" / "jbim_osnet_x0_25_cpu.yaml")
SMALL = ["data.height", "32", "data.width", "16"]
TINY = SMALL + ["train.max_epoch", "1", "train.batch_size", "8", "sampler.num_instances", "2",
                "data.workers", "0", "train.print_freq", "100", "test.batch_size", "16", "jbim.sr_max_epoch", "1"]
FITS = re.compile(r"\d+ of \d+ tensors fit")


class Payload:
    """Unpickling this calls ``open(marker, 'w')``: it creates a file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture(scope="module")
def caviar_root(tmp_path_factory):
    return make_caviar(tmp_path_factory.mktemp("data"), num_two_cam=8, num_one_cam=1)


def jbim(backbone: str = "osnet_x0_25", variant: str = "jbim", num_classes: int = 4, sr: str = "srcnn_915") -> JBIM:
    torch.manual_seed(0)
    return JBIM(num_classes, backbone=backbone, sr=sr, height=32, width=16, variant=variant)


def save_jbim(path: Path, model: JBIM, stage: str = "joint") -> Path:
    torch.save({"state_dict": model.state_dict(), "jbim_kwargs": model.jbim_kwargs, "epoch": 1, "stage": stage},
               path)
    return path


def torchreid_checkpoint(path: Path) -> Path:
    """A checkpoint as torchreid's engines write one: state_dict with a classifier, epoch, optimizer."""
    model = torchreid.models.build_model("osnet_x0_25", num_classes=5, pretrained=False)
    torch.save({"state_dict": model.state_dict(), "epoch": 3, "rank1": 0.5, "optimizer": {}}, path)
    return path


def refused(path: Path, key: str, holds: str, call) -> str:
    """The message of ``call()``'s CheckpointError, which names the file, the key, the fit and the content."""
    with pytest.raises(CheckpointError) as info:
        call()
    message = str(info.value)
    assert str(path) in message and key in message and "does not fit" in message, message
    assert FITS.search(message) and holds in message, message
    return message


def test_load_weights_of_another_backbone_is_refused_and_a_classifier_of_another_size_is_not(tmp_path):
    other = save_jbim(tmp_path / "osnet_x0_5.pth.tar", jbim(backbone="osnet_x0_5"))
    cfg = load_config(CPU_CONFIG, SMALL + ["model.load_weights", str(other)])
    message = refused(other, "model.load_weights", "a JBIM checkpoint", lambda: build_model(cfg, 4))
    assert "'osnet_x0_5'" in message
    same = jbim(num_classes=7)  # another training set: only the classifiers differ in size
    path = save_jbim(tmp_path / "seven_ids.pth.tar", same)
    model = build_model(load_config(CPU_CONFIG, SMALL + ["model.load_weights", str(path)]), 4)
    assert torch.equal(model.lim.backbone.conv1.conv.weight, same.lim.backbone.conv1.conv.weight)
    assert model.him.classifier.out_features == 4


@pytest.mark.parametrize("key, part", [("jbim.him_checkpoint", "him_checkpoint"),
                                       ("jbim.lim_checkpoint", "lim_checkpoint")])
def test_stage_checkpoints_must_fill_their_branch(key, part, tmp_path):
    def build(path):  # as stage joint does with the key
        return build_model(load_config(CPU_CONFIG, SMALL + ["jbim.stage", "joint", key, str(path)]), 4,
                           **{part: str(path)})

    plain = torchreid_checkpoint(tmp_path / "model.pth.tar-3")
    refused(plain, key, "a torchreid model checkpoint", lambda: build(plain))
    other = save_jbim(tmp_path / "other.pth.tar", jbim(backbone="osnet_x0_5", variant=part[:3]), stage=part[:3])
    refused(other, key, f"variant '{part[:3]}'", lambda: build(other))


def test_lim_checkpoint_holding_only_sr_weights_is_named_an_sr_checkpoint(tmp_path):
    stage_sr = tmp_path / "sr_best.pth.tar"
    torch.save({"state_dict": {f"sr.{k}": v for k, v in jbim().sr.state_dict().items()}, "stage": "sr",
                "sr": "srcnn_915"}, stage_sr)
    cfg = load_config(CPU_CONFIG, SMALL + ["jbim.stage", "joint", "jbim.lim_checkpoint", str(stage_sr)])
    refused(stage_sr, "jbim.lim_checkpoint", "an SR checkpoint",
            lambda: build_model(cfg, 4, lim_checkpoint=str(stage_sr)))


def test_sr_weights_of_another_sr_net_are_refused(tmp_path):
    srcnn = tmp_path / "srcnn.pth"
    torch.save(jbim(sr="srcnn").sr.state_dict(), srcnn)  # 9-5-5: only some tensors have srcnn_915's shapes
    cfg = load_config(CPU_CONFIG, SMALL + ["jbim.sr_pretrained_path", str(srcnn)])
    refused(srcnn, "jbim.sr_pretrained_path", "an SR checkpoint", lambda: build_model(cfg, 4))


def test_backbone_file_missing_some_layers_is_refused(tmp_path):
    state = torchreid.models.build_model("osnet_x0_25", num_classes=1, pretrained=False).state_dict()
    cut = {k: v for k, v in state.items() if not k.startswith("conv5.")}  # the last stage: a few tensors
    assert len(cut) > 0.9 * len(state)
    path = tmp_path / "osnet_cut.pth"
    torch.save(cut, path)
    for key in ("model.pretrained_path", "jbim.lim_pretrained_path"):
        cfg = load_config(CPU_CONFIG, SMALL + [key, str(path)])
        message = refused(path, key, "backbone weights", lambda cfg=cfg: build_model(cfg, 4))
        assert "does not fit backbone" in message and "conv5." in message


@pytest.fixture
def misfit(tmp_path):
    """A JBIM checkpoint whose weights do not fit its own jbim_kwargs (osnet_x0_25 weights, osnet_x0_5 kwargs)."""
    model = jbim()
    path = tmp_path / "misfit.pth.tar"
    torch.save({"state_dict": model.state_dict(), "epoch": 1, "stage": "joint",
                "jbim_kwargs": {**model.jbim_kwargs, "backbone": "osnet_x0_5"}}, path)
    return path


def test_checkpoint_not_fitting_its_own_model_is_refused_by_test_export_and_matcher(misfit, caviar_root, tmp_path,
                                                                                      capsys):
    for command in (["test", "data.root", str(caviar_root)] + TINY, ["export-weights"]):
        code = main([command[0], "--config-file", CPU_CONFIG, "data.save_dir", str(tmp_path / "out"),
                     "model.load_weights", str(misfit)] + command[1:])
        err = capsys.readouterr().err
        assert code == 2 and str(misfit) in err and "does not fit" in err and FITS.search(err), err
    refused(misfit, "checkpoints[0]", "a JBIM checkpoint", lambda: CrossResolutionMatcher([str(misfit)]))


def payload_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path = tmp_path / "evil.pth"
    state = torchreid.models.build_model("osnet_x0_25", num_classes=1, pretrained=False).state_dict()
    torch.save({"state_dict": state, "payload": Payload(str(tmp_path / "pwned"))}, path)
    return path


def misfit_backbone(tmp_path, monkeypatch):
    path = tmp_path / "resnet18.pth"
    torch.save(torchreid.models.build_model("resnet18", num_classes=1, pretrained=False).state_dict(), path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("key, make, words", [
    ("jbim.lim_pretrained_path", payload_file, "refused because loading it could run code"),
    ("jbim.lim_pretrained_path", misfit_backbone, "does not fit backbone"),
    ("model.load_weights", lambda t, m: save_jbim(t / "other.pth.tar", jbim(backbone="osnet_x0_5")), "does not fit"),
])
def test_stage_all_checks_every_weight_file_before_stage_sr(key, make, words, caviar_root, tmp_path, monkeypatch,
                                                            capsys):
    path = make(tmp_path, monkeypatch)
    save_dir = tmp_path / "log"
    code = main(["train", "--config-file", CPU_CONFIG, "data.root", str(caviar_root), "data.save_dir",
                 str(save_dir), key, str(path)] + TINY)
    err = capsys.readouterr().err
    assert code == 2 and key in err and str(path) in err and words in err, err
    assert not (save_dir / "stage_sr").exists()
    assert not (tmp_path / "pwned").exists()


def test_the_check_downloads_no_imagenet_weights(caviar_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(imagenet, "URL_OVERRIDES", {"osnet_x0_25": refused_url()})  # a download would fail
    path = misfit_backbone(tmp_path, monkeypatch)
    code = main(["train", "--config-file", CPU_CONFIG, "data.root", str(caviar_root), "data.save_dir",
                 str(tmp_path / "log"), "model.pretrained", "True", "jbim.lim_pretrained_path", str(path)] + TINY)
    err = capsys.readouterr().err
    assert code == 2 and "jbim.lim_pretrained_path" in err and "does not fit backbone" in err, err
    assert not (tmp_path / "torch_home").exists()
