"""Fast exact CMC / mAP evaluation with torchreid's ``evaluate_rank`` signature and results.

torchreid's Python path (``eval_market1501`` / ``eval_cuhk03``) loops over queries in Python and
takes over a minute at Market-1501 scale; its Cython path is not built in the PyPI package. This
module computes the same numbers with numpy boolean masks and cumulative sums over chunks of
queries, so memory stays bounded (about ``chunk_elements`` entries per temporary array).

Semantics, identical to torchreid's:

- the gallery order of a query is ``np.argsort(distmat, axis=1)`` (the same call, so ties are broken
  the same way);
- gallery entries with the query's pid *and* camid are removed from its list;
- queries with no remaining true match are skipped; an error is raised when no query has one;
- the CMC is truncated to ``max_rank``; when the gallery has fewer than ``max_rank`` entries,
  ``max_rank`` becomes the gallery size (with a warning, where torchreid prints a note);
- AP is the mean of precision at every true match of the kept list.

Where torchreid's Python path fails (a query whose kept list is shorter than ``max_rank``, which makes
its per-query CMC list ragged), the CMC of that query is extended with its last value, 1.

In cuhk03 mode one gallery image per identity is drawn ten times per valid query with the legacy
global ``np.random`` state, in the same order and with the same bounds as torchreid's
``np.random.choice`` calls, so both give identical results from the same seed state.
"""
import warnings
from typing import Tuple

import numpy as np

__all__ = ["evaluate_rank"]

NUM_REPEATS = 10  # cuhk03 mode: gallery draws per query, as in torchreid's eval_cuhk03
CHUNK_ELEMENTS = 1 << 21  # entries of a (queries x gallery) temporary per chunk (~2M, ~16 MB as int64)


def _check_inputs(distmat, q_pids, g_pids, q_camids, g_camids) -> Tuple[np.ndarray, ...]:
    distmat = np.asarray(distmat)
    if distmat.ndim != 2:
        raise ValueError(f"distmat must be a 2-D (num_query, num_gallery) array, got shape {distmat.shape}")
    num_q, num_g = distmat.shape
    arrays = []
    for name, value, expected in (("q_pids", q_pids, num_q), ("g_pids", g_pids, num_g),
                                  ("q_camids", q_camids, num_q), ("g_camids", g_camids, num_g)):
        value = np.asarray(value).reshape(-1)
        if value.shape[0] != expected:
            raise ValueError(f"{name} has {value.shape[0]} entries; distmat of shape {distmat.shape} "
                             f"expects {expected}")
        arrays.append(value)
    if num_q == 0 or num_g == 0:
        raise ValueError(f"distmat is empty (shape {distmat.shape}): need at least one query and one gallery item")
    return (distmat, *arrays)


def _sorted_masks(distmat, q_pids, g_pids, q_camids, g_camids, start, stop):
    """For queries ``start:stop``: match and keep masks in ranked gallery order, both ``(n, G)`` bool."""
    indices = np.argsort(distmat[start:stop], axis=1)  # the call torchreid makes: same tie order
    matches = g_pids[indices] == q_pids[start:stop, np.newaxis]
    keep = ~(matches & (g_camids[indices] == q_camids[start:stop, np.newaxis]))
    return indices, matches, keep


def _average_precision(relevant: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """AP of each row: mean over true matches of (matches so far) / (position in the kept list)."""
    position = np.cumsum(keep, axis=1, dtype=np.int64)
    hits = np.cumsum(relevant, axis=1, dtype=np.int64)
    precision = np.where(relevant, hits / np.maximum(position, 1), 0.0)
    return precision.sum(axis=1) / relevant.sum(axis=1)


def _cuhk03_query_cmc(kept_pids: np.ndarray, relevant: np.ndarray, max_rank: int) -> np.ndarray:
    """Single-gallery-shot CMC of one query, ``(max_rank,)`` float32, drawing from ``np.random``.

    Args:
        kept_pids (numpy.ndarray): pids of the kept gallery list in ranked order, ``(K,)``.
        relevant (numpy.ndarray): bool, true matches of the kept list, ``(K,)``.
        max_rank (int): CMC length.
    """
    # Identities in order of first appearance: the iteration order of torchreid's defaultdict.
    _, first, inverse, counts = np.unique(kept_pids, return_index=True, return_inverse=True,
                                          return_counts=True)
    appearance = np.argsort(first)
    group_of = np.empty_like(appearance)
    group_of[appearance] = np.arange(appearance.size)
    entry_group = group_of[inverse.reshape(-1)]
    sizes = counts[appearance]
    # np.random.choice(idxs) draws randint(0, len(idxs)); one broadcast call consumes the same stream.
    draws = np.random.randint(0, np.tile(sizes, NUM_REPEATS)).reshape(NUM_REPEATS, sizes.size)
    members = np.argsort(entry_group, kind="stable")  # kept positions grouped by identity, in order
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    sampled = members[starts + draws]  # (repeats, groups): kept position of each drawn image
    # The masked list keeps kept order, so the first true match's rank is the number of drawn
    # images ranked before the drawn image of the query's identity.
    query_group = entry_group[np.argmax(relevant)]
    first_hit = (sampled < sampled[:, query_group:query_group + 1]).sum(axis=1)
    cmc = (np.arange(max_rank)[np.newaxis, :] >= first_hit[:, np.newaxis]).astype(np.float32)
    return cmc.sum(axis=0) / NUM_REPEATS


def evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50,
                  use_metric_cuhk03: bool = False) -> Tuple[np.ndarray, float]:
    """Evaluates CMC rank and mAP exactly like ``torchreid.metrics.evaluate_rank``, vectorised.

    Args:
        distmat (numpy.ndarray): distance matrix of shape (num_query, num_gallery).
        q_pids (numpy.ndarray): person ids of the queries, ``(num_query,)``.
        g_pids (numpy.ndarray): person ids of the gallery, ``(num_gallery,)``.
        q_camids (numpy.ndarray): camera ids of the queries, ``(num_query,)``.
        g_camids (numpy.ndarray): camera ids of the gallery, ``(num_gallery,)``.
        max_rank (int, optional): maximum CMC rank to be computed. Default is 50.
        use_metric_cuhk03 (bool, optional): single-gallery-shot setting of the cuhk03 classic split
            (one random gallery image per identity, averaged over 10 draws from ``np.random``).
            Default is False.

    Returns:
        tuple: ``cmc`` (numpy.ndarray, float32, ``(min(max_rank, num_gallery),)``, fractions in
        [0, 1]) and ``mAP`` (float, in [0, 1]).

    Raises:
        ValueError: on inconsistent shapes, or when no query has a true match in the gallery.

    Examples::
        >>> cmc, mAP = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=20)
        >>> rank1 = cmc[0]
    """
    distmat, q_pids, g_pids, q_camids, g_camids = _check_inputs(distmat, q_pids, g_pids, q_camids, g_camids)
    num_q, num_g = distmat.shape
    if num_g < max_rank:
        warnings.warn(f"Number of gallery samples is quite small, got {num_g}: max_rank {max_rank} -> {num_g}")
        max_rank = num_g

    chunk = max(1, CHUNK_ELEMENTS // num_g)
    hit_counts = np.zeros(max_rank + 1, dtype=np.int64)  # valid queries by first-hit rank (last: >= max_rank)
    cuhk03_cmc_sum = np.zeros(max_rank, dtype=np.float32)
    ap_parts = []
    for start in range(0, num_q, chunk):
        stop = min(start + chunk, num_q)
        indices, matches, keep = _sorted_masks(distmat, q_pids, g_pids, q_camids, g_camids, start, stop)
        relevant = matches & keep
        valid = relevant.any(axis=1)
        if not valid.any():
            continue
        relevant, keep, indices = relevant[valid], keep[valid], indices[valid]
        ap_parts.append(_average_precision(relevant, keep))
        if use_metric_cuhk03:
            for row in range(relevant.shape[0]):
                kept = keep[row]
                cuhk03_cmc_sum += _cuhk03_query_cmc(g_pids[indices[row][kept]], relevant[row][kept], max_rank)
        else:
            # rank of the first true match in the kept list = kept entries before it
            first_hit = np.argmax(relevant, axis=1)
            first_rank = np.cumsum(keep, axis=1)[np.arange(first_hit.size), first_hit] - 1
            hit_counts += np.bincount(np.minimum(first_rank, max_rank), minlength=max_rank + 1)

    if not ap_parts:
        raise ValueError(f"No query has a true match in the gallery (num_query={num_q}, num_gallery={num_g}): "
                         "every query identity is missing from the gallery or only seen by the same camera")
    all_ap = np.concatenate(ap_parts)
    num_valid = float(all_ap.size)
    if use_metric_cuhk03:
        cmc = cuhk03_cmc_sum / num_valid
    else:
        cmc = np.cumsum(hit_counts[:max_rank]).astype(np.float32) / num_valid
    return cmc.astype(np.float32), float(np.mean(all_ap))
