"""Results over splits: mean ± std, markdown tables and atomic JSON files.

A *result* is a dict of percentages ``{'rank1', 'rank5', 'rank10', 'rank20', 'mAP'}`` (see
:func:`rank_results`); a *summary* of several splits is
``{'num_splits': n, 'mean': {metric: value}, 'std': {metric: value}}`` (see :func:`summarize_splits`).

Examples::
    >>> cmc, mAP = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids)
    >>> per_split = [rank_results(cmc, mAP)]  # one per split
    >>> summary = summarize_splits(per_split)
    >>> print(markdown_table({'JBIM': summary}))
    >>> write_json({'JBIM': summary}, 'log/ensemble.json')
"""
import json
from pathlib import Path
from typing import Any, Dict, Mapping, Sequence

import numpy as np

from jbim_reid.utils.fileio import atomic_write

__all__ = ["ACCURACY_METHODS", "METRICS", "rank_results", "summarize_splits", "paired_gain", "markdown_table",
           "summary_cell", "write_json", "read_json"]

METRICS = ("rank1", "rank5", "rank10", "rank20", "mAP")  # keys of a result, all in percent
_HEADERS = {"rank1": "Rank-1", "rank5": "Rank-5", "rank10": "Rank-10", "rank20": "Rank-20", "mAP": "mAP"}
# the row labels of benchmarks/accuracy.py and benchmarks/report.py
ACCURACY_METHODS = {  # benchmarks/accuracy.py --methods key -> row label (table and run order)
    "plain": "plain torchreid",
    "plain_resaug": "plain torchreid + random resolution",
    "bicubic": "bicubic + re-id",
    "lim_only": "LIM only",
    "him_only": "HIM only",
    "him_lim": "HIM+LIM independent",
    "jbim": "JBIM",
    "jbim_resaug": "JBIM + random resolution",
    "ensemble": "JBIM 3-anchor ensemble",
    "plain_time_matched": "plain torchreid, JBIM's training time",
    # diagnosis variants: the cross-stream triplet extension, several synthetic-LR ratios per image, the
    # training LR's genuine ratio, bicubic upscaling in place of the learned SR
    "lim_only_xstream": "LIM only + cross-stream triplet",
    "him_only_xstream": "HIM only + cross-stream triplet",
    "jbim_xstream": "JBIM + cross-stream triplet",
    "jbim_multiratio": "JBIM, train ratios 1/2, 1/3, 1/4",
    "jbim_xstream_resaug": "JBIM + cross-stream triplet + random resolution",
    "jbim_xstream_multiratio": "JBIM + cross-stream triplet, train ratios 1/2, 1/3, 1/4",
    "ensemble_xstream": "JBIM 3-anchor ensemble + cross-stream triplet",
    "jbim_genuine": "JBIM, ratio m = the training LR's genuine ratio",
    "jbim_nosr": "JBIM, bicubic in place of SR (no L_sr)",
    # the recipe jbim.recipe auto resolves to on the split; and it started from plain + random resolution
    "jbim_auto": "JBIM, jbim.recipe auto",
    "jbim_warm": "JBIM auto, warm-started from plain + random resolution",
}


def rank_results(cmc, mAP: float) -> Dict[str, float]:
    """Percentages of one evaluation from ``evaluate_rank``'s ``(cmc, mAP)`` (fractions in [0, 1]).

    Ranks beyond the CMC's length (galleries smaller than 20) take its last value, as a CMC is
    non-decreasing and reaches its final value once the whole gallery is ranked.

    Args:
        cmc (array-like): CMC curve ``(R,)``, fractions.
        mAP (float): mean average precision, fraction.

    Returns:
        dict: ``{'rank1', 'rank5', 'rank10', 'rank20', 'mAP'}`` in percent.
    """
    cmc = np.asarray(cmc, dtype=np.float64).reshape(-1)
    if cmc.size == 0:
        raise ValueError("cmc is empty: expected a CMC curve with at least one rank")
    result = {f"rank{k}": 100.0 * float(cmc[min(k, cmc.size) - 1]) for k in (1, 5, 10, 20)}
    result["mAP"] = 100.0 * float(mAP)
    return result


def summarize_splits(results: Sequence[Mapping[str, float]], ddof: int = 0) -> Dict[str, Any]:
    """Mean and standard deviation of each metric over splits.

    Args:
        results (sequence of dict): one result per split (percentages, keys :data:`METRICS`).
        ddof (int, optional): delta degrees of freedom of the std (0: population std, as ``np.std``;
            1: sample std). Default is 0.

    Returns:
        dict: ``{'num_splits': n, 'mean': {metric: float}, 'std': {metric: float}}``.
    """
    if len(results) == 0:
        raise ValueError("results is empty: expected one result dict per split")
    for i, result in enumerate(results):
        missing = [m for m in METRICS if m not in result]
        if missing:
            raise ValueError(f"results[{i}] lacks {missing}; expected keys {list(METRICS)}")
    table = np.array([[float(r[m]) for m in METRICS] for r in results])
    std = np.std(table, axis=0, ddof=ddof) if len(results) > ddof else np.zeros(len(METRICS))
    return {"num_splits": len(results),
            "mean": dict(zip(METRICS, table.mean(axis=0).tolist())),
            "std": dict(zip(METRICS, std.tolist()))}


def paired_gain(before: Sequence[float], after: Sequence[float]) -> Dict[str, Any]:
    """Mean per-split difference ``after - before`` and its standard error.

    Splits differ in difficulty far more than two models on the same split do (CAVIAR: rank-1 std
    over splits 2-5 points), so two methods are compared split by split: ``gain`` is the mean of the
    differences, ``noise`` their standard error (sample std / sqrt(n); 0 with one split).

    Args:
        before, after (sequence of float): one value per split, the splits in the same order.

    Returns:
        dict: ``{'gain', 'noise', 'diffs', 'mean', 'next_mean'}``.
    """
    a, b = np.asarray(before, float), np.asarray(after, float)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired_gain needs the same non-empty splits on both sides (got {a.size} and "
                         f"{b.size} values)")
    diffs = b - a
    noise = diffs.std(ddof=1) / np.sqrt(diffs.size) if diffs.size > 1 else 0.0
    return {"gain": float(diffs.mean()), "noise": float(noise), "diffs": [float(d) for d in diffs],
            "mean": float(a.mean()), "next_mean": float(b.mean())}


def summary_cell(entry: Mapping, metric: str, digits: int = 1) -> str:
    """One table cell: ``mean ± std`` of a summary (the mean alone for one split), or a single result's value."""
    if "mean" in entry:
        mean, std = entry["mean"][metric], entry["std"][metric]
        if entry.get("num_splits") == 1:  # one split has no spread: a "± 0.0" would claim one
            return f"{mean:.{digits}f}"
        return f"{mean:.{digits}f} ± {std:.{digits}f}"
    return f"{entry[metric]:.{digits}f}"


def markdown_table(rows: Mapping[str, Mapping], metrics: Sequence[str] = METRICS, digits: int = 1) -> str:
    """A markdown table, one row per method (or anchor subset), one column per metric.

    Args:
        rows (dict): method name -> summary (from :func:`summarize_splits`, shown as mean ± std;
            the mean alone for one split) or single result (percentages).
        metrics (sequence of str, optional): columns, a subset of :data:`METRICS`. Default is all.
        digits (int, optional): decimals. Default is 1.

    Returns:
        str: the table, ending with a newline.
    """
    if not rows:
        raise ValueError("rows is empty: expected at least one method")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"Unknown metrics {unknown}; expected a subset of {list(METRICS)}")
    lines = ["| method | " + " | ".join(_HEADERS[m] for m in metrics) + " |",
             "| --- |" + " --- |" * len(metrics)]
    for name, entry in rows.items():
        lines.append(f"| {name} | " + " | ".join(summary_cell(entry, m, digits) for m in metrics) + " |")
    return "\n".join(lines) + "\n"


def _to_builtin(value):
    """``json.dump`` fallback for numpy scalars and arrays."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def write_json(obj: Any, path) -> Path:
    """Writes ``obj`` as JSON atomically (``jbim_reid.utils.fileio.atomic_write``), mode 0666 minus the umask.

    An existing file at ``path`` is left untouched when serialisation or writing fails.

    Args:
        obj: JSON-serialisable object (numpy scalars and arrays are converted).
        path (str or Path): destination; its folder is created when missing.

    Returns:
        Path: ``path``.
    """
    data = (json.dumps(obj, indent=2, default=_to_builtin) + "\n").encode("utf-8")
    return atomic_write(path, lambda f: f.write(data))


def read_json(path) -> Any:
    """Reads a JSON file written by :func:`write_json`.

    Args:
        path (str or Path): the file.

    Returns:
        the decoded object.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"JSON file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
