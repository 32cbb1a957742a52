"""Resuming staged training: which stages are finished, and where an unfinished one continues.

A stage (``him``, ``lim``, ``joint``, ... in its own folder) is *finished* when its final checkpoint
(``checkpoint_path(stage_dir, final epoch)``) loads and its ``results.json`` exists; a finished stage
is skipped. An unfinished one continues from its newest checkpoint that loads and fits the model
(``JBIMEngine.resume`` restores model, optimizer, scheduler, epoch and random state), falling back to
older ones when the newest is damaged. ``jbim-reid train`` and ``jbim-reid train-anchors`` call
:func:`run_or_skip` once per stage, so re-running the same command after a crash continues the run.

Examples::

    checkpoint = run_or_skip(cfg, lambda: datamanager, "him", "log/stage_him", variant="him")
"""
import os
import os.path as osp
from typing import Callable, Optional

from yacs.config import CfgNode as CN

from jbim_reid import distributed
from jbim_reid.engines import checkpoint_path, list_checkpoints, sr_checkpoint_path
from jbim_reid.fileio import CheckpointError, CheckpointMismatchError, atomic_write, load_torch_file
from jbim_reid.reports import read_json, write_json

__all__ = ["final_epoch", "stage_checkpoint", "stage_finished", "resume_latest", "run_or_skip",
           "promote_results"]


def _print(message: str) -> None:
    print(f"=> {message}", flush=True)


def final_epoch(cfg: CN, trains: bool = True) -> int:
    """Epoch in the name of the checkpoint a stage ends with (a stage that only tests keeps its start).

    Args:
        cfg (CfgNode): config (``train.max_epoch``, ``train.start_epoch``).
        trains (bool): whether the stage trains (False: the him_lim joint stage only tests).
    """
    trains = trains and cfg.train.max_epoch > cfg.train.start_epoch
    return cfg.train.max_epoch if trains else cfg.train.start_epoch


def stage_checkpoint(cfg: CN, stage_dir: str, trains: bool = True) -> str:
    """The final checkpoint of the stage in ``stage_dir``."""
    return checkpoint_path(stage_dir, final_epoch(cfg, trains))


def stage_finished(checkpoint: str, results: str) -> bool:
    """Whether ``checkpoint`` loads and ``results`` (a results.json) reads; damaged files are reported.

    Args:
        checkpoint (str): the stage's (or anchor's) final checkpoint.
        results (str): its results.json.
    """
    if not (osp.isfile(checkpoint) and osp.isfile(results)):
        return False
    try:
        load_torch_file(checkpoint, what="final checkpoint")
        read_json(results)
    except (CheckpointError, ValueError) as err:
        _print(f"{err}; the stage is trained again")
        return False
    return True


def resume_latest(engine, save_dir: str) -> Optional[int]:
    """Resume ``engine`` from the newest usable checkpoint in ``save_dir``.

    Damaged checkpoints (empty, truncated, unreadable) are named and skipped for the previous one.

    Args:
        engine (JBIMEngine): a freshly built engine of the stage.
        save_dir (str): the stage's folder.

    Returns:
        int or None: the epoch to start at, None when there is no usable checkpoint.

    Raises:
        CheckpointMismatchError: the folder holds checkpoints of another model and none of this one
            (training from scratch would delete them).
    """
    if distributed.is_main_process():  # under torchrun only rank 0 writes (and cleans) checkpoints
        _remove_partial_writes(save_dir)
    distributed.barrier()
    mismatch = None
    damaged = []
    for _, path in reversed(list_checkpoints(save_dir)):
        try:
            return engine.resume(path)
        except CheckpointMismatchError as err:
            mismatch = mismatch or err
            _print(f"{err}; trying the previous checkpoint")
        except CheckpointError as err:
            damaged.append(path)
            _print(f"{err}; falling back to the previous checkpoint")
    if mismatch is not None:
        raise mismatch
    if damaged:
        _print(f"no usable checkpoint in '{save_dir}' ({len(damaged)} damaged): the stage starts from "
               "the beginning")
    return None


def _remove_partial_writes(save_dir: str) -> None:
    """Delete temporary checkpoint files left by a process killed while saving (``fileio.atomic_write``)."""
    folder, prefix = osp.split(checkpoint_path(save_dir, 0)[:-1])
    if not osp.isdir(folder):
        return
    for name in os.listdir(folder):
        if name.startswith(f".{prefix}") and name.endswith(".tmp"):
            os.remove(osp.join(folder, name))
            _print(f"removed '{osp.join(folder, name)}', left by an interrupted save")


def run_or_skip(cfg: CN, get_datamanager: Callable, stage: str, stage_dir: str,
                variant: Optional[str] = None, him_checkpoint: str = "", lim_checkpoint: str = "",
                trains: bool = True, log: Callable[[str], None] = _print, sr_checkpoint: str = "") -> str:
    """Run one stage through ``runner.run_stage`` unless it is finished; returns its final checkpoint.

    ``run_stage`` continues an unfinished stage from its newest usable checkpoint. With
    ``model.resume`` set the stage always runs, from that checkpoint.

    Args:
        cfg (CfgNode): config.
        get_datamanager (callable): returns the datamanager (called only when the stage runs).
        stage (str): ``him``, ``lim`` or ``joint``.
        stage_dir (str): the stage's folder.
        variant (str, optional): model variant (default ``jbim.variant``).
        him_checkpoint, lim_checkpoint (str): stage checkpoints initialising a joint stage.
        trains (bool): False only tests the initialised model (the him_lim joint stage).
        log (callable): progress messages.
        sr_checkpoint (str): stage-``sr`` checkpoint initialising the SR module of stage ``him``.

    Returns:
        str: the stage's final checkpoint.
    """
    from jbim_reid import runner  # runner imports this module

    checkpoint = sr_checkpoint_path(stage_dir) if stage == "sr" else stage_checkpoint(cfg, stage_dir, trains)
    if not cfg.model.resume and stage_finished(checkpoint, osp.join(stage_dir, "results.json")):
        log(f"stage {stage}: '{checkpoint}' exists, skipped")
        return checkpoint
    log(f"stage {stage} -> {stage_dir}")
    _, checkpoint = runner.run_stage(cfg, get_datamanager(), stage, stage_dir, variant, him_checkpoint,
                                  lim_checkpoint, train_epochs=trains, continue_run=True,
                                  sr_checkpoint=sr_checkpoint)
    return checkpoint


def promote_results(stage_dir: str, dest_dir: str, extra: Optional[dict] = None) -> str:
    """Copy a finished stage's ``results.json`` (plus ``extra``) and CMC plots into ``dest_dir``.

    Args:
        stage_dir (str): the stage's folder.
        dest_dir (str): e.g. ``data.save_dir`` of ``jbim.stage all``, or an anchor's folder.
        extra (dict, optional): entries added to (or replacing those of) the results.

    Returns:
        str: the written results.json.
    """
    results = read_json(osp.join(stage_dir, "results.json"))
    for name in results.get("datasets", {}):
        plot = osp.join(stage_dir, f"cmc_{name}.png")
        if osp.isfile(plot):
            with open(plot, "rb") as f:
                data = f.read()
            atomic_write(osp.join(dest_dir, f"cmc_{name}.png"), lambda out, data=data: out.write(data))
    path = osp.join(dest_dir, "results.json")
    write_json({**results, **(extra or {})}, path)
    _print(f"Results written to '{path}'")
    return path
