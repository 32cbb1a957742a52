"""Downloading one file (pretrained weights, dataset archives) without ever hanging or half-writing.

:func:`download_file` fetches a URL with a socket timeout on every connect and read (so a server that
never answers fails after ``timeout`` seconds), one try only, with a tqdm progress bar. Google Drive
URLs go through ``gdown``, as torchreid downloads its OSNet weights; other URLs through ``urllib``
(torch hub's transport). The file is written under a temporary name next to the destination, checked
(length announced by the server, sha256 prefix when known) and only then renamed, so the destination
is either absent or complete.
"""
import contextlib
import hashlib
import os
import re
import urllib.request
from pathlib import Path
from typing import Optional, Union

from tqdm import tqdm

__all__ = ["DownloadError", "DOWNLOAD_TIMEOUT_S", "download_file", "sha256_file", "hub_hash_prefix",
           "partial_path"]

# Seconds a connect or a read may take before the download fails (env JBIM_DOWNLOAD_TIMEOUT).
DOWNLOAD_TIMEOUT_S = float(os.environ.get("JBIM_DOWNLOAD_TIMEOUT", "10"))

_HUB_HASH = re.compile(r"-([a-f0-9]{8,})\.")  # torch.hub's convention: name-<sha256 prefix>.ext

PathLike = Union[str, os.PathLike]


class DownloadError(RuntimeError):
    """A download that failed (no network, refused, timed out, incomplete or with the wrong hash)."""


def hub_hash_prefix(url: str) -> Optional[str]:
    """The sha256 prefix torch hub reads from a file name such as ``resnet50-19c8e357.pth``, or None."""
    match = _HUB_HASH.search(os.path.basename(url.split("?", 1)[0]))
    return match.group(1) if match else None


def sha256_file(path: PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def partial_path(dst: PathLike) -> Path:
    """The temporary name a download of ``dst`` is written to (``.<name>.part`` beside it)."""
    dst = Path(dst)
    return dst.with_name(f".{dst.name}.part")


def _is_google_drive(url: str) -> bool:
    return "drive.google.com" in url or "docs.google.com" in url


def _urllib_download(url: str, tmp: Path, timeout: float, progress: bool) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "jbim-reid"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as f:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        written = 0
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress,
                  desc=os.path.basename(url.split("?", 1)[0])[:40]) as bar:
            for block in iter(lambda: response.read(1 << 16), b""):
                f.write(block)
                written += len(block)
                bar.update(len(block))
    if total is not None and written != total:
        raise DownloadError(f"incomplete download: got {written} of {total} bytes")


def download_file(url: str, dst: PathLike, timeout: Optional[float] = None,
                  sha256_prefix: Optional[str] = None, progress: bool = True) -> Path:
    """Download ``url`` to ``dst`` (one try, a timeout on every socket operation).

    Args:
        url: http(s) URL; Google Drive URLs are fetched with ``gdown``.
        dst: destination file; its folder is created.
        timeout: seconds per connect / read; None uses ``DOWNLOAD_TIMEOUT_S``.
        sha256_prefix: expected start of the file's hex sha256 (None: not checked).
        progress: show a progress bar.

    Returns:
        Path: ``dst``, complete.

    Raises:
        DownloadError: the transfer failed or the file is incomplete or has another hash; nothing
            is left at ``dst`` or under its temporary name.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(dst)
    timeout = DOWNLOAD_TIMEOUT_S if timeout is None else timeout
    try:
        try:
            if _is_google_drive(url):
                import gdown

                if gdown.download(url, str(tmp), quiet=not progress, timeout=timeout) is None:
                    raise DownloadError("gdown could not fetch the file")
            else:
                _urllib_download(url, tmp, timeout, progress)
        except DownloadError:
            raise
        except Exception as err:  # noqa: BLE001 - urllib, http.client, requests and gdown errors
            raise DownloadError(f"{type(err).__name__}: {err}") from None
        if sha256_prefix:
            digest = sha256_file(tmp)
            if not digest.startswith(sha256_prefix):
                raise DownloadError(f"sha256 {digest[:16]}... does not start with the published "
                                    f"{sha256_prefix}: corrupt or wrong file")
        os.replace(tmp, dst)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return dst
