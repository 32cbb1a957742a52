"""Datasets that fetch themselves: torchreid's ``dataset_url`` convention, made atomic.

torchreid's ``ImageDataset.download_dataset`` creates ``<root>/<dataset_dir>`` first, downloads the
archive into it and unpacks it there, so an interrupted run leaves a folder that the next run takes
for a complete dataset. :func:`fetch_dataset` does the same job in steps that cannot leave half a
dataset behind: download to a temporary name (``jbim_reid.utils.download``), unpack into a temporary
folder beside the destination, check the expected layout, then rename that folder to
``<root>/<dataset_dir>``.
"""
import contextlib
import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Sequence

from jbim_reid.datasets.cache import file_lock
from jbim_reid.utils.download import DownloadError, download_file

__all__ = ["DatasetUnavailableError", "fetch_dataset", "unpack_archive"]


class DatasetUnavailableError(FileNotFoundError):
    """A missing dataset whose download or unpacking failed."""


def unpack_archive(archive: Path, dst: Path) -> None:
    """Extract a zip or tar archive (any compression) into ``dst``, refusing paths outside it.

    Raises:
        ValueError: the file is neither a zip nor a tar archive (e.g. an HTML page).
    """
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:  # ZipFile drops absolute and '..' components
            zf.extractall(dst)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            if hasattr(tarfile, "data_filter"):
                tf.extractall(dst, filter="data")
            else:  # Python without extraction filters: check member paths ourselves
                root = dst.resolve()
                for member in tf.getmembers():
                    target = (dst / member.name).resolve()
                    if root not in target.parents and target != root:
                        raise ValueError(f"archive member '{member.name}' points outside the folder")
                tf.extractall(dst)
    else:
        with open(archive, "rb") as f:
            head = f.read(64).lstrip().lower()
        kind = "an HTML page" if head.startswith((b"<!doctype", b"<html")) else "not a zip or tar archive"
        raise ValueError(f"the downloaded file is {kind}")


def fetch_dataset(root: os.PathLike, required: Sequence[str], url: str, name: str, layout: str,
                  homepage: str = "") -> bool:
    """Download and unpack ``url`` into ``<root>/<dataset_dir>`` when that folder is missing.

    ``dataset_dir`` is the first component of ``required[0]`` (e.g. ``caviar`` for
    ``caviar/CAVIAR4REID/cropped_images``); the archive must hold the rest of every ``required``
    path. An existing ``<root>/<dataset_dir>`` is never touched.

    Args:
        root: the data root (``data.root``).
        required: paths relative to ``root`` the dataset needs.
        url: the archive's URL (zip or tar).
        name: dataset name for messages.
        layout: expected layout text for messages.
        homepage: where to get the dataset by hand, for messages.

    Returns:
        bool: True when it downloaded the dataset, False when the folder already existed.

    Raises:
        DatasetUnavailableError: the download failed or the archive does not hold ``required``;
            nothing is left under ``root`` but the (possibly new) root folder itself.
    """
    root = Path(root)
    folder = Path(required[0]).parts[0]
    dest = root / folder
    if dest.exists():
        return False
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / f".{folder}.download.lock"):
        if dest.exists():  # another process fetched it while we waited
            return False
        archive = root / f".{folder}.{os.path.basename(url.split('?', 1)[0]) or 'archive'}"
        unpacked = Path(tempfile.mkdtemp(prefix=f".{folder}.unpack-", dir=root))
        try:
            print(f"=> {name}: '{dest}' is missing; downloading {url}")
            download_file(url, archive)
            print(f"=> {name}: unpacking into '{dest}'")
            unpack_archive(archive, unpacked)
            absent = [rel for rel in required if not (unpacked / Path(rel).relative_to(folder)).exists()]
            if absent:
                found = sorted(p.name for p in unpacked.iterdir())
                raise ValueError(f"the archive lacks '{absent[0]}' (its top level holds {found})")
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(unpacked, 0o777 & ~mask)  # mkdtemp's folder is private (0700)
            os.rename(unpacked, dest)
        except (DownloadError, ValueError, OSError) as err:
            where = f" from {homepage}" if homepage else ""
            raise DatasetUnavailableError(
                f"{name}: '{dest}' is missing and fetching {url} failed: {err}. Get the dataset"
                f"{where} yourself and unpack it into data.root. Expected layout under root "
                f"'{root}':\n{layout}\nor set data.root to a folder that already holds it.") from None
        finally:
            shutil.rmtree(unpacked, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                archive.unlink()
        print(f"=> {name}: ready in '{dest}'")
        return True
