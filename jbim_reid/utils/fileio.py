"""The one place where jbim-reid reads weight / checkpoint files and writes files atomically.

Every checkpoint or weight file the project loads (``model.load_weights``, ``model.resume``,
``model.pretrained_path``, ``jbim.*_pretrained_path``, stage checkpoints, the matcher, exports,
indexes) goes through :func:`load_torch_file`, which never unpickles arbitrary objects:
``torch.load(..., weights_only=True)`` (an explicit ``weights_only=True`` is not overridden by
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``), or ``safetensors`` for ``.safetensors`` files. torchreid's
``load_checkpoint`` is not used: its fallback re-runs a full pickle load and patches ``pickle`` for
the whole process.

Writers go through :func:`atomic_write`: a temporary file in the destination folder, flushed and
fsynced, then ``os.replace``, so a kill while writing never leaves a truncated file under the final
name. A folder is replaced whole through :func:`replace_folder` (filled as a temporary sibling, then
swapped in). Temporaries of a killed process are removed by :func:`remove_partial_writes` and at the
next :func:`replace_folder` of the same folder.

A ``.safetensors`` file written by ``jbim-reid export-weights`` keeps the JBIM constructor
arguments in its metadata (``jbim_kwargs``, JSON); :func:`load_torch_file` returns it as a checkpoint
dict ``{'state_dict': tensors, 'jbim_kwargs': {...}}`` so it loads wherever a ``.pth`` checkpoint does.
"""
import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterator, List, Mapping, Optional, Union

__all__ = ["CheckpointError", "CheckpointMismatchError", "SAFETENSORS_META_KEYS", "load_torch_file", "atomic_write",
           "save_torch_file", "save_safetensors", "strip_module_prefix", "remove_partial_writes", "replace_folder"]

SAFETENSORS_META_KEYS = ("jbim_kwargs", "stage", "epoch")  # checkpoint entries kept as JSON metadata

PathLike = Union[str, os.PathLike]
_PARTIAL_WRITE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")  # atomic_write's mkstemp name: .<name>.<random>.tmp
_SIBLING = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)$")  # replace_folder's: .<name>.tmp-<pid>


def strip_module_prefix(state: Mapping) -> dict:
    """``state`` with the ``module.`` prefix of (Distributed)DataParallel removed from its keys."""
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


class CheckpointError(ValueError):
    """A weight or checkpoint file that is missing, empty, truncated, unsafe or of the wrong kind."""


class CheckpointMismatchError(CheckpointError):
    """A readable checkpoint that belongs to another model, stage or optimizer than the one asked for."""


def _numpy_scalar_globals() -> list:
    """The numpy globals a numpy scalar pickles through: torchreid's engines store ``rank1`` as one.

    ``scalar`` rebuilds a number from a dtype and raw bytes, and the dtype classes only name a type;
    none of them can run code, so they are the only globals let through torch's weights-only loader.
    """
    import numpy as np

    core = getattr(np, "_core", None) or np.core  # numpy >= 2 / numpy 1
    dtype_classes = [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")] \
        if hasattr(np, "dtypes") else []
    return [core.multiarray.scalar, np.dtype, *dtype_classes]


def load_torch_file(path: PathLike, what: str = "checkpoint") -> Any:
    """Load a ``.pth`` / ``.pth.tar`` / ``.safetensors`` file safely onto the CPU.

    Args:
        path: the file.
        what (str): what the file is for, used in error messages (e.g. ``model.load_weights``).

    Returns:
        The loaded object (a state dict, or a checkpoint dict of tensors and plain values).

    Raises:
        CheckpointError: the file is missing, zero bytes, truncated, not a torch file, or holds
            objects other than tensors and plain containers (a pickle that would run code).
    """
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isfile(path):
        raise CheckpointError(f"{what}: file not found: '{path}'")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{what}: '{path}' is empty (0 bytes), probably left by an interrupted "
                              "save; delete it and use an earlier checkpoint or retrain")
    if path.endswith(".safetensors"):
        return _load_safetensors(path, what)
    import torch

    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for damaged or unsafe files
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "Weights only load failed" in str(err) or "Unsupported global" in str(err):
            raise CheckpointError(
                f"{what}: '{path}' holds Python objects other than tensors and plain values; it is "
                "refused because loading it could run code (only weights_only files are loaded)"
            ) from None
        raise CheckpointError(f"{what}: cannot load '{path}' (truncated or not a torch file?): "
                              f"{text}; replace it, or use an earlier checkpoint") from None


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file through ``write(f)`` on a temporary file, fsync it, then rename it to ``path``.

    An existing file at ``path`` stays untouched when ``write`` fails or the process dies.

    Args:
        path: destination; its folder is created when missing.
        write: callable filling a binary file object.

    Returns:
        Path: ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def remove_partial_writes(folder: PathLike, recursive: bool = True) -> List[str]:
    """Delete the temporary files of :func:`atomic_write` left in ``folder`` by a killed process.

    Call it only where no other process writes (a locked save dir): a live writer's temporary
    looks the same.

    Args:
        folder: where to look (a missing folder holds none).
        recursive (bool): also look in every folder below it.

    Returns:
        list of str: the deleted files.
    """
    removed = []
    walk = os.walk(folder) if recursive else [(os.fspath(folder), [], _names(folder))]
    for root, _, names in walk:
        for name in names:
            if _PARTIAL_WRITE.match(name) and os.path.isfile(os.path.join(root, name)):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(root, name))
                    removed.append(os.path.join(root, name))
    return removed


def _names(folder: PathLike) -> List[str]:
    return os.listdir(folder) if os.path.isdir(folder) else []


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


@contextlib.contextmanager
def replace_folder(path: PathLike) -> Iterator[Path]:
    """Fill a new folder that replaces ``path`` whole, so a kill midway never leaves a mixed folder.

    The block fills a temporary sibling ``.<name>.tmp-<pid>``; when it ends without an error the old
    folder is renamed aside (``.<name>.old-<pid>``), the new one renamed in, and the old one deleted.
    On an error the temporary folder is deleted and ``path`` is untouched. Siblings left by a killed
    process (its PID no longer runs) are deleted first.

    Args:
        path: the folder to write (its parent is created when missing).

    Yields:
        Path: the temporary folder to fill.
    """
    path = Path(os.path.abspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    for name in _names(path.parent):
        match = _SIBLING.match(name)
        if match and match.group("name") == path.name and not _pid_alive(int(match.group("pid"))):
            shutil.rmtree(path.parent / name, ignore_errors=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    old = path.parent / f".{path.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    moved_aside = False
    try:
        yield tmp
        if path.exists():
            os.rename(path, old)
            moved_aside = True
        os.rename(tmp, path)
    except BaseException:
        if moved_aside and not path.exists():
            os.rename(old, path)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def save_torch_file(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (see :func:`atomic_write`)."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def save_safetensors(state_dict: Dict[str, Any], path: PathLike,
                     metadata: Optional[Dict[str, Any]] = None) -> Path:
    """Write tensors to a ``.safetensors`` file atomically, plain values as JSON metadata.

    Args:
        state_dict (dict): name -> tensor (copied to contiguous CPU tensors; shared storage is fine).
        path: destination.
        metadata (dict, optional): JSON-serialisable values (e.g. ``jbim_kwargs``), read back by
            :func:`load_torch_file` into the returned checkpoint dict.

    Returns:
        Path: ``path``.
    """
    from safetensors.torch import save

    tensors = {name: value.detach().cpu().clone().contiguous() for name, value in state_dict.items()}
    meta = {key: json.dumps(value) for key, value in (metadata or {}).items()}
    data = save(tensors, metadata=meta)
    return atomic_write(path, lambda f: f.write(data))


def _load_safetensors(path: str, what: str) -> Dict[str, Any]:
    """Tensors of a safetensors file; with jbim-reid metadata, a checkpoint dict (module docstring)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            tensors = {name: f.get_tensor(name) for name in f.keys()}
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{what}: cannot read safetensors file '{path}' (truncated or not a "
                              f"safetensors file?): {err}") from None
    extra = {}
    for key in SAFETENSORS_META_KEYS:
        if key in metadata:
            try:
                extra[key] = json.loads(metadata[key])
            except ValueError:
                raise CheckpointError(f"{what}: metadata '{key}' of '{path}' is not JSON") from None
    return {"state_dict": tensors, **extra} if extra else tensors


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
