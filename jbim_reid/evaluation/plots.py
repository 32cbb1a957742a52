"""CMC-curve plots (PNG) for one run and for a comparison of methods or anchors.

Figures are drawn on matplotlib's Agg canvas directly (``matplotlib.figure.Figure``), so plotting
needs no display and never changes the process-wide pyplot backend.

Examples::
    >>> cmc, mAP = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids)
    >>> plot_cmc(cmc, 'log/cmc.png', label='JBIM 1/2')
    >>> plot_cmc_comparison({'1/2': cmc_a, 'all anchors': cmc_b}, 'log/cmc_anchors.png')
"""
from pathlib import Path
from typing import Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["plot_cmc", "plot_cmc_comparison"]


def _curve(cmc, label: str, max_rank: int) -> np.ndarray:
    cmc = np.asarray(cmc, dtype=np.float64).reshape(-1)
    if cmc.size == 0:
        raise ValueError(f"CMC of '{label}' is empty: expected at least one rank")
    if not np.all(np.isfinite(cmc)) or cmc.min() < 0 or cmc.max() > 1:
        raise ValueError(f"CMC of '{label}' must hold fractions in [0, 1] (as evaluate_rank returns), "
                         f"got values in [{cmc.min()}, {cmc.max()}]")
    return 100.0 * cmc[:max_rank]


def plot_cmc_comparison(curves: Mapping[str, np.ndarray], path, max_rank: int = 20,
                        title: str = "CMC") -> Path:
    """Plots several CMC curves on one chart and saves it as PNG.

    Args:
        curves (dict): label -> CMC ``(R,)`` as fractions (``evaluate_rank``'s first output).
        path (str or Path): output PNG; its folder is created when missing.
        max_rank (int, optional): last rank shown. Default is 20.
        title (str, optional): chart title. Default is ``'CMC'``.

    Returns:
        Path: ``path``.
    """
    if not curves:
        raise ValueError("curves is empty: expected at least one label -> CMC entry")
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    fig = Figure(figsize=(6, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for label, cmc in curves.items():
        values = _curve(cmc, label, max_rank)
        ranks = np.arange(1, values.size + 1)
        ax.plot(ranks, values, marker="o", markersize=3, label=f"{label} (R1 {values[0]:.1f}%)")
    ax.set_xlabel("Rank")
    ax.set_ylabel("Matching rate (%)")
    ax.set_title(title)
    ax.set_xlim(1, max_rank)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path


def plot_cmc(cmc, path, label: str = "model", max_rank: int = 20) -> Path:
    """Plots one CMC curve and saves it as PNG.

    Args:
        cmc (array-like): CMC ``(R,)`` as fractions (``evaluate_rank``'s first output).
        path (str or Path): output PNG; its folder is created when missing.
        label (str, optional): legend label. Default is ``'model'``.
        max_rank (int, optional): last rank shown. Default is 20.

    Returns:
        Path: ``path``.
    """
    return plot_cmc_comparison({label: cmc}, path, max_rank=max_rank, title=f"CMC: {label}")
