"""``jbim.recipe``: the JBIM recipe resolved from the training data (``auto``), the paper's, or as written.

``auto`` measures two properties of the training split, never its name, and sets the ``jbim.*`` keys
that the project's accuracy benchmark found to decide JBIM's gain (docs/RESULTS.md):

- images per identity and camera (median over the (pid, camid) groups of the training set) ->
  ``jbim.cross_stream_triplet``;
- the genuine size ratio of each training LR image to its identity's HR images
  (``CrossResolutionDataset.identity_lr_ratios``), snapped to the nearest level 1/k ->
  ``jbim.ratio`` / ``jbim.train_ratios``.

Keys given in the config file or on the command line win over ``auto`` (and ``paper``), key by key.
The resolution (mode, chosen keys, measured statistics, overridden keys) is attached to the config
(:func:`recipe_record`) and written to ``results.json`` and every checkpoint.
"""
import math
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import yaml
from yacs.config import CfgNode as CN

from jbim_reid.training.fingerprint import FINGERPRINT_ENTRY, config_fingerprint

__all__ = ["RECIPES", "RECIPE_KEYS", "PAPER_RECIPE", "measure_training_data", "choose_recipe",
           "resolve_recipe", "recipe_record", "explicit_keys", "set_explicit_keys", "describe", "run_info"]

RECIPES = ("auto", "paper", "custom")
RECIPE_KEYS = ("ratio", "train_ratios", "cross_stream_triplet")  # the jbim.* keys a recipe sets
PAPER_RECIPE = {"ratio": 0.5, "train_ratios": [], "cross_stream_triplet": False}

# A per-stream triplet needs two images of one identity in one stream. With one image per identity
# and camera (MLR-VIPeR: 1) its positives are copies of one image, and JBIM with it was 9.3 ± 2.0
# rank-1 below plain torchreid + random resolution; with the cross-stream triplet +1.4 ± 0.9 (3 splits).
# With 10 per identity and camera (CAVIAR) the cross-stream triplet cost 0.6 ± 1.5 rank-1 (5 splits).
MAX_IMAGES_FOR_CROSS_STREAM = 2
# Levels 1/k the genuine LR ratios snap to (nearest in log scale), and the share of the training LR
# images a level needs to count. MLR-VIPeR's probes sit at 1/2, 1/3, 1/4 (a third each): training at
# those ratios put JBIM +3.3 ± 1.5 rank-1 above the cross-stream triplet at m = 1/2 alone, +4.6 ± 0.8 above
# plain + random resolution (3 splits; random resolution in its place was level, +4.5 ± 1.2). CAVIAR's
# genuine LR sits at r ≈ 0.6, one level (1/2): several lower training ratios cost it 2.4 ± 1.7 rank-1
# and m matched to r cost 1.5 ± 1.1 (5 splits), so one level keeps the paper's m = 1/2.
MAX_LEVEL_K = 8
MIN_LEVEL_SHARE = 0.1

_RECORD = "_jbim_recipe"  # where the record rides on a CfgNode (an attribute, not a config key)
_EXPLICIT = "_jbim_explicit_keys"


def _level_label(k: int) -> str:
    return "1" if k == 1 else f"1/{k}"


def measure_training_data(dataset) -> Dict[str, Any]:
    """The statistics ``auto`` decides on, from a ``CrossResolutionDataset``'s training split.

    Returns:
        dict: ``images_per_id_camera`` (median), ``num_train``, ``num_train_lr``, ``lr_ratio_median``
        (None without LR or HR images of one identity) and ``lr_ratio_levels`` (level label -> share of
        the training LR images whose ratio is nearest to it).
    """
    groups: Dict[Tuple[int, int], int] = {}
    for _, pid, camid, *_ in dataset.train:
        groups[(pid, camid)] = groups.get((pid, camid), 0) + 1
    ratios = dataset.identity_lr_ratios()
    levels: Dict[str, float] = {}
    if ratios.size:
        ks = np.arange(1, MAX_LEVEL_K + 1)
        nearest = ks[np.argmin(np.abs(np.log(ratios)[:, None] + np.log(ks)[None, :]), axis=1)]
        for k in sorted(set(nearest.tolist())):
            levels[_level_label(k)] = round(float(np.mean(nearest == k)), 4)
    return {
        "images_per_id_camera": float(np.median(list(groups.values()))) if groups else 0.0,
        "num_train": len(dataset.train),
        "num_train_lr": sum(1 for item in dataset.train if item[0] in dataset.lr_paths),
        "lr_ratio_median": round(float(np.median(ratios)), 4) if ratios.size else None,
        "lr_ratio_levels": levels,
    }


def choose_recipe(measured: Mapping[str, Any]) -> Dict[str, Any]:
    """The ``jbim.*`` values ``auto`` picks for ``measured`` (:func:`measure_training_data`)."""
    chosen = dict(PAPER_RECIPE)
    chosen["cross_stream_triplet"] = 0 < measured["images_per_id_camera"] <= MAX_IMAGES_FOR_CROSS_STREAM
    levels = [1 / int(label.split("/")[1]) for label, share in measured["lr_ratio_levels"].items()
              if "/" in label and share >= MIN_LEVEL_SHARE]
    if len(levels) >= 2 and min(levels) < 0.5:
        chosen["train_ratios"] = sorted(levels, reverse=True)
    return chosen


def explicit_keys(cfg: CN) -> frozenset:
    """The dotted keys given in the config file or on the command line (``load_config`` records them)."""
    return cfg.__dict__.get(_EXPLICIT, frozenset())


def set_explicit_keys(cfg: CN, file_cfg: Optional[Mapping], opts: Sequence[str]) -> None:
    """Record which keys the YAML file (its parsed mapping) and the ``KEY VALUE`` options set."""
    def flatten(node: Mapping, prefix: str = "") -> Iterable[str]:
        for key, value in node.items():
            if isinstance(value, Mapping):
                yield from flatten(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"

    keys = set(flatten(file_cfg or {})) | set(list(opts)[0::2])
    cfg.__dict__[_EXPLICIT] = frozenset(keys)


def recipe_record(cfg: CN) -> Optional[Dict[str, Any]]:
    """The resolution :func:`resolve_recipe` attached to ``cfg`` (None before it ran)."""
    return cfg.__dict__.get(_RECORD)


def resolve_recipe(cfg: CN, dataset=None, keys: Sequence[str] = RECIPE_KEYS) -> CN:
    """``cfg`` with ``jbim.recipe`` resolved: a frozen copy carrying its :func:`recipe_record`.

    Args:
        cfg (CfgNode): the loaded config (``load_config`` recorded its explicit keys).
        dataset: the training ``CrossResolutionDataset`` (needed by ``auto`` only).
        keys (sequence of str): the recipe keys to resolve (``train-anchors`` sets the ratio itself).
    """
    mode = cfg.jbim.recipe
    measured: Dict[str, Any] = {}
    if mode == "auto":
        measured = measure_training_data(dataset)
        proposed = choose_recipe(measured)
    elif mode == "paper":
        proposed = dict(PAPER_RECIPE)
    else:
        proposed = {}
    proposed = {k: v for k, v in proposed.items() if k in keys}
    given = explicit_keys(cfg)
    overridden = {k: _plain(cfg.jbim[k]) for k in proposed if f"jbim.{k}" in given}
    chosen = {k: v for k, v in proposed.items() if k not in overridden}
    out = cfg.clone()
    out.defrost()
    for key, value in chosen.items():
        out.jbim[key] = value
    out.freeze()
    out.__dict__[_RECORD] = {"mode": mode, "chosen": chosen, "measured": measured,
                             "overridden": {k: {"given": v, "auto": proposed[k]} for k, v in overridden.items()}}
    return out


def run_info(cfg: CN) -> dict:
    """How a model was trained beyond its architecture, for its checkpoints and ``results.json``:
    the resolved recipe, ``jbim.init_from`` and the config it was trained with
    (``training.fingerprint.config_fingerprint``, which binds a save dir's stages to their config)."""
    info = {"init_from": cfg.jbim.init_from, FINGERPRINT_ENTRY: config_fingerprint(cfg)}
    if recipe_record(cfg) is not None:
        info["recipe"] = recipe_record(cfg)
    return info


def describe(record: Mapping[str, Any]) -> List[str]:
    """Log lines for a record: the measured statistics, each chosen key, each key given that wins."""
    lines = [f"jbim.recipe {record['mode']}"]
    if record["measured"]:
        lines.append("measured on the training split: " + yaml.safe_dump(record["measured"],
                                                                         default_flow_style=True).strip())
    lines += [f"jbim.{k} {_fmt(v)} (chosen by jbim.recipe {record['mode']})" for k, v in record["chosen"].items()]
    lines += [f"jbim.{k} {_fmt(v['given'])} as given in the config (jbim.recipe {record['mode']} would choose "
              f"{_fmt(v['auto'])})" for k, v in record["overridden"].items()]
    return lines


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def _fmt(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, float) and not math.isclose(value, round(value, 4)):
        return f"{value:.4f}"
    return str(value)
