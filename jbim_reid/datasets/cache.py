"""Cache folder resolution, atomic writes (through ``jbim_reid.utils.fileio``) and an inter-process lock for
split / LR generation (``file_lock``, from ``jbim_reid.utils.locks``)."""
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any, Optional, Union

from jbim_reid.utils.fileio import atomic_write
from jbim_reid.utils.locks import file_lock  # serialises split / LR generation between processes

__all__ = ["resolve_cache_root", "is_writable_dir", "atomic_write_bytes", "atomic_write_json",
           "json_bytes", "file_lock", "user_cache_home"]

PathLike = Union[str, os.PathLike]


def is_writable_dir(path: PathLike) -> bool:
    """Whether ``path`` is an existing folder we may write into.

    ``os.access`` says yes to root for any folder on a writable file system, so a folder whose
    mode grants write permission to nobody (e.g. ``chmod 555``, as shared datasets often are) is
    treated as read-only as well: we never write where the owner marked the data read-only.
    """
    path = Path(path)
    if not path.is_dir():
        return False
    if not os.access(path, os.W_OK | os.X_OK):
        return False
    return bool(path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def user_cache_home() -> Path:
    """``$XDG_CACHE_HOME/jbim_reid``, or ``~/.cache/jbim_reid`` when the variable is unset."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jbim_reid"


def resolve_cache_root(data_root: PathLike, cache_dir: Optional[PathLike] = None) -> Path:
    """The folder holding LR images and split files for datasets under ``data_root``.

    Args:
        data_root (path): the datasets' root folder (torchreid's ``root``).
        cache_dir (path, optional): explicit cache folder; used as is (created if missing).

    Returns:
        ``cache_dir`` if given; else ``<data_root>/jbim_cache`` when that folder (or, if it does
        not exist yet, ``data_root``) is writable; else the per-user fallback
        ``user_cache_home() / '<root name>-<hash of its absolute path>'`` (one folder per data root,
        so two data roots never share splits).
    """
    if cache_dir is not None:
        root = Path(cache_dir).expanduser().resolve()
        root.mkdir(parents=True, exist_ok=True)
        if not is_writable_dir(root):
            raise PermissionError(f"cache_dir '{root}' is not writable")
        return root
    data_root = Path(data_root).expanduser().resolve()
    default = data_root / "jbim_cache"
    if is_writable_dir(default) or (not default.exists() and is_writable_dir(data_root)):
        default.mkdir(exist_ok=True)
        return default
    tag = hashlib.sha1(str(data_root).encode("utf-8")).hexdigest()[:10]
    fallback = user_cache_home() / f"{data_root.name or 'root'}-{tag}"
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` with ``jbim_reid.utils.fileio.atomic_write`` (temp file, fsync, rename).

    Readers therefore see either no file or a complete one, never a partial write.
    """
    atomic_write(path, lambda f: f.write(data))


def json_bytes(obj: Any) -> bytes:
    """Canonical JSON (sorted keys, indent 1, trailing newline): equal objects give equal bytes."""
    return (json.dumps(obj, sort_keys=True, indent=1) + "\n").encode("utf-8")


def atomic_write_json(path: PathLike, obj: Any) -> None:
    """``atomic_write_bytes(path, json_bytes(obj))``."""
    atomic_write_bytes(path, json_bytes(obj))
