"""Multi-resolution adaptive ensemble (JBIM Sec. 5, Eq. 17-19): resolution weights and distance fusion.

Pure numpy functions; torchreid has no ensemble, so these are our own. For each probe p,
``r = sqrt(A_p / mean gallery area)`` from genuine (on-disk) sizes, anchor model i (trained with
ratio m_i) gets ``w_i = exp(-(r - m_i)^2 / sigma^2)`` and the fused distances are
``D = sum_i w_i * D_i`` row by row.

Examples::
    >>> r = resolution_ratios(q_hw, g_hw)
    >>> w = anchor_weights(r, anchors=(1/2, 1/3, 1/4), sigma=0.5)
    >>> distmat = fuse_distances([d_half, d_third, d_quarter], w)
"""
import itertools
from fractions import Fraction
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = ["WEIGHTING_SCHEMES", "ratio_label", "resolution_ratios", "anchor_weights", "fuse_distances",
           "anchor_subsets", "evaluate_subsets"]

_SHARED_KEYS = ("q_pids", "g_pids", "q_camids", "g_camids", "q_hw", "g_hw")  # equal for every anchor of a split

WEIGHTING_SCHEMES = ("gaussian", "uniform")  # gaussian: Eq. 18; uniform: every anchor weighs 1


def ratio_label(ratio: float) -> str:
    """Display name of a downsampling ratio: ``0.5 -> '1/2'``, ``0.3333 -> '1/3'``, ``0.37 -> '0.37'``.

    Used for anchor names, LR ratio histograms and benchmark stage names alike.

    Args:
        ratio (float): downsampling ratio.

    Returns:
        str: the closest fraction with a denominator up to 20 when within 1e-3, else ``f'{ratio:g}'``.
    """
    frac = Fraction(float(ratio)).limit_denominator(20)
    if abs(float(frac) - float(ratio)) > 1e-3:
        return f"{float(ratio):g}"
    return str(frac.numerator) if frac.denominator == 1 else f"{frac.numerator}/{frac.denominator}"


def _hw_array(hw, name: str) -> np.ndarray:
    hw = np.asarray(hw, dtype=np.float64)
    if hw.ndim != 2 or hw.shape[1] != 2 or hw.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (N, 2) array of (height, width), got shape {hw.shape}")
    if not np.all(np.isfinite(hw)) or np.any(hw <= 0):
        bad = hw[~(np.isfinite(hw) & (hw > 0)).all(axis=1)][0]
        raise ValueError(f"{name} must hold positive finite sizes, got (h, w) = {tuple(bad.tolist())}")
    return hw


def resolution_ratios(probe_hw, gallery_hw) -> np.ndarray:
    """Resolution ratio of every probe to the gallery: ``r = sqrt(A_p / mean gallery area)``.

    Args:
        probe_hw (array-like): genuine probe sizes ``(Q, 2)`` as (height, width) in pixels.
        gallery_hw (array-like): genuine gallery sizes ``(G, 2)`` as (height, width) in pixels.

    Returns:
        numpy.ndarray: ``r``, float64 ``(Q,)``.
    """
    probe_hw = _hw_array(probe_hw, "probe_hw")
    gallery_hw = _hw_array(gallery_hw, "gallery_hw")
    mean_gallery_area = np.mean(gallery_hw[:, 0] * gallery_hw[:, 1])
    return np.sqrt(probe_hw[:, 0] * probe_hw[:, 1] / mean_gallery_area)


def anchor_weights(r, anchors: Sequence[float] = (1 / 2, 1 / 3, 1 / 4), sigma: float = 0.5,
                   scheme: str = "gaussian") -> np.ndarray:
    """Per-probe weight of each anchor model.

    Args:
        r (array-like): resolution ratios ``(Q,)`` from :func:`resolution_ratios`.
        anchors (sequence of float, optional): the anchor models' ratios m_i. Default is (1/2, 1/3, 1/4).
        sigma (float, optional): Gaussian width (Eq. 18). Default is 0.5.
        scheme (str, optional): ``'gaussian'`` (``exp(-(r - m_i)^2 / sigma^2)``) or ``'uniform'``
            (all weights 1). Default is ``'gaussian'``.

    Returns:
        numpy.ndarray: weights, float64 ``(Q, n_anchors)``.
    """
    r = np.asarray(r, dtype=np.float64).reshape(-1)
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1)
    if anchors.size == 0:
        raise ValueError("anchors is empty: expected at least one anchor ratio")
    if not np.all(np.isfinite(r)):
        raise ValueError(f"r must be finite, got {r[~np.isfinite(r)][0]}")
    if scheme == "uniform":
        return np.ones((r.size, anchors.size))
    if scheme != "gaussian":
        raise ValueError(f"Unknown weighting scheme '{scheme}'; expected one of {list(WEIGHTING_SCHEMES)}")
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive finite number, got {sigma}")
    return np.exp(-((r[:, np.newaxis] - anchors[np.newaxis, :]) ** 2) / sigma ** 2)


def fuse_distances(distmats: Sequence[np.ndarray], weights) -> np.ndarray:
    """Weighted sum of anchor distance matrices, row by row: ``D[q] = sum_i weights[q, i] * D_i[q]``.

    Args:
        distmats (sequence of numpy.ndarray): n distance matrices, each ``(Q, G)``, finite.
        weights (array-like): non-negative finite weights, ``(Q, n)`` (per probe) or ``(n,)`` (shared).

    Returns:
        numpy.ndarray: fused distances, float64 ``(Q, G)``.
    """
    if len(distmats) == 0:
        raise ValueError("distmats is empty: expected at least one (Q, G) distance matrix")
    mats = [np.asarray(d, dtype=np.float64) for d in distmats]
    shape = mats[0].shape
    if len(shape) != 2:
        raise ValueError(f"distmats[0] must be a 2-D (Q, G) matrix, got shape {shape}")
    for i, d in enumerate(mats):
        if d.shape != shape:
            raise ValueError(f"distmats[{i}] has shape {d.shape}; distmats[0] has {shape}: all must match")
        if not np.all(np.isfinite(d)):
            raise ValueError(f"distmats[{i}] holds a non-finite value ({d[~np.isfinite(d)][0]})")
    n, num_q = len(mats), shape[0]
    weights = np.asarray(weights, dtype=np.float64)
    given_shape = weights.shape
    if weights.ndim == 1 and weights.size == n:
        weights = np.broadcast_to(weights, (num_q, n))
    if weights.shape != (num_q, n):
        raise ValueError(f"weights has shape {given_shape}; expected ({num_q}, {n}) or ({n},) "
                         f"for {n} distance matrices with {num_q} probes")
    if not np.all(np.isfinite(weights)):
        raise ValueError(f"weights must be finite, got {weights[~np.isfinite(weights)][0]}")
    if np.any(weights < 0):
        raise ValueError(f"weights must be non-negative, got {weights[weights < 0][0]}")
    zero_rows = np.flatnonzero(weights.sum(axis=1) == 0)
    if zero_rows.size:
        raise ValueError(f"all weights of probe {zero_rows[0]} are 0: its fused distances would carry no ranking")
    fused = np.zeros(shape)
    for i, d in enumerate(mats):
        fused += weights[:, i:i + 1] * d
    return fused


def anchor_subsets(names: Sequence) -> List[Tuple]:
    """Every non-empty subset of the anchors, singles first, then pairs, ..., then all (Table 13).

    Args:
        names (sequence): anchor names (or ratios), distinct.

    Returns:
        list of tuple: subsets in order of size, each keeping the order of ``names``.
    """
    names = list(names)
    if not names:
        raise ValueError("names is empty: expected at least one anchor")
    if len(set(names)) != len(names):
        raise ValueError(f"anchor names must be distinct, got {names}")
    return [subset for k in range(1, len(names) + 1) for subset in itertools.combinations(names, k)]


def evaluate_subsets(anchor_results: Mapping[str, Mapping[str, Any]], ratios: Mapping[str, float],
                     sigma: float = 0.5, scheme: str = "gaussian", max_rank: int = 50,
                     use_metric_cuhk03: bool = False, subsets: Optional[Sequence[Sequence[str]]] = None
                     ) -> Dict[str, Dict[str, Any]]:
    """CMC and mAP of the fused distances of every anchor subset on one split (Table 13).

    Args:
        anchor_results (dict): anchor name -> that model's ``JBIMEngine.last_results[dataset]`` on the
            same split: ``distmat (Q, G)``, ``q_pids``, ``g_pids``, ``q_camids``, ``g_camids``,
            ``q_hw (Q, 2)``, ``g_hw (G, 2)``.
        ratios (dict): anchor name -> its ratio m_i.
        sigma (float, optional): Gaussian width. Default is 0.5.
        scheme (str, optional): ``'gaussian'`` or ``'uniform'``. Default is ``'gaussian'``.
        max_rank (int, optional): CMC length. Default is 50.
        use_metric_cuhk03 (bool, optional): cuhk03 single-gallery-shot metric. Default is False.
        subsets (list, optional): subsets of anchor names to evaluate; None gives
            :func:`anchor_subsets` of all anchors.

    Returns:
        dict: ``' + '.join(subset)`` -> ``{'anchors': list, 'cmc': numpy.ndarray, 'mAP': float}``
        (fractions, as ``evaluate_rank`` returns them).
    """
    from jbim_reid.metrics import get_rank_evaluator  # metrics import nothing from here

    names = list(anchor_results)
    if not names:
        raise ValueError("anchor_results is empty: expected at least one anchor's results")
    missing = [n for n in names if n not in ratios]
    if missing:
        raise ValueError(f"ratios lacks anchors {missing}; it has {list(ratios)}")
    first = anchor_results[names[0]]
    for name in names:
        absent = [k for k in ("distmat",) + _SHARED_KEYS if k not in anchor_results[name]]
        if absent:
            raise ValueError(f"results of anchor '{name}' lack {absent}")
        for key in _SHARED_KEYS:
            if not np.array_equal(np.asarray(anchor_results[name][key]), np.asarray(first[key])):
                raise ValueError(f"anchor '{name}' has other {key} than anchor '{names[0]}': "
                                 "all anchors must be evaluated on the same split, in the same order")
    r = resolution_ratios(first["q_hw"], first["g_hw"])
    evaluate_rank = get_rank_evaluator()
    out = {}
    for subset in (anchor_subsets(names) if subsets is None else subsets):
        unknown = [n for n in subset if n not in anchor_results]
        if unknown:
            raise ValueError(f"subset {list(subset)} names unknown anchors {unknown}; known: {names}")
        weights = anchor_weights(r, [ratios[n] for n in subset], sigma=sigma, scheme=scheme)
        distmat = fuse_distances([anchor_results[n]["distmat"] for n in subset], weights)
        cmc, mAP = evaluate_rank(distmat, np.asarray(first["q_pids"]), np.asarray(first["g_pids"]),
                                 np.asarray(first["q_camids"]), np.asarray(first["g_camids"]),
                                 max_rank=max_rank, use_metric_cuhk03=use_metric_cuhk03)
        out[" + ".join(subset)] = {"anchors": list(subset), "cmc": np.asarray(cmc), "mAP": float(mAP)}
    return out
