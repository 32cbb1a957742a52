"""Checking image files before training: every image of a split is decoded once, up front.

A zero-byte, truncated, corrupt or non-image file would otherwise stop training (or testing) in the
middle. :func:`check_split_images` decodes the train, query and gallery images of a split (each file
once per process: files that decoded are remembered by size and modification time) and names bad
files (``DataError``) or, with ``skip_bad_images``, leaves them out and says how many it skipped from
each of train / query / gallery. torchreid's ``ImageDataManager`` passes no extra arguments to
datasets, so the option is process-wide, set with :func:`image_check_options` (the CLI sets it from
``data.skip_bad_images``).

Examples::

    with image_check_options(skip_bad_images=True):
        datamanager = torchreid.data.ImageDataManager(root='data', sources='caviar')
"""
import contextlib
import os
import warnings
from collections import defaultdict
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from PIL import Image

from jbim_reid.utils.errors import DataError

__all__ = ["image_check_options", "find_bad_images", "check_images", "check_split_images"]

_options: Dict[str, bool] = {"skip_bad_images": False}  # option -> value, set by image_check_options
_decoded: Dict[str, Tuple[int, int]] = {}  # path -> (size, mtime_ns) of a file that decoded in this process


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


def _stamp(path: str) -> Optional[Tuple[int, int]]:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def find_bad_images(paths: Sequence[str]) -> List[Tuple[str, str]]:
    """``(path, reason)`` for each file of ``paths`` that PIL cannot fully decode.

    A file that decoded before in this process, unchanged since (size, modification time), is not
    decoded again.
    """
    bad = []
    for path in dict.fromkeys(paths):
        stamp = _stamp(path)
        if stamp is not None and _decoded.get(path) == stamp:
            continue
        try:
            with Image.open(path) as im:
                im.load()
        except Exception as err:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, ...
            bad.append((path, str(err).splitlines()[0] if str(err) else type(err).__name__))
        else:
            if stamp is not None:
                _decoded[path] = stamp
    return bad


def _listing(bad: Sequence[Tuple[str, str]]) -> str:
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    return "; ".join(f"'{path}' ({reason})" for path, reason in bad[:5]) + more


def _relabel(train: list) -> list:
    """Train items with pids renumbered 0..n-1 (skipped images may take a whole identity with them)."""
    labels = {pid: i for i, pid in enumerate(sorted({it[1] for it in train}))}
    return [(path, labels[pid], *rest) for path, pid, *rest in train]


def _with_match(query: list, gallery: list) -> list:
    """Probes whose pid is still in the gallery under another camid (evaluation drops the others)."""
    cams = defaultdict(set)
    for _, pid, camid, *_ in gallery:
        cams[pid].add(camid)
    return [it for it in query if cams[it[1]] - {it[2]}]


def check_split_images(train: list, query: list, gallery: list, dataset: str) -> Tuple[list, list, list]:
    """Train, query and gallery items (torchreid tuples, path first) whose images decode.

    With ``skip_bad_images`` the bad images are left out, train pids are relabelled when an identity
    lost all its images, probes left without a gallery match under another camid are left out too,
    and one warning counts the skipped files of train / query / gallery.

    Raises:
        DataError: some image is bad and ``skip_bad_images`` is off (names the files); or skipping
            leaves a subset empty.
    """
    subsets = {"train": train, "query": query, "gallery": gallery}
    bad = {name: find_bad_images([it[0] for it in items]) for name, items in subsets.items()}
    found = [entry for entries in bad.values() for entry in entries]
    if not found:
        return list(train), list(query), list(gallery)
    counts = ", ".join(f"{len(bad[name])} {name}" for name in subsets)
    if not _options["skip_bad_images"]:
        raise DataError(f"{dataset}: {len(found)} image file(s) cannot be read ({counts}): {_listing(found)}; "
                        "replace or delete them, or set data.skip_bad_images True to skip them")
    skipped = {path for path, _ in found}
    kept = {name: [it for it in items if it[0] not in skipped] for name, items in subsets.items()}
    probes = _with_match(kept["query"], kept["gallery"])
    unmatched = len(kept["query"]) - len(probes)
    kept["train"], kept["query"] = _relabel(kept["train"]), probes
    empty = [name for name, items in kept.items() if not items]
    if empty:
        raise DataError(f"{dataset}: skipping the unreadable image files ({counts}) leaves no {' / '.join(empty)} "
                        f"images: {_listing(found)}; replace them")
    warnings.warn(f"{dataset}: skipped {len(found)} unreadable image file(s) (data.skip_bad_images): {counts}"
                  + (f", and {unmatched} probe(s) left without a gallery match" if unmatched else "")
                  + f": {_listing(found)}")
    return kept["train"], kept["query"], kept["gallery"]


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
    if not _options["skip_bad_images"]:
        raise DataError(f"{dataset}: {len(bad)} {subset} image file(s) cannot be read: {_listing(bad)}; "
                        "replace or delete them, or set data.skip_bad_images True to skip them")
    warnings.warn(f"{dataset}: skipped {len(bad)} unreadable {subset} image file(s) "
                  f"(data.skip_bad_images): {_listing(bad)}")
    skipped = {path for path, _ in bad}
    return [it for it in items if it[0] not in skipped]
