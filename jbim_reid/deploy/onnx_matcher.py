"""``OnnxMatcher``: the matching of :class:`~jbim_reid.CrossResolutionMatcher` from exported ONNX files.

Each anchor is an export folder written by ``jbim-reid export`` (``probe.onnx``, ``gallery.onnx``,
``export.json``); onnxruntime runs the graphs, so no model code or torch weights are needed. Inputs are
made by :func:`jbim_reid.deploy.export.probe_inputs` and :func:`jbim_reid.deploy.export.gallery_inputs`, the
pre-processing the graphs were exported for. A graph whose sha256 differs from the one ``export.json``
records (a damaged, replaced or half-copied export) is refused with a ``DataError`` naming the file.

Examples::
    >>> from jbim_reid import OnnxMatcher
    >>> matcher = OnnxMatcher(['export/anchor_1_2', 'export/anchor_1_4'])
    >>> result = matcher.match(['probe_small.jpg'], ['g1.jpg', 'g2.jpg'])
    >>> result.ranking[0]
"""
import hashlib
import json
import os
import os.path as osp
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from jbim_reid.deploy.export import gallery_inputs, probe_inputs
from jbim_reid.deploy.matcher import CrossResolutionMatcher
from jbim_reid.utils.errors import DataError
from jbim_reid.utils.optional import require

__all__ = ["OnnxAnchor", "OnnxMatcher"]


class OnnxAnchor:
    """One exported JBIM model run by onnxruntime (CPU).

    Args:
        folder (str): export folder with ``export.json``, ``probe.onnx`` and ``gallery.onnx``.
        threads (int, optional): onnxruntime intra-op threads; None lets onnxruntime choose.

    Attributes:
        meta (dict): ``export.json``; ``ratio``, ``height``, ``width``, ``feature_dim`` are read from it.
    """

    def __init__(self, folder: Union[str, os.PathLike], threads: Optional[int] = None):
        ort = require("onnxruntime", "OnnxMatcher")
        folder = os.fspath(folder)
        meta_path = osp.join(folder, "export.json")
        if not osp.isfile(meta_path):
            raise FileNotFoundError(f"'{folder}' is not an export folder: {meta_path} not found "
                                    "(write one with jbim-reid export)")
        try:
            with open(meta_path, encoding="utf-8") as f:
                self.meta: Dict[str, Any] = json.load(f)
            self.ratio = float(self.meta["ratio"])
            self.height, self.width = int(self.meta["input"]["height"]), int(self.meta["input"]["width"])
            self.feature_dim = int(self.meta["feature_dim"])
            files = {role: str(self.meta[role]["file"]) for role in ("probe", "gallery")}
        except (ValueError, KeyError, TypeError) as err:  # JSONDecodeError and UnicodeDecodeError too
            raise DataError(f"export folder '{folder}': {meta_path} is not an export.json of jbim-reid export "
                            f"({type(err).__name__}: {err}); export it again") from None
        self.folder = folder
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.sessions = {}
        for role, name in files.items():
            self.sessions[role] = ort.InferenceSession(self._graph(name), options, providers=["CPUExecutionProvider"])

    def _graph(self, name: str) -> bytes:
        """The bytes of graph ``name``, checked against the sha256 ``export.json`` records for it."""
        path = osp.join(self.folder, name)
        if not osp.isfile(path):
            raise FileNotFoundError(f"export folder '{self.folder}': {path} not found")
        expected = self.meta.get("files", {}).get(name, {}).get("sha256")
        if not expected:
            raise DataError(f"export folder '{self.folder}': export.json records no sha256 of {name} (an export "
                            "of an older jbim-reid), so the graph cannot be checked; export it again")
        with open(path, "rb") as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != expected:
            raise DataError(f"export folder '{self.folder}': {path} does not match the sha256 export.json "
                            f"records for it (damaged, replaced or partly copied); export it again")
        return data

    def probe_features(self, images: Sequence) -> np.ndarray:
        """Features of LR probes (paths, PIL images or uint8 arrays): ``(B, feature_dim)`` float32."""
        return self.sessions["probe"].run(["feature"], {"image": probe_inputs(images, self.height, self.width)})[0]

    def gallery_features(self, images: Sequence) -> np.ndarray:
        """Features of HR gallery images, down_m from each one's genuine size: ``(B, feature_dim)``."""
        x, x_low = gallery_inputs(images, self.height, self.width, self.ratio)
        feeds = {"image": x, "image_low": x_low}
        return self.sessions["gallery"].run(["feature"], {n: feeds[n] for n in self.meta["gallery"]["inputs"]})[0]


class OnnxMatcher(CrossResolutionMatcher):
    """:class:`~jbim_reid.CrossResolutionMatcher` whose anchors are ONNX exports run by onnxruntime.

    Distances, resolution weights (Eq. 17-19) and fusion are the torch matcher's; only the features
    come from the exported graphs.

    Args:
        exports (list): export folders written by ``jbim-reid export`` (one per anchor model).
        sigma (float, optional): Gaussian width of the weights. Default is 0.5.
        weighting (str, optional): ``'gaussian'`` or ``'uniform'``. Default is ``'gaussian'``.
        batch_size (int, optional): images per onnxruntime call. Default is 32.
        dist_metric (str, optional): ``'euclidean'`` or ``'cosine'``. Default is ``'euclidean'``.
        normalize_feature (bool, optional): L2-normalise features first. Default is False.
        threads (int, optional): onnxruntime intra-op threads per session. Default is None.
    """

    def __init__(self, exports: Sequence[Union[str, os.PathLike]], sigma: float = 0.5,
                 weighting: str = "gaussian", batch_size: int = 32, dist_metric: str = "euclidean",
                 normalize_feature: bool = False, threads: Optional[int] = None):
        if isinstance(exports, (str, os.PathLike)):
            exports = [exports]
        if len(exports) == 0:
            raise ValueError("exports is empty: expected at least one export folder")
        self._set_options(sigma, weighting, "cpu", batch_size, dist_metric, normalize_feature)
        self.models: List[OnnxAnchor] = [OnnxAnchor(folder, threads) for folder in exports]
        self.ratios = [m.ratio for m in self.models]

    def _features(self, model: OnnxAnchor, images: List[Image.Image], role: str) -> torch.Tensor:
        run = model.probe_features if role == "probe" else model.gallery_features
        feats = [run(images[start:start + self.batch_size]) for start in range(0, len(images), self.batch_size)]
        return torch.from_numpy(np.concatenate(feats)).float()
