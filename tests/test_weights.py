"""ImageNet backbone weights fetched the torchreid way, from a local HTTP server: cache, checks, errors."""
import hashlib
import io
import os
import time
from pathlib import Path

import pytest
import torch
import torchreid
import torchvision
from http_server import LocalServer, refused_url, silent_server
from synthetic import make_caviar

import jbim_reid.utils.download
from jbim_reid.cli import main
from jbim_reid.models import JBIM, WeightsUnavailableError, imagenet, jbim_options
from jbim_reid.models.imagenet import (backbone_state_dict, imagenet_state_dict, mobilenetv2_from_torchvision,
                                       weight_source)
from jbim_reid.training.checks import load_config
from jbim_reid.training.runner import build_model
from jbim_reid.utils.fileio import CheckpointError

CPU_CONFIG = str(Path(__file__).parent.parent / "configs" / "caviar" / "jbim_osnet_x0_25_cpu.yaml")


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch cache (``$TORCH_HOME``) and no URL overrides left behind."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(imagenet, "URL_OVERRIDES", {})
    return home


def _bytes(state) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _osnet_state(shift: float = 1.0):
    """An osnet_x0_25 state dict in torchreid's layout, shifted so it differs from a fresh model."""
    model = torchreid.models.build_model("osnet_x0_25", num_classes=1000, pretrained=False)
    return {k: v + shift if v.is_floating_point() else v for k, v in model.state_dict().items()}


def test_fetch_fills_torchreids_cache_once_and_later_runs_are_offline(torch_home, capsys):
    state = _osnet_state()
    with LocalServer({"/osnet.pth": _bytes(state)}) as server:
        imagenet.URL_OVERRIDES["osnet_x0_25"] = server.url("/osnet.pth")
        model = torchreid.models.build_model("jbim_osnet_x0_25", num_classes=3, pretrained=True)
        assert server.requests == ["/osnet.pth"]  # one download for HIM and LIM
    cached = torch_home / "checkpoints" / "osnet_x0_25_imagenet.pth"  # torchreid's osnet cache file
    assert weight_source("osnet_x0_25").cache_path == cached and cached.is_file()
    assert not list(cached.parent.glob(".*part"))
    for branch in (model.him, model.lim):
        assert torch.equal(branch.backbone.conv1.conv.weight, state["conv1.conv.weight"])
    imagenet.URL_OVERRIDES["osnet_x0_25"] = refused_url()  # offline now: the cache must serve
    again = JBIM(3, backbone="osnet_x0_25", height=64, width=32, backbone_pretrained=True)
    assert torch.equal(again.lim.backbone.conv1.conv.weight, state["conv1.conv.weight"])
    assert "ImageNet weights of osnet_x0_25" in capsys.readouterr().out


def _random_torchvision_mobilenetv2():
    model = torchvision.models.mobilenet_v2().eval()
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():  # non-trivial BatchNorm statistics make the check meaningful
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=generator) - 0.5)
    return model


def test_mobilenetv2_torchvision_weights_mapped_to_torchreid_give_the_same_features(torch_home):
    tv_model = _random_torchvision_mobilenetv2()
    data = _bytes(tv_model.state_dict())
    name = f"mobilenet_v2-{hashlib.sha256(data).hexdigest()[:8]}.pth"  # torch hub's naming
    with LocalServer({f"/{name}": data}) as server:
        imagenet.URL_OVERRIDES["mobilenetv2_x1_0"] = server.url(f"/{name}")
        state = imagenet_state_dict("mobilenetv2_x1_0")
    assert (torch_home / "hub" / "checkpoints" / name).is_file()  # torch hub's checkpoints folder
    reid_model = torchreid.models.build_model("mobilenetv2_x1_0", num_classes=10, pretrained=False)
    missing, unexpected = reid_model.load_state_dict(state, strict=False)
    assert set(missing) == {"classifier.weight", "classifier.bias"} and not unexpected
    reid_model.eval()
    x = torch.randn(2, 3, 96, 48)
    with torch.no_grad():
        expected = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(tv_model.features(x), 1), 1)
        got = reid_model(x)
    assert got.shape == expected.shape == (2, 1280)
    assert torch.allclose(got, expected, atol=1e-5)


def test_mobilenetv2_mapping_matches_the_shared_torchreid_layout_file():
    """Key names and shapes of the mapping equal an earlier torchreid-layout conversion."""
    shared = Path(os.environ.get("JBIM_WEIGHTS_ROOT", "")) / "mobilenetv2_x1_0_imagenet.pth"
    if not os.environ.get("JBIM_WEIGHTS_ROOT") or not shared.is_file():
        pytest.skip("JBIM_WEIGHTS_ROOT does not hold mobilenetv2_x1_0_imagenet.pth")
    reference = backbone_state_dict(shared, "mobilenetv2_x1_0")
    mapped = mobilenetv2_from_torchvision(torchvision.models.mobilenet_v2().state_dict())
    mapped = {k: v for k, v in mapped.items() if not k.endswith("num_batches_tracked")}
    assert {k: tuple(v.shape) for k, v in mapped.items()} == \
        {k: tuple(v.shape) for k, v in reference.items() if not k.endswith("num_batches_tracked")}
    for key in ("conv2.0.conv1.conv.weight", "conv2.0.conv1.bn.running_var"):
        assert torch.equal(mapped[key], reference[key])  # the same identity expansion conv


@pytest.mark.parametrize("transport", ["urllib", "gdown"])
@pytest.mark.parametrize("failure", ["never_answers", "refused"])
def test_unreachable_server_gives_a_clear_error_quickly(torch_home, monkeypatch, transport, failure):
    monkeypatch.setattr(jbim_reid.utils.download, "DOWNLOAD_TIMEOUT_S", 1.0)
    monkeypatch.setattr(jbim_reid.utils.download, "_is_google_drive", lambda url: transport == "gdown")
    with silent_server() as silent:
        imagenet.URL_OVERRIDES["osnet_x0_25"] = silent if failure == "never_answers" else refused_url()
        start = time.monotonic()
        with pytest.raises(WeightsUnavailableError) as info:
            torchreid.models.build_model("jbim_osnet_x0_25", num_classes=3, pretrained=True)
        elapsed = time.monotonic() - start
    message = str(info.value)
    cache = torch_home / "checkpoints" / "osnet_x0_25_imagenet.pth"
    for part in ("'osnet_x0_25'", imagenet.URL_OVERRIDES["osnet_x0_25"], str(cache),
                 "model.pretrained_path", "model.pretrained False"):
        assert part in message
    assert elapsed < 10
    assert not cache.parent.exists() or not list(cache.parent.iterdir())  # nothing half-written


@pytest.mark.slow
def test_cli_train_with_a_silent_server_stops_within_30_s_and_exits_2(torch_home, tmp_path, capsys):
    root = make_caviar(tmp_path / "data", num_two_cam=4, num_one_cam=0)
    with silent_server() as silent:
        imagenet.URL_OVERRIDES["osnet_x0_25"] = silent
        start = time.monotonic()
        code = main(["train", "--config-file", CPU_CONFIG, "data.root", str(root),
                     "data.save_dir", str(tmp_path / "log"), "model.pretrained", "True",
                     "data.workers", "0", "data.height", "32", "data.width", "16",
                     "train.batch_size", "4", "sampler.num_instances", "2"])
        elapsed = time.monotonic() - start
    assert code == 2 and elapsed < 30  # the default per-socket timeout, one try
    err = capsys.readouterr().err
    assert "osnet_x0_25" in err and silent in err and "model.pretrained_path" in err


def test_corrupt_download_is_rejected_and_removed(torch_home):
    with LocalServer({"/osnet.pth": b"not a torch file" * 100}) as server:
        imagenet.URL_OVERRIDES["osnet_x0_25"] = server.url("/osnet.pth")
        with pytest.raises(WeightsUnavailableError, match="corrupt and has been removed"):
            imagenet_state_dict("osnet_x0_25")
    assert not weight_source("osnet_x0_25").cache_path.exists()


def test_wrong_file_in_the_cache_is_rejected_and_removed(torch_home):
    cache = weight_source("osnet_x0_25").cache_path
    cache.parent.mkdir(parents=True)
    other = torchreid.models.build_model("resnet18", num_classes=1, pretrained=False).state_dict()
    torch.save(other, cache)  # a valid torch file of another backbone: fails the key check
    with pytest.raises(WeightsUnavailableError, match="does not fit backbone"):
        imagenet_state_dict("osnet_x0_25")
    assert not cache.exists()


def test_hash_mismatch_is_rejected_and_nothing_is_cached(torch_home):
    data = _bytes(torchvision.models.mobilenet_v2().state_dict())
    with LocalServer({"/mobilenet_v2-00000000.pth": data}) as server:
        imagenet.URL_OVERRIDES["mobilenetv2_x1_0"] = server.url("/mobilenet_v2-00000000.pth")
        with pytest.raises(WeightsUnavailableError, match="sha256"):
            imagenet_state_dict("mobilenetv2_x1_0")
    assert not list((torch_home / "hub" / "checkpoints").iterdir())


def test_interrupted_weights_download_leaves_nothing_and_the_next_run_succeeds(torch_home):
    state = _osnet_state()
    with LocalServer({"/osnet.pth": _bytes(state)}) as server:
        server.truncate["/osnet.pth"] = 1
        imagenet.URL_OVERRIDES["osnet_x0_25"] = server.url("/osnet.pth")
        with pytest.raises(WeightsUnavailableError):
            imagenet_state_dict("osnet_x0_25")
        assert not list(weight_source("osnet_x0_25").cache_path.parent.iterdir())
        assert torch.equal(imagenet_state_dict("osnet_x0_25")["conv1.conv.weight"],
                           state["conv1.conv.weight"])


def test_pretrained_false_is_random_says_so_and_never_downloads(torch_home, capsys):
    imagenet.URL_OVERRIDES["osnet_x0_25"] = refused_url()  # a download attempt would raise
    cfg = load_config(CPU_CONFIG, ["data.height", "64", "data.width", "32"])
    assert not cfg.model.pretrained
    build_model(cfg, num_classes=3)
    assert "model.pretrained False: the backbones start from random weights" in capsys.readouterr().out
    cfg = load_config(CPU_CONFIG, ["model.pretrained", "True", "data.height", "64", "data.width", "32"])
    with pytest.raises(WeightsUnavailableError):
        build_model(cfg, num_classes=3)


def test_local_backbone_file_is_checked_against_the_backbone(tmp_path):
    bad = tmp_path / "resnet18.pth"
    torch.save(torchreid.models.build_model("resnet18", num_classes=1, pretrained=False).state_dict(), bad)
    with pytest.raises(CheckpointError, match="does not fit backbone"):
        JBIM(3, backbone="osnet_x0_25", height=64, width=32, backbone_pretrained_path=str(bad))
    assert bad.is_file()  # a local file is never deleted


def test_jbim_options_reach_builders_called_by_torchreid(tmp_path, torch_home):
    imagenet.URL_OVERRIDES["osnet_x0_25"] = refused_url()  # the local file must be used instead
    path = tmp_path / "osnet.pth"
    state = _osnet_state(shift=2.0)
    torch.save(state, path)
    with jbim_options(backbone_pretrained_path=str(path), ratio=0.25):
        with jbim_options(variant="him"):
            model = torchreid.models.build_model("jbim_osnet_x0_25", num_classes=4, pretrained=True)
    assert model.ratio == 0.25 and model.variant == "him" and model.lim is None
    assert torch.equal(model.him.backbone.conv1.conv.weight, state["conv1.conv.weight"])
    plain = torchreid.models.build_model("jbim_osnet_x0_25", num_classes=4, pretrained=False)
    assert plain.ratio == 0.5 and plain.variant == "jbim"  # options end with the block
    with pytest.raises(TypeError, match="ratoi"):
        with jbim_options(ratoi=0.5):
            pass


def test_weights_command_fetches_and_lists(torch_home, capsys):
    state = _osnet_state()
    with LocalServer({"/osnet.pth": _bytes(state)}) as server:
        imagenet.URL_OVERRIDES["osnet_x0_25"] = server.url("/osnet.pth")
        assert main(["weights", "fetch", "--backbone", "osnet_x0_25"]) == 0
        assert main(["weights", "fetch", "--config-file", CPU_CONFIG]) == 0  # model.name osnet_x0_25
        assert server.requests == ["/osnet.pth"]
    capsys.readouterr()
    assert main(["weights", "list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "cached" in lines["osnet_x0_25"] and str(torch_home) in lines["osnet_x0_25"]
    assert "missing" in lines["resnet50"]
    assert main(["weights", "fetch", "--backbone", "no_such_net"]) == 2
    assert "no_such_net" in capsys.readouterr().err
