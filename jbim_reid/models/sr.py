"""Super-resolution modules for the JBIM SR stream, chosen by name.

Every SR module maps an LR image that is already bicubic-upscaled to the network input size to an
image of the same size: ``(B, 3, H, W) -> (B, 3, H, W)``, in pixel space: RGB in [0, 1], as SRCNN
and its published weights work (``JBIM.super_resolve`` and ``PixelSpaceSR`` de-normalise before and
re-normalise after). Outputs are not clamped, so gradients reach every pixel.

Names (``jbim.sr``): ``srcnn`` / ``srcnn_915`` predict a residual added to the input and start near
the identity (= bicubic); ``srcnn_paper`` / ``srcnn_915_paper`` are the paper's non-residual SRCNN
(the network outputs the image itself; use them with SRCNN weights or the ``sr`` pre-training stage);
``vdsr`` (global residual); ``bicubic`` (no learned SR).
"""
import functools
from typing import Callable, Dict

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SRCNN", "VDSR", "ESPCN", "BicubicSR", "SR_MODELS", "build_sr"]


class SRCNN(nn.Module):
    """SRCNN (Dong et al. 2014), 9-5-5 with padding so that the output size equals the input size.

    conv(9x9, ``channels[0]``) -> ReLU -> conv(5x5, ``channels[1]``) -> ReLU -> conv(5x5, 3).

    The paper's SRCNN predicts the image itself. Trained from scratch (no SRCNN weights ship with
    this package) that output starts far from the input and the re-id backbone behind it sees noise
    for many iterations, so by default the network predicts a residual added to its input, and the
    last layer starts near zero (std 1e-3), so the module starts close to the identity (= bicubic).
    ``residual=False`` gives the paper's plain formulation.

    Args:
        channels (tuple, optional): widths of the two hidden layers. Default is (64, 32).
        kernels (tuple, optional): kernel sizes of the three layers (odd). Default is (9, 5, 5);
            (9, 1, 5) is SRCNN's cheaper base model (about 3.5x fewer multiply-adds).
        residual (bool, optional): add the input to the output. Default is True.
    """

    def __init__(self, channels=(64, 32), kernels=(9, 5, 5), residual: bool = True):
        super().__init__()
        c1, c2 = channels
        k1, k2, k3 = kernels
        self.residual = residual
        self.body = nn.Sequential(
            nn.Conv2d(3, c1, k1, padding=k1 // 2), nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, k2, padding=k2 // 2), nn.ReLU(inplace=True),
            nn.Conv2d(c2, 3, k3, padding=k3 // 2),
        )
        if residual:
            last = self.body[-1]
            nn.init.normal_(last.weight, std=1e-3)
            nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(B, 3, H, W)`` upscaled LR image. Returns: ``(B, 3, H, W)`` SR image."""
        out = self.body(x)
        return x + out if self.residual else out


class VDSR(nn.Module):
    """VDSR-style deep SR net (Kim et al. 2016): ``depth`` 3x3 convs with a global residual.

    Args:
        depth (int, optional): number of conv layers (paper: 20). Default is 20.
        channels (int, optional): hidden width (paper: 64). Default is 64.
    """

    def __init__(self, depth: int = 20, channels: int = 64):
        super().__init__()
        if depth < 2:
            raise ValueError(f"VDSR depth must be >= 2, got {depth}")
        layers = [nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(channels, 3, 3, padding=1))
        self.body = nn.Sequential(*layers)
        nn.init.normal_(self.body[-1].weight, std=1e-3)  # start close to the identity
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(B, 3, H, W)`` upscaled LR image. Returns: ``(B, 3, H, W)`` SR image."""
        return x + self.body(x)


class ESPCN(nn.Module):
    """Cheap SR in ESPCN style (Shi et al. 2016): convs at low resolution, sub-pixel upscaling at the end.

    The input is the LR image already bicubic-upscaled to the network size, so the module first
    shrinks it by ``scale`` (exact box average, ``avg_pool2d``), runs its convs at that small size,
    upscales the result with a learned sub-pixel layer (conv to ``3 * scale**2`` channels, then
    ``PixelShuffle``) and adds it to its input (the bicubic skip). At 256x128 and ``scale=4`` the
    convs run at 64x32, which is above the genuine size of most LR probes (CAVIAR's LR images are
    about 40 pixels wide), so the shrink loses little that the probe had; it costs about 1/40 of
    the 9-5-5 SRCNN's multiply-adds. The last layer starts near zero (std 1e-3), so the module starts
    close to the identity (= bicubic), like :class:`SRCNN`.

    Args:
        scale (int, optional): factor by which the convs work below the network size; height and
            width must be multiples of it. Default is 4.
        channels (tuple, optional): widths of the two hidden layers. Default is (32, 32).
    """

    def __init__(self, scale: int = 4, channels=(32, 32)):
        super().__init__()
        if scale < 1:
            raise ValueError(f"ESPCN scale must be >= 1, got {scale}")
        c1, c2 = channels
        self.scale = scale
        self.body = nn.Sequential(
            nn.Conv2d(3, c1, 5, padding=2), nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c2, 3 * scale ** 2, 3, padding=1),
            nn.PixelShuffle(scale),
        )
        nn.init.normal_(self.body[-2].weight, std=1e-3)  # start close to the identity
        nn.init.zeros_(self.body[-2].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(B, 3, H, W)`` upscaled LR image, H and W multiples of ``scale``.

        Returns: ``(B, 3, H, W)`` SR image.
        """
        h, w = x.shape[-2:]
        if not torch.jit.is_tracing() and (h % self.scale or w % self.scale):  # ONNX export traces a fixed size
            raise ValueError(f"ESPCN with scale {self.scale} needs an input size that is a multiple of "
                             f"it, got {h}x{w}")
        small = F.avg_pool2d(x, self.scale) if self.scale > 1 else x
        return x + self.body(small)


class BicubicSR(nn.Module):
    """No learned SR: the input already is the bicubic-upscaled image, so this returns it unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(B, 3, H, W)``. Returns: ``x`` itself."""
        return x


SR_MODELS: Dict[str, Callable[..., nn.Module]] = {  # config name (jbim.sr) -> SR module class
    "srcnn": SRCNN,
    "srcnn_915": functools.partial(SRCNN, kernels=(9, 1, 5)),
    "srcnn_paper": functools.partial(SRCNN, residual=False),
    "srcnn_915_paper": functools.partial(SRCNN, kernels=(9, 1, 5), residual=False),
    "vdsr": VDSR,
    "espcn": ESPCN,
    "bicubic": BicubicSR,
}


def build_sr(name: str, **kwargs) -> nn.Module:
    """Build the SR module registered as ``name`` in ``SR_MODELS``.

    Args:
        name (str): one of ``SR_MODELS`` (``srcnn``, ``srcnn_915``, ``srcnn_paper``,
            ``srcnn_915_paper``, ``vdsr``, ``espcn``, ``bicubic``).
        **kwargs: passed to the module's constructor.

    Returns:
        nn.Module: maps ``(B, 3, H, W)`` to ``(B, 3, H, W)``.
    """
    if name not in SR_MODELS:
        raise KeyError(f"Unknown SR model '{name}' (jbim.sr); expected one of {sorted(SR_MODELS)}")
    return SR_MODELS[name](**kwargs)
