"""``jbim-reid train-anchors`` and ``jbim-reid ensemble``: anchor models over splits and their fusion.

``train_anchors`` trains one JBIM model per anchor ratio m_i (``ensemble.anchors``) on every split
(``ensemble.splits``) with the staged recipe of ``jbim-reid train`` (``jbim.stage all``); the LIM
stage is trained once per split and shared by the anchors (``ensemble.share_lim``). Layout::

    <data.save_dir>/split_<k>/stage_lim/                 shared LIM stage of split k
    <data.save_dir>/split_<k>/anchor_1_2/stage_sr/       SR pre-training of anchor m = 1/2
    <data.save_dir>/split_<k>/anchor_1_2/stage_him/      HIM stage of anchor m = 1/2
    <data.save_dir>/split_<k>/anchor_1_2/stage_joint/    the anchor model (final checkpoint)
    <data.save_dir>/split_<k>/anchor_1_2/results.json    its test results

``run_ensemble`` evaluates every anchor of every split, fuses their distances per anchor subset
(``jbim_reid.evaluation.ensemble.evaluate_subsets``, gaussian and/or uniform weights) and writes
``ensemble.json``, ``ensemble.md`` and ``ensemble_cmc.png`` in ``data.save_dir``.

Examples::

    jbim-reid train-anchors --config-file configs/caviar/jbim_osnet_x0_25_cpu.yaml data.root /data
    jbim-reid ensemble --config-file configs/caviar/jbim_osnet_x0_25_cpu.yaml data.root /data
"""
import os.path as osp
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import yaml
from yacs.config import CfgNode as CN

from jbim_reid.commands.save_dir import (add_training_arguments, claims_save_dir, clear_earlier_run,
                                         training_command)
from jbim_reid.config.defaults import add_ensemble_config
from jbim_reid.evaluation.ensemble import ratio_label
from jbim_reid.training import checks, resume, runner
from jbim_reid.training.fingerprint import config_fingerprint
from jbim_reid.utils.errors import ConfigError

__all__ = ["ENSEMBLE_COMMANDS", "WEIGHTINGS", "SUBSET_MODES", "add_ensemble_config", "anchor_label",
           "anchor_dir", "anchor_checkpoint", "shared_lim_dir", "resolve_splits", "train_anchors",
           "run_ensemble"]

WEIGHTINGS = {  # ensemble.weighting -> weighting schemes of jbim_reid.evaluation.ensemble.anchor_weights
    "gaussian": ("gaussian",), "uniform": ("uniform",), "both": ("gaussian", "uniform")}
SUBSET_MODES = ("all", "full")  # ensemble.subsets: every non-empty subset, or all anchors together only


def _with_ensemble(cfg: CN) -> CN:
    """``cfg`` itself when it has the ``ensemble`` node, else a frozen copy with the defaults added."""
    if "ensemble" in cfg:
        return cfg
    cfg = cfg.clone()
    cfg.defrost()
    add_ensemble_config(cfg)
    cfg.freeze()
    return cfg


anchor_label = ratio_label  # anchor display names, e.g. 0.5 -> "1/2"


def _anchors(cfg: CN) -> Dict[str, float]:
    """``ensemble.anchors`` checked: label -> ratio, in the config's order."""
    ratios = list(cfg.ensemble.anchors)
    if not ratios:
        raise ConfigError("ensemble.anchors is empty: expected a list of ratios, e.g. [0.5, 0.25]")
    out = {}
    for ratio in ratios:
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
            raise ConfigError(f"ensemble.anchors holds {ratio!r}; expected numbers in (0, 1], "
                                     "e.g. [0.5, 0.3333, 0.25]")
        label = anchor_label(ratio)
        if label in out:
            raise ConfigError(f"ensemble.anchors {ratios} holds {label} twice: anchors must differ")
        out[label] = float(ratio)
    return out


def _schemes(cfg: CN) -> Tuple[str, ...]:
    if cfg.ensemble.weighting not in WEIGHTINGS:
        raise ConfigError(f"Unknown ensemble.weighting '{cfg.ensemble.weighting}'; expected one of "
                                 f"{list(WEIGHTINGS)}")
    if not cfg.ensemble.sigma > 0:
        raise ConfigError(f"ensemble.sigma must be > 0, got {cfg.ensemble.sigma}")
    return WEIGHTINGS[cfg.ensemble.weighting]


def _target(cfg: CN) -> str:
    targets = list(cfg.data.targets)
    if len(targets) != 1:
        raise ConfigError(f"jbim-reid ensemble evaluates one target dataset; data.targets is {targets}")
    return targets[0]


def resolve_splits(cfg: CN) -> List[int]:
    """The split ids of ``ensemble.splits``; [] gives ``0..num_splits-1`` of the (first) target dataset.

    Args:
        cfg (CfgNode): config.

    Returns:
        list of int: split ids, checked against the dataset's ``num_splits`` when it has one.
    """
    from jbim_reid.utils import compat

    cfg = _with_ensemble(cfg)
    dataset_cls = compat.image_dataset_registry().get(list(cfg.data.targets)[0])
    num_splits = getattr(dataset_cls, "num_splits", None)
    splits = list(cfg.ensemble.splits)
    if not splits:
        return list(range(num_splits)) if num_splits else [int(cfg.data.split_id)]
    for split in splits:
        if isinstance(split, bool) or not isinstance(split, int) or split < 0 \
                or (num_splits and split >= num_splits):
            valid = f"0..{num_splits - 1}" if num_splits else "integers >= 0"
            raise ConfigError(f"ensemble.splits holds {split!r}; expected split ids in {valid}")
    if len(set(splits)) != len(splits):
        raise ConfigError(f"ensemble.splits {splits} repeats a split id")
    return splits


def _split_dir(cfg: CN, split_id: int) -> str:
    return osp.join(cfg.data.save_dir, f"split_{split_id}")


def anchor_dir(cfg: CN, split_id: int, ratio: float) -> str:
    """``<data.save_dir>/split_<k>/anchor_<m>``, ``m`` as ``1_2`` for 1/2.

    Args:
        cfg (CfgNode): config.
        split_id (int): split.
        ratio (float): anchor ratio.

    Returns:
        str: the anchor's output folder.
    """
    name = anchor_label(ratio).replace("/", "_").replace(".", "p")
    return osp.join(_split_dir(cfg, split_id), f"anchor_{name}")


def shared_lim_dir(cfg: CN, split_id: int) -> str:
    """``<data.save_dir>/split_<k>/stage_lim``: the LIM stage shared by the anchors of a split."""
    return osp.join(_split_dir(cfg, split_id), "stage_lim")


def _stage_checkpoint(cfg: CN, stage_dir: str, trains: bool = True) -> str:
    return resume.stage_checkpoint(cfg, stage_dir, trains)


def _anchor_finished(cfg: CN, split_id: int, ratio: float, anchor_cfg: CN) -> bool:
    """Whether the anchor's final checkpoint loads and its results.json exists.

    Raises:
        ConfigError: the anchor was trained with another config than ``anchor_cfg`` (the config its
            last stage trains with).
    """
    return resume.stage_finished(anchor_checkpoint(cfg, split_id, ratio),
                                 osp.join(anchor_dir(cfg, split_id, ratio), "results.json"),
                                 config_fingerprint(anchor_cfg))


def _recipe(variant: str) -> Tuple[str, ...]:
    """Stages of ``jbim.stage all`` for a variant: him / lim when it has them, joint when both."""
    from jbim_reid.models import VARIANTS

    parts = tuple(p for p in ("him", "lim") if p in VARIANTS[variant])
    return parts + ("joint",) if len(parts) == 2 else parts


def anchor_checkpoint(cfg: CN, split_id: int, ratio: float) -> str:
    """Final checkpoint of an anchor model: its joint stage (or its only stage for him / lim variants).

    Args:
        cfg (CfgNode): config.
        split_id (int): split.
        ratio (float): anchor ratio.

    Returns:
        str: ``<anchor_dir>/stage_<last stage>/model/model.pth.tar-<epoch>``.
    """
    last = _recipe(cfg.jbim.variant)[-1]
    trains = last != "joint" or cfg.jbim.variant == "jbim"  # him_lim's joint stage only concatenates
    return _stage_checkpoint(cfg, osp.join(anchor_dir(cfg, split_id, ratio), f"stage_{last}"), trains)


def _override(cfg: CN, *pairs: Any) -> CN:
    """A frozen copy of ``cfg`` with ``KEY, VALUE, ...`` pairs merged (yacs checks keys and types)."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.merge_from_list(list(pairs))
    cfg.freeze()
    return cfg


def _log(message: str) -> None:
    print(f"=> [jbim-reid ensemble] {message}", flush=True)


def _train_stage(cfg: CN, get_datamanager: Callable, stage: str, stage_dir: str, variant: str,
                 him_checkpoint: str = "", lim_checkpoint: str = "", trains: bool = True,
                 sr_checkpoint: str = "") -> str:
    """One stage through ``runner.run_or_skip``: skipped when finished, else run or continued."""
    return runner.run_or_skip(cfg, get_datamanager, stage, stage_dir, variant, him_checkpoint, lim_checkpoint,
                              trains, log=_log, sr_checkpoint=sr_checkpoint)


@claims_save_dir  # data.save_dir locked while it runs, a killed run's partial writes removed
def train_anchors(cfg: CN, force_new: bool = False) -> int:
    """``jbim-reid train-anchors``: the staged recipe for every anchor ratio on every split.

    For each split k of ``ensemble.splits`` and anchor m of ``ensemble.anchors``, trains
    ``jbim.stage all`` with ``jbim.ratio = m`` and ``data.split_id = k`` into
    :func:`anchor_dir`. The LIM stage of a split is trained once in :func:`shared_lim_dir` and
    initialises every anchor's joint stage (``ensemble.share_lim``). Finished stages and anchors
    (final checkpoint loads, results.json exists) are skipped and an unfinished stage continues from
    its last checkpoint (``jbim_reid.training.resume``), so re-running the command resumes a killed run;
    an anchor or stage trained with another config stops it (ConfigError naming the keys).

    Args:
        cfg (CfgNode): config (from ``jbim_reid.training.checks.load_config``).
        force_new (bool): ``--force-new``: delete the earlier splits and anchors in data.save_dir once
            every check has passed, and train from the start.

    Returns:
        int: exit code 0.
    """
    cfg = _with_ensemble(cfg)
    if cfg.model.resume:
        raise ConfigError("model.resume is not supported by train-anchors (finished stages and "
                                 "anchors are skipped instead); leave it empty")
    if cfg.jbim.stage_epochs.get("plain", 0):
        raise ConfigError("jbim.stage_epochs.plain: train-anchors has no stage plain; train the plain model "
                          "once (jbim-reid train ... jbim.stage plain) and give its checkpoint as jbim.init_from")
    if cfg.test.evaluate:
        raise ConfigError("test.evaluate is True: train-anchors trains; evaluate the anchors with "
                                 "`jbim-reid ensemble` instead")
    anchors = _anchors(cfg)
    splits = resolve_splits(cfg)
    checks.check_training(cfg, stage="all")
    checks.check_imagenet_weights(cfg)  # before any stage sr runs, so offline it stops at once
    checks.check_weight_files(cfg, stage="all")
    if force_new:
        clear_earlier_run(cfg.data.save_dir)
    variant = cfg.jbim.variant
    recipe = _recipe(variant)
    share_lim = bool(cfg.ensemble.share_lim) and "joint" in recipe
    _log(f"train-anchors: {len(splits)} split(s) {splits} x {len(anchors)} anchor(s) {list(anchors)}, "
         f"variant {variant}, stages {(['sr'] if 'him' in recipe else []) + list(recipe)}, "
         f"into '{cfg.data.save_dir}'")
    for i, split in enumerate(splits, 1):
        split_cfg = _override(cfg, "data.split_id", split)
        cache = {}

        def get_datamanager(split_cfg=split_cfg, cache=cache):
            # one datamanager per split, built only when some stage of the split still has to train
            if "dm" not in cache:
                cache["dm"] = runner.build_datamanager(split_cfg)
                checks.check_train_loader(split_cfg, cache["dm"])
            return cache["dm"]

        # the anchors set jbim.ratio themselves; the recipe decides the triplet (and, for a finished
        # anchor, the config its checkpoint must have been trained with)
        split_cfg = runner.resolve_and_log_recipe(split_cfg, get_datamanager(), keys=("cross_stream_triplet",))
        pending = [m for m in anchors.values()
                   if not _anchor_finished(cfg, split, m, _anchor_cfg(split_cfg, cfg, split, m))]
        lim_checkpoint = ""
        if share_lim and pending:
            first = next(iter(anchors.values()))
            _log(f"split {split} ({i}/{len(splits)}): LIM stage trained once (synthetic-LR stream at "
                 f"m = {anchor_label(first)}) and reused by all {len(anchors)} anchors")
            lim_checkpoint = _train_stage(_override(split_cfg, "jbim.ratio", first), get_datamanager, "lim",
                                          shared_lim_dir(cfg, split), "lim")
        for j, (label, ratio) in enumerate(anchors.items(), 1):
            final = anchor_checkpoint(cfg, split, ratio)
            where = f"split {split} ({i}/{len(splits)}), anchor {label} ({j}/{len(anchors)})"
            if ratio not in pending:
                _log(f"{where}: '{final}' exists, skipped")
                continue
            _log(f"{where}: training")
            folder = anchor_dir(cfg, split, ratio)
            anchor_cfg = _anchor_cfg(split_cfg, cfg, split, ratio)
            checkpoints = {"lim": lim_checkpoint} if share_lim else {}
            for part in recipe:
                if part in checkpoints:
                    continue
                if part == "joint":
                    trains = variant == "jbim"
                    checkpoints[part] = _train_stage(anchor_cfg, get_datamanager, "joint",
                                                     osp.join(folder, "stage_joint"), variant,
                                                     checkpoints["him"], checkpoints["lim"], trains)
                elif part == "him":  # stage sr at the anchor's ratio initialises HIM's SR module
                    sr_checkpoint = _train_stage(anchor_cfg, get_datamanager, "sr",
                                                 osp.join(folder, "stage_sr"), "him")
                    checkpoints[part] = _train_stage(anchor_cfg, get_datamanager, part,
                                                     osp.join(folder, "stage_him"), part,
                                                     sr_checkpoint=sr_checkpoint)
                else:
                    checkpoints[part] = _train_stage(anchor_cfg, get_datamanager, part,
                                                     osp.join(folder, f"stage_{part}"), part)
            _copy_results(osp.join(folder, f"stage_{recipe[-1]}"), folder, label, split)
            _log(f"{where}: done, '{checkpoints[recipe[-1]]}'")
    _log("train-anchors finished; evaluate with: jbim-reid ensemble (same config and options)")
    return 0


def _anchor_cfg(split_cfg: CN, cfg: CN, split: int, ratio: float) -> CN:
    """The config an anchor's stages train with: the split's, at the anchor's ratio and folder."""
    return _override(split_cfg, "jbim.ratio", ratio, "data.save_dir", anchor_dir(cfg, split, ratio))


def _copy_results(stage_dir: str, folder: str, label: str, split: int) -> None:
    """``<anchor_dir>/results.json``: the last stage's results plus the anchor and split."""
    resume.promote_results(stage_dir, folder, {"anchor": label, "split_id": split})


def _evaluate_anchor(cfg: CN, datamanager, checkpoint: str, target: str) -> Dict[str, Any]:
    """``JBIMEngine.last_results[target]`` of one checkpoint (test only)."""
    import torch
    import torchreid

    from jbim_reid.config import engine_kwargs, engine_run_kwargs, optimizer_kwargs
    from jbim_reid.engines import JBIMEngine
    from jbim_reid.models import load_jbim_checkpoint

    model = load_jbim_checkpoint(checkpoint)
    use_gpu = bool(cfg.use_gpu) and torch.cuda.is_available()
    if use_gpu:
        model = model.cuda()
    optimizer = torchreid.optim.build_optimizer(model, **optimizer_kwargs(cfg))
    engine = JBIMEngine(datamanager, model, optimizer, **{**engine_kwargs(cfg), "stage": "joint",
                                                          "use_gpu": use_gpu})
    engine.run(**{**engine_run_kwargs(cfg), "test_only": True, "visrank": False})
    return engine.last_results[target]


def _checkpoints(cfg: CN, splits: List[int], anchors: Dict[str, float]) -> Dict[int, Dict[str, str]]:
    """split -> anchor label -> final checkpoint; every file must exist."""
    table = {s: {label: anchor_checkpoint(cfg, s, m) for label, m in anchors.items()} for s in splits}
    missing = [path for row in table.values() for path in row.values() if not osp.isfile(path)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise FileNotFoundError(f"Anchor checkpoint not found: '{missing[0]}'{more}; run `jbim-reid "
                                "train-anchors` with the same config and options first")
    return table


def _percent(cmc, mAP: float) -> Dict[str, float]:
    """``reports.rank_results`` rounded to 4 decimals, as ``runner.write_results`` writes them."""
    from jbim_reid.evaluation.reports import rank_results

    return {key: round(value, 4) for key, value in rank_results(cmc, mAP).items()}


def _mean_cmc(curves: List[np.ndarray]) -> np.ndarray:
    """Mean of per-split CMC curves, cut to the shortest."""
    length = min(len(c) for c in curves)
    return np.mean([np.asarray(c, dtype=np.float64)[:length] for c in curves], axis=0)


def _evaluate_split(cfg: CN, split: int, anchors: Dict[str, float], checkpoints: Dict[str, str],
                    schemes: Tuple[str, ...], subsets: List[Tuple[str, ...]], target: str
                    ) -> Tuple[Dict[str, Dict[str, dict]], Dict[str, np.ndarray]]:
    """Every anchor of one split alone and fused.

    Returns:
        tuple: ``{'anchors' | scheme: {name: result in percent}}`` and ``{plot label: CMC}``.
    """
    from jbim_reid.evaluation.ensemble import evaluate_subsets

    split_cfg = _override(cfg, "data.split_id", split)
    datamanager = runner.build_datamanager(split_cfg)
    results = {}
    for j, (label, path) in enumerate(checkpoints.items(), 1):
        _log(f"ensemble: split {split}, anchor {label} ({j}/{len(checkpoints)}): '{path}'")
        results[label] = _evaluate_anchor(split_cfg, datamanager, path, target)
        if results[label].get("q_hw") is None or results[label].get("g_hw") is None:
            raise ValueError(f"Dataset '{target}' gives no genuine image sizes ('hw'): the ensemble "
                             "weights need a jbim_reid cross-resolution dataset")
    entry = {"anchors": {label: _percent(res["cmc"], res["mAP"]) for label, res in results.items()}}
    curves = {label: res["cmc"] for label, res in results.items()}
    full = " + ".join(anchors)
    for scheme in schemes:
        fused = evaluate_subsets(results, anchors, sigma=cfg.ensemble.sigma, scheme=scheme,
                                 max_rank=max(50, *cfg.test.ranks), subsets=subsets)
        entry[scheme] = {name: _percent(res["cmc"], res["mAP"]) for name, res in fused.items()}
        if len(anchors) > 1:
            curves[f"all anchors, {scheme}"] = fused[full]["cmc"]
    return entry, curves


def _markdown(cfg: CN, target: str, splits: List[int], summary: Dict[str, Dict[str, dict]]) -> str:
    """``ensemble.md``: one row per anchor, then one per fused subset and weighting."""
    from jbim_reid.evaluation.reports import markdown_table

    rows = dict(summary["anchors"])
    for scheme in (g for g in summary if g != "anchors"):
        rows.update({f"{name} ({scheme})": value for name, value in summary[scheme].items() if " + " in name})
    return (f"# Multi-resolution ensemble on {target}\n\n"
            f"Mean ± std over {len(splits)} split(s) {splits}, in percent; sigma = {cfg.ensemble.sigma}. "
            "A name alone is that anchor's model; 'a + b (gaussian)' fuses their distances with "
            "resolution weights, '(uniform)' with equal weights.\n\n" + markdown_table(rows))


@claims_save_dir  # ensemble.json / .md / .png: not beside a training run writing the same folder
def run_ensemble(cfg: CN) -> int:
    """``jbim-reid ensemble``: evaluate the anchors of every split alone and fused, over splits.

    Needs the checkpoints of ``jbim-reid train-anchors`` (same config). Writes in ``data.save_dir``:
    ``ensemble.json`` (per split and mean ± std over splits, for each anchor alone and each subset x
    weighting: rank1/5/10/20 and mAP in percent; settings; config), ``ensemble.md`` (markdown table)
    and, with ``ensemble.save_plots``, ``ensemble_cmc.png`` (mean CMC of each anchor and of all anchors
    fused).

    Args:
        cfg (CfgNode): config (from ``jbim_reid.training.checks.load_config``).

    Returns:
        int: exit code 0.
    """
    from jbim_reid.evaluation.ensemble import anchor_subsets
    from jbim_reid.evaluation.reports import summarize_splits, write_json

    cfg = _with_ensemble(cfg)
    anchors = _anchors(cfg)
    schemes = _schemes(cfg)
    if cfg.ensemble.subsets not in SUBSET_MODES:
        raise ConfigError(f"Unknown ensemble.subsets '{cfg.ensemble.subsets}'; expected one of "
                                 f"{list(SUBSET_MODES)}")
    target = _target(cfg)
    splits = resolve_splits(cfg)
    checkpoints = _checkpoints(cfg, splits, anchors)
    subsets = anchor_subsets(list(anchors)) if cfg.ensemble.subsets == "all" else [tuple(anchors)]
    per_split, curves = {}, {}  # curves: plot label -> CMC per split
    for i, split in enumerate(splits, 1):
        _log(f"ensemble: split {split} ({i}/{len(splits)})")
        per_split[str(split)], split_curves = _evaluate_split(cfg, split, anchors, checkpoints[split],
                                                              schemes, subsets, target)
        for label, cmc in split_curves.items():
            curves.setdefault(label, []).append(cmc)
    first = per_split[str(splits[0])]
    summary = {group: {name: summarize_splits([per_split[str(s)][group][name] for s in splits])
                       for name in first[group]} for group in first}
    report = {
        "dataset": target,
        "settings": {"anchors": anchors, "sigma": cfg.ensemble.sigma, "weighting": list(schemes),
                     "subsets": cfg.ensemble.subsets, "splits": splits,
                     "checkpoints": {str(s): row for s, row in checkpoints.items()}},
        "splits": per_split,
        "summary": summary,
        "config": yaml.safe_load(cfg.dump()),
    }
    save_dir = cfg.data.save_dir
    json_path = write_json(report, osp.join(save_dir, "ensemble.json"))
    markdown = _markdown(cfg, target, splits, summary)
    md_path = osp.join(save_dir, "ensemble.md")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(markdown)
    print(markdown)
    _log(f"wrote '{json_path}' and '{md_path}'")
    if cfg.ensemble.save_plots:
        from jbim_reid.evaluation.plots import plot_cmc_comparison

        png = plot_cmc_comparison({name: _mean_cmc(c) for name, c in curves.items()},
                                  osp.join(save_dir, "ensemble_cmc.png"), max_rank=max(cfg.test.ranks),
                                  title=f"CMC on {target}, mean of {len(splits)} split(s)")
        _log(f"wrote '{png}'")
    return 0


ENSEMBLE_COMMANDS: Dict[str, tuple] = {  # subcommand -> (help, function(cfg)) or (help, function(args), add_arguments)
    "train-anchors": ("train one JBIM model per ensemble.anchors ratio on every ensemble.splits split",
                      training_command(train_anchors), add_training_arguments),
    "ensemble": ("evaluate the anchor models alone and fused over splits; writes ensemble.json / .md",
                 run_ensemble),
}
