"""Pixel space for the SR module: the network sees normalised tensors, F_sr sees [0, 1] RGB.

Re-id backbones take images normalised by the data's ``norm_mean`` / ``norm_std`` (torchreid's
``ImageDataManager``); SRCNN-style nets (and their published weights) work on [0, 1] images and L_sr
(Eq. 2) is a pixel error. ``PixelNorm`` converts between the two; ``PixelSpaceSR`` wraps an SR net
so that it maps normalised tensors to normalised tensors while running in pixel space.
"""
from typing import Sequence

import torch
from torch import nn

from jbim_reid.utils.images import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "PixelNorm", "PixelSpaceSR"]


class PixelNorm(nn.Module):
    """Per-channel ``x_norm = (x_pix - mean) / std`` and its inverse; no parameters, no saved state.

    The mean and std are non-persistent buffers: they follow ``.to(device)`` but stay out of the
    state dict, so checkpoints keep their keys (they come from the model's constructor arguments).

    Args:
        mean (sequence of float, optional): per-channel mean (RGB). Default is ImageNet's.
        std (sequence of float, optional): per-channel std (RGB), all > 0. Default is ImageNet's.
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        mean, std = [float(v) for v in mean], [float(v) for v in std]
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"norm_mean {mean} and norm_std {std} must each hold 3 values (RGB), "
                             "with every std > 0")
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``(B, 3, H, W)`` -> [0, 1] RGB ``(B, 3, H, W)`` (not clamped)."""
        return x * self.std + self.mean

    def from_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB ``(B, 3, H, W)`` -> normalised ``(B, 3, H, W)``."""
        return (x - self.mean) / self.std


class PixelSpaceSR(nn.Module):
    """An SR net applied in pixel space to normalised tensors: de-normalise -> SR -> re-normalise.

    The SR net is the child ``sr``, so the state dict's keys are ``sr.*`` as in a JBIM model, and
    a checkpoint of this module initialises a JBIM's SR module directly.

    Args:
        sr (nn.Module): SR net mapping [0, 1] RGB ``(B, 3, H, W)`` to ``(B, 3, H, W)``.
        norm_mean, norm_std (sequence of float, optional): the data's normalisation. Default is
            ImageNet's.
    """

    def __init__(self, sr: nn.Module, norm_mean: Sequence[float] = IMAGENET_MEAN,
                 norm_std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        self.sr = sr
        self.pixels = PixelNorm(norm_mean, norm_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(B, 3, H, W)`` normalised upscaled LR image. Returns: ``(B, 3, H, W)`` normalised
        SR image."""
        return self.pixels.from_pixels(self.sr(self.pixels.to_pixels(x)))
