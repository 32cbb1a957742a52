"""ONNX export (jbim_reid.deploy.export, ``jbim-reid export``) and OnnxMatcher: parity with torch."""
import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchreid
from PIL import Image
from synthetic import person_image

from jbim_reid import CrossResolutionMatcher, OnnxMatcher
from jbim_reid.cli import main
from jbim_reid.deploy.export import export_model, gallery_inputs, probe_inputs, sha256_file
from jbim_reid.models import JBIM
from jbim_reid.utils.optional import require

pytest.importorskip("onnxruntime")


def caviar_images(data_root, ids=(1, 2, 3), per_id=(1, 9)):
    """Real CAVIAR crops: per id a small and a large one (CAVIAR4REID names: <pid:4><index:3>.jpg)."""
    folder = data_root / "caviar" / "CAVIAR4REID" / "cropped_images"
    if not folder.is_dir():
        pytest.skip(f"CAVIAR4REID not found under {folder}")
    return [folder / f"{pid:04d}{k:03d}.jpg" for pid in ids for k in per_id]


def calibrate_bn(model, x):
    """BN statistics from real images: a random network's default ones (mean 0, var 1) can collapse
    every image to one feature (MobileNetV2 does), which would make a parity check vacuous."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        model.probe_features(x)
        model.gallery_features(x)
    return model.eval()


def normalised(x):
    return F.normalize(torch.as_tensor(x), dim=1).numpy()


def run_onnx(folder, name, feeds):
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"])
    return session.run(["feature"], {i.name: feeds[i.name] for i in session.get_inputs()})[0]


@pytest.mark.slow
@pytest.mark.parametrize("backbone,sr", [("resnet50", "srcnn"), ("osnet_x0_25", "espcn"),
                                         ("mobilenetv2_x1_0", "srcnn_915")])
def test_onnx_features_equal_torch_on_real_caviar(data_root, tmp_path, backbone, sr):
    images = caviar_images(data_root)
    torch.manual_seed(0)
    model = JBIM(num_classes=4, backbone=backbone, sr=sr, ratio=0.5, height=64, width=32)
    x = probe_inputs(images, 64, 32)
    calibrate_bn(model, torch.from_numpy(x))
    meta = export_model(model, str(tmp_path))
    assert meta["feature_dim"] == model.feature_dim and meta["ratio"] == 0.5
    x_hr, x_low = gallery_inputs(images, 64, 32, 0.5)
    hw = torch.tensor([(img.height, img.width) for img in map(Image.open, images)])
    with torch.no_grad():
        probe_torch = model.probe_features(torch.from_numpy(x))
        gallery_torch = model.gallery_features(torch.from_numpy(x_hr), hw)  # down_m inside the model
    probe_onnx = run_onnx(tmp_path, "probe.onnx", {"image": x})
    gallery_onnx = run_onnx(tmp_path, "gallery.onnx", {"image": x_hr, "image_low": x_low})
    assert probe_onnx.shape == (len(images), model.feature_dim)  # batch 6, traced with 1
    assert normalised(probe_torch).std(axis=0).max() > 1e-3  # the images give different features
    assert np.abs(normalised(probe_onnx) - normalised(probe_torch)).max() < 1e-4
    assert np.abs(normalised(gallery_onnx) - normalised(gallery_torch)).max() < 1e-4
    # the down_m input matters: the gallery graph given the HR image twice gives other features
    wrong = run_onnx(tmp_path, "gallery.onnx", {"image": x_hr, "image_low": x_hr})
    assert np.abs(normalised(wrong) - normalised(gallery_torch)).max() > 1e-3


@pytest.mark.parametrize("variant,inputs", [("him", ["image"]), ("lim", ["image_low"]),
                                            ("him_lim", ["image", "image_low"])])
def test_every_variant_exports_with_its_own_gallery_inputs(tmp_path, variant, inputs):
    torch.manual_seed(1)
    model = JBIM(num_classes=3, backbone="osnet_x0_25", variant=variant, ratio=0.25, height=64, width=32).eval()
    meta = export_model(model, str(tmp_path))
    assert meta["gallery"]["inputs"] == inputs and meta["variant"] == variant
    images = [person_image(pid, (96, 40), seed=pid) for pid in range(3)]
    x_hr, x_low = gallery_inputs(images, 64, 32, 0.25)
    with torch.no_grad():
        expected = model.gallery_features(torch.from_numpy(x_hr), torch.tensor([[96, 40]] * 3))
    got = run_onnx(tmp_path, "gallery.onnx", {"image": x_hr, "image_low": x_low})
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)
    assert max(meta["parity_max_abs"].values()) < 1e-4


def save_checkpoint(model, folder):
    torchreid.utils.save_checkpoint({"state_dict": model.state_dict(), "epoch": 1,
                                     "jbim_kwargs": model.jbim_kwargs}, str(folder))
    return folder / "model.pth.tar-1"


@pytest.mark.slow
def test_cli_export_writes_graphs_and_metadata(tmp_path):
    torch.manual_seed(2)
    model = JBIM(num_classes=3, backbone="osnet_x0_25", sr="espcn", ratio=1 / 3, height=64, width=32).eval()
    ckpt = save_checkpoint(model, tmp_path / "ckpt")
    out = tmp_path / "export"
    assert main(["export", "model.load_weights", str(ckpt), "--out", str(out)]) == 0
    meta = json.loads((out / "export.json").read_text())
    assert meta["checkpoint"]["sha256"] == sha256_file(str(ckpt))
    assert meta["input"] == {"height": 64, "width": 32, "channels": "RGB", "layout": "NCHW",
                             "resize": "bicubic", "scale": "1/255"}
    assert meta["ratio"] == pytest.approx(1 / 3) and meta["sr"] == "espcn"
    assert meta["files"]["probe.onnx"]["bytes"] == (out / "probe.onnx").stat().st_size > 0
    require("onnx", "test").checker.check_model(str(out / "gallery.onnx"))


def test_cli_export_needs_a_checkpoint(tmp_path, capsys):
    assert main(["export", "--out", str(tmp_path)]) == 2
    assert "needs model.load_weights" in capsys.readouterr().err
    assert main(["export", "model.load_weights", str(tmp_path / "nope.pth"), "--out", str(tmp_path)]) == 2
    assert "file not found" in capsys.readouterr().err


@pytest.mark.slow
def test_onnx_matcher_equals_torch_matcher_on_real_caviar(data_root, tmp_path):
    images = caviar_images(data_root, ids=(4, 5, 6, 7), per_id=(1, 2, 9))
    probes, gallery = images[0::3], images[1::3] + images[2::3]
    folders, models = [], []
    for i, ratio in enumerate((1 / 2, 1 / 4)):
        torch.manual_seed(10 + i)
        model = JBIM(num_classes=3, backbone="osnet_x0_25", sr="espcn", ratio=ratio, height=64, width=32)
        models.append(calibrate_bn(model, torch.from_numpy(probe_inputs(images, 64, 32))))
        folders.append(tmp_path / f"anchor_{i}")
        export_model(models[-1], str(folders[-1]))
    expected = CrossResolutionMatcher(models).match(probes, gallery)
    got = OnnxMatcher(folders, batch_size=3).match(probes, gallery)
    np.testing.assert_allclose(got.weights, expected.weights)
    np.testing.assert_allclose(got.distances, expected.distances, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got.ranking, expected.ranking)
    assert np.ptp(expected.distances, axis=1).min() > 1e-3  # a ranking, not ties


def test_onnx_matcher_names_a_folder_that_is_not_an_export(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not an export folder"):
        OnnxMatcher([tmp_path])


def test_missing_optional_package_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes "import faiss" fail
    with pytest.raises(ImportError, match=r"jbim-reid index needs .*pip install 'faiss-cpu'"):
        require("faiss", "jbim-reid index")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"pip install 'onnxruntime'"):
        OnnxMatcher(["unused"])
