"""Accuracy of JBIM against plain torchreid on real cross-resolution data, resumable, each to its plateau.

Methods (``--methods``, all by default), trained with the same backbone, ImageNet weights, input
size, schedule shape, batch size and splits:

  ================== ===========================================================================
  plain              torchreid's backbone trained with ``torchreid.engine.ImageTripletEngine`` on
                     the same training images; LR probes are only resized
  plain_resaug       the same with the plugin's ``random_resolution`` transform (bicubic down by a
                     ratio in [1/4, 1] of the genuine size, then back up)
  plain_time_matched plain torchreid given JBIM's whole training wall time on the split: epochs =
                     JBIM's total stage seconds / plain's seconds per epoch on that split
  bicubic            bicubic + re-id: the HIM stage with ``jbim.sr bicubic`` and ``jbim.alpha 0``
  lim_only           stage-1 LIM (JBIM w/o HIM)
  him_only           stage-1 HIM, SRCNN + re-id trained with L_HIM (JBIM w/o LIM)
  him_lim            HIM and LIM trained independently, features concatenated (variant ``him_lim``)
  jbim               the joint stage from the two stage-1 checkpoints (m = 1/2)
  jbim_resaug        JBIM with every stage trained with ``random_resolution`` ([1/4, 1])
  ensemble           JBIM 3-anchor ensemble (m = 1/2, 1/3, 1/4): per-probe Gaussian weights from
                     the genuine image sizes (``jbim_reid.ensemble``)
  ================== ===========================================================================

Diagnosis variants (run only when named in ``--methods``): ``<method>_xstream`` trains every stage
with ``jbim.cross_stream_triplet True`` (one triplet over a branch's streams, so an LR feature meets
the HR feature of the same person; ``lim_only``, ``him_only``, ``jbim``), and ``jbim_multiratio``
trains HIM, LIM and the joint stage with ``jbim.train_ratios [1/2, 1/3, 1/4]`` drawn per image
(stage ``sr`` stays the shared one at m = 1/2); ``jbim_xstream_resaug`` combines the cross-stream
triplet with ``random_resolution`` in every stage, ``jbim_xstream_multiratio`` with the three
training ratios; ``ensemble_xstream`` is the 3-anchor ensemble of cross-stream anchors;
``jbim_genuine`` trains every stage (its own stage ``sr`` too) at m = the median genuine ratio of the
split's training LR images to its HR images (``CrossResolutionDataset.lr_ratio``) instead of 1/2.

What methods share is trained once per split: stage-1 HIM (m = 1/2) and LIM serve ``lim_only``,
``him_only``, ``him_lim`` and the start of every joint stage. The anchors m = 1/3 and 1/4 get either
only their own joint stage from those shared stage-1 models (``--anchor-training joint``, the
default) or their own HIM stage and then the joint stage (``--anchor-training him_joint``).

Epochs: ``--epochs E`` trains every stage E epochs (lr x0.1 after 2/3 of them). ``--plateau``
instead searches each method's epochs, and for JBIM each stage's (HIM on ``him_only``, LIM on
``lim_only``, then the joint stage on ``jbim`` from the stage-1 models at their plateaus): train E
and 1.5E epochs (schedule scaled) on every split and accept E when neither rank-1 nor mAP rises
beyond noise, paired per split (mean per-split gain <= its standard error), else move E up by 1.5x. Each epoch count
is trained once per split and method (the 1.5E run is the next step's E run), so a search that ends
at E costs E0 + 1.5 E0 + ... + 1.5 E epochs per split.

Resumable: every finished run (dataset, split, method, epochs) and every trained stage is recorded
in the ``--out`` JSON at once (atomically); a re-run with the same recipe (the ``recipe`` block,
fingerprinted) skips what is recorded and reuses stage checkpoints kept under ``--save-dir``.

Every method is evaluated the same way: ``JBIMEngine``'s test (probe features of the LR query
images, gallery features of the HR gallery images, Euclidean distances, the rank evaluator of
``jbim_reid.metrics.get_rank_evaluator``); the plain model goes through it with the same feature for
both sides.

Usage (from the repository root)::

    JBIM_DATA_ROOT=../shared/data python benchmarks/accuracy.py --out accuracy.json
    python benchmarks/accuracy.py --datasets caviar --splits 5 --methods plain,plain_resaug --plateau \\
        --epochs 8 --out accuracy.json --save-dir run
    python benchmarks/accuracy.py --paper --device cuda --budget-min 10   # splits/epochs that fit
    python benchmarks/report.py accuracy.json                              # markdown tables

torchreid's own logs go to ``<save-dir>/<dataset>/split_<k>/<stage>.log`` (``--verbose`` prints
them too). Beside this script: ``accuracy_methods.py`` (methods, variants, stage kinds),
``accuracy_plateau.py`` (plateau search, ordering verdict), ``accuracy_budget.py`` (``--budget-min``).
"""
import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torchreid
from torch import nn
from yacs.config import CfgNode as CN

import jbim_reid
from jbim_reid.runner import build_datamanager, run_stage
from jbim_reid.config import (engine_run_kwargs, get_default_config, lr_scheduler_kwargs,
                              optimizer_kwargs)
from jbim_reid.datasets import DATASETS
from jbim_reid.engines import JBIMEngine
from jbim_reid.ensemble import anchor_weights, fuse_distances, ratio_label, resolution_ratios
from jbim_reid.metrics import get_rank_evaluator
from jbim_reid.models import SR_MODELS, load_jbim_checkpoint
from jbim_reid.reports import rank_results, read_json, summarize_splits, write_json
from jbim_reid.transforms import NAME as RESAUG_TRANSFORM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy_budget import COSTS, STAGE_OVERHEAD_S, measured_costs, plan_budget  # noqa: E402  (beside this script)
from accuracy_methods import (ANCHORS, DEFAULT_METHODS, KINDS, METHODS, VARIANTS, base_of,  # noqa: E402
                              described, is_resaug, method_kinds, search_plan, spec_label, stage_counts,
                              variant_of)
from accuracy_plateau import (PLATEAU_GROWTH, PLATEAU_METRICS, next_epochs, ordering_verdict,  # noqa: E402
                              plateau_search, plateau_step)
from report import results_markdown  # noqa: E402

# the script's API, with what it takes from its helper modules beside it (tests and users call them here)
__all__ = ["METHODS", "ANCHORS", "DEFAULTS", "PAPER", "COSTS", "PlainFeatures", "SplitRunner", "Records",
           "build_config", "ordering_verdict", "plateau_search", "plateau_step", "next_epochs", "plan_budget",
           "measured_costs", "STAGE_OVERHEAD_S", "stage_counts", "search_plan", "base_of", "variant_of",
           "DEFAULT_METHODS", "code_version", "machine_info", "parse_args", "run", "main"]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WEIGHTS = REPO_ROOT.parent / "shared" / "weights" / "mobilenetv2_x1_0_imagenet.pth"

SIGMA = 0.5  # Gaussian width of the anchor weights (JBIM Eq. 18)
RESAUG_RANGE = (0.25, 1.0)  # ratio range of random_resolution in the *_resaug methods
DEFAULTS = dict(datasets="caviar,mlr_viper", splits=2, epochs=4, height=128, width=64, batch_size=32)
PAPER = dict(splits=10, epochs=60, height=256, width=128, batch_size=32)  # --paper
ISSUE_RUN = dict(caviar=5, mlr_viper=3)  # splits per dataset of the CPU comparison (issue 8)


def _stepsize(epochs: int) -> int:
    return max(1, round(epochs * 2 / 3))  # lr x0.1 after two thirds of the epochs


class PlainFeatures(nn.Module):
    """A plain torchreid model behind JBIM's evaluation interface: one feature for probes and gallery.

    Args:
        model (nn.Module): torchreid model that returns its feature ``(B, D)`` in eval mode.
    """

    variant = "plain"

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def probe_features(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(B, 3, H, W)``. Returns: ``(B, D)``, the model's feature (no SR, no downsampling)."""
        return self.model(x)

    def gallery_features(self, x: torch.Tensor, hw: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Args: x: ``(B, 3, H, W)``; hw: genuine sizes (unused). Returns: ``(B, D)``, as probes."""
        return self.model(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(B, 3, H, W)``. Returns: ``(B, D)``."""
        return self.model(x)


def build_config(args: argparse.Namespace, dataset: str, split_id: int) -> CN:
    """The jbim-reid config shared by every method of one dataset split.

    Args:
        args: parsed arguments (see :func:`parse_args`).
        dataset (str): registered dataset name.
        split_id (int): split index.

    Returns:
        CfgNode: frozen config; stages clone it to change epochs, transforms and ``jbim.*``.
    """
    cfg = get_default_config()
    cfg.use_gpu = args.device == "cuda"
    cfg.model.name = args.backbone
    cfg.model.pretrained = bool(args.weights)
    cfg.model.pretrained_path = args.weights
    cfg.data.root = args.data_root
    cfg.data.sources = [dataset]
    cfg.data.targets = [dataset]
    cfg.data.workers = args.workers
    cfg.data.split_id = split_id
    cfg.data.height, cfg.data.width = args.height, args.width
    cfg.data.resolution_aug_range = list(RESAUG_RANGE)
    cfg.train.max_epoch = args.epochs
    cfg.train.batch_size = args.batch_size
    cfg.train.lr_scheduler = "single_step"
    cfg.train.stepsize = [_stepsize(args.epochs)]
    cfg.train.print_freq = 10
    cfg.train.seed = args.seed
    cfg.test.eval_freq = -1
    cfg.jbim.ratio = ANCHORS[0]
    cfg.jbim.sr = args.sr
    cfg.jbim.sr_max_epoch = args.sr_epochs
    cfg.jbim.sr_patience = args.sr_patience
    cfg.freeze()
    return cfg


def _with(cfg: CN, epochs: Optional[int] = None, variant: str = "", **jbim) -> CN:
    """A frozen copy of ``cfg`` with ``epochs`` (schedule scaled), the settings of ``variant`` (a key
    of :data:`VARIANTS`) and ``jbim.*``."""
    cfg = cfg.clone()
    cfg.defrost()
    if epochs is not None:
        cfg.train.max_epoch = epochs
        cfg.train.stepsize = [_stepsize(epochs)]
    options = VARIANTS[variant]
    if options.resaug and RESAUG_TRANSFORM not in cfg.data.transforms:
        cfg.data.transforms = list(cfg.data.transforms) + [RESAUG_TRANSFORM]
    for key, value in [*options.jbim, *jbim.items()]:
        setattr(cfg.jbim, key, value)
    cfg.freeze()
    return cfg


def _stage_name(prefix: str, ratio: Optional[float] = None, variant: str = "", **epochs: int) -> str:
    """Folder-safe stage name, e.g. ``him_m1-2_e12`` or ``joint_m1-3_ra_h12_l8_e18`` (``ra``: the tag
    of ``variant``)."""
    parts = [prefix]
    if ratio is not None:
        parts.append(f"m{ratio_label(ratio).replace('/', '-')}")
    if VARIANTS[variant].tag:
        parts.append(VARIANTS[variant].tag)
    parts += [f"{k}{v}" for k, v in epochs.items()]
    return "_".join(parts)


@dataclass
class Stage:
    """One trained (or test-only) model of a split: its evaluation, checkpoint and cost."""

    results: Optional[dict]  # JBIMEngine.last_results[dataset]; None until evaluated (reused stages)
    seconds: float  # wall time of the stage alone (training + its evaluation), when it was trained
    epochs: int  # epochs trained (0 for test-only stages)
    checkpoint: str = ""
    deps: Tuple[str, ...] = ()  # stages whose checkpoints this one starts from
    evaluate: Optional[Callable[[str], dict]] = None  # checkpoint -> results, for a reused stage
    info: dict = field(default_factory=dict)  # extra JSON of the stage (stage sr: PSNR / SSIM)

    def record(self) -> dict:
        """The JSON form (without results)."""
        return {"seconds": self.seconds, "epochs": self.epochs, "checkpoint": self.checkpoint,
                "seconds_per_epoch": self.seconds / self.epochs if self.epochs else None,
                "starts_from": list(self.deps), **self.info}


@dataclass
class SplitRunner:
    """Trains each stage of one dataset split at most once and evaluates every method from them.

    Args:
        cfg (CfgNode): split config from :func:`build_config`.
        save_dir (str): checkpoints and logs of the split.
        anchor_training (str): ``joint`` or ``him_joint`` (see the module docstring).
        verbose (bool): print torchreid's logs instead of only writing them to files.
        progress (callable): prints one progress line.
        stage_records (dict): stage name -> :meth:`Stage.record` of earlier runs; a stage whose
            checkpoint still exists is reused, and every stage trained here is added (see
            ``on_stage``).
        on_stage (callable): called after each stage is trained (e.g. to save the records).
    """

    cfg: CN
    save_dir: str
    anchor_training: str = "joint"
    verbose: bool = False
    progress: Callable[[str], None] = print
    stage_records: Dict[str, dict] = field(default_factory=dict)
    on_stage: Callable[[], None] = lambda: None
    stages: Dict[str, Stage] = field(default_factory=dict)
    _datamanagers: Dict[bool, object] = field(default_factory=dict)
    _genuine_ratio: Optional[float] = None  # variant_ratio's measurement, once per split

    @property
    def dataset(self) -> str:
        return self.cfg.data.targets[0]

    def datamanager(self, resaug: bool = False):
        """The split's ``ImageDataManager``; with ``resaug`` its train transform has ``random_resolution``."""
        if resaug not in self._datamanagers:
            with self.logged("datamanager_ra" if resaug else "datamanager"):
                self._datamanagers[resaug] = build_datamanager(_with(self.cfg, variant="resaug" if resaug else ""))
        return self._datamanagers[resaug]

    @contextlib.contextmanager
    def logged(self, name: str):
        """stdout of the block appended to ``<save_dir>/<name>.log`` (and the console with ``verbose``).

        Appended, not overwritten: a stage resumed after a crash keeps the log of its first epochs."""
        os.makedirs(self.save_dir, exist_ok=True)
        if self.verbose:
            yield
            return
        with open(os.path.join(self.save_dir, f"{name}.log"), "a", encoding="utf-8") as log, \
                contextlib.redirect_stdout(log):
            print(f"===== {time.strftime('%Y-%m-%d %H:%M:%S')}: {name} =====", flush=True)
            yield

    def _run(self, name: str, description: str, epochs: int, train: Callable[[], Tuple[dict, str]],
             deps: Sequence[str] = (), evaluate: Optional[Callable[[str], dict]] = None) -> Stage:
        if name in self.stages:
            return self.stages[name]
        old = self.stage_records.get(name)
        if old and evaluate is not None and old.get("checkpoint") and os.path.isfile(old["checkpoint"]):
            self.progress(f"  stage {name}: reused ({old['checkpoint']}, trained in {old['seconds']:.1f} s)")
            self.stages[name] = Stage(None, old["seconds"], old["epochs"], old["checkpoint"],
                                      tuple(old["starts_from"]), evaluate)
            return self.stages[name]
        what = f"{epochs} epochs" if epochs else "test only"
        self.progress(f"  stage {name} ({description}): {what} ...")
        start = time.perf_counter()
        with self.logged(name):
            results, checkpoint = train()
        seconds = time.perf_counter() - start
        per_epoch = f" ({seconds / epochs:.1f} s/epoch, its test included)" if epochs else ""
        self.progress(f"  stage {name}: {seconds:.1f} s{per_epoch}")
        self.stages[name] = Stage(results, seconds, epochs, checkpoint, tuple(deps))
        self.stage_records[name] = self.stages[name].record()
        self.on_stage()
        return self.stages[name]

    def results(self, stage: Stage) -> dict:
        """The stage's evaluation, testing its checkpoint when the stage was reused from an earlier run."""
        if stage.results is None:
            with self.logged("reused_test"):
                stage.results = stage.evaluate(stage.checkpoint)
        return stage.results

    def _test_checkpoint(self, path: str) -> dict:
        """JBIMEngine's test of the JBIM checkpoint at ``path`` on the split."""
        use_gpu = bool(self.cfg.use_gpu)
        model = load_jbim_checkpoint(path)
        model = model.cuda() if use_gpu else model
        optimizer = torchreid.optim.build_optimizer(model, **optimizer_kwargs(self.cfg))
        engine = JBIMEngine(self.datamanager(), model, optimizer, use_gpu=use_gpu)
        engine.test(dist_metric=self.cfg.test.dist_metric, normalize_feature=self.cfg.test.normalize_feature,
                    ranks=list(self.cfg.test.ranks))
        self.datamanager().train_loader.dataset.pair_views = False
        return engine.last_results[self.dataset]

    def _jbim_stage(self, name: str, description: str, cfg: CN, stage: str, variant: str,
                    him: Optional[Stage] = None, lim: Optional[Stage] = None,
                    train_epochs: bool = True, deps: Sequence[str] = (), suffix: str = "",
                    sr: Optional[Stage] = None) -> Stage:
        """A JBIM stage; ``variant`` is the JBIM model's (``jbim.variant``), ``suffix`` the method
        variant's (a key of :data:`VARIANTS`: its data manager)."""
        def train():
            engine, checkpoint = run_stage(cfg, self.datamanager(VARIANTS[suffix].resaug), stage,
                                           os.path.join(self.save_dir, name), variant,
                                           him.checkpoint if him else "", lim.checkpoint if lim else "",
                                           train_epochs=train_epochs,
                                           sr_checkpoint=sr.checkpoint if sr else "")
            return engine.last_results[self.dataset], checkpoint

        return self._run(name, description, cfg.train.max_epoch if train_epochs else 0, train, deps,
                         evaluate=self._test_checkpoint)

    def plain(self, epochs: int, resaug: bool = False, name: str = "") -> Stage:
        """torchreid's backbone + ``ImageTripletEngine``, evaluated through ``JBIMEngine``'s test.

        Its checkpoint is deleted at once: every method that needs the plain model is recorded.
        """
        variant = "resaug" if resaug else ""
        cfg = _with(self.cfg, epochs, variant)
        name = name or _stage_name("plain", variant=variant, e=epochs)

        def train():
            dm = self.datamanager(resaug)
            dm.train_loader.dataset.pair_views = False  # one image per item, as torchreid's own data
            torchreid.utils.set_random_seed(cfg.train.seed)
            model = torchreid.models.build_model(cfg.model.name, num_classes=dm.num_train_pids,
                                                 loss="triplet", pretrained=False)
            if cfg.model.pretrained_path:
                torchreid.utils.load_pretrained_weights(model, cfg.model.pretrained_path)
            use_gpu = bool(cfg.use_gpu)
            if use_gpu:
                model = model.cuda()
            optimizer = torchreid.optim.build_optimizer(model, **optimizer_kwargs(cfg))
            scheduler = torchreid.optim.build_lr_scheduler(optimizer, **lr_scheduler_kwargs(cfg))
            engine = torchreid.engine.ImageTripletEngine(
                dm, model, optimizer, margin=cfg.loss.triplet.margin, weight_t=cfg.loss.triplet.weight_t,
                weight_x=cfg.loss.triplet.weight_x, scheduler=scheduler, use_gpu=use_gpu,
                label_smooth=cfg.loss.softmax.label_smooth)
            save_dir = os.path.join(self.save_dir, name)
            # run() ends with torchreid's own test; ranks=[1] keeps it valid on galleries smaller than
            # 20 ids. The reported figures come from the JBIMEngine evaluation below.
            engine.run(**{**engine_run_kwargs(cfg), "save_dir": save_dir, "ranks": [1]})
            evaluator = JBIMEngine(dm, PlainFeatures(model), optimizer, use_gpu=use_gpu)
            evaluator.test(dist_metric=cfg.test.dist_metric, normalize_feature=cfg.test.normalize_feature,
                           ranks=list(cfg.test.ranks))
            dm.train_loader.dataset.pair_views = False  # JBIMEngine switched it on
            shutil.rmtree(os.path.join(save_dir, "model"), ignore_errors=True)
            return evaluator.last_results[self.dataset], ""

        augmented = ", random_resolution" if resaug else ""
        return self._run(name, f"torchreid {cfg.model.name}, ImageTripletEngine{augmented}", epochs, train)

    def sr(self, ratio: float = ANCHORS[0], variant: str = "") -> Optional[Stage]:
        """Stage ``sr`` (SR pre-training on the split's HR images at ratio ``ratio``, early stopping on
        held-out PSNR); None when ``--sr-epochs 0`` or the SR of ``variant``'s stages has no weights
        (``bicubic``)."""
        if self.cfg.jbim.sr_max_epoch <= 0 or _with(self.cfg, variant=variant).jbim.sr == "bicubic":
            return None
        name = _stage_name("sr", ratio)
        cfg = _with(self.cfg, ratio=ratio)
        results_path = os.path.join(self.save_dir, name, "results.json")

        def psnr(path: str = "") -> dict:
            res = read_json(results_path)
            keys = ("best_epoch", "epochs", "psnr_sr", "psnr_bicubic", "psnr_gain", "ssim_sr", "ssim_bicubic")
            return {k: res[k] for k in keys if k in res}

        def train():
            _, checkpoint = run_stage(cfg, self.datamanager(), "sr", os.path.join(self.save_dir, name))
            return psnr(), checkpoint

        stage = self._run(name, f"SR pre-training ({cfg.jbim.sr}), m={ratio_label(ratio)}",
                          cfg.jbim.sr_max_epoch, train, evaluate=psnr)
        if not stage.info:
            stage.info = {"sr": self.results(stage)}
            self.stage_records[name] = stage.record()
        return stage

    def variant_ratio(self, variant: str = "") -> float:
        """JBIM's ratio m in ``variant``'s stages: 1/2, or for a ``genuine_ratio`` variant the median genuine
        ratio of the split's training LR images to its HR images (``CrossResolutionDataset.lr_ratio``),
        rounded to 2 decimals so that stage names stay stable."""
        if not VARIANTS[variant].genuine_ratio:
            return ANCHORS[0]
        if self._genuine_ratio is None:  # every stage asks; reading the training images' sizes once is enough
            ratio = self.datamanager().train_loader.dataset.lr_ratio()
            if ratio is None:
                raise RuntimeError(f"{self.dataset}: the training set has no LR or no HR images, so its genuine "
                                   "LR ratio cannot be measured")
            self._genuine_ratio = round(ratio, 2)
        return self._genuine_ratio

    def him(self, epochs: int, ratio: Optional[float] = None, variant: str = "") -> Stage:
        """Stage-1 HIM (SR + HIM, L_HIM) trained with synthetic LR of ratio ``ratio`` (default: the
        variant's, :meth:`variant_ratio`), its SR module initialised by stage ``sr`` at that ratio;
        ``variant``: a key of :data:`VARIANTS`."""
        ratio = self.variant_ratio(variant) if ratio is None else ratio
        sr = self.sr(ratio, variant)
        return self._jbim_stage(_stage_name("him", ratio, variant, e=epochs),
                                f"SR + HIM, m={ratio_label(ratio)}{described(variant)}",
                                _with(self.cfg, epochs, variant, ratio=ratio),
                                "him", "him", suffix=variant, sr=sr,
                                deps=(self._name(sr),) if sr else ())

    def lim(self, epochs: int, variant: str = "") -> Stage:
        """Stage-1 LIM (L_LIM) with synthetic LR of the variant's ratio (1/2 unless ``genuine_ratio``);
        shared by every anchor, and with the base recipe when the variant ``shares_lim``."""
        variant = "" if VARIANTS[variant].shares_lim else variant
        ratio = self.variant_ratio(variant)
        return self._jbim_stage(_stage_name("lim", None, variant, e=epochs),
                                f"LIM, m={ratio_label(ratio)}{described(variant)}",
                                _with(self.cfg, epochs, variant, ratio=ratio), "lim", "lim", suffix=variant)

    def bicubic(self, epochs: int) -> Stage:
        """HIM with bicubic upscaling instead of learned SR and no SR loss."""
        return self._jbim_stage(_stage_name("him_bicubic", e=epochs), "bicubic + HIM, no SR loss",
                                _with(self.cfg, epochs, sr="bicubic", alpha=0.0), "him", "him")

    def him_lim(self, spec: Mapping[str, int]) -> Stage:
        """HIM and LIM of stage 1 side by side, features concatenated (no training)."""
        him, lim = self.him(spec["him"]), self.lim(spec["lim"])
        return self._jbim_stage(_stage_name("him_lim", h=spec["him"], l=spec["lim"]),
                                "stage-1 HIM + LIM concatenated", self.cfg, "joint", "him_lim", him, lim,
                                train_epochs=False, deps=(self._name(him), self._name(lim)))

    def _name(self, stage: Stage) -> str:
        return next(n for n, s in self.stages.items() if s is stage)

    def joint(self, spec: Mapping[str, int], ratio: Optional[float] = None, variant: str = "") -> Stage:
        """The joint stage at ratio ``ratio`` (default: the variant's) from stage-1 HIM and LIM (a
        fresh FFN)."""
        ratio = self.variant_ratio(variant) if ratio is None else ratio
        him_ratio = ratio if self.anchor_training == "him_joint" else self.variant_ratio(variant)
        him, lim = self.him(spec["him"], him_ratio, variant), self.lim(spec["lim"], variant)
        him_name, lim_name = self._name(him), self._name(lim)
        name = _stage_name("joint", ratio, variant, h=spec["him"], l=spec["lim"], e=spec["joint"])
        return self._jbim_stage(name, f"JBIM joint, m={ratio_label(ratio)}, from {him_name} + {lim_name}",
                                _with(self.cfg, spec["joint"], variant, ratio=ratio), "joint", "jbim",
                                him, lim, deps=(him_name, lim_name), suffix=variant)

    def ensemble(self, spec: Mapping[str, int], variant: str = "") -> dict:
        """Fused distances of the anchor JBIM models (of ``variant``, a key of :data:`VARIANTS`),
        ranked; returns results like ``last_results``."""
        anchors = [self.results(self.joint(spec, m, variant)) for m in ANCHORS]
        first = anchors[0]
        for m, res in zip(ANCHORS[1:], anchors[1:]):
            for key in ("q_pids", "g_pids", "q_camids", "g_camids"):
                if not np.array_equal(res[key], first[key]):
                    raise RuntimeError(f"anchor m={ratio_label(m)}: {key} differs from anchor "
                                       f"m={ratio_label(ANCHORS[0])}'s: the test sets must be identical")
        if first["q_hw"] is None or first["g_hw"] is None:
            raise RuntimeError(f"{self.dataset}: the test loaders give no 'hw' (genuine sizes); the "
                               "ensemble weights need them")
        weights = anchor_weights(resolution_ratios(first["q_hw"], first["g_hw"]), ANCHORS, sigma=SIGMA)
        distmat = fuse_distances([res["distmat"] for res in anchors], weights)
        cmc, mAP = get_rank_evaluator()(distmat, first["q_pids"], first["g_pids"], first["q_camids"],
                                        first["g_camids"], max_rank=50)
        # each anchor alone and the scale of its distances, to tell a weak anchor from one whose
        # distances outweigh the others' in the sum (Eq. 19 adds raw distances)
        alone = {ratio_label(m): {**rank_results(res["cmc"], res["mAP"]),
                                  "median_distance": float(np.median(res["distmat"]))}
                 for m, res in zip(ANCHORS, anchors)}
        return {**first, "distmat": distmat, "cmc": np.asarray(cmc), "mAP": float(mAP),
                "mean_weights": weights.mean(axis=0).tolist(), "anchors": alone}

    def _direct_stages(self, method: str, spec: Mapping[str, int]) -> List[Stage]:
        base, variant = base_of(method), variant_of(method)
        if base == "plain":
            return [self.plain(spec["plain"], is_resaug(method))]
        if base == "ensemble":
            return [self.joint(spec, m, variant) for m in ANCHORS]
        return [{"bicubic": lambda: self.bicubic(spec["him"]),
                 "lim_only": lambda: self.lim(spec["lim"], variant),
                 "him_only": lambda: self.him(spec["him"], None, variant),
                 "him_lim": lambda: self.him_lim(spec),
                 "jbim": lambda: self.joint(spec, None, variant)}[base]()]

    def method(self, method: str, spec: Mapping[str, int]) -> dict:
        """Evaluation results of ``method`` (a key of :data:`METHODS`) at ``spec``."""
        if base_of(method) == "ensemble":
            return self.ensemble(spec, variant_of(method))
        return self.results(self._direct_stages(method, spec)[0])

    def method_stages(self, method: str, spec: Mapping[str, int]) -> List[str]:
        """Stages (transitively) behind ``method`` at ``spec``, for its cost."""
        names = [self._name(s) for s in self._direct_stages(method, spec)]
        seen: List[str] = []
        while names:
            name = names.pop(0)
            if name not in seen:
                seen.append(name)
                names.extend(self.stages[name].deps)
        return seen

    def cleanup_checkpoints(self) -> None:
        """Delete the split's ``model/`` folders (the logs and results.json files stay)."""
        for root, dirs, _ in os.walk(self.save_dir):
            if "model" in dirs:
                shutil.rmtree(os.path.join(root, "model"))
                dirs.remove("model")


class Records:
    """The ``--out`` JSON as a store of finished runs and trained stages, saved after every change.

    Layout: ``datasets.<name>.splits.<k>.runs.<method>.<spec label>`` (metrics, seconds, epochs,
    stages, code version) and ``datasets.<name>.splits.<k>.stages.<stage>``; :func:`run` derives the
    per-method results (``splits.<k>.methods.<method>``), summaries and plateaus from them.

    Args:
        path (str): the JSON file ('' keeps the records in memory only).
        report (dict): header fields (benchmark, command, settings, recipe, machine, ...).
        restart (bool): ignore the records already in ``path``.

    Raises:
        SystemExit: (code 2) when ``path`` holds records of another recipe and ``restart`` is False.
    """

    def __init__(self, path: str, report: dict, restart: bool = False):
        self.path = path
        old = read_json(path) if path and os.path.isfile(path) and not restart else None
        if old is not None and old.get("recipe_fingerprint") != report["recipe_fingerprint"]:
            theirs, ours = old.get("recipe", {}), report["recipe"]
            differ = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
            print(f"error: --out '{path}' holds results of another recipe (differs in: {', '.join(differ)}); "
                  "pass another --out, or --restart to discard them", file=sys.stderr)
            raise SystemExit(2)
        self.report = report
        self.report["commands"] = (old or {}).get("commands", []) + [report["command"]]
        self.report["datasets"] = (old or {}).get("datasets", {})

    def split(self, dataset: str, split_id: int) -> dict:
        """The record of one split (created empty when missing)."""
        entry = self.report["datasets"].setdefault(dataset, {}).setdefault("splits", {})
        return entry.setdefault(str(split_id), {"runs": {}, "stages": {}})

    def run(self, dataset: str, split_id: int, method: str, spec: Mapping[str, int]) -> Optional[dict]:
        """The recorded run, or None."""
        return self.split(dataset, split_id)["runs"].get(method, {}).get(spec_label(spec))

    def add_run(self, dataset: str, split_id: int, method: str, spec: Mapping[str, int], entry: dict) -> None:
        self.split(dataset, split_id)["runs"].setdefault(method, {})[spec_label(spec)] = entry
        self.save()

    def save(self) -> None:
        if self.path:
            write_json(self.report, self.path)


def code_version() -> dict:
    """``{'commit': hash or None, 'dirty': bool or None}`` of the repository this script is in."""
    def git(*cmd):
        return subprocess.run(["git", *cmd], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)

    try:
        head = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if head.returncode:
        return {"commit": None, "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def machine_info(device: str) -> dict:
    """Processor, threads, library versions and device of this run (recorded beside every result)."""
    info = {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "torchreid": getattr(torchreid, "__version__", "unknown"),
            "jbim_reid": jbim_reid.__version__, "platform": platform.platform(), "node": platform.node(),
            "device": device}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _names(value: str, choices: Sequence[str], what: str) -> List[str]:
    """Comma-separated ``value`` -> names, each one of ``choices`` (argparse type helper)."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in choices]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown {what}(s) {unknown or value!r}; expected a "
                                         f"comma-separated subset of {list(choices)}")
    return names


def _methods(value: str) -> List[str]:
    names = _names(value, list(METHODS), "method")
    return [m for m in METHODS if m in names]  # table order


def _datasets(value: str) -> List[str]:
    return _names(value, sorted(DATASETS), "dataset")


def _split_ids(value: str) -> List[int]:
    try:
        ids = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        ids = []
    if not ids or any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise argparse.ArgumentTypeError(f"expected distinct comma-separated split indices >= 0, "
                                         f"got {value!r}")
    return ids


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return number


def _counts(value: str, names: Sequence[str], expected: str) -> Dict[str, int]:
    """``a=5,b=3`` -> ``{'a': 5, 'b': 3}`` with every name in ``names`` and every count >= 1."""
    out = {}
    for part in (p.strip() for p in value.split(",") if p.strip()):
        name, _, count = part.partition("=")
        if name not in names or not count.isdigit() or int(count) < 1:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {part!r}")
        out[name] = int(count)
    return out


def _splits_per_dataset(value: str) -> Dict[str, int]:
    """``caviar=5,mlr_viper=3`` -> ``{'caviar': 5, 'mlr_viper': 3}``."""
    return _counts(value, DATASETS, "NAME=COUNT pairs of registered datasets (e.g. caviar=5,mlr_viper=3)")


def _stage_epochs(value: str) -> Dict[str, int]:
    """``him=12,lim=12`` -> ``{'him': 12, 'lim': 12}`` (stage kinds of :data:`KINDS`)."""
    return _counts(value, KINDS, f"KIND=EPOCHS pairs with KIND one of {', '.join(KINDS)} (e.g. him=12,lim=12)")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse and check the command line (data root, datasets and weights exist; budget filled in).

    Args:
        argv (list of str, optional): arguments; None reads ``sys.argv``.

    Returns:
        argparse.Namespace: with ``weights`` '' for ``--weights none``, ``stepsize`` set and
        ``split_ids_of`` (dataset -> split indices).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=os.environ.get("JBIM_DATA_ROOT", ""),
                        help="folder with caviar/, viper/, ... (default: $JBIM_DATA_ROOT)")
    parser.add_argument("--datasets", type=_datasets, default=None,
                        help=f"comma-separated dataset names (default: {DEFAULTS['datasets']})")
    parser.add_argument("--splits", type=_positive, default=None,
                        help=f"number of splits, 0..N-1 (default: {DEFAULTS['splits']}; "
                             f"--paper: {PAPER['splits']})")
    parser.add_argument("--splits-per-dataset", type=_splits_per_dataset, default=None,
                        help="NAME=COUNT pairs overriding --splits per dataset, e.g. caviar=5,mlr_viper=3 "
                             "(--issue-run sets this)")
    parser.add_argument("--split-ids", type=_split_ids, default=None,
                        help="comma-separated split indices to run instead of 0..N-1 (e.g. to share "
                             "the splits out over machines)")
    parser.add_argument("--epochs", type=_positive, default=None,
                        help=f"epochs of every training stage, or the first E of --plateau "
                             f"(default: {DEFAULTS['epochs']}; --paper: {PAPER['epochs']})")
    parser.add_argument("--plateau", action="store_true",
                        help="search each method's (and each JBIM stage's) epochs: E vs 1.5E on the same "
                             "splits until neither rank-1 nor mAP gains more than its standard error")
    parser.add_argument("--stage-epochs", type=_stage_epochs, default={},
                        help="pin the epochs of some stage kinds, e.g. him=12,lim=12: they replace --epochs "
                             "for those kinds, and --plateau searches only the others")
    parser.add_argument("--max-epochs", type=_positive, default=120,
                        help="--plateau never trains more epochs than this (default: 120)")
    parser.add_argument("--height", type=_positive, default=None,
                        help=f"input height (default: {DEFAULTS['height']}; --paper: {PAPER['height']})")
    parser.add_argument("--width", type=_positive, default=None,
                        help=f"input width (default: {DEFAULTS['width']}; --paper: {PAPER['width']})")
    parser.add_argument("--batch-size", type=_positive, default=None,
                        help=f"training batch size, a multiple of 4 (default: {DEFAULTS['batch_size']})")
    parser.add_argument("--paper", action="store_true",
                        help="paper-sized recipe: 256x128 input, 10 splits, 60 epochs per stage")
    parser.add_argument("--issue-run", action="store_true",
                        help="the CPU comparison of issue 8: CAVIAR on 5 splits, MLR-VIPeR on 3 "
                             "(128x64, MobileNetV2 from ../shared/weights)")
    parser.add_argument("--budget-min", type=float, default=None,
                        help="choose splits and epochs that finish within this many minutes, from "
                             "per-epoch costs (--costs, else the built-in table); not with --plateau")
    parser.add_argument("--costs", default="",
                        help="an earlier JSON report whose stage timings replace the built-in cost table "
                             "of --budget-min")
    parser.add_argument("--methods", type=_methods, default=list(DEFAULT_METHODS),
                        help=f"comma-separated subset of {','.join(METHODS)} (default: all but the "
                             "diagnosis variants *_xstream, *_multiratio, *_genuine)")
    parser.add_argument("--anchor-training", choices=("joint", "him_joint"), default="joint",
                        help="anchors m=1/3, 1/4 of the ensemble: only a joint stage each from the shared "
                             "stage-1 HIM (m=1/2) and LIM (default), or their own HIM stage and a joint "
                             "stage")
    parser.add_argument("--sr", default="srcnn_915", choices=sorted(SR_MODELS),
                        help="SR module of the JBIM methods (jbim.sr; default: srcnn_915, the CPU configs')")
    parser.add_argument("--sr-epochs", type=int, default=20,
                        help="stage sr (SR pre-training) at most this many epochs per split, before HIM; "
                             "0 skips it (default: 20)")
    parser.add_argument("--sr-patience", type=_positive, default=5,
                        help="stage sr stops after this many epochs without a held-out PSNR gain (default: 5)")
    parser.add_argument("--backbone", default="mobilenetv2_x1_0",
                        help="torchreid backbone of every method; --weights must match it "
                             "(default: mobilenetv2_x1_0)")
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS),
                        help="local ImageNet weights of the backbone; 'none' trains from scratch "
                             "(default: ../shared/weights/mobilenetv2_x1_0_imagenet.pth from the "
                             "repository root)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default: cpu")
    parser.add_argument("--workers", type=int, default=2, help="data-loading worker processes (default: 2)")
    parser.add_argument("--threads", type=_positive, default=None,
                        help="torch CPU threads (default: torch's own choice, one per core)")
    parser.add_argument("--seed", type=int, default=1,
                        help="training seed (torchreid.utils.set_random_seed; default: 1)")
    parser.add_argument("--out", default="",
                        help="JSON report; every finished run is recorded there at once and skipped "
                             "when the same recipe is run again")
    parser.add_argument("--restart", action="store_true",
                        help="ignore (and overwrite) the records already in --out")
    parser.add_argument("--save-dir", default="",
                        help="checkpoints and logs, kept for later runs (default: a temporary folder, "
                             "deleted at the end)")
    parser.add_argument("--verbose", action="store_true", help="print torchreid's logs too")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)

    budget = PAPER if args.paper else DEFAULTS
    for key in ("splits", "epochs", "height", "width", "batch_size"):
        if getattr(args, key) is None:
            setattr(args, key, budget[key])
    if args.datasets is None:
        args.datasets = list(ISSUE_RUN) if args.issue_run else _datasets(DEFAULTS["datasets"])
    if args.issue_run and args.splits_per_dataset is None:
        args.splits_per_dataset = {d: n for d, n in ISSUE_RUN.items() if d in args.datasets}
    if args.batch_size % 4:
        parser.error(f"--batch-size {args.batch_size}: expected a multiple of 4 "
                     "(4 images per identity)")
    if args.budget_min is not None:
        if args.plateau or args.stage_epochs:
            parser.error("--budget-min plans the epochs; it cannot be combined with --plateau or --stage-epochs")
        if args.budget_min <= 0:
            parser.error(f"--budget-min {args.budget_min}: expected a positive number of minutes")
        if args.costs and not os.path.isfile(args.costs):
            parser.error(f"--costs '{args.costs}' not found")
    if args.plateau and args.epochs >= args.max_epochs:
        parser.error(f"--plateau: --epochs {args.epochs} must be below --max-epochs {args.max_epochs}")
    if not args.data_root:
        parser.error("no data root: pass --data-root or set JBIM_DATA_ROOT (e.g. ../shared/data)")
    if not os.path.isdir(args.data_root):
        parser.error(f"--data-root '{args.data_root}' is not a directory")
    for name in args.datasets:
        for sub in getattr(DATASETS[name], "required", ()):
            if not os.path.isdir(os.path.join(args.data_root, sub)):
                parser.error(f"dataset '{name}': folder '{os.path.join(args.data_root, sub)}' not found "
                             f"under --data-root")
    if args.weights.lower() == "none":
        args.weights = ""
    elif not os.path.isfile(args.weights):
        parser.error(f"--weights '{args.weights}' not found: pass the local ImageNet weights of "
                     f"{args.backbone} (e.g. ../shared/weights/mobilenetv2_x1_0_imagenet.pth), or "
                     "'--weights none' to train from scratch (plain torchreid then stays near chance)")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available on this machine")
    args.plan = None
    if args.budget_min is not None:
        costs = measured_costs(args.costs) if args.costs else COSTS[args.device]
        missing = sorted(k for k in stage_counts(args.methods) if k not in costs)
        if missing:
            parser.error(f"--costs '{args.costs}': no timing for stage kind(s) {missing}")
        scale = 1.0 if args.costs else args.height * args.width / (128 * 64)
        try:
            args.plan = plan_budget(args.budget_min, args.methods, args.datasets, costs, args.splits,
                                    args.epochs, pixels_scale=scale)
        except ValueError as err:
            parser.error(str(err))
        args.splits, args.epochs = args.plan["splits"], args.plan["epochs"]
    _fill_split_ids(args)
    args.stepsize = _stepsize(args.epochs)
    return args


def _fill_split_ids(args: argparse.Namespace) -> None:
    if args.split_ids:
        args.split_ids_of = {d: list(args.split_ids) for d in args.datasets}
    else:
        per = args.splits_per_dataset or {}
        args.split_ids_of = {d: list(range(per.get(d, args.splits))) for d in args.datasets}
    args.split_ids = args.split_ids_of[args.datasets[0]]
    args.splits = len(args.split_ids)


def _recipe(args: argparse.Namespace) -> dict:
    """What a recorded run depends on besides its dataset, split, method and epochs."""
    weights = args.weights
    recipe = {
        "height": args.height, "width": args.width, "batch_size": args.batch_size, "backbone": args.backbone,
        "weights": (os.path.basename(weights), os.path.getsize(weights)) if weights else "none",
        "anchors": [ratio_label(m) for m in ANCHORS], "sigma": SIGMA, "anchor_training": args.anchor_training,
        "optimizer": "adam, lr 3.5e-4, weight decay 5e-4", "lr_schedule": "x0.1 after 2/3 of the epochs",
        "transforms": ["random_flip", "random_crop"], "resaug_range": list(RESAUG_RANGE),
        "seed": args.seed, "device": args.device,
    }
    if any("him" in method_kinds(m) and base_of(m) != "bicubic" for m in args.methods):
        # only runs with a learned SR depend on it: plain-only records stay valid when --sr changes
        recipe.update(sr=args.sr, sr_pretraining={"max_epochs": args.sr_epochs, "patience": args.sr_patience})
    return recipe


def _fingerprint(recipe: Mapping) -> str:
    """Short hash of a recipe (sorted JSON)."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def _settings(args: argparse.Namespace) -> dict:
    return {
        "datasets": args.datasets, "splits": args.split_ids_of, "epochs": args.epochs,
        "epochs_mode": "plateau" if args.plateau else "fixed", "max_epochs": args.max_epochs,
        "stage_epochs": args.stage_epochs,
        "plateau_growth": PLATEAU_GROWTH, "height": args.height, "width": args.width,
        "batch_size": args.batch_size, "paper": args.paper, "methods": args.methods,
        "backbone": args.backbone,
        "weights": args.weights or "none (from scratch)", "anchors": [ratio_label(m) for m in ANCHORS],
        "sigma": SIGMA, "anchor_training": args.anchor_training, "resaug_range": list(RESAUG_RANGE),
        "optimizer": "adam, lr 3.5e-4, weight decay 5e-4",
        "lr_schedule": "x0.1 after round(2/3 of the epochs)", "seed": args.seed, "device": args.device,
        "workers": args.workers, "data_root": args.data_root, "budget_min": args.budget_min,
        "plan": args.plan,
    }


class _Benchmark:
    """One invocation: split runners, the records and the per-dataset logic (search, time matching)."""

    def __init__(self, args: argparse.Namespace, records: Records, save_root: str):
        self.args, self.records, self.save_root = args, records, save_root
        self.runners: Dict[Tuple[str, int], SplitRunner] = {}

    def runner(self, dataset: str, split_id: int) -> SplitRunner:
        key = (dataset, split_id)
        if key not in self.runners:
            ids = self.args.split_ids_of[dataset]
            tag = f"[{dataset} split {split_id} ({ids.index(split_id) + 1}/{len(ids)})]"
            self.runners[key] = SplitRunner(
                build_config(self.args, dataset, split_id),
                os.path.join(self.save_root, dataset, f"split_{split_id}"),
                self.args.anchor_training, self.args.verbose,
                progress=lambda line, tag=tag: print(f"{tag}{line}", flush=True),
                stage_records=self.records.split(dataset, split_id)["stages"], on_stage=self.records.save)
        return self.runners[key]

    def evaluate(self, dataset: str, split_id: int, method: str, spec: Mapping[str, int]) -> dict:
        """The run's record: trained (and recorded at once) unless already recorded."""
        done = self.records.run(dataset, split_id, method, spec)
        if done is not None:
            return done
        runner = self.runner(dataset, split_id)
        if method == "plain_time_matched":
            name = _stage_name("plain_tm", e=spec["plain"])
            results = runner.results(runner.plain(spec["plain"], name=name))
            stages = [name]
        else:
            results = runner.method(method, spec)
            stages = runner.method_stages(method, spec)
        metrics = rank_results(results["cmc"], results["mAP"])
        if "mean_weights" in results:
            metrics["mean_anchor_weights"] = results["mean_weights"]
            metrics["anchors"] = results["anchors"]
        entry = {"metrics": metrics, "epochs": dict(spec), "stages": stages,
                 "seconds": sum(runner.stages[n].seconds for n in stages),
                 "code_version": self.records.report["code_version"],
                 "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self.records.add_run(dataset, split_id, method, spec, entry)
        runner.progress(f" {METHODS.get(method, method)} [{spec_label(spec)}]: rank-1 {metrics['rank1']:.1f}"
                        f"  rank-5 {metrics['rank5']:.1f}  rank-10 {metrics['rank10']:.1f}"
                        f"  mAP {metrics['mAP']:.1f}  ({entry['seconds']:.0f} s)")
        return entry

    def split_metrics(self, dataset: str, method: str, spec: Mapping[str, int]) -> Dict[str, List[float]]:
        """``PLATEAU_METRICS`` of ``method`` at ``spec``, one value per split of ``dataset`` in order."""
        runs = [self.evaluate(dataset, s, method, spec)["metrics"] for s in self.args.split_ids_of[dataset]]
        return {m: [r[m] for r in runs] for m in PLATEAU_METRICS}

    def spec_of(self, dataset: str, method: str, plateaus: Dict[str, dict]) -> Dict[str, int]:
        """The epochs ``method`` runs at: ``--stage-epochs``, else ``--epochs`` or the searched plateaus."""
        pinned = self.args.stage_epochs
        if not self.args.plateau:
            return {k: pinned.get(k, self.args.epochs) for k in method_kinds(method)}
        spec: Dict[str, int] = {}
        for kind, probe in search_plan(method):
            if kind in pinned:
                spec[kind] = pinned[kind]
                continue
            key = f"{probe}:{kind}"
            if key not in plateaus:
                print(f"[{dataset}] plateau search of {kind} epochs on {probe} "
                      f"(fixed: {spec_label(spec) or '-'})", flush=True)
                fixed = dict(spec)
                plateaus[key] = {"kind": kind, "probe": probe, "fixed": fixed, **plateau_search(
                    lambda e: self.split_metrics(dataset, probe, {**fixed, kind: e}), self.args.epochs,
                    self.args.max_epochs, progress=lambda line: print(f"[{dataset}]{line}", flush=True))}
                self.records.report["datasets"][dataset]["plateau"] = plateaus
                self.records.save()
            spec[kind] = plateaus[key]["epochs"]
        return spec

    def dataset(self, dataset: str) -> dict:
        """Runs every method on every split of ``dataset``; returns its derived report entry."""
        entry = self.records.report["datasets"].setdefault(dataset, {})
        plateaus = entry["plateau"] = {}  # searched again: cheap, every run it needs is recorded
        chosen: Dict[str, Dict[int, dict]] = {}
        for method in self.args.methods:
            if method == "plain_time_matched":
                continue
            spec = self.spec_of(dataset, method, plateaus)
            chosen[method] = {s: self.evaluate(dataset, s, method, spec)
                              for s in self.args.split_ids_of[dataset]}
        if "plain_time_matched" in self.args.methods:
            matched = self.time_matched(dataset, chosen)
            if matched:
                chosen["plain_time_matched"] = matched
        for split_id in self.args.split_ids_of[dataset]:
            split = self.records.split(dataset, split_id)
            split["methods"] = {m: {**runs[split_id]["metrics"], "epochs": runs[split_id]["epochs"],
                                    "seconds": runs[split_id]["seconds"]} for m, runs in chosen.items()}
        summaries = {}
        for method, runs in chosen.items():
            summary = summarize_splits([r["metrics"] for r in runs.values()])
            labels = sorted({spec_label(r["epochs"]) for r in runs.values()})
            summary["epochs"] = labels[0] if len(labels) == 1 else "per split: " + "; ".join(
                f"{s}: {spec_label(r['epochs'])}" for s, r in runs.items())
            summary["seconds"] = float(np.mean([r["seconds"] for r in runs.values()]))
            summaries[method] = summary
        entry["summary"] = summaries
        verdict, checks = ordering_verdict(summaries)
        entry["verdict"] = {"line": verdict, "metric": "rank1", "checks": checks}
        self.records.save()
        return entry

    def time_matched(self, dataset: str, chosen: Dict[str, Dict[int, dict]]) -> Optional[Dict[int, dict]]:
        """``plain_time_matched`` per split: plain trained for JBIM's whole training wall time."""
        if "jbim" not in chosen or "plain" not in chosen:
            print(f"[{dataset}] plain_time_matched needs the methods jbim and plain in the same run; skipped",
                  flush=True)
            return None
        out = {}
        for split_id, jbim in chosen["jbim"].items():
            plain = chosen["plain"][split_id]
            per_epoch = plain["seconds"] / plain["epochs"]["plain"]
            epochs = max(1, int(round(jbim["seconds"] / per_epoch)))
            out[split_id] = self.evaluate(dataset, split_id, "plain_time_matched", {"plain": epochs})
            out[split_id]["matched_to"] = {"jbim_seconds": jbim["seconds"],
                                           "plain_seconds_per_epoch": per_epoch}
        return out


def run(args: argparse.Namespace) -> dict:
    """Train and evaluate every requested method on every dataset split; print and return the report.

    Args:
        args: from :func:`parse_args`.

    Returns:
        dict: the JSON report (header, records, per split per method results, summaries, plateaus).
    """
    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    save_root = args.save_dir or tempfile.mkdtemp(prefix="jbim_accuracy_")
    recipe = _recipe(args)
    header = {"benchmark": "accuracy", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(["python benchmarks/accuracy.py"] + args.argv),
              "code_version": code_version(), "settings": _settings(args), "recipe": recipe,
              "recipe_fingerprint": _fingerprint(recipe),
              "machine": machine_info(args.device)}
    records = Records(args.out, header, restart=args.restart)
    splits = "; ".join(f"{d}: {len(ids)} split(s) ({', '.join(map(str, ids))})"
                       for d, ids in args.split_ids_of.items())
    epochs = (f"plateau search from {args.epochs} epochs (x{PLATEAU_GROWTH}, at most {args.max_epochs})"
              if args.plateau else f"{args.epochs} epochs per stage")
    print(f"accuracy benchmark: {splits}; {epochs}; input {args.height}x{args.width}; "
          f"batch {args.batch_size}; backbone {args.backbone} from "
          f"{args.weights or 'scratch (--weights none)'}; device {args.device}")
    if args.plan:
        print(f"budget {args.budget_min:g} min: {args.plan['splits']} split(s) x {args.plan['epochs']} "
              f"epochs, estimated {args.plan['estimated_seconds'] / 60:.1f} min")
    print(f"methods: {', '.join(args.methods)}; checkpoints and logs: {save_root}; "
          f"records: {args.out or '(none)'}", flush=True)
    bench = _Benchmark(args, records, save_root)
    for dataset in args.datasets:
        bench.dataset(dataset)
    total = time.perf_counter() - started
    records.report["total_seconds"] = total
    records.save()
    print()
    print(results_markdown(records.report, datasets=args.datasets), end="")
    print(f"\ntotal time of this invocation {total:.0f} s ({total / 60:.1f} min)")
    if args.out:
        print(f"wrote {args.out}")
    if not args.save_dir:
        shutil.rmtree(save_root, ignore_errors=True)
    return records.report


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the exit code."""
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
