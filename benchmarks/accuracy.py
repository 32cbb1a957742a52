"""Accuracy of JBIM against plain torchreid on real cross-resolution data, every method in one run.

Methods (``--methods``, all by default), trained with the same backbone, ImageNet weights, input
size, epochs, schedule, batch size and splits:

  ========== ===================================================================================
  plain      torchreid's backbone trained with ``torchreid.engine.ImageTripletEngine`` on the same
             training images; LR probes are only resized
  bicubic    bicubic + re-id: the HIM stage with ``jbim.sr bicubic`` and ``jbim.alpha 0`` (no
             learned SR, no SR loss, no joint learning)
  lim_only   stage-1 LIM (JBIM w/o HIM)
  him_only   stage-1 HIM, SRCNN + re-id trained with L_HIM (JBIM w/o LIM)
  him_lim    HIM and LIM trained independently, features concatenated (variant ``him_lim``)
  jbim       the joint stage from the two stage-1 checkpoints (m = 1/2)
  ensemble   JBIM 3-anchor ensemble (m = 1/2, 1/3, 1/4): per-probe Gaussian weights from the
             genuine image sizes (``jbim_reid.ensemble``)
  ========== ===================================================================================

What methods share is trained once per split: stage-1 HIM (m = 1/2) and LIM serve ``lim_only``,
``him_only``, ``him_lim`` and the start of every joint stage. The anchors m = 1/3 and 1/4 get either
only their own joint stage from those shared stage-1 models (``--anchor-training joint``, the
default) or their own HIM stage and then the joint stage (``--anchor-training him_joint``).

Every method is evaluated the same way: ``JBIMEngine``'s test (probe features of the LR query
images, gallery features of the HR gallery images, Euclidean distances, the rank evaluator of
``jbim_reid.metrics.get_rank_evaluator``); the plain model goes through it with the same feature for
both sides.

Usage (from the repository root)::

    JBIM_DATA_ROOT=../shared/data python benchmarks/accuracy.py --out accuracy.json
    python benchmarks/accuracy.py --data-root ../shared/data --datasets caviar --splits 1 --epochs 2
    python benchmarks/accuracy.py --paper --device cuda          # 256x128, 10 splits, 60 epochs

Console: one line per stage and method per split, then a markdown table of mean ± std per method and
dataset, the total time and a verdict on the paper's ordering. torchreid's own logs go to
``<save-dir>/<dataset>/split_<k>/<stage>.log`` (``--verbose`` prints them too).
"""
import argparse
import contextlib
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torchreid
from torch import nn
from yacs.config import CfgNode as CN

import jbim_reid
from jbim_reid.cli import build_datamanager, run_stage
from jbim_reid.config import (engine_run_kwargs, get_default_config, lr_scheduler_kwargs,
                              optimizer_kwargs)
from jbim_reid.datasets import DATASETS
from jbim_reid.engines import JBIMEngine, checkpoint_path
from jbim_reid.ensemble import anchor_weights, fuse_distances, ratio_label, resolution_ratios
from jbim_reid.metrics import get_rank_evaluator
from jbim_reid.reports import markdown_table, rank_results, summarize_splits, write_json

__all__ = ["METHODS", "ANCHORS", "DEFAULTS", "PAPER", "PlainFeatures", "SplitRunner", "build_config",
           "ordering_verdict", "parse_args", "run", "main"]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WEIGHTS = REPO_ROOT.parent / "shared" / "weights" / "mobilenetv2_x1_0_imagenet.pth"

METHODS = {  # --methods key -> row label of the table
    "plain": "plain torchreid",
    "bicubic": "bicubic + re-id",
    "lim_only": "LIM only",
    "him_only": "HIM only",
    "him_lim": "HIM+LIM independent",
    "jbim": "JBIM",
    "ensemble": "JBIM 3-anchor ensemble",
}
ANCHORS = (1 / 2, 1 / 3, 1 / 4)  # ratios m of the ensemble's anchor models; the first is JBIM's
SIGMA = 0.5  # Gaussian width of the anchor weights (JBIM Eq. 18)
# About 2 hours on an idle 2-core CPU for both datasets and every method (estimated from per-epoch
# measurements, see docs/BENCHMARKS.md); too short for accuracy near the paper's (GPU and --paper).
DEFAULTS = dict(datasets="caviar,mlr_viper", splits=2, epochs=4, height=128, width=64, batch_size=32)
PAPER = dict(splits=10, epochs=60, height=256, width=128, batch_size=32)  # --paper
ORDERING = (("jbim", "him_only"), ("jbim", "lim_only"), ("jbim", "plain"), ("him_only", "plain"),
            ("lim_only", "plain"))  # (above, below) pairs of the paper's ordering (Table 3)
SHOWN_METRICS = ("rank1", "rank5", "rank10", "mAP")


def _stage_name(prefix: str, ratio: float) -> str:
    """Folder-safe stage name, e.g. ``him_m1-2`` for HIM at m = 1/2."""
    return f"{prefix}_m{ratio_label(ratio).replace('/', '-')}"


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
        CfgNode: frozen config; stages clone it to change ``jbim.*``.
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
    cfg.train.max_epoch = args.epochs
    cfg.train.batch_size = args.batch_size
    cfg.train.lr_scheduler = "single_step"
    cfg.train.stepsize = [args.stepsize]
    cfg.train.print_freq = 10
    cfg.train.seed = args.seed
    cfg.test.eval_freq = -1
    cfg.jbim.ratio = ANCHORS[0]
    cfg.freeze()
    return cfg


def _with(cfg: CN, **jbim) -> CN:
    """A frozen copy of ``cfg`` with ``jbim.<key> = value`` for each keyword."""
    cfg = cfg.clone()
    cfg.defrost()
    for key, value in jbim.items():
        setattr(cfg.jbim, key, value)
    cfg.freeze()
    return cfg


@dataclass
class Stage:
    """One trained (or test-only) model of a split: its evaluation, checkpoint and cost."""

    results: dict  # JBIMEngine.last_results[dataset]: distmat, pids, camids, hw, cmc, mAP
    seconds: float  # wall time of the stage alone (training + its evaluation)
    epochs: int  # epochs trained (0 for test-only stages)
    checkpoint: str = ""
    deps: Tuple[str, ...] = ()  # stages whose checkpoints this one starts from


@dataclass
class SplitRunner:
    """Trains each stage of one dataset split at most once and evaluates every method from them.

    Args:
        cfg (CfgNode): split config from :func:`build_config`.
        datamanager: ``torchreid.data.ImageDataManager`` of the split.
        save_dir (str): checkpoints and logs of the split.
        anchor_training (str): ``joint`` or ``him_joint`` (see the module docstring).
        verbose (bool): print torchreid's logs instead of only writing them to files.
        progress (callable): prints one progress line.
    """

    cfg: CN
    datamanager: object
    save_dir: str
    anchor_training: str = "joint"
    verbose: bool = False
    progress: Callable[[str], None] = print
    stages: Dict[str, Stage] = field(default_factory=dict)

    @property
    def dataset(self) -> str:
        return self.cfg.data.targets[0]

    @contextlib.contextmanager
    def logged(self, name: str):
        """stdout of the block into ``<save_dir>/<name>.log`` (and the console with ``verbose``)."""
        os.makedirs(self.save_dir, exist_ok=True)
        if self.verbose:
            yield
            return
        with open(os.path.join(self.save_dir, f"{name}.log"), "w", encoding="utf-8") as log, \
                contextlib.redirect_stdout(log):
            yield

    def _run(self, name: str, description: str, epochs: int, train: Callable[[], Tuple[dict, str]],
             deps: Sequence[str] = ()) -> Stage:
        if name in self.stages:
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
        return self.stages[name]

    def _jbim_stage(self, name: str, description: str, cfg: CN, stage: str, variant: str,
                    him: Optional[Stage] = None, lim: Optional[Stage] = None,
                    train_epochs: bool = True, deps: Sequence[str] = ()) -> Stage:
        def train():
            engine, checkpoint = run_stage(cfg, self.datamanager, stage, os.path.join(self.save_dir, name),
                                           variant, him.checkpoint if him else "",
                                           lim.checkpoint if lim else "", train_epochs=train_epochs)
            return engine.last_results[self.dataset], checkpoint

        return self._run(name, description, cfg.train.max_epoch if train_epochs else 0, train, deps)

    def plain(self) -> Stage:
        """torchreid's backbone + ``ImageTripletEngine``, evaluated through ``JBIMEngine``'s test."""
        cfg = self.cfg

        def train():
            dm = self.datamanager
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
            save_dir = os.path.join(self.save_dir, "plain")
            # run() ends with torchreid's own test; ranks=[1] keeps it valid on galleries smaller than
            # 20 ids. The reported figures come from the JBIMEngine evaluation below.
            engine.run(**{**engine_run_kwargs(cfg), "save_dir": save_dir, "ranks": [1]})
            evaluator = JBIMEngine(dm, PlainFeatures(model), optimizer, use_gpu=use_gpu)
            evaluator.test(dist_metric=cfg.test.dist_metric, normalize_feature=cfg.test.normalize_feature,
                           ranks=list(cfg.test.ranks))
            dm.train_loader.dataset.pair_views = False  # JBIMEngine switched it on
            checkpoint = checkpoint_path(save_dir, cfg.train.max_epoch)
            return evaluator.last_results[self.dataset], checkpoint

        return self._run("plain", f"torchreid {cfg.model.name}, ImageTripletEngine",
                         cfg.train.max_epoch, train)

    def him(self, ratio: float = ANCHORS[0]) -> Stage:
        """Stage-1 HIM (SRCNN + HIM, L_HIM) trained with synthetic LR of ratio ``ratio``."""
        return self._jbim_stage(_stage_name("him", ratio), f"SR + HIM, m={ratio_label(ratio)}",
                                _with(self.cfg, ratio=ratio), "him", "him")

    def lim(self) -> Stage:
        """Stage-1 LIM (L_LIM) with synthetic LR of ratio 1/2; shared by every anchor."""
        return self._jbim_stage("lim", f"LIM, m={ratio_label(ANCHORS[0])}", self.cfg, "lim", "lim")

    def bicubic(self) -> Stage:
        """HIM with bicubic upscaling instead of learned SR and no SR loss."""
        return self._jbim_stage("him_bicubic", "bicubic + HIM, no SR loss",
                                _with(self.cfg, sr="bicubic", alpha=0.0), "him", "him")

    def him_lim(self) -> Stage:
        """HIM and LIM of stage 1 side by side, features concatenated (no training)."""
        him, lim = self.him(), self.lim()
        return self._jbim_stage("him_lim", "stage-1 HIM + LIM concatenated", self.cfg, "joint", "him_lim",
                                him, lim, train_epochs=False, deps=(_stage_name("him", ANCHORS[0]), "lim"))

    def joint(self, ratio: float = ANCHORS[0]) -> Stage:
        """The joint stage at ratio ``ratio`` from stage-1 HIM and LIM (a fresh FFN)."""
        him_ratio = ratio if self.anchor_training == "him_joint" else ANCHORS[0]
        him, lim = self.him(him_ratio), self.lim()
        him_name = _stage_name("him", him_ratio)
        return self._jbim_stage(_stage_name("joint", ratio),
                                f"JBIM joint, m={ratio_label(ratio)}, from {him_name} + lim",
                                _with(self.cfg, ratio=ratio), "joint", "jbim", him, lim,
                                deps=(him_name, "lim"))

    def ensemble(self) -> dict:
        """Fused distances of the anchor JBIM models, ranked; returns results like ``last_results``."""
        anchors = [self.joint(m).results for m in ANCHORS]
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
        return {**first, "distmat": distmat, "cmc": np.asarray(cmc), "mAP": float(mAP),
                "mean_weights": weights.mean(axis=0).tolist()}

    def method(self, name: str) -> dict:
        """Evaluation results of method ``name`` (a key of :data:`METHODS`)."""
        if name == "ensemble":
            return self.ensemble()
        stage = {"plain": self.plain, "bicubic": self.bicubic, "lim_only": self.lim,
                 "him_only": self.him, "him_lim": self.him_lim, "jbim": self.joint}[name]()
        return stage.results

    def method_stages(self, name: str) -> List[str]:
        """Stages (transitively) behind method ``name``, for its cost."""
        direct = {"plain": ["plain"], "bicubic": ["him_bicubic"], "lim_only": ["lim"],
                  "him_only": [_stage_name("him", ANCHORS[0])], "him_lim": ["him_lim"],
                  "jbim": [_stage_name("joint", ANCHORS[0])],
                  "ensemble": [_stage_name("joint", m) for m in ANCHORS]}[name]
        seen: List[str] = []
        todo = list(direct)
        while todo:
            stage = todo.pop(0)
            if stage not in seen and stage in self.stages:
                seen.append(stage)
                todo.extend(self.stages[stage].deps)
        return seen

    def cleanup_checkpoints(self) -> None:
        """Delete the split's ``model/`` folders (the logs and results.json files stay)."""
        for root, dirs, _ in os.walk(self.save_dir):
            if "model" in dirs:
                shutil.rmtree(os.path.join(root, "model"))
                dirs.remove("model")


def ordering_verdict(summaries: Dict[str, dict], metric: str = "rank1") -> Tuple[str, List[dict]]:
    """Whether the paper's ordering holds, pair by pair, with the margin against the split spread.

    A pair (A above B) is ``clear`` when mean_A - mean_B exceeds the larger of the two standard
    deviations over splits, ``within spread`` when it is positive but not larger, ``tied`` when it
    is 0 and ``reversed`` when it is negative.

    Args:
        summaries (dict): method key -> summary of :func:`jbim_reid.reports.summarize_splits`.
        metric (str, optional): compared metric. Default is ``rank1``.

    Returns:
        tuple: ``(verdict line, checks)``, one check dict per pair whose two methods were run.
    """
    checks = []
    for above, below in ORDERING:
        if above not in summaries or below not in summaries:
            continue
        a, b = summaries[above], summaries[below]
        margin = a["mean"][metric] - b["mean"][metric]
        spread = max(a["std"][metric], b["std"][metric])
        if margin > spread:
            status = "clear"
        elif margin > 0:
            status = "within spread"
        else:
            status = "tied" if margin == 0 else "reversed"
        checks.append({"above": above, "below": below, "margin": margin, "spread": spread,
                       "status": status})
    if not checks:
        return "no pair of the paper's ordering was run", checks
    splits = min(s["num_splits"] for s in summaries.values())
    if all(c["status"] == "clear" for c in checks):
        head = "HOLDS"
    elif all(c["status"] in ("clear", "within spread") for c in checks):
        head = "holds only within the spread across splits"
    else:
        head = "DOES NOT HOLD"
    parts = [f"{METHODS[c['above']]} - {METHODS[c['below']]} = {c['margin']:+.1f} "
             f"(spread {c['spread']:.1f}: {c['status']})" for c in checks]
    note = " (1 split: no spread)" if splits == 1 else ""
    return f"paper ordering on {metric} {head}{note}: " + "; ".join(parts), checks


def _machine(device: str) -> dict:
    info = {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "torchreid": getattr(torchreid, "__version__", "unknown"),
            "jbim_reid": jbim_reid.__version__, "platform": platform.platform(), "device": device}
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


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse and check the command line (data root, datasets and weights exist; budget filled in).

    Args:
        argv (list of str, optional): arguments; None reads ``sys.argv``.

    Returns:
        argparse.Namespace: with ``weights`` '' for ``--weights none`` and ``stepsize`` set.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=os.environ.get("JBIM_DATA_ROOT", ""),
                        help="folder with caviar/, viper/, ... (default: $JBIM_DATA_ROOT)")
    parser.add_argument("--datasets", type=_datasets, default=None,
                        help=f"comma-separated dataset names (default: {DEFAULTS['datasets']})")
    parser.add_argument("--splits", type=_positive, default=None,
                        help=f"number of splits, 0..N-1 (default: {DEFAULTS['splits']}; "
                             f"--paper: {PAPER['splits']})")
    parser.add_argument("--split-ids", type=_split_ids, default=None,
                        help="comma-separated split indices to run instead of 0..N-1 (e.g. to share "
                             "the splits out over machines)")
    parser.add_argument("--epochs", type=_positive, default=None,
                        help=f"epochs of every training stage (default: {DEFAULTS['epochs']}; "
                             f"--paper: {PAPER['epochs']})")
    parser.add_argument("--height", type=_positive, default=None,
                        help=f"input height (default: {DEFAULTS['height']}; --paper: {PAPER['height']})")
    parser.add_argument("--width", type=_positive, default=None,
                        help=f"input width (default: {DEFAULTS['width']}; --paper: {PAPER['width']})")
    parser.add_argument("--batch-size", type=_positive, default=None,
                        help=f"training batch size, a multiple of 4 (default: {DEFAULTS['batch_size']})")
    parser.add_argument("--paper", action="store_true",
                        help="paper-sized recipe: 256x128 input, 10 splits, 60 epochs per stage")
    parser.add_argument("--methods", type=_methods, default=list(METHODS),
                        help=f"comma-separated subset of {','.join(METHODS)} (default: all)")
    parser.add_argument("--anchor-training", choices=("joint", "him_joint"), default="joint",
                        help="anchors m=1/3, 1/4 of the ensemble: only a joint stage each from the shared "
                             "stage-1 HIM (m=1/2) and LIM (default), or their own HIM stage and a joint "
                             "stage")
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
    parser.add_argument("--out", default="", help="write the results as JSON to this file")
    parser.add_argument("--save-dir", default="",
                        help="checkpoints and logs (default: a new temporary folder)")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep each split's checkpoints (deleted after the split otherwise)")
    parser.add_argument("--verbose", action="store_true", help="print torchreid's logs too")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)

    budget = PAPER if args.paper else DEFAULTS
    for key in ("splits", "epochs", "height", "width", "batch_size"):
        if getattr(args, key) is None:
            setattr(args, key, budget[key])
    args.split_ids = args.split_ids or list(range(args.splits))
    args.splits = len(args.split_ids)
    if args.datasets is None:
        args.datasets = _datasets(DEFAULTS["datasets"])
    if args.batch_size % 4:
        parser.error(f"--batch-size {args.batch_size}: expected a multiple of 4 "
                     "(4 images per identity)")
    args.stepsize = max(1, round(args.epochs * 2 / 3))  # lr x0.1 after two thirds of the epochs
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
    return args


def _settings(args: argparse.Namespace) -> dict:
    return {
        "datasets": args.datasets, "splits": args.split_ids, "epochs_per_stage": args.epochs,
        "height": args.height, "width": args.width, "batch_size": args.batch_size, "paper": args.paper,
        "methods": args.methods, "backbone": args.backbone, "weights": args.weights or "none (from scratch)",
        "anchors": [ratio_label(m) for m in ANCHORS], "sigma": SIGMA,
        "anchor_training": args.anchor_training,
        "optimizer": "adam, lr 3.5e-4, weight decay 5e-4", "lr_schedule": f"x0.1 after epoch {args.stepsize}",
        "seed": args.seed, "device": args.device, "workers": args.workers, "data_root": args.data_root,
    }


def run(args: argparse.Namespace) -> dict:
    """Train and evaluate every requested method on every dataset split; print and return the report.

    Args:
        args: from :func:`parse_args`.

    Returns:
        dict: the JSON report (settings, machine, per split per method metrics, summaries, timing).
    """
    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    save_root = args.save_dir or tempfile.mkdtemp(prefix="jbim_accuracy_")
    anchors = ", ".join(ratio_label(m) for m in ANCHORS)
    anchor_how = ("a joint stage each from the shared stage-1 HIM (m=1/2) and LIM"
                  if args.anchor_training == "joint" else "their own HIM stage + a joint stage, shared LIM")
    print(f"accuracy benchmark: datasets {', '.join(args.datasets)}; {args.splits} split(s) "
          f"({', '.join(map(str, args.split_ids))}); {args.epochs} epochs per stage; "
          f"input {args.height}x{args.width}; "
          f"batch {args.batch_size}; backbone {args.backbone} from "
          f"{args.weights or 'scratch (--weights none)'}; device {args.device}")
    print(f"methods: {', '.join(args.methods)}; ensemble anchors m = {anchors} ({anchor_how})")
    print(f"checkpoints and logs: {save_root}", flush=True)
    report = {"benchmark": "accuracy", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(["python benchmarks/accuracy.py"] + args.argv),
              "settings": _settings(args), "machine": _machine(args.device), "datasets": {}}

    for dataset in args.datasets:
        per_method: Dict[str, List[dict]] = {m: [] for m in args.methods}
        splits = {}
        for index, split_id in enumerate(args.split_ids):
            tag = f"[{dataset} split {split_id} ({index + 1}/{args.splits})]"
            split_start = time.perf_counter()
            cfg = build_config(args, dataset, split_id)
            split_dir = os.path.join(save_root, dataset, f"split_{split_id}")
            runner = SplitRunner(cfg, None, split_dir, args.anchor_training, args.verbose,
                                 progress=lambda line, tag=tag: print(f"{tag}{line}", flush=True))
            with runner.logged("datamanager"):
                runner.datamanager = build_datamanager(cfg)
            split = {"methods": {}, "timing": {"stages": {}, "methods": {}}}
            for method in args.methods:
                results = runner.method(method)
                metrics = rank_results(results["cmc"], results["mAP"])
                if method == "ensemble":
                    metrics["mean_anchor_weights"] = results["mean_weights"]
                per_method[method].append(metrics)
                split["methods"][method] = metrics
                print(f"{tag} {METHODS[method]}: rank-1 {metrics['rank1']:.1f}  rank-5 {metrics['rank5']:.1f}"
                      f"  rank-10 {metrics['rank10']:.1f}  mAP {metrics['mAP']:.1f}", flush=True)
            for name, stage in runner.stages.items():
                split["timing"]["stages"][name] = {
                    "seconds": stage.seconds, "epochs": stage.epochs,
                    "seconds_per_epoch": stage.seconds / stage.epochs if stage.epochs else None,
                    "starts_from": list(stage.deps)}
            for method in args.methods:
                names = runner.method_stages(method)
                split["timing"]["methods"][method] = {
                    "stages": names, "seconds": sum(runner.stages[n].seconds for n in names)}
            split["timing"]["split_seconds"] = time.perf_counter() - split_start
            splits[str(split_id)] = split
            if not args.keep_checkpoints:
                runner.cleanup_checkpoints()
            print(f"{tag} done in {split['timing']['split_seconds']:.0f} s "
                  f"(total so far {time.perf_counter() - started:.0f} s)", flush=True)
        summaries = {m: summarize_splits(per_method[m]) for m in args.methods}
        verdict, checks = ordering_verdict(summaries)
        report["datasets"][dataset] = {"splits": splits, "summary": summaries,
                                       "verdict": {"line": verdict, "metric": "rank1", "checks": checks}}

    total = time.perf_counter() - started
    report["total_seconds"] = total
    print()
    print(f"Settings: {args.splits} split(s), {args.epochs} epochs per stage, "
          f"input {args.height}x{args.width}, "
          f"batch {args.batch_size}, {args.backbone} from {args.weights or 'scratch'}, device {args.device}, "
          f"{report['machine']['torch_threads']} torch threads")
    for dataset, entry in report["datasets"].items():
        print(f"\n### {dataset} (mean ± std over {args.splits} split(s), %)\n")
        rows = {METHODS[m]: s for m, s in entry["summary"].items()}
        print(markdown_table(rows, metrics=SHOWN_METRICS), end="")
        print(f"\nverdict ({dataset}): {entry['verdict']['line']}")
    print(f"\ntotal time {total:.0f} s ({total / 60:.1f} min)")
    if args.out:
        write_json(report, args.out)
        print(f"wrote {args.out}")
    return report


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the exit code."""
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
