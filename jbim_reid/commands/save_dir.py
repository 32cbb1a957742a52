"""The save dir of a command that writes one (train, test, train-anchors): checked, locked, cleaned.

While the command runs it holds ``<data.save_dir>/.lock`` (``jbim_reid.utils.locks.folder_lock``), so a
second command on the same folder stops at once (exit code 2, naming the holder's PID) instead of
mixing checkpoints and results with the first. Under torchrun only rank 0 takes the lock (the ranks of
one job share the folder; a second job's rank 0 finds it held and ends that job). The temporary files
of writes a killed run left there are deleted first (``jbim_reid.training.resume.remove_partial_writes``).

``train`` and ``train-anchors`` take ``--force-new`` (:func:`add_training_arguments`): the outputs of
earlier training in the save dir (:data:`EARLIER_RUN`) are deleted once the checks have passed
(:func:`clear_earlier_run`), so the stages train again instead of being skipped or continued.
"""
import argparse
import functools
import glob
import os
import os.path as osp
import shutil
from typing import Callable, List

from yacs.config import CfgNode as CN

from jbim_reid.engines import distributed
from jbim_reid.training import resume
from jbim_reid.training.checks import add_config_arguments, check_writable, load_config
from jbim_reid.training.runner import wants_gpu
from jbim_reid.utils.locks import folder_lock

__all__ = ["EARLIER_RUN", "claims_save_dir", "clear_earlier_run", "add_training_arguments", "training_command"]

EARLIER_RUN = ("stage_*", "split_*", "model", "results.json", "cmc_*.png", "events.out.tfevents.*",
               "visrank_*")  # what training writes in data.save_dir (stages, anchors, checkpoints, results)


def claims_save_dir(command: Callable[..., int]) -> Callable[..., int]:
    """``command(cfg, ...)`` run with ``data.save_dir`` writable, locked, and clean of partial writes."""

    @functools.wraps(command)
    def run(cfg: CN, *args, **kwargs) -> int:
        save_dir = cfg.data.save_dir
        check_writable(save_dir, "data.save_dir")
        main = distributed.is_main_process()
        with folder_lock(save_dir, "data.save_dir", take=main):
            if main:
                resume.remove_partial_writes(save_dir)
            return command(cfg, *args, **kwargs)

    return run


def clear_earlier_run(save_dir: str) -> List[str]:
    """``--force-new``: delete the outputs of earlier training in ``save_dir`` (:data:`EARLIER_RUN`),
    naming each; other files stay. Under torchrun rank 0 deletes and every rank waits for it.

    Returns:
        list of str: the deleted paths.
    """
    removed = []
    if distributed.is_main_process():
        for pattern in EARLIER_RUN:
            for path in sorted(glob.glob(osp.join(glob.escape(save_dir), pattern))):
                if osp.isdir(path) and not osp.islink(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
                resume.log(f"--force-new: removed '{path}'")
                removed.append(path)
    distributed.barrier()
    return removed


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``train`` / ``train-anchors``: ``--force-new``, then the config ones (``KEY VALUE``
    options may come before or after ``--force-new``)."""
    parser.add_argument("--force-new", action="store_true",
                        help="delete the earlier stages in data.save_dir and train from the start (without it, "
                             "finished stages are skipped and an unfinished one continues, with the same config)")
    add_config_arguments(parser, remainder=False)


def training_command(command: Callable[..., int]) -> Callable[[argparse.Namespace], int]:
    """``command(cfg, force_new=...)`` as a subcommand of its own arguments: the config is loaded and
    the torchrun session entered, as ``jbim_reid.cli.main`` does for the subcommands of a config."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        cfg = load_config(args.config_file, args.opts)
        with distributed.session(cfg.train.dist_backend, wants_gpu(cfg), cfg.train.dist_timeout):
            return command(cfg, force_new=args.force_new)

    return run
