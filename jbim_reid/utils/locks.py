"""Inter-process locks on files (``fcntl.flock``): a blocking one, and the lock of a folder in use.

``flock`` locks belong to the open file: the OS drops them when the holder exits, even by ``kill -9``,
so a killed process never leaves a folder locked. The lock file itself stays (deleting it would let
two processes lock two different files of the same name).

Examples::

    with file_lock('cache/.lock'):          # waits for the other process
        ...
    with folder_lock('log/run1', 'data.save_dir'):   # FolderInUseError at once when held
        ...
"""
import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO, Iterator, Set, Union

__all__ = ["LOCK_NAME", "FolderInUseError", "file_lock", "folder_lock"]

LOCK_NAME = ".lock"  # the lock file inside a locked folder
PathLike = Union[str, os.PathLike]
_held: Set[str] = set()  # folders whose lock this process holds: a nested folder_lock of one passes


class FolderInUseError(RuntimeError):
    """Another process holds the folder's lock; the message names the folder and the holder's PID."""


@contextlib.contextmanager
def file_lock(path: PathLike, blocking: bool = True) -> Iterator[IO[str]]:
    """Hold an exclusive ``flock`` on ``path`` (created, with its folder, if missing) for the block.

    Args:
        path: the lock file.
        blocking (bool): wait for the holder; False raises ``BlockingIOError`` at once instead.

    Yields:
        the open lock file (mode ``a+``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        try:
            yield f
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _holder(path: Path) -> str:
    """The PID recorded in a lock file, or ``unknown`` when it is being written."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


@contextlib.contextmanager
def folder_lock(folder: PathLike, key: str, take: bool = True) -> Iterator[None]:
    """Hold ``<folder>/.lock`` (non-blocking) while the block runs; the file records this PID.

    A nested ``folder_lock`` of a folder this process holds already passes (a command calling another).

    Args:
        folder: the folder in use (created if missing).
        key (str): how the user names it, for the error (e.g. ``data.save_dir``, ``--out``).
        take (bool): False does nothing (e.g. ranks other than 0 under torchrun).

    Raises:
        FolderInUseError: another process holds the lock; names the folder and its PID.
    """
    key_path = os.path.realpath(folder)
    if not take or key_path in _held:
        yield
        return
    path = Path(folder) / LOCK_NAME
    with contextlib.ExitStack() as stack:
        try:
            f = stack.enter_context(file_lock(path, blocking=False))
        except BlockingIOError:
            raise FolderInUseError(f"{key} '{folder}' is in use by another jbim-reid process (PID "
                                   f"{_holder(path)}, lock file '{path}'); wait for it to finish or choose "
                                   f"another {key}") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        _held.add(key_path)
        try:
            yield
        finally:
            _held.discard(key_path)
            f.truncate(0)  # still held here: a new holder writes its own PID afterwards
