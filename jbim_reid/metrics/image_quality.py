"""Per-image PSNR and SSIM of RGB images in [0, 1], for the SR pre-training stage.

No installed library provides SSIM for torch tensors here (torchmetrics, scikit-image, kornia and
piq are not dependencies; torchvision and OpenCV's main module have none), so ``ssim`` is the
standard formulation of Wang et al. 2004 written out: an 11x11 Gaussian window (sigma 1.5),
C1 = (0.01 L)^2, C2 = (0.03 L)^2 with L = 1, "valid" windows only, averaged over pixels and channels
(as scikit-image's ``structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1, channel_axis=...)``).
"""
import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim"]

_MIN_MSE = 1e-10  # identical images: PSNR capped at 100 dB instead of infinity


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"expected two (B, C, H, W) tensors of one shape, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, in dB, for peak value 1.

    Args:
        a, b: ``(B, C, H, W)`` images in [0, 1].

    Returns:
        torch.Tensor: ``(B,)`` ``10 * log10(1 / MSE)``.
    """
    _check(a, b)
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1).clamp_min(_MIN_MSE)
    return (10 * torch.log10(1.0 / mse)).float()


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-coords.pow(2) / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004), mean over channels and valid windows.

    Args:
        a, b: ``(B, C, H, W)`` images in [0, 1], ``H`` and ``W`` at least ``window``.
        window (int, optional): Gaussian window size. Default is 11.
        sigma (float, optional): Gaussian window std. Default is 1.5.

    Returns:
        torch.Tensor: ``(B,)`` in [-1, 1]; 1 for identical images.
    """
    _check(a, b)
    if min(a.shape[-2:]) < window:
        raise ValueError(f"ssim needs images of at least {window}x{window}, got {tuple(a.shape[-2:])}")
    channels = a.shape[1]
    kernel = _gaussian_window(window, sigma).to(a.device).expand(channels, 1, window, window)
    a, b = a.double(), b.double()

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, kernel, groups=channels)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a.pow(2)
    var_b = blur(b * b) - mu_b.pow(2)
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    luminance = (2 * mu_a * mu_b + c1) / (mu_a.pow(2) + mu_b.pow(2) + c1)
    value = luminance * (2 * cov + c2) / (var_a + var_b + c2)
    return value.flatten(1).mean(1).float()
