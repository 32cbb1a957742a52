"""Files from strangers: pickles that run code are refused on every loading path; safetensors export."""
import os
import stat
from pathlib import Path

import pytest
import torch

from jbim_reid import CrossResolutionMatcher
from jbim_reid.cli import main
from jbim_reid.commands.export_weights import EXPORT_NAME, export_weights
from jbim_reid.models import JBIM, load_jbim_checkpoint, load_pretrained_weights
from jbim_reid.training.checks import load_config
from jbim_reid.training.runner import build_model
from jbim_reid.utils.fileio import CheckpointError, CheckpointMismatchError, load_torch_file

CPU_CONFIG = str(Path(__file__).parent.parent / "configs" / "caviar" / "jbim_osnet_x0_25_cpu.yaml")
SMALL = ["data.height", "32", "data.width", "16"]


class Payload:
    """Unpickling this calls ``open(marker, 'w')``: it creates a file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def tiny_model(num_classes: int = 4) -> JBIM:
    torch.manual_seed(0)
    return JBIM(num_classes, backbone="osnet_x0_25", sr="srcnn_915", height=32, width=16)


@pytest.fixture
def evil(tmp_path, monkeypatch):
    """A checkpoint with real weights and a code-running pickle; torch told to load pickles fully."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    model = tiny_model()
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": model.state_dict(), "jbim_kwargs": model.jbim_kwargs, "epoch": 1,
                "optimizer": {}, "scheduler": {}, "payload": Payload(str(marker))}, path)
    return path, marker


def test_the_payload_runs_code_when_unpickled_fully(evil):
    path, marker = evil
    torch.load(path, weights_only=False)
    assert marker.exists()  # so the refusals below are not vacuous


def _cfg(key, value):
    return load_config(CPU_CONFIG, SMALL + [key, value])


LOADING_PATHS = {  # name -> function(evil path, tmp_path) that loads it the way the project does
    "model.load_weights (train)": lambda p, t: build_model(_cfg("model.load_weights", str(p)), 4),
    "model.load_weights (test)": lambda p, t: main(["test", "--config-file", CPU_CONFIG, "data.save_dir",
                                                    str(t / "out"), "model.load_weights", str(p)]),
    "model.resume": lambda p, t: _engine().resume(str(p)),
    "model.pretrained_path": lambda p, t: build_model(_cfg("model.pretrained_path", str(p)), 4),
    "jbim.sr_pretrained_path": lambda p, t: build_model(_cfg("jbim.sr_pretrained_path", str(p)), 4),
    "jbim.him_pretrained_path": lambda p, t: build_model(_cfg("jbim.him_pretrained_path", str(p)), 4),
    "jbim.lim_pretrained_path": lambda p, t: build_model(_cfg("jbim.lim_pretrained_path", str(p)), 4),
    "jbim.him_checkpoint": lambda p, t: build_model(load_config(CPU_CONFIG, SMALL), 4, him_checkpoint=str(p)),
    "jbim.lim_checkpoint": lambda p, t: build_model(load_config(CPU_CONFIG, SMALL), 4, lim_checkpoint=str(p)),
    "matcher": lambda p, t: CrossResolutionMatcher([str(p)]),
    "load_jbim_checkpoint": lambda p, t: load_jbim_checkpoint(str(p)),
    "export-weights": lambda p, t: main(["export-weights", "--config-file", CPU_CONFIG, "data.save_dir",
                                         str(t / "out"), "model.load_weights", str(p)]),
}


def _engine():
    from test_engine import make_engine

    return make_engine(sr="srcnn_915")


@pytest.mark.parametrize("name", list(LOADING_PATHS))
def test_code_running_pickle_is_refused_on_every_loading_path(name, evil, tmp_path, capsys):
    path, marker = evil
    try:
        code = LOADING_PATHS[name](path, tmp_path)
    except CheckpointError as err:
        message = str(err)
    else:  # the CLI commands print the error and exit with 2
        assert code == 2
        message = capsys.readouterr().err
    assert "refused" in message and str(path) in message
    assert not marker.exists()
    assert not (tmp_path / "out" / EXPORT_NAME).exists()


@pytest.fixture
def checkpoint(tmp_path):
    model = tiny_model().eval()
    path = tmp_path / "model.pth.tar-3"
    torch.save({"state_dict": model.state_dict(), "jbim_kwargs": model.jbim_kwargs, "epoch": 3,
                "stage": "joint", "optimizer": {"state": {}, "param_groups": []}}, path)
    return path, model


def test_exported_safetensors_rebuilds_the_model(checkpoint, tmp_path):
    path, model = checkpoint
    out = export_weights(str(path), str(tmp_path / "w.safetensors"))
    loaded = load_torch_file(out)
    assert loaded["jbim_kwargs"] == model.jbim_kwargs and loaded["epoch"] == 3 and loaded["stage"] == "joint"
    assert "optimizer" not in loaded
    rebuilt = load_jbim_checkpoint(str(out))
    x = torch.rand(2, 3, 32, 16)
    with torch.no_grad():
        assert torch.equal(rebuilt.probe_features(x), model.probe_features(x))
        assert torch.equal(rebuilt.gallery_features(x), model.gallery_features(x))
    other = tiny_model()
    loaded_keys, skipped = load_pretrained_weights(other, str(out))
    assert set(loaded_keys) == set(model.state_dict()) and not skipped
    assert load_pretrained_weights(other.him, str(out), prefix="him.")[0]  # jbim.him_checkpoint
    matcher = CrossResolutionMatcher([str(out)])
    assert matcher.match([x[0].permute(1, 2, 0).mul(255).byte().numpy()],
                         [x[1].permute(1, 2, 0).mul(255).byte().numpy()]).distances.shape == (1, 1)


def test_export_weights_command_writes_a_shareable_file(checkpoint, tmp_path):
    path, model = checkpoint
    old = os.umask(0o022)
    try:
        code = main(["export-weights", "--config-file", CPU_CONFIG, "data.save_dir", str(tmp_path / "out"),
                     "model.load_weights", str(path)])
    finally:
        os.umask(old)
    assert code == 0
    out = tmp_path / "out" / EXPORT_NAME
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert load_jbim_checkpoint(str(out)).jbim_kwargs == model.jbim_kwargs


def test_safetensors_cannot_resume_training(checkpoint, tmp_path):
    out = export_weights(str(checkpoint[0]), str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointMismatchError, match="not a training checkpoint"):
        _engine().resume(str(out))


def test_truncated_safetensors_is_named(checkpoint, tmp_path):
    out = export_weights(str(checkpoint[0]), str(tmp_path / "w.safetensors"))
    data = out.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="w.safetensors"):
        load_jbim_checkpoint(str(out))
