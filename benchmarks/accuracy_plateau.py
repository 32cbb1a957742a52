"""Plateau search of the accuracy benchmark (E vs 1.5 E epochs, paired over splits) and the verdict
on the paper's ordering of methods."""
from typing import Callable, Dict, List, Mapping, Sequence, Tuple

from accuracy_methods import METHODS

from jbim_reid.evaluation.reports import paired_gain

__all__ = ["PLATEAU_GROWTH", "PLATEAU_METRICS", "ORDERING", "next_epochs", "plateau_step", "plateau_search",
           "ordering_verdict"]

PLATEAU_GROWTH = 1.5  # --plateau compares E with round(1.5 E) epochs
ORDERING = (("jbim", "him_only"), ("jbim", "lim_only"), ("jbim", "plain"), ("him_only", "plain"),
            ("lim_only", "plain"))  # (above, below) pairs of the paper's ordering (Table 3)


def next_epochs(epochs: int) -> int:
    """The plateau search's next epoch count: ``round(1.5 E)``, at least ``E + 1``."""
    return max(epochs + 1, int(round(epochs * PLATEAU_GROWTH)))


PLATEAU_METRICS = ("rank1", "mAP")  # a step keeps going while either rises beyond its noise


def plateau_step(before: Mapping[str, Sequence[float]], after: Mapping[str, Sequence[float]]) -> dict:
    """Paired comparison of E and 1.5 E epochs on the same splits, per metric of ``PLATEAU_METRICS``.

    The splits differ in difficulty far more than one model differs from the next (CAVIAR: 3-4
    rank-1 points), so comparing the mean gain with the spread over splits hides real gains.
    Pairing removes the split's difficulty: ``gain`` is the mean per-split difference and ``noise``
    its standard error (std of the differences / sqrt(n); 0 with one split). 1.5 E ``rises`` when
    the gain of rank-1 or of mAP exceeds its noise.

    Args:
        before, after (mapping): metric name -> value per split, the splits in the same order.

    Returns:
        dict: per metric ``{mean, next_mean, gain, noise, diffs}`` and ``rises`` (bool).
    """
    try:
        step: dict = {m: paired_gain(before[m], after[m]) for m in PLATEAU_METRICS}
    except ValueError as err:
        raise ValueError(f"plateau step: {err}") from None
    step["rises"] = any(step[m]["gain"] > step[m]["noise"] for m in PLATEAU_METRICS)
    return step


def plateau_search(evaluate: Callable[[int], Mapping[str, Sequence[float]]], start: int, max_epochs: int,
                   progress: Callable[[str], None] = print, ladder: Sequence[int] = ()) -> dict:
    """Epochs E at which 1.5 E epochs no longer raise rank-1 or mAP beyond noise (``plateau_step``).

    Args:
        evaluate (callable): epochs -> ``{"rank1": [...], "mAP": [...]}`` per split, same split order
            for every epoch count (trains or reads records).
        start (int): first epoch count E0.
        max_epochs (int): the search stops at the largest E whose 1.5 E would exceed this.
        ladder (sequence of int): the epoch counts to step through instead of E, 1.5 E, ... (``start``
            and ``max_epochs`` are then its first and last).

    Returns:
        dict: ``epochs`` (accepted E), ``status`` (``plateau`` or ``max_epochs``), ``rule`` and
        ``trace``, one ``{epochs, next_epochs, rank1: {...}, mAP: {...}, rises}`` per step.
    """
    epochs, trace = (ladder[0], []) if ladder else (start, [])
    rule = (f"paired per-split gain of the next of {list(ladder)} epochs" if ladder else
            "paired per-split gain of 1.5x epochs") + " vs its standard error, rank-1 or mAP"
    while True:
        bigger = (ladder[ladder.index(epochs) + 1] if epochs != ladder[-1] else max_epochs + 1) if ladder \
            else next_epochs(epochs)
        if bigger > max_epochs:
            return {"epochs": epochs, "status": "max_epochs", "rule": rule, "trace": trace}
        step = {"epochs": epochs, "next_epochs": bigger, **plateau_step(evaluate(epochs), evaluate(bigger))}
        trace.append(step)
        progress(f"  plateau: {epochs} -> {bigger} epochs: " + "; ".join(
            f"{m} {step[m]['mean']:.1f} -> {step[m]['next_mean']:.1f} (paired gain {step[m]['gain']:+.1f}"
            f" ± {step[m]['noise']:.1f})" for m in PLATEAU_METRICS) + ("" if step["rises"] else ": plateau"))
        if not step["rises"]:
            return {"epochs": epochs, "status": "plateau", "rule": rule, "trace": trace}
        epochs = bigger


def ordering_verdict(summaries: Dict[str, dict], metric: str = "rank1") -> Tuple[str, List[dict]]:
    """Whether the paper's ordering holds, pair by pair, with the margin against the split spread.

    A pair (A above B) is ``clear`` when mean_A - mean_B exceeds the larger of the two standard
    deviations over splits, ``within spread`` when it is positive but not larger, ``tied`` when it
    is 0 and ``reversed`` when it is negative.

    Args:
        summaries (dict): method key -> summary of :func:`jbim_reid.evaluation.reports.summarize_splits`.
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
