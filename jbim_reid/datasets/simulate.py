"""Low-resolution simulation: downsample an HR image by a ratio and keep it at its real low size."""
import io
import os
from pathlib import Path
from typing import Tuple, Union

from PIL import Image

from jbim_reid.datasets.cache import atomic_write_bytes

__all__ = ["RESAMPLING", "lr_size", "downsample", "lr_cache_path", "ratio_tag", "ensure_lr_image"]

# interpolation name -> PIL filter; PIL's BOX filter averages every covered source pixel, which is
# what "area" interpolation (OpenCV's INTER_AREA) does when shrinking.
RESAMPLING = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "area": Image.Resampling.BOX,
    "nearest": Image.Resampling.NEAREST,
}


def lr_size(hw: Tuple[int, int], ratio: float) -> Tuple[int, int]:
    """Output ``(h, w)``: ``max(1, round(h * ratio)) x max(1, round(w * ratio))``."""
    h, w = hw
    return max(1, round(h * ratio)), max(1, round(w * ratio))


def downsample(img: Image.Image, ratio: float, interpolation: str = "bicubic") -> Image.Image:
    """Downsample ``img`` by ``ratio`` with the named interpolation (no upscaling back)."""
    if interpolation not in RESAMPLING:
        raise ValueError(f"Unknown interpolation {interpolation!r}; expected one of {list(RESAMPLING)}")
    h, w = lr_size((img.height, img.width), ratio)
    return img.resize((w, h), resample=RESAMPLING[interpolation])


def ratio_tag(ratio: float) -> str:
    """Folder name for a ratio, e.g. ``x0.5``, ``x0.333333``."""
    return f"x{ratio:.6g}"


def lr_cache_path(lr_root: Union[str, os.PathLike], relpath: str, ratio: float, interpolation: str) -> Path:
    """Where the LR version of ``relpath`` lives: ``<lr_root>/<interpolation>/<ratio tag>/<relpath>.png``."""
    return Path(lr_root) / interpolation / ratio_tag(ratio) / (relpath + ".png")


def ensure_lr_image(src: Union[str, os.PathLike], dst: Union[str, os.PathLike], ratio: float,
                    interpolation: str) -> bool:
    """Write the LR PNG ``dst`` from ``src`` unless it exists (atomically). Returns True if written."""
    dst = Path(dst)
    if dst.is_file():
        return False
    try:
        with Image.open(src) as im:
            img = im.convert("RGB")
    except (OSError, ValueError) as e:
        raise OSError(f"Cannot read image '{src}' to simulate its low-resolution version: {e}") from e
    buf = io.BytesIO()
    downsample(img, ratio, interpolation).save(buf, format="PNG")
    atomic_write_bytes(dst, buf.getvalue())
    return True
