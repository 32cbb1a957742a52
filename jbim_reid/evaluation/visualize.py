"""Ranked lists for cross-resolution re-id: torchreid's grids with the LR probe at its genuine size.

``torchreid.utils.visualize_ranked_results`` draws, per query, one row: the query resized to
``width x height`` and its top-k gallery images (green border: match, red: mismatch), saved as
``<save_dir>/<query file stem>.jpg``. That resizing hides what makes a probe hard here, its low
resolution, so each written row gets a panel on its left: the LR probe at its genuine size (padded
with white, never resized), then its super-resolved version at the network size.

Layout of a written image (``GAP`` pixels of white between parts, rows vertically centred in a
canvas of height ``max(height, h_lr)``)::

    | GAP | LR (w_lr x h_lr) | GAP | SR (width x height) | GAP | torchreid's row |

Examples::
    >>> sr = sr_images_from_model(model)                    # SR branch of a JBIM model
    >>> paths = visualize_cross_resolution_ranks(distmat, dataset.query, dataset.gallery, sr,
    ...                                          'log/ranks', topk=10)
"""
import os
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence, Union

import cv2
import numpy as np
import torch
import torchreid
import torchvision.transforms as T
from torch import nn

from jbim_reid.utils.images import load_rgb

__all__ = ["GAP", "visualize_cross_resolution_ranks", "sr_images_from_model", "compose_panel"]

GAP = 10  # white pixels between the LR image, the SR image and torchreid's row (torchreid's GRID_SPACING)
# Rewritten rows keep torchreid's .jpg name; quality 95 without chroma subsampling keeps LR pixels readable.
JPEG_PARAMS = [cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]

SRSource = Union[Mapping[str, np.ndarray], Callable[[str], np.ndarray]]


def sr_images_from_model(model: nn.Module, device: str = "cpu") -> Callable[[str], np.ndarray]:
    """A function ``impath -> SR image`` from a JBIM model's SR module.

    The image is resized (bicubic) to ``model.height x model.width`` and goes, as [0, 1] RGB,
    through ``model.sr`` (SR modules work in pixel space; identity when the model has none, e.g.
    the LIM-only variant), then back to 8-bit pixels.

    Args:
        model (nn.Module): JBIM model (``sr``, ``height``, ``width`` attributes).
        device (str, optional): torch device. Default is ``'cpu'``.

    Returns:
        callable: ``impath -> (height, width, 3)`` uint8 RGB array.
    """
    size = (int(model.height), int(model.width))
    transform = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.ToTensor()])
    sr = getattr(model, "sr", None)

    @torch.no_grad()
    def super_resolve(impath: str) -> np.ndarray:
        x = transform(load_rgb(impath, impath)).unsqueeze(0).to(device)
        if sr is not None:
            was_training = sr.training
            x = sr.eval()(x)
            sr.train(was_training)
        img = x[0].float().cpu().clamp(0, 1)
        return (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)

    return super_resolve


def _sr_image(sr_images: SRSource, impath: str) -> np.ndarray:
    if callable(sr_images):
        img = sr_images(impath)
    elif impath in sr_images:
        img = sr_images[impath]
    else:
        raise KeyError(f"sr_images has no entry for query image {impath}")
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"SR image of {impath} must be an H x W x 3 uint8 RGB array, got shape {img.shape} "
                         f"dtype {img.dtype}")
    return img


def compose_panel(lr_bgr: np.ndarray, sr_bgr: np.ndarray, row_bgr: np.ndarray, width: int,
                  height: int) -> np.ndarray:
    """``[LR at genuine size | SR at width x height | row]`` on a white canvas (layout in the module doc).

    Args:
        lr_bgr (numpy.ndarray): LR probe ``(h_lr, w_lr, 3)`` uint8 BGR, kept as is.
        sr_bgr (numpy.ndarray): SR image ``(h, w, 3)`` uint8 BGR, resized to ``width x height``.
        row_bgr (numpy.ndarray): torchreid's ranked row ``(H, W, 3)`` uint8 BGR.
        width (int): SR panel width.
        height (int): SR panel height.

    Returns:
        numpy.ndarray: the composite, uint8 BGR.
    """
    sr_bgr = cv2.resize(sr_bgr, (width, height), interpolation=cv2.INTER_CUBIC)
    parts = [lr_bgr, sr_bgr, row_bgr]
    canvas_h = max(p.shape[0] for p in parts)
    canvas_w = sum(p.shape[1] for p in parts) + GAP * len(parts)
    canvas = np.full((canvas_h, canvas_w, 3), 255, dtype=np.uint8)
    x = GAP
    for part in parts:
        y = (canvas_h - part.shape[0]) // 2
        canvas[y:y + part.shape[0], x:x + part.shape[1]] = part
        x += part.shape[1] + GAP
    return canvas


def visualize_cross_resolution_ranks(distmat: np.ndarray, query: Sequence[tuple], gallery: Sequence[tuple],
                                     sr_images: SRSource, save_dir, width: int = 128, height: int = 256,
                                     topk: int = 10, query_indices: Optional[Sequence[int]] = None) -> List[Path]:
    """Ranked lists through torchreid's ``visualize_ranked_results``, with an LR | SR panel per query.

    Queries whose files share a stem share one output image, as in torchreid (the last one is drawn).

    Args:
        distmat (numpy.ndarray): distances ``(num_query, num_gallery)``.
        query (list): torchreid query items ``(impath, pid, camid, ...)``; ``impath`` is the LR image.
        gallery (list): torchreid gallery items ``(impath, pid, camid, ...)``.
        sr_images (dict or callable): query ``impath`` -> SR image (``H x W x 3`` uint8 RGB, any size),
            e.g. :func:`sr_images_from_model`.
        save_dir (str or Path): output folder.
        width (int, optional): width of every shown image but the LR one. Default is 128.
        height (int, optional): height of every shown image but the LR one. Default is 256.
        topk (int, optional): gallery images per row. Default is 10.
        query_indices (list of int, optional): queries to draw; None draws all.

    Returns:
        list of Path: the written images, one per distinct query file stem, in query order.
    """
    distmat = np.asarray(distmat)
    if distmat.shape != (len(query), len(gallery)):
        raise ValueError(f"distmat has shape {distmat.shape}; expected ({len(query)}, {len(gallery)}) "
                         "for the given query and gallery")
    if query_indices is not None:
        query_indices = list(query_indices)
        distmat = distmat[query_indices]
        query = [query[i] for i in query_indices]
    save_dir = Path(save_dir)
    rows = {}  # output file -> query item drawn in it (torchreid keeps the last query of a stem)
    for item in query:
        rows[save_dir / (os.path.splitext(os.path.basename(item[0]))[0] + ".jpg")] = item
    panels = {}  # output file -> (LR, SR) in BGR, read before torchreid runs so bad inputs fail early
    for out, item in rows.items():
        lr = cv2.imread(str(item[0]))
        if lr is None:
            raise FileNotFoundError(f"cannot read query image {item[0]}")
        panels[out] = lr, cv2.cvtColor(_sr_image(sr_images, item[0]), cv2.COLOR_RGB2BGR)
    torchreid.utils.visualize_ranked_results(distmat, (list(query), list(gallery)), "image", width=width,
                                             height=height, save_dir=str(save_dir), topk=topk)
    for out, (lr, sr) in panels.items():
        row = cv2.imread(str(out))
        if row is None:
            raise FileNotFoundError(f"torchreid did not write the ranked list of {rows[out][0]} at {out}")
        cv2.imwrite(str(out), compose_panel(lr, sr, row, width, height), JPEG_PARAMS)
    return list(rows)
