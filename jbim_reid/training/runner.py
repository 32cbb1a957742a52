"""The stage runner below every command: datamanager and model building, running (or skipping) one
stage, loading a model for testing, writing results.

``jbim-reid train`` / ``test``, ``train-anchors`` / ``ensemble``, the export commands and the benchmarks
all drive training through this module (configs are loaded and checked by ``training.checks``).
"""
import contextlib
import os
import os.path as osp
from typing import Callable, Mapping, Optional, Sequence, Tuple

import torch
import torchreid
import yaml
from yacs.config import CfgNode as CN

from jbim_reid.config import (engine_kwargs, engine_run_kwargs, folder_kwargs, imagedata_kwargs,
                              lr_scheduler_kwargs, model_kwargs, optimizer_kwargs, protocol_kwargs)
from jbim_reid.engines import JBIMEngine, checkpoint_path, distributed, sr_checkpoint_path
from jbim_reid.evaluation.plots import plot_cmc
from jbim_reid.evaluation.reports import rank_results, write_json
from jbim_reid.models import JBIM, jbim_from_checkpoint
from jbim_reid.models.weights import fit_keys, load_checked_weights
from jbim_reid.training import resume
from jbim_reid.training.fingerprint import config_fingerprint
from jbim_reid.training.plain_stage import run_plain_stage
from jbim_reid.training.recipe import RECIPE_KEYS, describe, recipe_record, resolve_recipe, run_info
from jbim_reid.training.sr_stage import run_sr_stage
from jbim_reid.utils.errors import ConfigError, DataError
from jbim_reid.utils.fileio import load_torch_file, strip_module_prefix

__all__ = ["STAGE_VARIANTS", "build_datamanager", "build_model", "read_load_weights", "model_from_weights",
           "load_test_model", "wants_gpu", "write_results", "run_stage", "run_or_skip", "stage_config",
           "stage_trains", "resolve_and_log_recipe"]

STAGE_VARIANTS = {"him": "him", "lim": "lim"}  # the model a single him / lim stage trains


def build_datamanager(cfg: CN):
    """``torchreid.data.ImageDataManager`` built inside ``protocol_overrides(**protocol_kwargs(cfg))``
    and ``resolution_aug_range(cfg.data.resolution_aug_range)``.

    Errors of the data (missing or damaged files, duplicate images, bad layouts) become
    ``DataError`` naming the file.
    """
    from jbim_reid.datasets import folder_overrides, image_check_options, protocol_overrides
    from jbim_reid.transforms import resolution_aug_range

    try:
        overrides = protocol_overrides(**protocol_kwargs(cfg))
        overrides.__enter__()
    except (TypeError, ValueError) as err:  # MLRProtocol names the field; the config calls it mlr.*
        raise ConfigError(f"mlr: {err}") from None
    with contextlib.ExitStack() as stack:
        stack.push(overrides)
        stack.enter_context(image_check_options(skip_bad_images=cfg.data.skip_bad_images))
        stack.enter_context(folder_overrides(**folder_kwargs(cfg)))
        try:
            stack.enter_context(resolution_aug_range(cfg.data.resolution_aug_range))
        except ValueError as err:
            raise ConfigError(f"data.{err}") from None
        try:
            return torchreid.data.ImageDataManager(**imagedata_kwargs(cfg))
        except (DataError, ConfigError):
            raise
        except (ValueError, OSError, RuntimeError) as err:  # the datasets name the file or key
            raise DataError(str(err)) from err
        except AssertionError as err:  # torchreid's samplers assert without a message
            if cfg.sampler.train_sampler != "RandomIdentitySampler":
                raise
            raise ConfigError(
                f"RandomIdentitySampler rejected train.batch_size {cfg.train.batch_size} with "
                f"sampler.num_instances {cfg.sampler.num_instances}: the batch size must be a "
                "multiple of num_instances and batch_size / num_instances at most the number of "
                f"training identities {err}".rstrip()) from None


def build_model(cfg: CN, num_classes: int, variant: Optional[str] = None,
                him_checkpoint: str = "", lim_checkpoint: str = "", imagenet: bool = True,
                sr_checkpoint: str = "", weights: Optional[Mapping] = None) -> JBIM:
    """The JBIM model of ``cfg``, optionally initialised from stage checkpoints.

    Args:
        cfg (CfgNode): config.
        num_classes (int): training identities.
        variant (str, optional): overrides ``jbim.variant``.
        him_checkpoint (str): checkpoint whose ``sr.*`` and ``him.*`` weights initialise the model.
        lim_checkpoint (str): checkpoint whose ``lim.*`` weights initialise the model.
        imagenet (bool): False skips the ImageNet weights of ``model.pretrained`` (model shape only).
        sr_checkpoint (str): checkpoint of stage ``sr`` whose ``sr.*`` weights initialise the SR
            module (before ``him_checkpoint``, which overrides it).
        weights (mapping, optional): the content of ``model.load_weights`` when already read.

    Every file follows the one loading rule (``jbim_reid.models.weights.load_checked_weights``): it must
    fill the part it initialises (classifiers and BatchNorm counters aside), else ``CheckpointError``
    names the file, its config key and what it holds.

    Returns:
        JBIM: the model (the FFN, when present, stays freshly initialised).
    """
    kwargs = model_kwargs(cfg)
    if variant:
        kwargs["variant"] = variant
    from_checkpoint = bool(him_checkpoint or lim_checkpoint or cfg.model.load_weights)
    kwargs["backbone_pretrained"] = kwargs["backbone_pretrained"] and imagenet and not from_checkpoint
    if not cfg.model.pretrained and not kwargs["backbone_pretrained_path"] and not from_checkpoint:
        print("=> model.pretrained False: the backbones start from random weights")
    model = JBIM(num_classes, **kwargs)
    stage_parts = (("stage sr's checkpoint", sr_checkpoint, ("sr",)),
                   (_key(cfg, "him_checkpoint", him_checkpoint), him_checkpoint, ("sr", "him")),
                   (_key(cfg, "lim_checkpoint", lim_checkpoint), lim_checkpoint, ("lim",)))
    for key, path, parts in stage_parts:
        parts = [p for p in parts if getattr(model, p) is not None and getattr(model, p).state_dict()]
        if path and parts:  # read once for all its parts (bicubic SR has no weights)
            loaded = load_torch_file(path, what=key)
            for part in parts:
                load_checked_weights(getattr(model, part), loaded, key, prefix=f"{part}.", source=path)
    if cfg.model.load_weights:
        load_checked_weights(model, cfg.model.load_weights if weights is None else weights, "model.load_weights",
                             source=cfg.model.load_weights)
    return model


def _key(cfg: CN, key: str, path: str) -> str:
    """``jbim.<key>`` when ``path`` is that key's file, else the stage checkpoint it is (stage ``all``)."""
    return f"jbim.{key}" if path == cfg.jbim[key] else f"stage {key.split('_')[0]}'s checkpoint"


def read_load_weights(cfg: CN, command: str) -> dict:
    """The checkpoint ``model.load_weights`` that ``command`` needs, read once (weights only).

    Raises:
        ConfigError: the key is empty or the file is missing.
        CheckpointError: the file is damaged or not a weights-only checkpoint.
    """
    path = cfg.model.load_weights
    if not path:
        raise ConfigError(f"{command} needs model.load_weights (a JBIM checkpoint)")
    if not osp.isfile(path):
        raise ConfigError(f"model.load_weights: file not found: '{path}'")
    checkpoint = load_torch_file(path, what="model.load_weights")
    if not isinstance(checkpoint, dict):
        raise ConfigError(f"model.load_weights '{path}': expected a checkpoint dict or a state dict, "
                          f"got {type(checkpoint).__name__}")
    return checkpoint


def model_from_weights(cfg: CN, checkpoint: Mapping, num_classes: int,
                       ignore: Tuple[str, ...] = ()) -> JBIM:
    """The model of ``model.load_weights`` (already read by ``read_load_weights``).

    A ``JBIMEngine`` checkpoint knows its architecture (``jbim_kwargs``); a bare state dict (e.g.
    from ``export-weights``) is loaded into the config's model, and every parameter and buffer must
    come from it except those whose name contains one of ``ignore`` (e.g. ``"classifier."`` when the
    training identities are unknown).

    Raises:
        CheckpointError: the file does not fit the model (the loading rule of ``models.weights``).
        ConfigError: the state dict lacks classifiers that ``ignore`` does not name.
    """
    path = cfg.model.load_weights
    if "jbim_kwargs" in checkpoint:
        return jbim_from_checkpoint(checkpoint, source=path, what="model.load_weights")
    model = build_model(cfg, num_classes, weights=checkpoint)
    state = strip_module_prefix(checkpoint.get("state_dict", checkpoint))
    # beyond the loading rule, every classifier must come from the file too, unless ``ignore`` names it
    _, missing = fit_keys(model, state, optional=tuple(f"*{part}*" for part in ignore))
    if missing:
        raise ConfigError(f"model.load_weights '{path}' does not fit the config's model: "
                          f"{len(missing)} keys not loaded, e.g. {missing[:3]}")
    return model


def load_test_model(cfg: CN, num_classes: int, command: str, ignore: Tuple[str, ...] = (),
                    checkpoint: Optional[Mapping] = None) -> Tuple[JBIM, dict]:
    """The model of ``model.load_weights`` for testing or export, and the checkpoint it came from.

    The one loader of ``test``, ``export`` and ``export-weights``: the file is read once
    (:func:`read_load_weights`, unless ``checkpoint`` holds it already) and must fill the model
    (:func:`model_from_weights`; ``ignore`` names parts it may leave out, e.g. ``"classifier."``).

    Returns:
        tuple: ``(model, checkpoint)``.
    """
    if checkpoint is None:
        checkpoint = read_load_weights(cfg, command)
    return model_from_weights(cfg, checkpoint, num_classes, ignore), dict(checkpoint)


def wants_gpu(cfg: CN) -> bool:
    """``use_gpu`` of the config, when CUDA is there."""
    return bool(cfg.use_gpu) and torch.cuda.is_available()


def write_results(engine: JBIMEngine, cfg: CN, save_dir: str, extra: Optional[dict] = None) -> str:
    """Write ``<save_dir>/results.json`` and one CMC plot per target (``cmc_<target>.png``).

    The JSON holds rank1/5/10/20 and mAP (%) per target, plus the config; top-level ``rank1`` ...
    ``mAP`` are those of the first target dataset. Under torchrun only rank 0 writes.

    Returns:
        str: the JSON file's path.
    """
    if not distributed.is_main_process():
        return osp.join(save_dir, "results.json")
    os.makedirs(save_dir, exist_ok=True)
    datasets = {}
    for name, res in engine.last_results.items():
        entry = rank_results(res["cmc"], res["mAP"])
        entry["num_query"], entry["num_gallery"] = res["distmat"].shape
        datasets[name] = entry
        plot_cmc(res["cmc"], osp.join(save_dir, f"cmc_{name}.png"), label=f"{cfg.model.name} on {name}")
    if not datasets:
        raise RuntimeError("No evaluation results to write (engine.last_results is empty)")
    first = datasets[next(iter(datasets))]
    results = {**{k: first[k] for k in ("rank1", "rank5", "rank10", "rank20", "mAP")},
               "datasets": datasets, **run_info(cfg), **(extra or {}), "config": yaml.safe_load(cfg.dump())}
    path = osp.join(save_dir, "results.json")
    write_json(results, path)
    print(f"=> Results written to '{path}'")
    return path


def run_stage(cfg: CN, datamanager, stage: str, save_dir: str, variant: Optional[str] = None,
              him_checkpoint: str = "", lim_checkpoint: str = "", train_epochs: bool = True,
              continue_run: bool = False, sr_checkpoint: str = "") -> Tuple[JBIMEngine, str]:
    """Train (and test) one stage; returns the engine and its last checkpoint.

    Args:
        stage (str): ``sr`` (SR pre-training, :func:`jbim_reid.training.sr_stage.run_sr_stage`: returns an
            ``SREngine`` and its best checkpoint, '' when nothing trains), ``plain`` (the torchreid model
            of a warm start, :func:`jbim_reid.training.plain_stage.run_plain_stage`; ``datamanager``
            with random resolution), ``him``, ``lim`` or ``joint``.
        save_dir (str): output folder of this stage.
        variant (str, optional): model variant (default ``jbim.variant``).
        him_checkpoint, lim_checkpoint (str): stage checkpoints initialising the model.
        train_epochs (bool): False only tests (and saves) the initialised model.
        continue_run (bool): continue from the newest usable checkpoint in ``save_dir``
            (``resume.resume_latest``); False trains from the start. ``model.resume`` wins over both.
        sr_checkpoint (str): stage-``sr`` checkpoint initialising the SR module.
    """
    if stage == "sr":
        return run_sr_stage(cfg, datamanager, save_dir)
    if stage == "plain":
        engine, checkpoint = run_plain_stage(cfg, datamanager, save_dir, continue_run)
        write_results(engine, cfg, save_dir, {"stage": stage, "variant": "plain", "checkpoint": checkpoint})
        return engine, checkpoint
    torchreid.utils.set_random_seed(cfg.train.seed)
    model = build_model(cfg, datamanager.num_train_pids, variant, him_checkpoint, lim_checkpoint,
                        sr_checkpoint=sr_checkpoint)
    use_gpu = wants_gpu(cfg)
    if use_gpu:
        model = model.cuda()
    optimizer = torchreid.optim.build_optimizer(model, **optimizer_kwargs(cfg))
    scheduler = torchreid.optim.build_lr_scheduler(optimizer, **lr_scheduler_kwargs(cfg))
    kwargs = {**engine_kwargs(cfg), "stage": stage, "use_gpu": use_gpu}
    engine = JBIMEngine(datamanager, model, optimizer, scheduler=scheduler, **kwargs)
    engine.run_info = run_info(cfg)
    run_kwargs = {**engine_run_kwargs(cfg), "save_dir": save_dir,
                  "checkpoint_freq": cfg.train.checkpoint_freq, "keep_checkpoints": cfg.train.keep_checkpoints}
    # train.open_layers may name parts this stage's model lacks (e.g. fusion in stage him)
    run_kwargs["open_layers"] = [n for n in run_kwargs["open_layers"] or []
                                 if getattr(model, n, None) is not None]
    if run_kwargs["fixbase_epoch"] > 0 and not run_kwargs["open_layers"]:
        raise ConfigError(f"train.fixbase_epoch {run_kwargs['fixbase_epoch']} needs train.open_layers "
                          f"that stage {stage} has; {list(cfg.train.open_layers)} are not in its model")
    if cfg.model.resume:
        run_kwargs["start_epoch"] = engine.resume(cfg.model.resume)
    elif train_epochs and continue_run:  # an interrupted run of this stage (jbim_reid.training.resume)
        start = resume.resume_latest(engine, save_dir)
        run_kwargs["start_epoch"] = run_kwargs["start_epoch"] if start is None else start
    start = run_kwargs["start_epoch"]
    if not train_epochs or run_kwargs["max_epoch"] <= start:
        run_kwargs.update(test_only=True, visrank=False)
        engine.run(**run_kwargs)
        checkpoint = checkpoint_path(save_dir, start)
        if not osp.isfile(checkpoint):
            rank1 = next(iter(engine.last_results.values()))["cmc"][0]
            engine.save_model(start - 1, rank1, save_dir)
    else:
        run_kwargs["visrank"] = False  # torchreid allows visrank only with test_only
        engine.run(**run_kwargs)
        checkpoint = checkpoint_path(save_dir, cfg.train.max_epoch)
    write_results(engine, cfg, save_dir, {"stage": stage, "variant": model.variant,
                                          "checkpoint": checkpoint})
    return engine, checkpoint


def run_or_skip(cfg: CN, get_datamanager: Callable, stage: str, stage_dir: str,
                variant: Optional[str] = None, him_checkpoint: str = "", lim_checkpoint: str = "",
                trains: bool = True, log: Callable[[str], None] = resume.log, sr_checkpoint: str = "") -> str:
    """Run one stage through :func:`run_stage` unless it is finished; returns its final checkpoint.

    ``run_stage`` continues an unfinished stage from its newest usable checkpoint. With
    ``model.resume`` set the stage always runs, from that checkpoint. A finished or unfinished stage
    trained with another config (its recorded ``config_fingerprint``) stops the command with a
    ``ConfigError`` naming each key that differs.

    Args:
        cfg (CfgNode): config.
        get_datamanager (callable): returns the datamanager (called only when the stage runs).
        stage (str): ``plain``, ``sr``, ``him``, ``lim`` or ``joint``.
        stage_dir (str): the stage's folder.
        variant (str, optional): model variant (default ``jbim.variant``).
        him_checkpoint, lim_checkpoint (str): stage checkpoints initialising a joint stage.
        trains (bool): False only tests the initialised model (the him_lim joint stage).
        log (callable): progress messages.
        sr_checkpoint (str): stage-``sr`` checkpoint initialising the SR module of stage ``him``.

    Returns:
        str: the stage's final checkpoint.
    """
    checkpoint = (sr_checkpoint_path(stage_dir) if stage == "sr"
                  else resume.stage_checkpoint(cfg, stage_dir, trains))
    fingerprint = config_fingerprint(cfg)
    if not cfg.model.resume and resume.stage_finished(checkpoint, osp.join(stage_dir, "results.json"),
                                                      fingerprint):
        log(f"stage {stage}: '{checkpoint}' exists, skipped")
        return checkpoint
    if stage == "sr":  # an unfinished stage sr continues from its progress file
        resume.check_sr_progress(stage_dir, fingerprint)
    log(f"stage {stage} -> {stage_dir}")
    _, checkpoint = run_stage(cfg, get_datamanager(), stage, stage_dir, variant, him_checkpoint, lim_checkpoint,
                              train_epochs=trains, continue_run=True, sr_checkpoint=sr_checkpoint)
    return checkpoint


def stage_config(cfg: CN, stage: str) -> CN:
    """``cfg`` for one stage: ``train.max_epoch`` from ``jbim.stage_epochs`` (when it names the stage),
    with the lr steps ``train.stepsize`` scaled to the stage's own epochs."""
    epochs = cfg.jbim.stage_epochs.get(stage)
    if epochs is None or epochs == cfg.train.max_epoch:
        return cfg
    out = cfg.clone()
    out.defrost()
    out.train.max_epoch = epochs
    out.train.stepsize = [max(1, round(step * epochs / cfg.train.max_epoch)) for step in cfg.train.stepsize]
    out.freeze()
    return out


def stage_trains(cfg: CN, stage: str) -> bool:
    """False when ``jbim.stage_epochs`` gives ``stage`` 0 epochs: it then only tests and saves its
    initialisation, which the next stage starts from."""
    return cfg.jbim.stage_epochs.get(stage) != 0


def resolve_and_log_recipe(cfg: CN, datamanager, keys: Sequence[str] = RECIPE_KEYS) -> CN:
    """``cfg`` with ``jbim.recipe`` resolved (its ``keys``) on the datamanager's training set; the
    resolution is printed."""
    resolved = resolve_recipe(cfg, datamanager.train_loader.dataset, keys)
    for line in describe(recipe_record(resolved)):
        print(f"=> {line}")
    return resolved
