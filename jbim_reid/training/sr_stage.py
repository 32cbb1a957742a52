"""Stage ``sr`` from a config: build the SR module, pre-train it with ``SREngine``, write results.

``jbim-reid train`` runs it for ``jbim.stage sr`` and as the first step of ``jbim.stage all``; its
checkpoint (keys ``sr.*``) initialises the SR module of stage ``him``.
"""
import os.path as osp
from typing import List, Tuple

import torch
import torchreid
import yaml
from yacs.config import CfgNode as CN

from jbim_reid.config import optimizer_kwargs
from jbim_reid.engines import distributed
from jbim_reid.engines.sr_engine import SREngine
from jbim_reid.evaluation.reports import write_json
from jbim_reid.models.pixel import PixelSpaceSR
from jbim_reid.models.sr import build_sr
from jbim_reid.models.weights import load_sr_weights
from jbim_reid.training.recipe import run_info

__all__ = ["sr_stage_ratios", "run_sr_stage"]


def sr_stage_ratios(cfg: CN) -> List[float]:
    """The synthetic-LR ratios of training: ``jbim.train_ratios``, or ``[jbim.ratio]`` when empty."""
    return [float(m) for m in cfg.jbim.train_ratios] or [float(cfg.jbim.ratio)]


def run_sr_stage(cfg: CN, datamanager, save_dir: str) -> Tuple[SREngine, str]:
    """Pre-train ``jbim.sr`` on the training HR images and write ``<save_dir>/results.json``.

    The SR module starts from ``jbim.sr_pretrained_path`` when set. Optimiser and learning rate
    are ``train.*`` (without staged lr: the stage trains one module); epochs, patience and the
    held-out share are ``jbim.sr_max_epoch``, ``jbim.sr_patience`` and ``jbim.sr_holdout``. An SR
    module without parameters (``bicubic``) is only evaluated: nothing to train, no checkpoint.
    Under torchrun only rank 0 writes, and every rank returns once the checkpoint is on disk.

    Args:
        cfg (CfgNode): config.
        datamanager: ``torchreid.data.ImageDataManager`` over a cross-resolution dataset.
        save_dir (str): output folder of the stage.

    Returns:
        tuple: ``(engine, checkpoint)``; ``checkpoint`` is '' when nothing was trained.
    """
    torchreid.utils.set_random_seed(cfg.train.seed)
    sr = build_sr(cfg.jbim.sr)
    if cfg.jbim.sr_pretrained_path:
        load_sr_weights(sr, cfg.jbim.sr_pretrained_path)
    model = PixelSpaceSR(sr, cfg.data.norm_mean, cfg.data.norm_std)
    use_gpu = bool(cfg.use_gpu) and torch.cuda.is_available()
    if use_gpu:
        model = model.cuda()
    optimizer = None
    if any(True for _ in model.parameters()):
        optimizer = torchreid.optim.build_optimizer(model, **{**optimizer_kwargs(cfg), "staged_lr": False})
    ratios = sr_stage_ratios(cfg)
    engine = SREngine(datamanager, model, optimizer, use_gpu=use_gpu, ratios=ratios,
                      holdout=cfg.jbim.sr_holdout, batch_size=cfg.train.batch_size,
                      workers=cfg.data.workers,
                      checkpoint_info={"sr": cfg.jbim.sr, "ratios": ratios,
                                       "norm_mean": list(cfg.data.norm_mean),
                                       "norm_std": list(cfg.data.norm_std)},
                      run_info=run_info(cfg))
    if optimizer is None:
        print(f"=> jbim.sr '{cfg.jbim.sr}' has no parameters: stage sr only evaluates it")
    results = engine.run(save_dir=save_dir, max_epoch=cfg.jbim.sr_max_epoch, patience=cfg.jbim.sr_patience,
                         print_freq=cfg.train.print_freq)
    if distributed.is_main_process():
        path = osp.join(save_dir, "results.json")
        write_json({"stage": "sr", "sr": cfg.jbim.sr, **results, **run_info(cfg), "config": yaml.safe_load(cfg.dump())},
                   path)
        print(f"=> Results written to '{path}'")
    distributed.barrier()  # the other ranks go on to stage him, which reads rank 0's checkpoint
    return engine, results["checkpoint"]
