"""How the accuracy benchmark trains and evaluates one dataset split: configs, stage names, stages.

:class:`SplitRunner` trains each stage of a split at most once (reusing the checkpoints of earlier
runs) and evaluates every method from them; :func:`build_config`, :func:`_with` and
:func:`stage_name` give each stage its config and its folder name. Stage folder names are part of
the resumable records (``--save-dir``, ``--out``): they must not change.
"""
import argparse
import contextlib
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torchreid
from accuracy_methods import ANCHORS, VARIANTS, base_of, described, is_resaug, variant_of
from yacs.config import CfgNode as CN

from jbim_reid.config import get_default_config, optimizer_kwargs
from jbim_reid.engines import JBIMEngine
from jbim_reid.evaluation.ensemble import anchor_weights, fuse_distances, ratio_label, resolution_ratios
from jbim_reid.evaluation.reports import rank_results, read_json
from jbim_reid.metrics import get_rank_evaluator
from jbim_reid.models import load_jbim_checkpoint
from jbim_reid.models.plain import PlainFeatures  # part of the script API: the adapter the plain rows are tested through
from jbim_reid.training.plain_stage import run_plain_stage
from jbim_reid.training.runner import build_datamanager, run_stage
from jbim_reid.transforms import NAME as RESAUG_TRANSFORM

__all__ = ["SIGMA", "RESAUG_RANGE", "lr_stepsize", "PlainFeatures", "build_config", "stage_name", "Stage",
           "SplitRunner"]

SIGMA = 0.5  # Gaussian width of the anchor weights (JBIM Eq. 18)
RESAUG_RANGE = (0.25, 1.0)  # ratio range of random_resolution in the *_resaug methods


def lr_stepsize(epochs: int) -> int:
    """The epoch after which the learning rate drops x0.1: two thirds of ``epochs``, at least 1."""
    return max(1, round(epochs * 2 / 3))


def build_config(args: argparse.Namespace, dataset: str, split_id: int) -> CN:
    """The jbim-reid config shared by every method of one dataset split.

    Args:
        args: parsed arguments (see ``accuracy_cli.parse_args``).
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
    cfg.train.stepsize = [lr_stepsize(args.epochs)]
    cfg.train.print_freq = 10
    cfg.train.seed = args.seed
    cfg.test.eval_freq = -1
    cfg.jbim.recipe = "custom"  # every method sets its jbim.* keys itself (jbim_auto resolves its own)
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
        cfg.train.stepsize = [lr_stepsize(epochs)]
    options = VARIANTS[variant]
    if options.resaug and RESAUG_TRANSFORM not in cfg.data.transforms:
        cfg.data.transforms = list(cfg.data.transforms) + [RESAUG_TRANSFORM]
    for key, value in [*options.jbim, *jbim.items()]:
        setattr(cfg.jbim, key, value)
    cfg.freeze()
    return cfg


def stage_name(prefix: str, ratio: Optional[float] = None, variant: str = "", **epochs: int) -> str:
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
        anchor_training (str): ``joint`` or ``him_joint`` (see the docstring of ``accuracy.py``).
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
    keep_plain: bool = False  # keep the plain models' checkpoints (for jbim_warm)
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
        """torchreid's backbone + ``ImageTripletEngine`` (``run_plain_stage``), evaluated through ``JBIMEngine``'s
        test.

        Its checkpoint is deleted at once (every method that needs the plain model is recorded) unless
        ``keep_plain``.
        """
        variant = "resaug" if resaug else ""
        cfg = _with(self.cfg, epochs, variant)
        name = name or stage_name("plain", variant=variant, e=epochs)

        def train():
            save_dir = os.path.join(self.save_dir, name)
            # the package's stage plain: torchreid's ImageTripletEngine step, a checkpoint per epoch (a
            # killed run continues), then JBIMEngine's test; random resolution comes from the datamanager
            evaluator, checkpoint = run_plain_stage(cfg, self.datamanager(resaug), save_dir)
            if self.keep_plain:  # a warm-started JBIM starts from it (jbim.init_from)
                return evaluator.last_results[self.dataset], checkpoint
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
        name = stage_name("sr", ratio)
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
        return self._jbim_stage(stage_name("him", ratio, variant, e=epochs),
                                f"SR + HIM, m={ratio_label(ratio)}{described(variant)}",
                                _with(self.cfg, epochs, variant, ratio=ratio),
                                "him", "him", suffix=variant, sr=sr,
                                deps=(self._name(sr),) if sr else ())

    def lim(self, epochs: int, variant: str = "") -> Stage:
        """Stage-1 LIM (L_LIM) with synthetic LR of the variant's ratio (1/2 unless ``genuine_ratio``);
        shared by every anchor, and with the base recipe when the variant ``shares_lim``."""
        variant = "" if VARIANTS[variant].shares_lim else variant
        ratio = self.variant_ratio(variant)
        return self._jbim_stage(stage_name("lim", None, variant, e=epochs),
                                f"LIM, m={ratio_label(ratio)}{described(variant)}",
                                _with(self.cfg, epochs, variant, ratio=ratio), "lim", "lim", suffix=variant)

    def bicubic(self, epochs: int) -> Stage:
        """HIM with bicubic upscaling instead of learned SR and no SR loss."""
        return self._jbim_stage(stage_name("him_bicubic", e=epochs), "bicubic + HIM, no SR loss",
                                _with(self.cfg, epochs, sr="bicubic", alpha=0.0), "him", "him")

    def him_lim(self, spec: Mapping[str, int]) -> Stage:
        """HIM and LIM of stage 1 side by side, features concatenated (no training)."""
        him, lim = self.him(spec["him"]), self.lim(spec["lim"])
        return self._jbim_stage(stage_name("him_lim", h=spec["him"], l=spec["lim"]),
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
        name = stage_name("joint", ratio, variant, h=spec["him"], l=spec["lim"], e=spec["joint"])
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
