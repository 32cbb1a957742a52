"""Loading a config and the checks every command makes before any work.

``load_config`` merges the defaults, a YAML file and ``KEY VALUE`` options, validates every value and
records which keys were given (``jbim.recipe auto`` leaves those alone); the ``check_*`` functions
stop a run in seconds (exit code 2 in the CLI) rather than after a stage has trained:
``check_weight_files`` opens every weight file any stage of the command will load, before stage ``sr``.
"""
import argparse
import contextlib
import io
import os
import os.path as osp
import tempfile
from typing import List, Optional

import torch
import torchreid
import yaml
from yacs.config import CfgNode as CN

from jbim_reid.config import get_default_config
from jbim_reid.engines import distributed
from jbim_reid.models import SR_MODELS, VARIANTS, build_sr, fetch_imagenet_weights, load_sr_weights
from jbim_reid.training.recipe import RECIPES, set_explicit_keys
from jbim_reid.training.runner import STAGE_VARIANTS, build_model
from jbim_reid.utils import compat
from jbim_reid.utils.errors import ConfigError

__all__ = ["ConfigError", "STAGE_EPOCH_KEYS", "WEIGHT_KEYS", "load_config", "merge_options", "add_config_arguments",
           "check_training", "check_imagenet_weights", "check_weight_files", "check_train_loader", "check_writable"]

STAGE_EPOCH_KEYS = ("plain", "him", "lim", "joint")  # stages whose epochs jbim.stage_epochs sets
WEIGHT_KEYS = ("model.load_weights", "model.pretrained_path", "jbim.init_from", "jbim.sr_pretrained_path",
               "jbim.him_pretrained_path", "jbim.lim_pretrained_path", "jbim.him_checkpoint",
               "jbim.lim_checkpoint")  # config keys naming weight files that training stages load
DIST_METRICS = ("euclidean", "cosine")  # test.dist_metric (torchreid's compute_distance_matrix)


def load_config(config_file: str = "", opts: Optional[List[str]] = None) -> CN:
    """Defaults, then ``config_file``, then ``KEY VALUE`` pairs.

    Args:
        config_file (str): YAML file ('' = defaults only).
        opts (list of str): alternating keys and values, e.g. ``['train.max_epoch', '5']``.

    Returns:
        CfgNode: the frozen config.
    """
    cfg, top = get_default_config(), None
    try:
        if config_file:
            if not osp.isfile(config_file):
                raise ConfigError(f"Config file not found: '{config_file}'")
            with open(config_file, encoding="utf-8") as f:
                top = yaml.safe_load(f)
            if top is not None and not isinstance(top, dict):
                raise ConfigError(f"config file '{config_file}': expected a mapping of config keys at the top "
                                  f"level (e.g. 'model:', 'data:'), got a {type(top).__name__}")
            if top:  # what yacs' merge_from_file does, from the mapping read once
                cfg.merge_from_other_cfg(CN(top))
        merge_options(cfg, list(opts or []))
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
    set_explicit_keys(cfg, top, list(opts or []))
    cfg.freeze()
    return cfg


def merge_options(cfg: CN, opts: List[str]) -> None:
    """``cfg.merge_from_list(opts)``, where a key naming a node (``jbim.stage_epochs``) takes a mapping.

    yacs merges ``KEY VALUE`` pairs into leaves only; a node's value (``"{'him': 6, 'joint': 12}"``) is
    parsed as YAML and merged like a config file's mapping.
    """
    rest, nodes = [], []
    pairs = zip(opts[0::2], opts[1::2]) if len(opts) % 2 == 0 else ()
    for key, value in pairs:
        node = cfg
        for part in key.split("."):
            node = node.get(part) if isinstance(node, CN) else None
        if not isinstance(node, CN):
            rest += [key, value]
            continue
        mapping = yaml.safe_load(value) if isinstance(value, str) else value
        if not isinstance(mapping, dict):
            raise ConfigError(f"{key} takes a mapping such as \"{{'him': 6, 'joint': 12}}\", got {value!r}")
        for part in reversed(key.split(".")):
            mapping = {part: mapping}
        nodes.append(CN(mapping))
    cfg.merge_from_list(rest if pairs else opts)
    for node in nodes:
        cfg.merge_from_other_cfg(node)


def _validate(cfg: CN) -> None:
    if cfg.jbim.recipe not in RECIPES:
        raise ConfigError(f"Unknown jbim.recipe '{cfg.jbim.recipe}'; expected one of {list(RECIPES)}")
    for stage, epochs in cfg.jbim.stage_epochs.items():
        if stage not in STAGE_EPOCH_KEYS or not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 0:
            raise ConfigError(f"jbim.stage_epochs: expected epochs >= 0 for stages among {list(STAGE_EPOCH_KEYS)}, "
                              f"got {stage}: {epochs!r}")
    stages = ("plain", "sr", "him", "lim", "joint", "all")
    if cfg.jbim.stage not in stages:
        raise ConfigError(f"Unknown jbim.stage '{cfg.jbim.stage}'; expected one of {list(stages)}")
    plain = cfg.jbim.stage_epochs.get("plain", 0)
    if cfg.jbim.stage == "plain" and not plain:
        raise ConfigError("jbim.stage plain trains jbim.stage_epochs.plain epochs, which is not set (or 0): "
                          "e.g. jbim.stage_epochs \"{'plain': 27}\"")
    if plain and cfg.jbim.init_from:
        raise ConfigError(f"jbim.stage_epochs.plain {plain} trains the torchreid model that JBIM starts from, "
                          f"and jbim.init_from '{cfg.jbim.init_from}' gives one: set one of them")
    if cfg.jbim.stage == "plain" and cfg.model.resume:
        raise ConfigError("model.resume continues a JBIM stage (him, lim or joint); stage plain continues "
                          "from its own folder when the same command runs again")
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
    if cfg.sampler.num_instances < 1:
        raise ConfigError(f"sampler.num_instances must be >= 1 (images per identity in a batch), "
                          f"got {cfg.sampler.num_instances}")
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
    _validate_optimisation(cfg)
    if cfg.jbim.stage == "all" and (cfg.jbim.him_checkpoint or cfg.jbim.lim_checkpoint):
        raise ConfigError("jbim.him_checkpoint / jbim.lim_checkpoint initialise a single "
                          "jbim.stage joint; with 'all' the stages train their own")


def _validate_optimisation(cfg: CN) -> None:
    """The keys torchreid reads only when a stage builds its optimizer, scheduler or distances."""
    optims, schedulers = torchreid.optim.optimizer.AVAI_OPTIMS, torchreid.optim.lr_scheduler.AVAI_SCH
    if cfg.train.optim not in optims:
        raise ConfigError(f"Unknown train.optim '{cfg.train.optim}'; expected one of {list(optims)}")
    if cfg.train.lr_scheduler not in schedulers:
        raise ConfigError(f"Unknown train.lr_scheduler '{cfg.train.lr_scheduler}'; expected one of {list(schedulers)}")
    if cfg.train.lr_scheduler != "cosine" and not cfg.train.stepsize:
        raise ConfigError(f"train.stepsize is empty: train.lr_scheduler {cfg.train.lr_scheduler} decays the "
                          "learning rate at those epochs, e.g. [20]")
    if cfg.test.dist_metric not in DIST_METRICS:
        raise ConfigError(f"Unknown test.dist_metric '{cfg.test.dist_metric}'; expected one of {list(DIST_METRICS)}")


def check_training(cfg: CN, stage: Optional[str] = None) -> None:
    """Checks of ``train`` / ``train-anchors`` before any work: epochs to train, a writable save_dir, and
    ``train.open_layers`` in every stage of ``stage`` (default ``jbim.stage``) when ``train.fixbase_epoch``
    trains only those."""
    if cfg.train.max_epoch <= 0:
        raise ConfigError(f"train.max_epoch must be >= 1 (epochs per stage), got {cfg.train.max_epoch}")
    for name in _model_stages(cfg, stage or cfg.jbim.stage) if cfg.train.fixbase_epoch > 0 else ():
        parts = VARIANTS[STAGE_VARIANTS.get(name, cfg.jbim.variant)]
        if not set(cfg.train.open_layers) & set(parts):
            raise ConfigError(f"train.fixbase_epoch {cfg.train.fixbase_epoch} needs train.open_layers that "
                              f"stage {name} has ({list(parts)}); {list(cfg.train.open_layers)} are not in its "
                              "model")
    check_writable(cfg.data.save_dir, "data.save_dir")


def _model_stages(cfg: CN, stage: str) -> List[str]:
    """The stages of ``stage`` that train a JBIM model: ``all`` runs him / lim of the variant, joint
    when it has both (stage ``sr`` trains the SR module alone; stage ``plain`` trains torchreid's model,
    which opens its classifier when it has none of ``train.open_layers``)."""
    if stage != "all":
        return [] if stage in ("sr", "plain") else [stage]
    own = [part for part in ("him", "lim") if part in VARIANTS[cfg.jbim.variant]]
    return own + (["joint"] if len(own) == 2 else [])


def check_imagenet_weights(cfg: CN) -> None:
    """Fetch (or find cached) the backbone's ImageNet weights of ``model.pretrained`` before any
    stage runs, so that an offline machine stops in seconds rather than after stage ``sr``."""
    if (cfg.jbim.stage in ("all", "plain", "him", "lim") and cfg.model.pretrained and not cfg.model.pretrained_path
            and not (cfg.model.load_weights or cfg.model.resume)):
        fetch_imagenet_weights(cfg.model.name)


def check_weight_files(cfg: CN, stage: Optional[str] = None) -> None:
    """Open every weight file that the stages of ``stage`` (default ``jbim.stage``; ``all`` runs sr, him,
    lim and joint) will load, before any of them runs.

    Each file named by a key of :data:`WEIGHT_KEYS` that a stage uses is read with the safe loader and
    must fit the part of the model it initialises, under the one loading rule of ``models.weights``: the
    model a stage builds is built here as a shell (its variant; the full variant covers every stage of
    ``all``), without ImageNet weights, so nothing is downloaded and the random state is left as it was.

    Raises:
        CheckpointError: a file is missing, unsafe, damaged or does not fit (naming the file, its key,
            how many tensors fit and what it holds).
    """
    stage = stage or cfg.jbim.stage
    keys = ("jbim.sr_pretrained_path",) if stage == "sr" else WEIGHT_KEYS  # stage sr loads only that one
    named = [key for key in keys if cfg[key.split(".")[0]][key.split(".")[1]]]
    if not named:
        return
    with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(io.StringIO()):
        if stage != "sr":
            build_model(cfg, 1, STAGE_VARIANTS.get(stage), cfg.jbim.him_checkpoint, cfg.jbim.lim_checkpoint,
                        imagenet=False)
        elif build_sr(cfg.jbim.sr).state_dict():  # bicubic has no weights to load
            load_sr_weights(build_sr(cfg.jbim.sr), cfg.jbim.sr_pretrained_path)
    print(f"=> weight files checked: {', '.join(named)}")


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
