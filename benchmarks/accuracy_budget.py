"""Budget planner of the accuracy benchmark: splits and epochs that fit ``--budget-min`` minutes."""
from typing import Dict, List, Mapping, Sequence

import numpy as np
from accuracy_methods import stage_counts

from jbim_reid.evaluation.reports import read_json

__all__ = ["COSTS", "DATASET_COST", "STAGE_OVERHEAD_S", "plan_budget", "measured_costs"]

# Seconds per epoch of each stage kind (its one test included) at 128x64, batch 32, on CAVIAR (500
# training images); H100 from docs/BENCHMARKS.md. --budget-min scales by input pixels and by the
# dataset's training items per epoch (MLR-VIPeR: 2.5x CAVIAR); --costs replaces the table by the
# measured figures of an earlier report.
COSTS = {"cuda": {"plain": 1.5, "bicubic": 2.8, "him": 2.9, "lim": 2.0, "joint": 5.0},
         "cpu": {"plain": 6.4, "bicubic": 17.0, "him": 50.0, "lim": 10.0, "joint": 62.0}}
DATASET_COST = {"caviar": 1.0, "mlr_viper": 2.5}  # epoch cost relative to CAVIAR (others: 2.5)
STAGE_OVERHEAD_S = 15.0  # model build, test and checkpoint per trained stage (budget planner)


def plan_budget(budget_min: float, methods: Sequence[str], datasets: Sequence[str],
                costs: Mapping[str, float], max_splits: int, max_epochs: int, min_epochs: int = 2,
                pixels_scale: float = 1.0) -> dict:
    """Splits and epochs that fit ``budget_min`` minutes, from per-epoch costs of each stage kind.

    Epochs first: the most that fit one split of every dataset, at most ``max_epochs``; then as
    many splits as fit at those epochs, at most ``max_splits``.

    Args:
        budget_min (float): wall-clock budget in minutes.
        methods (sequence of str): methods to run (stages they share are counted once per split).
        datasets (sequence of str): dataset names (epoch cost scaled by :data:`DATASET_COST`).
        costs (mapping): stage kind (``plain``, ``bicubic``, ``him``, ``lim``, ``joint``) -> seconds
            per epoch on CAVIAR at the measured input size.
        max_splits, max_epochs (int): upper bounds. ``min_epochs``: below this nothing is planned.
        pixels_scale (float): input pixels relative to the measured size (the cost scales with it).

    Returns:
        dict: ``splits``, ``epochs``, ``estimated_seconds`` and ``seconds_per_split`` (per dataset).

    Raises:
        ValueError: when not even one split at ``min_epochs`` fits.
    """
    counts = stage_counts(methods)
    per_epoch = sum(costs[kind] * count for kind, count in counts.items()) * pixels_scale
    stages = sum(counts.values())

    def split_seconds(dataset: str, epochs: int) -> float:
        return DATASET_COST.get(dataset, 2.5) * per_epoch * epochs + STAGE_OVERHEAD_S * stages

    def all_datasets(epochs: int) -> float:
        return sum(split_seconds(d, epochs) for d in datasets)

    budget = budget_min * 60.0
    fits = [e for e in range(min_epochs, max_epochs + 1) if all_datasets(e) <= budget]
    if not fits:
        raise ValueError(f"--budget-min {budget_min:g}: not even one split of {', '.join(datasets)} at "
                         f"{min_epochs} epochs fits ({all_datasets(min_epochs) / 60:.1f} min estimated)")
    epochs = max(fits)
    splits = max(1, min(max_splits, int(budget // all_datasets(epochs))))
    return {"splits": splits, "epochs": epochs, "estimated_seconds": splits * all_datasets(epochs),
            "seconds_per_split": {d: split_seconds(d, epochs) for d in datasets}}


def measured_costs(report_path: str) -> Dict[str, float]:
    """Per-epoch seconds by stage kind from the stage records of an earlier report (CAVIAR-equivalent).

    Args:
        report_path (str): a JSON report written by this script.

    Returns:
        dict: kind -> median seconds per epoch, divided by the dataset's :data:`DATASET_COST`.
    """
    samples: Dict[str, List[float]] = {}
    for dataset, entry in read_json(report_path).get("datasets", {}).items():
        for split in entry.get("splits", {}).values():
            for name, stage in split.get("stages", {}).items():
                if not stage.get("seconds_per_epoch"):
                    continue
                kind = "bicubic" if name.startswith("him_bicubic") else name.split("_")[0]
                per_epoch = stage["seconds_per_epoch"] / DATASET_COST.get(dataset, 2.5)
                samples.setdefault(kind, []).append(per_epoch)
    if not samples:
        raise ValueError(f"{report_path}: no timed stages to take costs from")
    return {k: float(np.median(v)) for k, v in samples.items()}
