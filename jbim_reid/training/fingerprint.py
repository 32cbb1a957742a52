"""The fingerprint of a training run: the config keys that shape its model and its training.

Every stage checkpoint and ``results.json`` records :func:`config_fingerprint` of the config the stage trained
with (through ``training.recipe.run_info``): the resolved config (after ``jbim.recipe``), with the stage's
own epochs (``runner.stage_config``). A finished stage is skipped, and an unfinished one continued, only
when the current config has the same values (``resume``): a run stays bound to its config.

Every key counts except those listed in :data:`OPERATIONAL_KEYS`, so that a key added to the config
later counts unless it is listed there.
"""
import fnmatch
import hashlib
import json
from typing import Any, Dict, List, Mapping, Tuple

from yacs.config import CfgNode as CN

__all__ = ["OPERATIONAL_KEYS", "FINGERPRINT_ENTRY", "fingerprint_keys", "config_fingerprint",
           "fingerprint_differences"]

FINGERPRINT_ENTRY = "config_fingerprint"  # where checkpoints and results.json keep the record

OPERATIONAL_KEYS = (  # dotted keys (fnmatch patterns) that do not change what is trained
    # where the data and the outputs live, how much of the outputs is kept, how bad images are reported
    "data.root", "data.save_dir", "mlr.cache_dir", "data.skip_bad_images",
    "train.checkpoint_freq", "train.keep_checkpoints",
    # what is printed and tested, not what is learned (the ensemble evaluates finished anchors)
    "train.print_freq", "test.*", "data.targets", "ensemble.*",
    # how the same recipe runs on the machine: device, processes, loader workers, precision, layout
    "use_gpu", "data.workers", "train.dist_*", "train.sync_bn", "train.amp", "train.channels_last",
    # which stage a command runs and where it continues from, not what the stage trains
    "jbim.stage", "model.resume", "train.start_epoch",
    # set through other keys, which are recorded: a stage's epochs become train.max_epoch / stepsize
    # (runner.stage_config), and jbim.recipe resolves into jbim.ratio / train_ratios / cross_stream_triplet
    "jbim.stage_epochs.*", "jbim.recipe",
)


def _leaves(node: CN, prefix: str = "") -> Dict[str, Any]:
    out = {}
    for key, value in node.items():
        if isinstance(value, CN):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _operational(key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in OPERATIONAL_KEYS)


def fingerprint_keys(cfg: CN) -> Dict[str, Any]:
    """``{dotted key: value}`` of every key of ``cfg`` that shapes the model or its training, as plain
    JSON values (tuples become lists), sorted by key."""
    keys = {k: v for k, v in _leaves(cfg).items() if not _operational(k)}
    return json.loads(json.dumps(dict(sorted(keys.items()))))


def config_fingerprint(cfg: CN) -> Dict[str, Any]:
    """``{'fingerprint': sha256 prefix, 'keys': fingerprint_keys(cfg)}``, the record of a run's config."""
    keys = fingerprint_keys(cfg)
    digest = hashlib.sha256(json.dumps(keys, sort_keys=True).encode("utf-8")).hexdigest()
    return {"fingerprint": digest[:16], "keys": keys}


def fingerprint_differences(recorded: Any, current: Mapping[str, Any]) -> List[Tuple[str, Any, Any]]:
    """``(key, recorded value, current value)`` for each recorded key whose value differs now.

    Args:
        recorded: the :func:`config_fingerprint` record of a checkpoint; None (a checkpoint of an older
            version, which records none) gives no differences, so such runs continue as before.
        current: :func:`config_fingerprint` of the current config.

    Keys recorded but no longer in the fingerprint (removed from the config, or listed as operational
    since), and keys the record lacks (added to the config since, at the default older runs trained
    with), are not compared.
    """
    if not isinstance(recorded, Mapping) or not isinstance(recorded.get("keys"), Mapping):
        return []  # an older run without a record: accepted as before fingerprints were recorded
    now = current["keys"]
    return [(key, value, now[key]) for key, value in sorted(recorded["keys"].items())
            if key in now and now[key] != value]
