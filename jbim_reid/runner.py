"""The stage runner below every command: config loading and checks, datamanager and model building,
running one stage, writing results.

``jbim-reid train`` / ``test`` (``cli.py``), ``train-anchors`` / ``ensemble`` (``anchors.py``), the
export and index commands and the benchmarks all drive training through this module; it imports no
command module.
"""
import argparse
import contextlib
import os
import os.path as osp
import tempfile
from typing import List, Mapping, Optional, Tuple

import torch
import torchreid
import yaml
from yacs.config import CfgNode as CN

from jbim_reid import compat, distributed, resume
from jbim_reid.config import (engine_kwargs, engine_run_kwargs, get_default_config,
                              imagedata_kwargs, lr_scheduler_kwargs, model_kwargs,
                              optimizer_kwargs, protocol_kwargs)
from jbim_reid.engines import JBIMEngine, checkpoint_path
from jbim_reid.errors import DataError
from jbim_reid.fileio import load_torch_file, strip_module_prefix
from jbim_reid.models import (JBIM, SR_MODELS, VARIANTS, fetch_imagenet_weights, jbim_from_checkpoint,
                              load_pretrained_weights)
from jbim_reid.plots import plot_cmc
from jbim_reid.reports import rank_results, write_json
from jbim_reid.sr_stage import run_sr_stage

__all__ = ["ConfigError", "STAGE_VARIANTS", "load_config", "add_config_arguments", "check_training",
           "check_imagenet_weights", "check_train_loader", "check_writable", "build_datamanager",
           "build_model", "read_load_weights", "model_from_weights", "wants_gpu", "write_results", "run_stage"]

STAGE_VARIANTS = {"him": "him", "lim": "lim"}  # the model a single him / lim stage trains


class ConfigError(ValueError):
    """A bad config file, key or value; the CLI prints it and exits with code 2."""


def load_config(config_file: str = "", opts: Optional[List[str]] = None) -> CN:
    """Defaults, then ``config_file``, then ``KEY VALUE`` pairs.

    Args:
        config_file (str): YAML file ('' = defaults only).
        opts (list of str): alternating keys and values, e.g. ``['train.max_epoch', '5']``.

    Returns:
        CfgNode: the frozen config.
    """
    cfg = get_default_config()
    try:
        if config_file:
            if not osp.isfile(config_file):
                raise ConfigError(f"Config file not found: '{config_file}'")
            cfg.merge_from_file(config_file)
        cfg.merge_from_list(list(opts or []))
    except ConfigError:
        raise
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"config file '{config_file}': YAML syntax error{where}: {problem}") from None
    except (KeyError, AssertionError, ValueError, TypeError) as err:
        # yacs raises KeyError (file) or AssertionError (list) "Non-existent (config) key: a.b"
        message = str(err.args[0]) if err.args else str(err)
        source = f"config file '{config_file}'" if isinstance(err, KeyError) else "command line"
        if "Non-existent" in message:
            key = message.rsplit(":", 1)[-1].strip()
            raise ConfigError(f"Unknown config key '{key}' (in {source})") from None
        raise ConfigError(f"Bad config value: {message}") from None
    _validate(cfg)
    cfg.freeze()
    return cfg


def _validate(cfg: CN) -> None:
    stages = ("sr", "him", "lim", "joint", "all")
    if cfg.jbim.stage not in stages:
        raise ConfigError(f"Unknown jbim.stage '{cfg.jbim.stage}'; expected one of {list(stages)}")
    if cfg.jbim.stage == "sr" and "sr" not in VARIANTS.get(cfg.jbim.variant, ("sr",)):
        raise ConfigError(f"jbim.stage sr trains the SR module, which jbim.variant "
                          f"'{cfg.jbim.variant}' does not have")
    if not all(0 < m <= 1 for m in cfg.jbim.train_ratios):
        raise ConfigError(f"jbim.train_ratios must all be in (0, 1], got {list(cfg.jbim.train_ratios)}")
    if cfg.jbim.sr_patience < 1 or cfg.jbim.sr_max_epoch < 0:
        raise ConfigError(f"jbim.sr_patience must be >= 1 (got {cfg.jbim.sr_patience}) and "
                          f"jbim.sr_max_epoch >= 0 (got {cfg.jbim.sr_max_epoch})")
    if not 0 < cfg.jbim.sr_holdout < 1:
        raise ConfigError(f"jbim.sr_holdout must be in (0, 1), got {cfg.jbim.sr_holdout}")
    if cfg.jbim.variant not in VARIANTS:
        raise ConfigError(f"Unknown jbim.variant '{cfg.jbim.variant}'; expected one of {list(VARIANTS)}")
    if cfg.jbim.sr not in SR_MODELS:
        raise ConfigError(f"Unknown jbim.sr '{cfg.jbim.sr}'; expected one of {sorted(SR_MODELS)}")
    names = [n for n in compat.model_factory() if not n.startswith("jbim_")]
    if cfg.model.name not in names:
        raise ConfigError(f"Unknown model.name '{cfg.model.name}' (a torchreid backbone); "
                          f"expected one of {sorted(names)}")
    if not 0 < cfg.jbim.ratio <= 1:
        raise ConfigError(f"jbim.ratio must be in (0, 1], got {cfg.jbim.ratio}")
    for key in ("height", "width"):
        if cfg.data[key] <= 0:
            raise ConfigError(f"data.{key} must be a positive number of pixels, got {cfg.data[key]}")
    for key in ("checkpoint_freq", "keep_checkpoints"):
        if cfg.train[key] < 0:
            raise ConfigError(f"train.{key} must be >= 0, got {cfg.train[key]}")
    from jbim_reid.datasets import DATASETS, CrossResolutionDataset

    for key in ("sources", "targets"):
        for name in cfg.data[key]:
            cls = compat.image_dataset_registry().get(name)
            if cls is None or not issubclass(cls, CrossResolutionDataset):
                raise ConfigError(f"data.{key}: '{name}' is not a cross-resolution dataset; expected "
                                  f"one of {sorted(DATASETS)} (or another registered "
                                  "jbim_reid CrossResolutionDataset)")
    if len(cfg.data.sources) != 1:
        raise ConfigError(f"data.sources must name exactly one dataset (torchreid merges several into "
                          f"a plain ImageDataset without genuine sizes), got {list(cfg.data.sources)}")
    for name in list(cfg.data.sources) + list(cfg.data.targets):
        num_splits = getattr(compat.image_dataset_registry()[name], "num_splits", None)
        if num_splits and not 0 <= cfg.data.split_id < num_splits:
            raise ConfigError(f"data.split_id {cfg.data.split_id} is out of range for '{name}'; "
                              f"expected 0..{num_splits - 1}")
    if cfg.train.dist_backend not in ("",) + distributed.BACKENDS:
        raise ConfigError(f"Unknown train.dist_backend '{cfg.train.dist_backend}'; expected one of "
                          f"{list(distributed.BACKENDS)} or '' (nccl on GPU, gloo on CPU)")
    if cfg.train.dist_timeout <= 0:
        raise ConfigError(f"train.dist_timeout must be > 0 seconds, got {cfg.train.dist_timeout}")
    if cfg.jbim.stage == "all" and (cfg.jbim.him_checkpoint or cfg.jbim.lim_checkpoint):
        raise ConfigError("jbim.him_checkpoint / jbim.lim_checkpoint initialise a single "
                          "jbim.stage joint; with 'all' the stages train their own")


def check_training(cfg: CN) -> None:
    """Checks of ``train`` / ``train-anchors`` before any work: epochs to train, a writable save_dir."""
    if cfg.train.max_epoch <= 0:
        raise ConfigError(f"train.max_epoch must be >= 1 (epochs per stage), got {cfg.train.max_epoch}")
    check_writable(cfg.data.save_dir, "data.save_dir")


def check_imagenet_weights(cfg: CN) -> None:
    """Fetch (or find cached) the backbone's ImageNet weights of ``model.pretrained`` before any
    stage runs, so that an offline machine stops in seconds rather than after stage ``sr``."""
    if (cfg.jbim.stage in ("all", "him", "lim") and cfg.model.pretrained and not cfg.model.pretrained_path
            and not (cfg.model.load_weights or cfg.model.resume)):
        fetch_imagenet_weights(cfg.model.name)


def check_train_loader(cfg: CN, datamanager) -> None:
    """ConfigError when the train loader yields no batch (batch larger than the data, drop_last)."""
    if len(datamanager.train_loader) == 0:
        raise ConfigError(
            f"the train loader of {list(cfg.data.sources)} has no batch: train.batch_size "
            f"{cfg.train.batch_size} is larger than the {len(datamanager.train_loader.dataset)} training "
            f"images (sampler.train_sampler {cfg.sampler.train_sampler} drops incomplete batches); "
            "lower train.batch_size")


def check_writable(folder: str, key: str) -> None:
    """ConfigError naming ``key`` unless ``folder`` can be created and written into."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ConfigError(f"{key} '{folder}' is not a writable folder: {err.strerror or err}") from None


def build_datamanager(cfg: CN):
    """``torchreid.data.ImageDataManager`` built inside ``protocol_overrides(**protocol_kwargs(cfg))``
    and ``resolution_aug_range(cfg.data.resolution_aug_range)``.

    Errors of the data (missing or damaged files, duplicate images, bad layouts) become
    ``DataError`` naming the file.
    """
    from jbim_reid.datasets import image_check_options, protocol_overrides
    from jbim_reid.transforms import resolution_aug_range

    try:
        overrides = protocol_overrides(**protocol_kwargs(cfg))
        overrides.__enter__()
    except (TypeError, ValueError) as err:  # MLRProtocol names the field; the config calls it mlr.*
        raise ConfigError(f"mlr: {err}") from None
    with contextlib.ExitStack() as stack:
        stack.push(overrides)
        stack.enter_context(image_check_options(skip_bad_images=cfg.data.skip_bad_images))
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
    stage_parts = ((sr_checkpoint, ("sr",)), (him_checkpoint, ("sr", "him")), (lim_checkpoint, ("lim",)))
    for path, parts in stage_parts:
        for part in parts:
            if path and getattr(model, part) is not None:
                load_pretrained_weights(getattr(model, part), path, prefix=f"{part}.")
    if cfg.model.load_weights:
        load_pretrained_weights(model, cfg.model.load_weights if weights is None else weights,
                                source=cfg.model.load_weights)
    return model


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
        ConfigError: the state dict does not fill the config's model.
    """
    path = cfg.model.load_weights
    if "jbim_kwargs" in checkpoint:
        return jbim_from_checkpoint(checkpoint, source=path)
    model = build_model(cfg, num_classes, weights=checkpoint)
    state = checkpoint.get("state_dict", checkpoint)
    state = strip_module_prefix(state)
    missing = sorted(k for k, v in model.state_dict().items() if not any(part in k for part in ignore)
                     and getattr(state.get(k), "shape", None) != v.shape)
    if missing:
        raise ConfigError(f"model.load_weights '{path}' does not fit the config's model: "
                          f"{len(missing)} keys not loaded, e.g. {missing[:3]}")
    return model


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
               "datasets": datasets, **(extra or {}), "config": yaml.safe_load(cfg.dump())}
    path = osp.join(save_dir, "results.json")
    write_json(results, path)
    print(f"=> Results written to '{path}'")
    return path


def run_stage(cfg: CN, datamanager, stage: str, save_dir: str, variant: Optional[str] = None,
              him_checkpoint: str = "", lim_checkpoint: str = "", train_epochs: bool = True,
              continue_run: bool = False, sr_checkpoint: str = "") -> Tuple[JBIMEngine, str]:
    """Train (and test) one stage; returns the engine and its last checkpoint.

    Args:
        stage (str): ``sr`` (SR pre-training, :func:`jbim_reid.sr_stage.run_sr_stage`: returns an
            ``SREngine`` and its best checkpoint, '' when nothing trains), ``him``, ``lim`` or
            ``joint``.
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
    elif train_epochs and continue_run:  # an interrupted run of this stage (jbim_reid.resume)
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


def add_config_arguments(parser: argparse.ArgumentParser, remainder: bool = True) -> None:
    """``--config-file`` and the trailing ``KEY VALUE`` options (``args.config_file``, ``args.opts``).

    Args:
        parser: a subcommand's parser.
        remainder (bool): the options take every remaining word; False lets flags of the
            subcommand's own follow them (``... model.load_weights CKPT --out DIR``).
    """
    parser.add_argument("--config-file", default="", help="YAML config file (see configs/)")
    parser.add_argument("opts", nargs=argparse.REMAINDER if remainder else "*", default=None,
                        help="KEY VALUE pairs overriding the config, e.g. train.max_epoch 5")
