"""ImageNet weights of the backbones, fetched where and how torchreid's ``build_model(pretrained=True)`` does.

Sources are read from the installed torchreid (``torchreid.models.resnet.model_urls``,
``torchreid.models.osnet.pretrained_urls``, ...) and cached where torchreid caches them: torch hub's
``<hub dir>/checkpoints/<file name>`` for the torchvision URLs it passes to ``model_zoo.load_url``,
``$TORCH_HOME/checkpoints/<backbone>_imagenet.pth`` for the Google Drive files it fetches with gdown.
``mobilenetv2_x1_0``, for which torchreid only prints a manual link, uses torchvision's ImageNet
MobileNetV2 with its keys mapped to torchreid's layout (:func:`mobilenetv2_from_torchvision`).

Every file is checked before use (sha256 prefix where the file name publishes one, then loaded with
``jbim_reid.utils.fileio.load_torch_file`` and matched key by key against the backbone under the loading
rule of ``jbim_reid.models.weights``); a cached file that fails is removed. A download that cannot happen
raises :class:`WeightsUnavailableError`, naming the backbone, the URL, the cache path and
``model.pretrained_path``.
"""
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torchreid
import torchvision
from torch import nn

from jbim_reid.models.weights import BY_DESIGN, check_weights_fit
from jbim_reid.utils.download import DownloadError, download_file, hub_hash_prefix, sha256_file
from jbim_reid.utils.fileio import CheckpointError, load_torch_file, strip_module_prefix

__all__ = ["WeightSource", "WeightsUnavailableError", "URL_OVERRIDES", "TORCHREID_WEIGHTS", "BACKBONE_OPTIONAL",
           "MOBILENETV2_URL", "weight_source", "imagenet_state_dict", "fetch_imagenet_weights",
           "backbone_state_dict", "init_state_dict", "check_backbone_state", "mobilenetv2_from_torchvision",
           "supported_backbones", "torch_home"]

TORCHREID_WEIGHTS: Dict[str, Tuple[str, str, str]] = {  # backbone -> (torchreid.models module, URL dict, key)
    **{name: ("resnet", "model_urls", name)
       for name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
                    "resnext101_32x8d")},
    "resnet50_fc512": ("resnet", "model_urls", "resnet50"),
    **{name: ("osnet", "pretrained_urls", name)
       for name in ("osnet_x1_0", "osnet_x0_75", "osnet_x0_5", "osnet_x0_25", "osnet_ibn_x1_0")},
    **{name: ("osnet_ain", "pretrained_urls", name)
       for name in ("osnet_ain_x1_0", "osnet_ain_x0_75", "osnet_ain_x0_5", "osnet_ain_x0_25")},
}

# torchvision's ImageNet MobileNetV2 (top-1 71.9), the recipe of torchreid's manual-link file.
MOBILENETV2_URL = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.url

# backbone -> URL used instead of torchreid's (a mirror; tests point it at a local server).
URL_OVERRIDES: Dict[str, str] = {}

# Tensors of a torchreid backbone a weight file may lack by design (weights.BY_DESIGN, plus the re-id
# head torchreid builds on the ImageNet network: the fc layers of e.g. resnet50_fc512).
BACKBONE_OPTIONAL = BY_DESIGN + ("fc.*",)


class WeightsUnavailableError(FileNotFoundError):
    """The backbone's ImageNet weights could not be downloaded or the file is corrupt."""


@dataclass(frozen=True)
class WeightSource:
    """Where a backbone's ImageNet weights come from and where they are cached.

    Attributes:
        backbone: torchreid model name.
        url: download URL (torchreid's, torchvision's for mobilenetv2_x1_0, or an override).
        cache_path: the cached file (torchreid's own cache location).
        sha256_prefix: published start of the file's sha256, or None.
        layout: ``torchreid`` or ``torchvision_mobilenetv2`` (mapped on load).
    """

    backbone: str
    url: str
    cache_path: Path
    sha256_prefix: Optional[str]
    layout: str = "torchreid"


def torch_home() -> Path:
    """``$TORCH_HOME``, else ``$XDG_CACHE_HOME/torch``, else ``~/.cache/torch`` (as torchreid's osnet)."""
    default = os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(os.path.expanduser(os.getenv("TORCH_HOME", default)))


def supported_backbones() -> List[str]:
    """Backbone names whose ImageNet weights can be fetched."""
    return sorted([*TORCHREID_WEIGHTS, "mobilenetv2_x1_0"])


def weight_source(backbone: str) -> WeightSource:
    """The :class:`WeightSource` of ``backbone``.

    Raises:
        WeightsUnavailableError: torchreid publishes no downloadable ImageNet file for it.
    """
    if backbone == "mobilenetv2_x1_0":
        url = URL_OVERRIDES.get(backbone, MOBILENETV2_URL)
        return WeightSource(backbone, url, _hub_cache(url), hub_hash_prefix(url),
                            "torchvision_mobilenetv2")
    if backbone not in TORCHREID_WEIGHTS:
        raise WeightsUnavailableError(
            f"model.pretrained True: jbim-reid knows no downloadable ImageNet weights for backbone "
            f"'{backbone}' (known: {', '.join(supported_backbones())}). Set model.pretrained_path to a "
            "local weights file, or model.pretrained False to train from random weights.")
    module, table, key = TORCHREID_WEIGHTS[backbone]
    official = getattr(getattr(torchreid.models, module), table)[key]
    url = URL_OVERRIDES.get(backbone, official)
    if "drive.google.com" in official:  # torchreid's gdown branch (osnet*): its own file name
        cache = torch_home() / "checkpoints" / f"{key}_imagenet.pth"
        return WeightSource(backbone, url, cache, None)
    return WeightSource(backbone, url, _hub_cache(url), hub_hash_prefix(url))


def _hub_cache(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?", 1)[0])


def _unavailable(source: WeightSource, reason: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"model.pretrained True: cannot get the ImageNet weights of backbone '{source.backbone}' from "
        f"{source.url} ({reason}). On a machine without internet access, download that file elsewhere "
        f"and place it at {source.cache_path} (or run `jbim-reid weights fetch --backbone "
        f"{source.backbone}` where there is a connection), or set model.pretrained_path to a local "
        "weights file; model.pretrained False trains from random weights instead.")


def fetch_imagenet_weights(backbone: str, timeout: Optional[float] = None) -> Path:
    """Download ``backbone``'s ImageNet file into the cache unless it is there; returns its path.

    Raises:
        WeightsUnavailableError: no network, refused, timed out, incomplete or wrong hash.
    """
    source = weight_source(backbone)
    if not source.cache_path.is_file():
        print(f"=> Downloading the ImageNet weights of {backbone} from {source.url} "
              f"to {source.cache_path}")
        try:
            download_file(source.url, source.cache_path, timeout=timeout,
                          sha256_prefix=source.sha256_prefix)
        except DownloadError as err:
            raise _unavailable(source, str(err)) from None
    return source.cache_path


def imagenet_state_dict(backbone: str, module: Optional[nn.Module] = None,
                        timeout: Optional[float] = None) -> Dict[str, torch.Tensor]:
    """The checked ImageNet state dict of ``backbone`` in torchreid's layout (downloaded once).

    Args:
        backbone: torchreid model name.
        module: the backbone to check the keys against; None builds one.
        timeout: seconds per socket operation of the download (None: ``DOWNLOAD_TIMEOUT_S``).

    Raises:
        WeightsUnavailableError: the download failed, or the cached file is corrupt (it is removed).
    """
    path = fetch_imagenet_weights(backbone, timeout)
    source = weight_source(backbone)
    try:
        if source.sha256_prefix and not sha256_file(path).startswith(source.sha256_prefix):
            raise CheckpointError(f"its sha256 does not start with the published {source.sha256_prefix}")
        return backbone_state_dict(path, backbone, module, what=f"ImageNet weights of {backbone}")
    except CheckpointError as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise _unavailable(source, f"the cached file was corrupt and has been removed: {err}") from None


def backbone_state_dict(path: os.PathLike, backbone: str, module: Optional[nn.Module] = None,
                        what: str = "") -> Dict[str, torch.Tensor]:
    """Load a backbone weights file, map torchvision's MobileNetV2 layout, and check its keys.

    Args:
        path: a state dict file (or a checkpoint dict with ``state_dict``); ``module.`` prefixes
            are removed.
        backbone: torchreid model name the file is for.
        module: the backbone to check against; None builds ``backbone`` without weights.
        what: the config key the file came from (default ``<backbone> weights``), for errors.

    Raises:
        CheckpointError: unreadable or unsafe file, or it does not fill the backbone
            (:func:`check_backbone_state`).
    """
    what = what or f"{backbone} weights"
    loaded = load_torch_file(path, what=what)
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{what}: '{path}' holds no state dict")
    state = strip_module_prefix(state)
    if backbone.startswith("mobilenetv2") and any(k.startswith("features.") for k in state):
        state = mobilenetv2_from_torchvision(state)
    if module is None:
        module = torchreid.models.build_model(backbone, num_classes=1, pretrained=False)
    check_backbone_state(module, state, what, str(path), backbone, loaded)
    return state


def init_state_dict(path: os.PathLike, backbone: str, module: Optional[nn.Module] = None
                    ) -> Dict[str, torch.Tensor]:
    """The backbone weights of a torchreid model checkpoint (``jbim.init_from``), classifier dropped.

    Raises:
        CheckpointError: the file is unreadable or unsafe, is a JBIM checkpoint, or does not fit
            ``backbone`` (the error names the file and what it holds).
    """
    loaded = load_torch_file(path, what="jbim.init_from")
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"jbim.init_from: '{path}' holds no state dict (got {type(loaded).__name__})")
    state = strip_module_prefix(state)
    parts = sorted({k.split(".", 1)[0] for k in state} & {"him", "lim", "sr", "fusion"})
    if "jbim_kwargs" in loaded or parts:
        raise CheckpointError(
            f"jbim.init_from: '{path}' is a JBIM checkpoint (parts {parts or 'jbim_kwargs'}), not a torchreid "
            f"model: it takes a {backbone} checkpoint as torchreid's engines write it; a JBIM checkpoint "
            "goes to model.load_weights, or per branch to jbim.him_checkpoint / jbim.lim_checkpoint")
    state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    if module is None:
        module = torchreid.models.build_model(backbone, num_classes=1, pretrained=False)
    check_backbone_state(module, state, "jbim.init_from", str(path), backbone, loaded)
    return state


def check_backbone_state(module: nn.Module, state: Mapping[str, torch.Tensor], what: str, source: str,
                         backbone: str = "", loaded: Any = None) -> None:
    """Raise CheckpointError unless ``state`` fills every tensor of the backbone ``module`` but the
    :data:`BACKBONE_OPTIONAL` ones (``weights.check_weights_fit``: the one loading rule).

    Args:
        module: the backbone.
        state: the file's state dict (prefixes removed, layout mapped).
        what: the config key the file came from.
        source: the file.
        backbone: torchreid name of ``module``, for the error.
        loaded: the whole file as read, for the error's guess of what it holds.
    """
    name = f"backbone {type(module).__name__}" + (f" ({backbone})" if backbone else "")
    check_weights_fit(module, state, what, source, BACKBONE_OPTIONAL, name, loaded)


_MOBILENETV2_STAGES = (("conv2", 1), ("conv3", 2), ("conv4", 3), ("conv5", 4), ("conv6", 3),
                       ("conv7", 3), ("conv8", 1))  # torchreid's stages and their blocks


def _mobilenetv2_prefixes() -> Dict[str, str]:
    """torchvision module prefix -> torchreid module prefix."""
    prefixes = {"features.0.0": "conv1.conv", "features.0.1": "conv1.bn",
                "features.18.0": "conv9.conv", "features.18.1": "conv9.bn"}
    index = 1
    for stage, blocks in _MOBILENETV2_STAGES:
        for block in range(blocks):
            src, dst = f"features.{index}.conv", f"{stage}.{block}"
            if index == 1:  # t = 1: torchvision has no expansion conv
                parts = {"0.0": "dwconv2.conv", "0.1": "dwconv2.bn", "1": "conv3.0", "2": "conv3.1"}
            else:
                parts = {"0.0": "conv1.conv", "0.1": "conv1.bn", "1.0": "dwconv2.conv",
                         "1.1": "dwconv2.bn", "2": "conv3.0", "3": "conv3.1"}
            prefixes.update({f"{src}.{a}": f"{dst}.{b}" for a, b in parts.items()})
            index += 1
    return prefixes


def mobilenetv2_from_torchvision(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """torchvision's ``mobilenet_v2`` state dict in torchreid's ``mobilenetv2_x1_0`` layout.

    torchreid's first bottleneck (t = 1) keeps a 1x1 expansion conv that torchvision's lacks; it is
    set to the identity (identity conv, BatchNorm with unit scale, zero shift, running variance
    ``1 - eps``), which is exact because its input is already ReLU6-clipped. torchvision's
    ImageNet classifier is dropped.
    """
    prefixes = _mobilenetv2_prefixes()
    out: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        prefix, _, leaf = key.rpartition(".")
        if prefix in prefixes:
            out[f"{prefixes[prefix]}.{leaf}"] = value
    channels = out["conv2.0.dwconv2.conv.weight"].shape[0]
    eps = nn.BatchNorm2d(channels).eps
    out["conv2.0.conv1.conv.weight"] = torch.eye(channels).view(channels, channels, 1, 1)
    out["conv2.0.conv1.bn.weight"] = torch.ones(channels)
    out["conv2.0.conv1.bn.bias"] = torch.zeros(channels)
    out["conv2.0.conv1.bn.running_mean"] = torch.zeros(channels)
    out["conv2.0.conv1.bn.running_var"] = torch.full((channels,), 1.0 - eps)
    return out
