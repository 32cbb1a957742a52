"""Stage ``plain`` from a config: the torchreid model a warm-started JBIM starts from.

With ``jbim.stage_epochs.plain`` > 0, ``jbim-reid train`` first trains torchreid's ``model.name`` as users
of plain torchreid would, well: ImageNet backbone, softmax + triplet with torchreid's
``ImageTripletEngine``, ``random_resolution`` added to the training transforms; then its final
checkpoint is ``jbim.init_from`` of stages ``him`` and ``lim``. This is the accuracy benchmark's
``plain_resaug`` stage that its ``jbim_warm`` method starts from, so the measured warm-start gain is
what this stage and the stages after it train. Its ``results.json`` holds the plain model's own
LR-probe / HR-gallery test, the baseline the JBIM stages are to beat.
"""
from typing import Tuple

import torch
import torchreid
from yacs.config import CfgNode as CN

from jbim_reid.config import lr_scheduler_kwargs, optimizer_kwargs
from jbim_reid.engines import JBIMEngine, PlainTripletEngine, checkpoint_path, distributed
from jbim_reid.models.plain import PlainFeatures, build_plain_model
from jbim_reid.training import resume
from jbim_reid.training.recipe import run_info
from jbim_reid.transforms import NAME as RANDOM_RESOLUTION
from jbim_reid.utils.errors import ConfigError

__all__ = ["PLAIN_STAGE", "plain_epochs", "plain_config", "init_from_plain", "run_plain_stage"]

PLAIN_STAGE = "stage_plain"  # its folder in data.save_dir


def plain_epochs(cfg: CN) -> int:
    """``jbim.stage_epochs.plain``: the epochs of stage ``plain``, 0 (the default) for none."""
    return int(cfg.jbim.stage_epochs.get("plain", 0))


def plain_config(cfg: CN) -> CN:
    """``cfg`` (already at the stage's epochs) with ``random_resolution`` among ``data.transforms``."""
    if RANDOM_RESOLUTION in cfg.data.transforms:
        return cfg
    out = cfg.clone()
    out.defrost()
    out.data.transforms = list(cfg.data.transforms) + [RANDOM_RESOLUTION]
    out.freeze()
    return out


def init_from_plain(cfg: CN, checkpoint: str) -> CN:
    """``cfg`` with ``jbim.init_from`` set to stage ``plain``'s final ``checkpoint``."""
    out = cfg.clone()
    out.defrost()
    out.jbim.init_from = checkpoint
    out.freeze()
    return out


def run_plain_stage(cfg: CN, datamanager, save_dir: str, continue_run: bool = True) -> Tuple[JBIMEngine, str]:
    """Train stage ``plain`` (continuing from its newest usable checkpoint) and test it.

    Args:
        cfg (CfgNode): the stage's config (:func:`plain_config` of the stage's epochs).
        datamanager: ``torchreid.data.ImageDataManager`` built from ``cfg`` (random resolution on).
        save_dir (str): the stage's folder.
        continue_run (bool): continue from the newest usable checkpoint in ``save_dir``.

    Returns:
        tuple: ``(engine, checkpoint)``: the ``JBIMEngine`` that tested the model (its ``last_results``)
        and the final checkpoint, a torchreid model checkpoint for ``jbim.init_from``.

    Raises:
        ConfigError: under torchrun (torchreid's engine trains on one process).
    """
    if distributed.is_distributed():
        raise ConfigError("stage plain trains on one process (torchreid's ImageTripletEngine): run "
                          "`jbim-reid train ... jbim.stage plain` without torchrun first, then the other "
                          "stages under torchrun")
    dataset = datamanager.train_loader.dataset
    dataset.pair_views = False  # one image per item, as torchreid's own datasets
    torchreid.utils.set_random_seed(cfg.train.seed)
    model = build_plain_model(cfg.model.name, datamanager.num_train_pids, cfg.model.pretrained_path,
                              imagenet=cfg.model.pretrained)
    use_gpu = bool(cfg.use_gpu) and torch.cuda.is_available()
    if use_gpu:
        model = model.cuda()
    optimizer = torchreid.optim.build_optimizer(model, **optimizer_kwargs(cfg))
    scheduler = torchreid.optim.build_lr_scheduler(optimizer, **lr_scheduler_kwargs(cfg))
    engine = PlainTripletEngine(datamanager, model, optimizer, margin=cfg.loss.triplet.margin,
                                weight_t=cfg.loss.triplet.weight_t, weight_x=cfg.loss.triplet.weight_x,
                                scheduler=scheduler, use_gpu=use_gpu, label_smooth=cfg.loss.softmax.label_smooth)
    engine.run_info = run_info(cfg)
    start = cfg.train.start_epoch
    if continue_run:
        resumed = resume.resume_latest(engine, save_dir)
        start = start if resumed is None else resumed
    # train.open_layers names JBIM's parts (fusion, ...); the torchreid model opens those it has, else
    # its classifier, as torchreid's own fixbase recipe does
    open_layers = [n for n in cfg.train.open_layers if hasattr(model, n)] or ["classifier"]
    engine.run(save_dir=save_dir, max_epoch=cfg.train.max_epoch, start_epoch=start,
               print_freq=cfg.train.print_freq, fixbase_epoch=cfg.train.fixbase_epoch, open_layers=open_layers,
               checkpoint_freq=cfg.train.checkpoint_freq, keep_checkpoints=cfg.train.keep_checkpoints)
    evaluator = JBIMEngine(datamanager, PlainFeatures(model), optimizer, use_gpu=use_gpu)
    evaluator.test(dist_metric=cfg.test.dist_metric, normalize_feature=cfg.test.normalize_feature,
                   ranks=list(cfg.test.ranks), rerank=cfg.test.rerank)
    dataset.pair_views = False  # JBIMEngine switched it on
    return evaluator, checkpoint_path(save_dir, cfg.train.max_epoch)
