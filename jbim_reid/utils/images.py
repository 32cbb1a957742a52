"""Reading person images and torchreid's test-time pre-processing, shared by evaluation and deployment.

``torchreid.utils.read_image`` retries forever on an unreadable file, so images are opened here with PIL
directly and errors name the file.
"""
import os
from pathlib import Path
from typing import Union

import numpy as np
import torchvision.transforms as T
from PIL import Image

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImageLike", "build_test_transform", "load_rgb"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchreid's default norm_mean
IMAGENET_STD = (0.229, 0.224, 0.225)  # torchreid's default norm_std

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]


def build_test_transform(height: int, width: int) -> T.Compose:
    """torchreid's test transform (``build_transforms``' second output) with bicubic resizing.

    Args:
        height (int): network input height.
        width (int): network input width.

    Returns:
        torchvision.transforms.Compose: PIL image -> normalised tensor ``(3, height, width)``.
    """
    # bicubic, as JBIM upscales LR images (torchreid's own Resize is bilinear)
    return T.Compose([T.Resize((height, width), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def load_rgb(item: ImageLike, name: str = "image") -> Image.Image:
    """An RGB PIL image from a path, a PIL image or an ``H x W x 3`` uint8 RGB array.

    ``torchreid.utils.read_image`` retries forever on an unreadable file, so files are opened here
    with PIL directly and errors name the file.

    Args:
        item: the image.
        name (str, optional): how errors refer to it, e.g. ``'probes[3]'``.

    Returns:
        PIL.Image.Image: RGB image at its genuine size.
    """
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim != 3 or item.shape[2] != 3 or 0 in item.shape:
            raise ValueError(f"{name} must be an H x W x 3 uint8 RGB array, got shape {item.shape} "
                             f"dtype {item.dtype}")
        return Image.fromarray(item, mode="RGB")
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if not path.is_file():
            raise FileNotFoundError(f"{name}: image file not found: {path}")
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except (OSError, Image.DecompressionBombError) as error:  # the bomb: more pixels than PIL allows
            raise ValueError(f"{name}: cannot read image {path}: {error}") from error
    raise TypeError(f"{name} must be a path, a PIL image or an H x W x 3 uint8 array, "
                    f"got {type(item).__name__}")
