"""Random resolution augmentation (``random_resolution`` in ``data.transforms``).

``RandomResolution`` shrinks a PIL image by a ratio drawn uniformly from a range, with bicubic
interpolation, and scales it back up to the size it came in: the content of a lower resolution at
the same size. The ratio applies to the image as read from disk (its genuine size), because the
transform runs first, before torchreid's ``Resize`` to the network size.

torchreid's ``build_transforms`` ignores transform names it does not know, so the plugin wraps it
(``install``, called by ``jbim_reid.registry``): the wrapper inserts ``RandomResolution`` at the
front of the train transform when ``'random_resolution'`` is among the names. Test transforms are
never changed. The ratio range comes from the wrapper's ``resolution_aug_range`` keyword or, since
``ImageDataManager`` passes no extra keywords, from ``resolution_aug_range(...)`` around its
construction (the CLI uses the config key ``data.resolution_aug_range``)::

    import torchreid, jbim_reid
    with jbim_reid.transforms.resolution_aug_range((0.25, 1.0)):
        dm = torchreid.data.ImageDataManager(..., transforms=['random_flip', 'random_resolution'])
"""
import contextlib
import functools
import importlib
import random
from typing import Callable, Iterator, Optional, Sequence, Tuple

import torchreid
from PIL import Image

__all__ = ["RandomResolution", "DEFAULT_RANGE", "NAME", "resolution_aug_range", "current_range",
           "check_range", "without_random_resolution", "split_leading_random_resolution", "install"]

NAME = "random_resolution"  # the name in data.transforms / ImageDataManager(transforms=...)
DEFAULT_RANGE: Tuple[float, float] = (0.25, 1.0)
_range = [DEFAULT_RANGE]  # process-wide setting (a one-element stack top, see resolution_aug_range)


def check_range(value: Sequence[float], what: str = "resolution_aug_range") -> Tuple[float, float]:
    """``value`` as ``(low, high)`` with ``0 < low <= high <= 1``; ValueError naming ``what`` otherwise."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: expected two ratios [low, high], got {value!r}") from None
    if not 0 < low <= high <= 1:
        raise ValueError(f"{what}: expected 0 < low <= high <= 1, got [{low}, {high}]")
    return low, high


class RandomResolution:
    """Bicubic down by a random ratio of the input size, then bicubic back up to that size.

    Args:
        ratio_range (sequence of 2 floats, optional): ``(low, high)``; the ratio is drawn uniformly
            from it for each call. Default is ``(0.25, 1.0)``.
    """

    def __init__(self, ratio_range: Sequence[float] = DEFAULT_RANGE):
        self.ratio_range = check_range(ratio_range)

    def __call__(self, img: Image.Image) -> Image.Image:
        """Args: img: PIL image. Returns: a PIL image of the same size, resolution ``ratio`` of it."""
        return self.apply(img, random.uniform(*self.ratio_range))

    @staticmethod
    def apply(img: Image.Image, ratio: float) -> Image.Image:
        """``img`` shrunk to ``round(ratio * h) x round(ratio * w)`` (at least 1 px) and back up."""
        w, h = img.size
        small = (max(1, round(w * ratio)), max(1, round(h * ratio)))
        if small == (w, h):
            return img
        return img.resize(small, Image.BICUBIC).resize((w, h), Image.BICUBIC)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(ratio_range={self.ratio_range})"


def current_range() -> Tuple[float, float]:
    """The ratio range a ``random_resolution`` transform built now gets."""
    return _range[-1]


@contextlib.contextmanager
def resolution_aug_range(value: Sequence[float]) -> Iterator[Tuple[float, float]]:
    """Set the ratio range of ``random_resolution`` inside a ``with`` block (nests; restored on exit)."""
    _range.append(check_range(value))
    try:
        yield _range[-1]
    finally:
        _range.pop()


def without_random_resolution(transform: Callable) -> Callable:
    """``transform`` (a torchvision ``Compose``) without its ``RandomResolution`` steps, as a new
    ``Compose``; ``transform`` itself is left as it is. For the targets of SR pre-training, which
    must be the genuine HR images."""
    steps = getattr(transform, "transforms", None)
    if steps is None or not any(isinstance(t, RandomResolution) for t in steps):
        return transform
    return type(transform)([t for t in steps if not isinstance(t, RandomResolution)])


def split_leading_random_resolution(transform: Callable) -> Tuple[Optional[RandomResolution], Callable]:
    """``(step, rest)``: the ``RandomResolution`` that opens ``transform`` (a torchvision ``Compose``)
    and the steps after it as a new ``Compose``; ``(None, transform)`` when it does not open with one.

    A dataset runs ``step`` on the image as read (its ratio is of the genuine size) and ``rest`` after
    its own LR upscale; ``transform`` itself is left as it is."""
    steps = getattr(transform, "transforms", None)
    if not steps or not isinstance(steps[0], RandomResolution):
        return None, transform
    return steps[0], type(transform)(list(steps[1:]))


def _with_random_resolution(build: Callable) -> Callable:
    """Wrap torchreid's ``build_transforms`` so that it understands ``random_resolution``."""

    @functools.wraps(build)
    def build_transforms(height, width, transforms="random_flip", resolution_aug_range=None, **kwargs):
        names = [transforms] if isinstance(transforms, str) else list(transforms or [])
        transform_tr, transform_te = build(height, width, transforms=transforms, **kwargs)
        if NAME in (str(n).lower() for n in names):
            step = RandomResolution(current_range() if resolution_aug_range is None else resolution_aug_range)
            print(f"+ random resolution (bicubic down by a ratio in [{step.ratio_range[0]:g}, "
                  f"{step.ratio_range[1]:g}] of the genuine size, then back up), first")
            transform_tr.transforms.insert(0, step)
        return transform_tr, transform_te

    build_transforms.jbim_wrapped = build
    return build_transforms


def install() -> None:
    """Wrap ``build_transforms`` where torchreid's datamanager and transforms modules hold it (idempotent)."""
    modules = {importlib.import_module(torchreid.data.ImageDataManager.__module__),
               importlib.import_module(torchreid.data.transforms.__name__)}
    for module in modules:
        current = getattr(module, "build_transforms")
        if not hasattr(current, "jbim_wrapped"):
            module.build_transforms = _with_random_resolution(current)
