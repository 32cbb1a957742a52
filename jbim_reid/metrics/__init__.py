"""Ranking metrics (a fast exact ``evaluate_rank`` and the evaluator every evaluation path uses) and
image-quality metrics of the SR stage (``psnr``, ``ssim``)."""
from typing import Callable

import torchreid

from jbim_reid.metrics.image_quality import psnr, ssim
from jbim_reid.metrics.rank import evaluate_rank

__all__ = ["evaluate_rank", "get_rank_evaluator", "psnr", "ssim"]


def get_rank_evaluator() -> Callable:
    """The rank evaluator to use: torchreid's when its Cython extension is built, else ours.

    Both take ``(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, use_metric_cuhk03=False)``
    and return ``(cmc, mAP)``.

    Returns:
        callable: ``torchreid.metrics.evaluate_rank`` (Cython path) or :func:`evaluate_rank`.
    """
    if getattr(torchreid.metrics.rank, "IS_CYTHON_AVAI", False):
        return torchreid.metrics.evaluate_rank
    return evaluate_rank
