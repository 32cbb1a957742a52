"""Checking image files before training: every image of a split is decoded once, up front.

A zero-byte, truncated, corrupt or non-image file would otherwise stop training in the middle of an
epoch. :func:`check_images` names such files (``DataError``) or, with ``skip_bad_images``, leaves
them out and lists them. torchreid's ``ImageDataManager`` passes no extra arguments to datasets, so
the option is process-wide, set with :func:`image_check_options` (the CLI sets it from
``data.skip_bad_images``).

Examples::

    with image_check_options(skip_bad_images=True):
        datamanager = torchreid.data.ImageDataManager(root='data', sources='caviar')
"""
import contextlib
import warnings
from typing import Dict, Iterator, List, Sequence, Tuple

from PIL import Image

from jbim_reid.errors import DataError

__all__ = ["image_check_options", "find_bad_images", "check_images"]

_options: Dict[str, bool] = {"skip_bad_images": False}  # option -> value, set by image_check_options


@contextlib.contextmanager
def image_check_options(skip_bad_images: bool = False) -> Iterator[None]:
    """Inside the block, datasets skip (and list) unreadable images instead of raising DataError."""
    saved = dict(_options)
    _options["skip_bad_images"] = bool(skip_bad_images)
    try:
        yield
    finally:
        _options.clear()
        _options.update(saved)


def find_bad_images(paths: Sequence[str]) -> List[Tuple[str, str]]:
    """``(path, reason)`` for each file of ``paths`` that PIL cannot fully decode."""
    bad = []
    for path in dict.fromkeys(paths):
        try:
            with Image.open(path) as im:
                im.load()
        except Exception as err:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, ...
            bad.append((path, str(err).splitlines()[0] if str(err) else type(err).__name__))
    return bad


def check_images(items: Sequence[tuple], dataset: str, subset: str) -> list:
    """Items of ``items`` (torchreid tuples, path first) whose images decode.

    Args:
        items (sequence): ``(impath, pid, camid, ...)`` tuples.
        dataset (str): dataset name, for messages.
        subset (str): ``train``, ``query`` or ``gallery``, for messages.

    Returns:
        list: ``items`` without those whose image is bad (only with ``skip_bad_images``).

    Raises:
        DataError: some image is bad and ``skip_bad_images`` is off; names the files.
    """
    bad = find_bad_images([it[0] for it in items])
    if not bad:
        return list(items)
    listing = "; ".join(f"'{path}' ({reason})" for path, reason in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    if not _options["skip_bad_images"]:
        raise DataError(f"{dataset}: {len(bad)} {subset} image file(s) cannot be read: {listing}{more}; "
                        "replace or delete them, or set data.skip_bad_images True to skip them")
    warnings.warn(f"{dataset}: skipped {len(bad)} unreadable {subset} image file(s) "
                  f"(data.skip_bad_images): {listing}{more}")
    skipped = {path for path, _ in bad}
    return [it for it in items if it[0] not in skipped]
