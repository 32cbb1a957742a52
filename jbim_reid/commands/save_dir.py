"""The save dir of a command that writes one (train, test, train-anchors): checked, locked, cleaned.

While the command runs it holds ``<data.save_dir>/.lock`` (``jbim_reid.utils.locks.folder_lock``), so a
second command on the same folder stops at once (exit code 2, naming the holder's PID) instead of
mixing checkpoints and results with the first. Under torchrun only rank 0 takes the lock (the ranks of
one job share the folder; a second job's rank 0 finds it held and ends that job). The temporary files
of writes a killed run left there are deleted first (``jbim_reid.training.resume.remove_partial_writes``).
"""
import functools
from typing import Callable

from yacs.config import CfgNode as CN

from jbim_reid.engines import distributed
from jbim_reid.training import resume
from jbim_reid.training.checks import check_writable
from jbim_reid.utils.locks import folder_lock

__all__ = ["claims_save_dir"]


def claims_save_dir(command: Callable[[CN], int]) -> Callable[[CN], int]:
    """``command(cfg)`` run with ``data.save_dir`` writable, locked, and clean of partial writes."""

    @functools.wraps(command)
    def run(cfg: CN) -> int:
        save_dir = cfg.data.save_dir
        check_writable(save_dir, "data.save_dir")
        main = distributed.is_main_process()
        with folder_lock(save_dir, "data.save_dir", take=main):
            if main:
                resume.remove_partial_writes(save_dir)
            return command(cfg)

    return run
