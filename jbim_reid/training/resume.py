"""Resuming staged training: which stages are finished, and where an unfinished one continues.

A stage (``him``, ``lim``, ``joint``, ... in its own folder) is *finished* when its final checkpoint
(``checkpoint_path(stage_dir, final epoch)``) loads and its ``results.json`` exists; a finished stage
is skipped. An unfinished one continues from its newest checkpoint that loads and fits the model
(``JBIMEngine.resume`` restores model, optimizer, scheduler, epoch and random state), falling back to
older ones when the newest is damaged. ``jbim-reid train`` and ``jbim-reid train-anchors`` call
``jbim_reid.training.runner.run_or_skip`` once per stage, which asks this module whether the stage is
finished and where it continues, so re-running the same command after a crash continues the run.

A stage is skipped or continued only with the config it was trained with: its checkpoints record
``training.fingerprint.config_fingerprint``, and a key that differs now stops the command
(``ConfigError`` naming each key and both values) instead of reusing a model trained otherwise.
"""
import os.path as osp
from typing import Any, Mapping, Optional

from yacs.config import CfgNode as CN

from jbim_reid.engines import checkpoint_path, distributed, list_checkpoints
from jbim_reid.engines.sr_engine import sr_progress_path
from jbim_reid.evaluation.reports import read_json, write_json
from jbim_reid.training.fingerprint import FINGERPRINT_ENTRY, fingerprint_differences
from jbim_reid.utils import fileio
from jbim_reid.utils.errors import ConfigError
from jbim_reid.utils.fileio import CheckpointError, CheckpointMismatchError, atomic_write, load_torch_file

__all__ = ["final_epoch", "stage_checkpoint", "stage_finished", "check_same_config", "check_sr_progress",
           "resume_latest", "remove_partial_writes", "promote_results"]


def log(message: str) -> None:
    """A progress line of resuming and skipping stages."""
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


def stage_finished(checkpoint: str, results: str, fingerprint: Optional[Mapping] = None) -> bool:
    """Whether ``checkpoint`` loads and ``results`` (a results.json) reads; damaged files are reported.

    Args:
        checkpoint (str): the stage's (or anchor's) final checkpoint.
        results (str): its results.json.
        fingerprint (mapping, optional): ``config_fingerprint`` of the config the stage would train
            with now; a finished stage trained with another config raises (:func:`check_same_config`).

    Raises:
        ConfigError: the finished stage was trained with another config.
    """
    if not (osp.isfile(checkpoint) and osp.isfile(results)):
        return False
    try:
        loaded = load_torch_file(checkpoint, what="final checkpoint")
        read_json(results)
    except (CheckpointError, ValueError) as err:
        log(f"{err}; the stage is trained again")
        return False
    if fingerprint is not None:
        check_same_config(loaded, fingerprint, checkpoint)
    return True


def check_same_config(checkpoint: Any, fingerprint: Mapping, path: str) -> None:
    """Raise ConfigError unless ``checkpoint`` (loaded from ``path``) was trained with the config of
    ``fingerprint`` (``config_fingerprint`` of the current config).

    A checkpoint without a recorded fingerprint (written before runs recorded one) passes, so older
    runs are skipped or continued as they were.
    """
    recorded = checkpoint.get(FINGERPRINT_ENTRY) if isinstance(checkpoint, Mapping) else None
    differences = fingerprint_differences(recorded, fingerprint)
    if differences:
        listed = "; ".join(f"{key} was {old!r}, now {new!r}" for key, old, new in differences)
        raise ConfigError(
            f"'{path}' was trained with another config ({listed}): run with the values it was trained with "
            "to continue, or start over with --force-new (deletes the earlier stages in data.save_dir) or "
            "another data.save_dir")


def check_sr_progress(stage_dir: str, fingerprint: Mapping) -> None:
    """:func:`check_same_config` of the progress file an unfinished stage ``sr`` in ``stage_dir``
    continues from; a missing or damaged one passes (``SREngine`` then starts the stage over)."""
    path = sr_progress_path(stage_dir)
    if not osp.isfile(path):
        return
    try:
        progress = load_torch_file(path, what="stage sr progress")
    except CheckpointError:
        return
    check_same_config(progress, fingerprint, path)


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
        ConfigError: the newest checkpoint of this model was trained with another config
            (``engine.run_info`` holds the current one's fingerprint).
    """
    if distributed.is_main_process():  # under torchrun only rank 0 writes (and cleans) checkpoints
        remove_partial_writes(save_dir)
    distributed.barrier()
    fingerprint = getattr(engine, "run_info", {}).get(FINGERPRINT_ENTRY)
    mismatch = None
    damaged = []
    for _, path in reversed(list_checkpoints(save_dir)):
        check = None if fingerprint is None else (lambda c, p=path: check_same_config(c, fingerprint, p))
        try:
            return engine.resume(path, check=check)
        except CheckpointMismatchError as err:
            mismatch = mismatch or err
            log(f"{err}; trying the previous checkpoint")
        except CheckpointError as err:
            damaged.append(path)
            log(f"{err}; falling back to the previous checkpoint")
    if mismatch is not None:
        raise mismatch
    if damaged:
        log(f"no usable checkpoint in '{save_dir}' ({len(damaged)} damaged): the stage starts from "
               "the beginning")
    return None


def remove_partial_writes(save_dir: str) -> None:
    """Delete the temporary files of writes a killed process left in ``save_dir`` and below it
    (checkpoints, ``sr_best`` / ``sr_last``, ``results.json``, plots: ``fileio.atomic_write``'s), naming each."""
    for path in fileio.remove_partial_writes(save_dir):
        log(f"removed '{path}', left by an interrupted save")


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
    log(f"Results written to '{path}'")
    return path
