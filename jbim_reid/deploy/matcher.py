"""``CrossResolutionMatcher``: rank HR gallery images for LR probes with one or more JBIM anchors.

Images of any size go in (paths, PIL images or ``H x W x 3`` uint8 RGB arrays); their genuine sizes
are read from the inputs themselves, each anchor model gives a distance matrix, and the matrices are
fused with the resolution weights of :mod:`jbim_reid.evaluation.ensemble` (JBIM Sec. 5).

Examples::
    >>> from jbim_reid import CrossResolutionMatcher
    >>> matcher = CrossResolutionMatcher(['log/half/model.pth.tar-60', 'log/third/model.pth.tar-60'])
    >>> result = matcher.match(['probe_small.jpg'], ['g1.jpg', 'g2.jpg', 'g3.jpg'])
    >>> result.ranking[0]      # gallery indices, best match first
    >>> result.weights[0]      # weight of each anchor for that probe
"""
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
import torchreid
from PIL import Image
from torch import nn

from jbim_reid.evaluation.ensemble import WEIGHTING_SCHEMES, anchor_weights, fuse_distances, resolution_ratios
from jbim_reid.utils.fileio import CheckpointError, load_torch_file
from jbim_reid.utils.images import ImageLike, build_test_transform, load_rgb

__all__ = ["MatchResult", "CrossResolutionMatcher"]

@dataclass
class MatchResult:
    """Output of :meth:`CrossResolutionMatcher.match`.

    Attributes:
        distances (numpy.ndarray): fused distances ``(Q, G)``, smaller is more similar.
        ranking (numpy.ndarray): gallery indices per probe, best first, ``(Q, G)``.
        weights (numpy.ndarray): weight of each anchor model per probe ``(Q, n_models)``.
        ratios (numpy.ndarray): resolution ratio r of each probe to the gallery ``(Q,)``.
    """

    distances: np.ndarray
    ranking: np.ndarray
    weights: np.ndarray
    ratios: np.ndarray


class CrossResolutionMatcher:
    """Matches LR probe images against HR gallery images with one or more JBIM anchor models.

    Each anchor gives ``D_i`` (probe features by ``probe_features``, gallery features by
    ``gallery_features``, torchreid's ``compute_distance_matrix``); per probe,
    ``r = sqrt(A_p / mean gallery area)`` from genuine sizes, ``w_i = exp(-(r - m_i)^2 / sigma^2)``
    with ``m_i = model.ratio``, and ``D = sum_i w_i D_i``. With one model every weight is 1.

    Args:
        checkpoints (list): JBIM checkpoint paths (rebuilt by ``jbim_reid.models.jbim_from_checkpoint``) or
            JBIM models (any module with ``probe_features``, ``gallery_features``, ``ratio``, ``height``
            and ``width``).
        sigma (float, optional): Gaussian width of the weights. Default is 0.5.
        weighting (str, optional): ``'gaussian'`` or ``'uniform'``. Default is ``'gaussian'``.
        device (str, optional): torch device. Default is ``'cpu'``.
        batch_size (int, optional): images per forward pass. Default is 32.
        dist_metric (str, optional): ``'euclidean'`` or ``'cosine'`` (torchreid's). Default is
            ``'euclidean'``.
        normalize_feature (bool, optional): L2-normalise features first. Default is False.
    """

    def __init__(self, checkpoints: Sequence[Union[str, os.PathLike, nn.Module]], sigma: float = 0.5,
                 weighting: str = "gaussian", device: str = "cpu", batch_size: int = 32,
                 dist_metric: str = "euclidean", normalize_feature: bool = False):
        if isinstance(checkpoints, (str, os.PathLike, nn.Module)):
            checkpoints = [checkpoints]
        if len(checkpoints) == 0:
            raise ValueError("checkpoints is empty: expected at least one checkpoint path or JBIM model")
        self._set_options(sigma, weighting, device, batch_size, dist_metric, normalize_feature)
        # channels_last weights: convolutions run channels_last (faster on CPU), same results up to rounding
        self.models: List[nn.Module] = [self._load(c, i).to(self.device, memory_format=torch.channels_last).eval()
                                        for i, c in enumerate(checkpoints)]
        self.ratios = [float(m.ratio) for m in self.models]

    def _set_options(self, sigma: float, weighting: str, device: str, batch_size: int,
                     dist_metric: str, normalize_feature: bool) -> None:
        """Check and keep the matching options shared by every backend."""
        if weighting not in WEIGHTING_SCHEMES:
            raise ValueError(f"Unknown weighting '{weighting}'; expected one of {list(WEIGHTING_SCHEMES)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.sigma, self.weighting, self.batch_size = sigma, weighting, batch_size
        self.device = torch.device(device)
        self.dist_metric, self.normalize_feature = dist_metric, normalize_feature

    @staticmethod
    def _load(checkpoint, index: int) -> nn.Module:
        if isinstance(checkpoint, nn.Module):
            missing = [a for a in ("probe_features", "gallery_features", "ratio", "height", "width")
                       if not hasattr(checkpoint, a)]
            if missing:
                raise TypeError(f"checkpoints[{index}] ({type(checkpoint).__name__}) lacks {missing}: "
                                "expected a JBIM model")
            return checkpoint
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoints[{index}]: checkpoint file not found: {path}")
        from jbim_reid.models import jbim_from_checkpoint  # models import the heavy torchreid backbones

        checkpoint = load_torch_file(path, what=f"checkpoints[{index}]")
        if not isinstance(checkpoint, dict) or "jbim_kwargs" not in checkpoint or "state_dict" not in checkpoint:
            raise CheckpointError(f"checkpoints[{index}]: '{path}' is not a JBIM checkpoint (no 'jbim_kwargs' and "
                                  "'state_dict': a plain state dict?); expected a checkpoint of jbim-reid train "
                                  "or a .safetensors file of jbim-reid export-weights")
        try:
            return jbim_from_checkpoint(checkpoint, source=str(path), what=f"checkpoints[{index}]")
        except CheckpointError:  # weights that do not fit their own jbim_kwargs, named by the loading rule
            raise
        except (RuntimeError, TypeError, ValueError) as err:  # jbim_kwargs that build no model
            raise CheckpointError(f"checkpoints[{index}]: '{path}' does not rebuild its model: "
                                  f"{str(err).splitlines()[0]}") from None

    @torch.inference_mode()
    def _features(self, model: nn.Module, images: List[Image.Image], role: str) -> torch.Tensor:
        transform = build_test_transform(int(model.height), int(model.width))
        feats = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            batch = torch.stack([transform(img) for img in chunk]).to(self.device)
            if role == "probe":
                feats.append(model.probe_features(batch).float().cpu())
            else:  # down_m shrinks each gallery image by the anchor's ratio of its genuine size
                hw = torch.tensor([(img.height, img.width) for img in chunk])
                feats.append(model.gallery_features(batch, hw).float().cpu())
        return torch.cat(feats)

    def _distances(self, model: nn.Module, probes: List[Image.Image], gallery: List[Image.Image]) -> np.ndarray:
        qf, gf = self._features(model, probes, "probe"), self._features(model, gallery, "gallery")
        if self.normalize_feature:
            qf, gf = F.normalize(qf, p=2, dim=1), F.normalize(gf, p=2, dim=1)
        return torchreid.metrics.compute_distance_matrix(qf, gf, self.dist_metric).numpy()

    @staticmethod
    def _load_all(items: Sequence[ImageLike], name: str) -> Tuple[List[Image.Image], np.ndarray]:
        if isinstance(items, (str, os.PathLike, Image.Image)) or (isinstance(items, np.ndarray) and items.ndim == 3):
            raise TypeError(f"{name} must be a list of images, got a single {type(items).__name__}")
        if len(items) == 0:
            raise ValueError(f"{name} is empty: expected at least one image")
        images = [load_rgb(item, f"{name}[{i}]") for i, item in enumerate(items)]
        hw = np.array([(img.height, img.width) for img in images], dtype=np.int64)
        return images, hw

    def match(self, probes: Sequence[ImageLike], gallery: Sequence[ImageLike]) -> MatchResult:
        """Distances and rankings of the gallery for every probe.

        Args:
            probes (list): LR probe images (paths, PIL images or ``H x W x 3`` uint8 RGB arrays).
            gallery (list): HR gallery images, same forms.

        Returns:
            MatchResult: ``distances (Q, G)``, ``ranking (Q, G)``, ``weights (Q, n)``, ``ratios (Q,)``.
        """
        probe_images, probe_hw = self._load_all(probes, "probes")
        gallery_images, gallery_hw = self._load_all(gallery, "gallery")
        ratios = resolution_ratios(probe_hw, gallery_hw)
        if len(self.models) == 1:
            weights = np.ones((len(probe_images), 1))
        else:
            weights = anchor_weights(ratios, self.ratios, sigma=self.sigma, scheme=self.weighting)
        distmats = [self._distances(m, probe_images, gallery_images) for m in self.models]
        distances = fuse_distances(distmats, weights)
        ranking = np.argsort(distances, axis=1, kind="stable")
        return MatchResult(distances=distances, ranking=ranking, weights=weights, ratios=ratios)
