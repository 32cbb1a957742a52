"""An export folder is replaced whole, records its graphs' sha256, and OnnxMatcher refuses graphs that differ."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchreid

from jbim_reid import OnnxMatcher
from jbim_reid.cli import main
from jbim_reid.deploy.export import export_model, sha256_file
from jbim_reid.models import JBIM
from jbim_reid.utils.errors import DataError

pytest.importorskip("onnxruntime")

# exports a tiny model to argv[1] and is killed (SIGKILL) while the gallery graph is written
KILLED_EXPORT = """
import os, sys, torch
from jbim_reid.deploy.export import export_model
from jbim_reid.models import JBIM
calls, real = [], torch.onnx.export
def dying(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        os.kill(os.getpid(), 9)
    return real(*args, **kwargs)
torch.onnx.export = dying
torch.manual_seed(7)
export_model(JBIM(num_classes=3, backbone="osnet_x0_25", sr="espcn", ratio=0.25, height=64, width=32), sys.argv[1])
"""


def tiny_model(seed: int) -> JBIM:
    torch.manual_seed(seed)
    return JBIM(num_classes=3, backbone="osnet_x0_25", sr="espcn", ratio=0.5, height=64, width=32).eval()


def contents(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def siblings(folder: Path) -> list:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def test_export_records_sha256_and_replaces_the_folder_whole(tmp_path):
    out = tmp_path / "export"
    export_model(tiny_model(1), str(out))
    (out / "leftover.txt").write_text("from an earlier export")
    meta = export_model(tiny_model(2), str(out))
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "gallery.onnx", "probe.onnx"]
    for name in ("probe.onnx", "gallery.onnx"):
        assert meta["files"][name]["sha256"] == sha256_file(str(out / name))
    assert json.loads((out / "export.json").read_text()) == meta
    assert siblings(out) == []


def test_export_killed_midway_leaves_the_old_export_and_its_leftovers_go_at_the_next(tmp_path):
    out = tmp_path / "export"
    export_model(tiny_model(1), str(out))
    before = contents(out)
    killed = subprocess.run([sys.executable, "-c", KILLED_EXPORT, str(out)], capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert contents(out) == before  # not a mix of the old and the new export
    OnnxMatcher([out])
    assert siblings(out), "the killed export left no temporary folder: the test did not kill it midway"
    export_model(tiny_model(3), str(out))
    assert siblings(out) == []  # the killed export's temporary folder is gone
    OnnxMatcher([out])


@pytest.mark.parametrize("damage", ["other graph", "truncated"])
def test_onnx_matcher_refuses_graphs_that_differ_from_export_json(tmp_path, damage):
    out = tmp_path / "export"
    export_model(tiny_model(1), str(out))
    gallery = out / "gallery.onnx"
    data = (out / "probe.onnx").read_bytes() if damage == "other graph" else gallery.read_bytes()[:-100]
    gallery.write_bytes(data)
    with pytest.raises(DataError, match=f"'{out}'.*{gallery}.*sha256"):
        OnnxMatcher([out])


def test_onnx_matcher_names_a_garbage_export_json(tmp_path):
    out = tmp_path / "export"
    export_model(tiny_model(1), str(out))
    (out / "export.json").write_text("{not json")
    with pytest.raises(DataError, match=f"{out / 'export.json'}"):
        OnnxMatcher([out])


@pytest.fixture
def checkpoint(tmp_path):
    model = tiny_model(4)
    torchreid.utils.save_checkpoint({"state_dict": model.state_dict(), "epoch": 1,
                                     "jbim_kwargs": model.jbim_kwargs}, str(tmp_path / "ckpt"))
    return tmp_path / "ckpt" / "model.pth.tar-1"


def one_line_error(capsys, *named):
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    for text in named:
        assert text in err, err
    return err


def test_cli_export_out_naming_a_file_is_one_line(checkpoint, tmp_path, capsys):
    target = tmp_path / "a_file"
    target.write_text("keep me")
    assert main(["export", "model.load_weights", str(checkpoint), "--out", str(target)]) == 2
    one_line_error(capsys, f"--out '{target}' is a file")
    assert target.read_text() == "keep me"


def test_cli_export_refuses_a_folder_of_other_files(checkpoint, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"jpeg")
    assert main(["export", "model.load_weights", str(checkpoint), "--out", str(folder)]) == 2
    one_line_error(capsys, f"--out '{folder}'", "no export.json")
    assert os.listdir(folder) == ["holiday.jpg"]
