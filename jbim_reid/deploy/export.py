"""ONNX export of a JBIM model's probe and gallery paths (``jbim-reid export``) and their pre-processing.

An export folder holds:

* ``probe.onnx``: input ``image`` ``(B, 3, H, W)`` (the LR probe, bicubic-upscaled to the network
  size and normalised), output ``feature`` ``(B, D)``: the graph of ``model.probe_features``
  (SR -> HIM, LIM -> FFN), traced from that method so it follows whatever the model does there.
* ``gallery.onnx``: inputs ``image`` (the HR image at the network size; for variants with HIM) and
  ``image_low`` (its down_m version; for variants with LIM), output ``feature`` ``(B, D)``:
  ``model.gallery_features_pair``.
* ``export.json``: input size, normalisation, ratio m, feature size, opset, inputs of each graph, the
  source checkpoint's sha256, the graphs' sizes and sha256 (``OnnxMatcher`` refuses graphs that differ)
  and the parity of onnxruntime against torch at export.

The folder is replaced whole (``jbim_reid.utils.fileio.replace_folder``): the export is written into a
temporary sibling and swapped in, so a process killed midway never leaves a mixed folder. An existing
folder that is not an export (no ``export.json``) and not empty is refused, not replaced.

The batch axis is dynamic. down_m shrinks each image to ``round(m*h) x round(m*w)`` of its *genuine*
size and back up (``JBIM.synthesize_lr``); one ONNX graph cannot resize every image of a batch to its
own size, so the runtime makes ``image_low`` with :func:`gallery_inputs`, which calls the model's own
rule (one implementation for training, testing and deployment).

Examples::
    >>> from jbim_reid.deploy.export import export_model, gallery_inputs, probe_inputs
    >>> meta = export_model(model, 'export/anchor_1_2', checkpoint='model.pth.tar-60')
    >>> x, x_low = gallery_inputs(['g0.jpg', 'g1.jpg'], meta['input']['height'],
    ...                           meta['input']['width'], meta['ratio'])
"""
import os
import os.path as osp
import types
from typing import Any, Dict, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from jbim_reid.evaluation.reports import write_json
from jbim_reid.utils.download import sha256_file
from jbim_reid.utils.errors import DataError
from jbim_reid.utils.fileio import replace_folder
from jbim_reid.utils.images import IMAGENET_MEAN, IMAGENET_STD, build_test_transform, load_rgb
from jbim_reid.utils.optional import require

__all__ = ["OPSET", "EXPORT_FILES", "GRAPH_FILES", "probe_inputs", "gallery_inputs", "check_export_dir",
           "export_model"]

OPSET = 17  # ONNX opset of the exported graphs
EXPORT_FILES = ("probe.onnx", "gallery.onnx", "export.json")  # what an export folder holds
GRAPH_FILES = EXPORT_FILES[:2]  # the graphs, whose sha256 export.json records


def probe_inputs(images: Sequence, height: int, width: int) -> np.ndarray:
    """The ``image`` input of ``probe.onnx``: bicubic resize to the network size, ImageNet normalisation.

    Args:
        images (list): paths, PIL images or ``H x W x 3`` uint8 RGB arrays.
        height (int): network input height (``export.json`` ``input.height``).
        width (int): network input width.

    Returns:
        numpy.ndarray: float32 ``(B, 3, height, width)``.
    """
    transform = build_test_transform(height, width)
    return torch.stack([transform(load_rgb(img, f"images[{i}]")) for i, img in enumerate(images)]).numpy()


def gallery_inputs(images: Sequence, height: int, width: int, ratio: float
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """The ``image`` and ``image_low`` inputs of ``gallery.onnx``; the runtime must make them this way.

    ``image`` is :func:`probe_inputs`; ``image_low`` is down_m of it by ``JBIM.synthesize_lr``: each
    image shrunk (bicubic, antialiased) to ``round(ratio*h) x round(ratio*w)`` of its genuine size
    ``(h, w)`` and bicubic back up to the network size.

    Args:
        images (list): paths, PIL images or ``H x W x 3`` uint8 RGB arrays, at their genuine size.
        height (int): network input height.
        width (int): network input width.
        ratio (float): the model's ratio m (``export.json`` ``ratio``).

    Returns:
        tuple: ``(image, image_low)``, float32 ``(B, 3, height, width)`` each.
    """
    from jbim_reid.models.jbim import JBIM

    pil = [load_rgb(img, f"images[{i}]") for i, img in enumerate(images)]
    x = torch.from_numpy(probe_inputs(pil, height, width))
    hw = torch.tensor([(img.height, img.width) for img in pil])
    # synthesize_lr reads only the ratio from the model; the rule itself is the model's
    x_low = JBIM.synthesize_lr(types.SimpleNamespace(ratio=ratio), x, hw, ratio)
    return x.numpy(), x_low.numpy()


class _ProbeGraph(nn.Module):
    """``model.probe_features`` as a module's forward, for tracing."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.probe_features(image)


class _GalleryGraph(nn.Module):
    """``model.gallery_features_pair`` as a module's forward, for tracing."""

    def __init__(self, model: nn.Module, inputs: Sequence[str]):
        super().__init__()
        self.model = model
        self.inputs = tuple(inputs)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        named = dict(zip(self.inputs, tensors))
        return self.model.gallery_features_pair(named.get("image"), named.get("image_low"))


def _export_graph(module: nn.Module, inputs: Dict[str, torch.Tensor], path: str, opset: int) -> None:
    names = list(inputs)
    tmp = f"{path}.tmp"
    torch.onnx.export(module, tuple(inputs.values()), tmp, input_names=names, output_names=["feature"],
                      dynamic_axes={n: {0: "batch"} for n in names + ["feature"]},
                      opset_version=opset, do_constant_folding=True, dynamo=False)
    os.replace(tmp, path)


def _max_abs_diff(session, feeds: Dict[str, np.ndarray], reference: torch.Tensor) -> float:
    out = session.run(["feature"], feeds)[0]
    return float(np.abs(out - reference.numpy()).max())


def check_export_dir(out_dir: str, key: str = "out_dir") -> None:
    """Raise ``DataError`` unless ``out_dir`` is missing, an empty folder or an export folder (replaceable).

    Args:
        out_dir (str): the folder an export would replace.
        key (str): how the user names it, for the error (e.g. ``--out``).
    """
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise DataError(f"{key} '{out_dir}' is a file; expected a folder (new, empty, or an earlier export)")
    if osp.isdir(out_dir) and os.listdir(out_dir) and not osp.isfile(osp.join(out_dir, "export.json")):
        raise DataError(f"{key} '{out_dir}' is a folder holding other files (no export.json): an export "
                        "replaces its folder whole; choose a new or empty folder, or an earlier export")


def export_model(model: nn.Module, out_dir: str, checkpoint: str = "", opset: int = OPSET,
                 parity_batch: int = 2) -> Dict[str, Any]:
    """Write ``probe.onnx``, ``gallery.onnx`` and ``export.json`` for a JBIM model.

    After writing, both graphs run in onnxruntime (CPU) on a random batch and their largest absolute
    difference to torch is recorded in ``export.json`` (``parity``).

    Args:
        model (JBIM): any variant and backbone; exported in eval mode on the CPU.
        out_dir (str): output folder, replaced whole (see the module docstring; :func:`check_export_dir`).
        checkpoint (str, optional): the source checkpoint; its path and sha256 go into export.json.
        opset (int, optional): ONNX opset. Default is ``OPSET``.
        parity_batch (int, optional): images of the parity check (its batch size differs from the
            tracing batch of 1, so the dynamic batch axis is checked too). Default is 2.

    Returns:
        dict: the content of ``export.json``.
    """
    require("onnx", "ONNX export")
    require("onnxruntime", "ONNX export (parity check)")
    check_export_dir(out_dir)
    with replace_folder(out_dir) as tmp:
        return _write_export(model.cpu().eval(), str(tmp), checkpoint, opset, parity_batch)


def _write_export(model: nn.Module, out_dir: str, checkpoint: str, opset: int, parity_batch: int
                  ) -> Dict[str, Any]:
    """The files of :func:`export_model` written into ``out_dir``; returns ``export.json``'s content."""
    ort = require("onnxruntime", "ONNX export (parity check)")
    height, width = int(model.height), int(model.width)
    # HIM sees the HR image, LIM its down_m version: a variant without one has no such input
    gallery_names = [name for name, part in (("image", "him"), ("image_low", "lim"))
                     if getattr(model, part, None) is not None]
    example = torch.zeros(1, 3, height, width)
    with torch.no_grad():
        # wrappers in eval mode: the exporter restores the wrapper's mode on every submodule afterwards
        _export_graph(_ProbeGraph(model).eval(), {"image": example}, osp.join(out_dir, "probe.onnx"), opset)
        _export_graph(_GalleryGraph(model, gallery_names).eval(), {n: example for n in gallery_names},
                      osp.join(out_dir, "gallery.onnx"), opset)
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(parity_batch, 3, height, width, generator=generator)
        x_low = model.synthesize_lr(x)
        feeds = {"image": x.numpy(), "image_low": x_low.numpy()}
        parity = {
            "probe": _max_abs_diff(ort.InferenceSession(osp.join(out_dir, "probe.onnx")),
                                   {"image": feeds["image"]}, model.probe_features(x)),
            "gallery": _max_abs_diff(ort.InferenceSession(osp.join(out_dir, "gallery.onnx")),
                                     {n: feeds[n] for n in gallery_names},
                                     model.gallery_features_pair(x, x_low)),
        }
    kwargs = dict(getattr(model, "jbim_kwargs", {}))
    meta = {
        "format": 1,
        "opset": opset,
        "input": {"height": height, "width": width, "channels": "RGB", "layout": "NCHW",
                  "resize": "bicubic", "scale": "1/255"},
        "normalisation": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "ratio": float(model.ratio),
        "feature_dim": int(model.feature_dim),
        "variant": kwargs.get("variant", getattr(model, "variant", "")),
        "backbone": kwargs.get("backbone", ""),
        "sr": kwargs.get("sr", ""),
        "probe": {"file": "probe.onnx", "inputs": ["image"], "output": "feature"},
        "gallery": {"file": "gallery.onnx", "inputs": gallery_names, "output": "feature",
                    "preprocessing": "jbim_reid.deploy.export.gallery_inputs"},
        "checkpoint": {"path": osp.abspath(checkpoint) if checkpoint else "",
                       "sha256": sha256_file(checkpoint) if checkpoint else ""},
        "files": {name: {"bytes": os.path.getsize(osp.join(out_dir, name)),
                         "sha256": sha256_file(osp.join(out_dir, name))} for name in GRAPH_FILES},
        "parity_max_abs": parity,
    }
    write_json(meta, osp.join(out_dir, "export.json"))
    return meta
