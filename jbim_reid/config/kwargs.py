"""Adapters from the yacs config to the keyword arguments of torchreid / jbim_reid constructors."""
from typing import Any, Dict

from yacs.config import CfgNode as CN

__all__ = ["imagedata_kwargs", "optimizer_kwargs", "lr_scheduler_kwargs", "engine_kwargs",
           "engine_run_kwargs", "model_kwargs", "protocol_kwargs", "folder_kwargs"]


def imagedata_kwargs(cfg: CN) -> Dict[str, Any]:
    """Keyword arguments of ``torchreid.data.ImageDataManager``."""
    return {
        "root": cfg.data.root,
        "sources": list(cfg.data.sources),
        "targets": list(cfg.data.targets),
        "height": cfg.data.height,
        "width": cfg.data.width,
        "transforms": list(cfg.data.transforms),
        "norm_mean": list(cfg.data.norm_mean),
        "norm_std": list(cfg.data.norm_std),
        "use_gpu": cfg.use_gpu,
        "split_id": cfg.data.split_id,
        "combineall": cfg.data.combineall,
        "batch_size_train": cfg.train.batch_size,
        "batch_size_test": cfg.test.batch_size,
        "workers": cfg.data.workers,
        "num_instances": cfg.sampler.num_instances,
        "train_sampler": cfg.sampler.train_sampler,
    }


def optimizer_kwargs(cfg: CN) -> Dict[str, Any]:
    """Keyword arguments of ``torchreid.optim.build_optimizer`` (besides the model)."""
    return {
        "optim": cfg.train.optim,
        "lr": cfg.train.lr,
        "weight_decay": cfg.train.weight_decay,
        "momentum": cfg.sgd.momentum,
        "sgd_dampening": cfg.sgd.dampening,
        "sgd_nesterov": cfg.sgd.nesterov,
        "rmsprop_alpha": cfg.rmsprop.alpha,
        "adam_beta1": cfg.adam.beta1,
        "adam_beta2": cfg.adam.beta2,
        "staged_lr": cfg.train.staged_lr,
        "new_layers": list(cfg.train.new_layers),
        "base_lr_mult": cfg.train.base_lr_mult,
    }


def lr_scheduler_kwargs(cfg: CN) -> Dict[str, Any]:
    """Keyword arguments of ``torchreid.optim.build_lr_scheduler`` (besides the optimizer)."""
    stepsize = list(cfg.train.stepsize)
    return {
        "lr_scheduler": cfg.train.lr_scheduler,
        "stepsize": stepsize[0] if cfg.train.lr_scheduler == "single_step" else stepsize,
        "gamma": cfg.train.gamma,
        "max_epoch": cfg.train.max_epoch,
    }


def engine_kwargs(cfg: CN) -> Dict[str, Any]:
    """Keyword arguments of ``JBIMEngine`` (besides datamanager, model, optimizer, scheduler).

    ``jbim.stage`` ``all`` is a CLI recipe, not an engine stage: it maps to ``joint`` here.
    """
    return {
        "use_gpu": cfg.use_gpu,
        "alpha": cfg.jbim.alpha,
        "beta": cfg.jbim.beta,
        "stage": "joint" if cfg.jbim.stage == "all" else cfg.jbim.stage,
        "label_smooth": cfg.loss.softmax.label_smooth,
        "margin": cfg.loss.triplet.margin,
        "weight_t": cfg.loss.triplet.weight_t,
        "weight_x": cfg.loss.triplet.weight_x,
        "synthetic_lr": cfg.jbim.synthetic_lr,
        "cross_stream_triplet": cfg.jbim.cross_stream_triplet,
        "sync_bn": cfg.train.sync_bn,
        "dist_gather_triplet": cfg.train.dist_gather_triplet,
        "amp": cfg.train.amp,
        "test_amp": cfg.test.amp,
        "channels_last": cfg.train.channels_last,
        "seed": cfg.train.seed,
    }


def engine_run_kwargs(cfg: CN) -> Dict[str, Any]:
    """Keyword arguments of ``Engine.run``, as in torchreid's ``scripts/main.py``."""
    return {
        "save_dir": cfg.data.save_dir,
        "max_epoch": cfg.train.max_epoch,
        "start_epoch": cfg.train.start_epoch,
        "fixbase_epoch": cfg.train.fixbase_epoch,
        "open_layers": list(cfg.train.open_layers),
        "start_eval": cfg.test.start_eval,
        "eval_freq": cfg.test.eval_freq,
        "test_only": cfg.test.evaluate,
        "print_freq": cfg.train.print_freq,
        "dist_metric": cfg.test.dist_metric,
        "normalize_feature": cfg.test.normalize_feature,
        "visrank": cfg.test.visrank,
        "visrank_topk": cfg.test.visrank_topk,
        "ranks": list(cfg.test.ranks),
        "rerank": cfg.test.rerank,
    }


def model_kwargs(cfg: CN) -> Dict[str, Any]:
    """Keyword arguments of ``JBIM`` (besides ``num_classes``)."""
    return {
        "backbone": cfg.model.name,
        "sr": cfg.jbim.sr,
        "ratio": cfg.jbim.ratio,
        "fusion_dim": cfg.jbim.fusion_dim or None,
        "dropout": cfg.jbim.dropout,
        "height": cfg.data.height,
        "width": cfg.data.width,
        "variant": cfg.jbim.variant,
        "backbone_pretrained": cfg.model.pretrained,
        "backbone_pretrained_path": cfg.model.pretrained_path,
        "sr_pretrained_path": cfg.jbim.sr_pretrained_path,
        "him_pretrained_path": cfg.jbim.him_pretrained_path,
        "lim_pretrained_path": cfg.jbim.lim_pretrained_path,
        "init_from": cfg.jbim.init_from,
        "train_ratios": [float(m) for m in cfg.jbim.train_ratios] or None,
        "norm_mean": list(cfg.data.norm_mean),
        "norm_std": list(cfg.data.norm_std),
    }


def protocol_kwargs(cfg: CN) -> Dict[str, Any]:
    """Fields of ``jbim_reid.datasets.MLRProtocol`` for ``protocol_overrides`` ('' -> None)."""
    return {
        "seed": cfg.mlr.seed,
        "lr_mode": cfg.mlr.lr_mode or None,
        "lr_camid": cfg.mlr.lr_camid,
        "ratios": tuple(cfg.mlr.ratios),
        "ratio_per": cfg.mlr.ratio_per,
        "interpolation": cfg.mlr.interpolation,
        "train_lr": cfg.mlr.train_lr,
        "gallery": cfg.mlr.gallery,
        "images_per_camera": None if cfg.mlr.images_per_camera < 0 else cfg.mlr.images_per_camera,
        "id_split": cfg.mlr.id_split,
        "cache_dir": cfg.mlr.cache_dir or None,
    }


def folder_kwargs(cfg: CN) -> Dict[str, Any]:
    """Fields of ``jbim_reid.datasets.FolderOptions`` (``crossres_folder``) for ``folder_overrides``."""
    return {
        "name": cfg.folder.name,
        "lr_cameras": list(cfg.folder.lr_cameras),
        "lr_max_height": cfg.folder.lr_max_height,
        "drop_unmatched_query": cfg.folder.drop_unmatched_query,
    }
