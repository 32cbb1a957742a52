"""``CrossResolutionDataset``: torchreid's ``ImageDataset`` plus genuine image size and LR flags."""
import random
from collections import Counter, defaultdict
from fractions import Fraction
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

import numpy as np
import torch
import torchreid
import torchvision
from PIL import Image

from jbim_reid.evaluation.ensemble import ratio_label, resolution_ratios
from jbim_reid.transforms import split_leading_random_resolution

__all__ = ["CrossResolutionDataset", "genuine_size", "read_image"]


def genuine_size(path: str) -> Tuple[int, int]:
    """``(h, w)`` of the image file at ``path``, read from its header only."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (OSError, ValueError) as e:
        raise OSError(f"Cannot read image '{path}': {e}") from e
    return h, w


def read_image(path: str) -> Image.Image:
    """Read ``path`` as an RGB PIL image.

    Not torchreid's ``read_image``: that one retries forever on an unreadable file; this one
    raises an OSError naming the file.
    """
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as e:
        raise OSError(f"Cannot read image '{path}': {e}") from e


class CrossResolutionDataset(torchreid.data.ImageDataset):
    """A torchreid image dataset whose items also carry genuine size and resolution side.

    ``dataset[i]`` is torchreid's dict (``img, pid, camid, impath, dsetid``) plus ``hw``
    (``torch.LongTensor([h, w])``, the size on disk before the transform) and ``is_lr`` (bool).
    With ``pair_views=True`` in train mode it also holds ``img_lr`` and ``img_hr`` (with their
    genuine sizes ``hw_lr`` and ``hw_hr``): the item fills
    the slot of its own resolution; a random image of the same pid from the other resolution
    (preferably another camid) fills the other. When the pid has no image of the other resolution
    (e.g. ``train_lr=False``), another image of the pid (preferably another camid), else the item
    itself, is used.

    Args:
        train, query, gallery (list): ``(impath, pid, camid[, dsetid])`` tuples.
        lr_paths (iterable of str, optional): image paths on the LR side. Default is empty.
        lr_ratios (mapping, optional): LR path -> simulated downsampling ratio (for the summary).
        pair_views (bool, optional): add ``img_lr`` / ``img_hr`` in train mode. Default is False.
        **kwargs: torchreid's ``ImageDataset`` arguments (``transform, mode, k_tfm, verbose, ...``).
    """

    def __init__(self, train, query, gallery, lr_paths: Iterable[str] = (),
                 lr_ratios: Optional[Mapping[str, float]] = None, pair_views: bool = False, **kwargs):
        self.lr_paths = frozenset(lr_paths)
        self.lr_ratios: Dict[str, float] = dict(lr_ratios or {})
        self.pair_views = pair_views
        self._partners = None
        self._split = (None, None, None)  # (transform, its leading RandomResolution, the rest)
        super().__init__(train, query, gallery, **kwargs)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        impath, pid, camid, dsetid = self.data[index]
        img, hw = self._load(impath)
        is_lr = impath in self.lr_paths
        item = {"img": img, "pid": pid, "camid": camid, "impath": impath, "dsetid": dsetid,
                "hw": hw, "is_lr": is_lr}
        if self.pair_views and self.mode == "train":
            partner, partner_hw = self._load(self._partner(index))
            item["img_lr"], item["img_hr"] = (img, partner) if is_lr else (partner, img)
            item["hw_lr"], item["hw_hr"] = (hw, partner_hw) if is_lr else (partner_hw, hw)
        return item

    def _load(self, impath: str):
        raw = read_image(impath)
        hw = torch.LongTensor([raw.height, raw.width])
        if self._split[0] is not self.transform:  # split once per transform, not per image
            self._split = (self.transform, *split_leading_random_resolution(self.transform))
        _, resolution_step, transform = self._split
        if resolution_step is not None:
            # the ratio is of the genuine size, so it runs before the LR upscale below
            raw = resolution_step(raw)
        size = self._network_size()
        if size is not None and impath in self.lr_paths:
            # JBIM feeds LR images bicubic-upscaled (as the synthetic LR stream is); torchreid's
            # Resize is bilinear, and is a no-op on an image already at the network size
            raw = raw.resize((size[1], size[0]), Image.BICUBIC)
        img = raw if transform is None else self._transform_image(transform, self.k_tfm, raw)
        return img, hw

    def _network_size(self) -> Optional[Tuple[int, int]]:
        """``(h, w)`` of the transform's first ``Resize`` (torchreid's transforms start with one)."""
        for step in getattr(self.transform, "transforms", ()):
            if isinstance(step, torchvision.transforms.Resize):
                size = step.size
                return (int(size[0]), int(size[1])) if isinstance(size, (tuple, list)) and len(size) == 2 else None
        return None

    def _partner(self, index: int) -> str:
        """Path of a random partner image for ``self.data[index]`` (see the class docstring)."""
        if self._partners is None:
            by_pid = defaultdict(list)
            for impath, pid, camid, _ in self.data:
                by_pid[pid].append((impath, camid, impath in self.lr_paths))
            self._partners = by_pid
        impath, pid, camid, _ = self.data[index]
        is_lr = impath in self.lr_paths
        others = [c for c in self._partners[pid] if c[0] != impath]
        other_res = [c for c in others if c[2] != is_lr]
        pool = other_res or others
        if not pool:
            return impath
        other_cam = [c for c in pool if c[1] != camid]
        return random.choice(other_cam or pool)[0]

    def lr_ratio_histogram(self, items=None) -> Dict[str, int]:
        """``{'1/2': count, ...}`` over LR items of ``items`` (default: query), ``'genuine'`` for real LR."""
        items = self.query if items is None else items
        counts = Counter()
        for impath, *_ in items:
            if impath in self.lr_paths:
                ratio = self.lr_ratios.get(impath)
                counts[ratio_label(ratio) if ratio is not None else "genuine"] += 1
        return dict(sorted(counts.items(), key=lambda kv: -Fraction(kv[0]) if "/" in kv[0] else 0))

    def lr_ratio(self, items=None) -> Optional[float]:
        """Median genuine resolution ratio ``r`` of the LR items of ``items`` (default: train) to its HR items.

        ``r = sqrt(A_lr / mean HR area)`` per LR image from on-disk sizes, as the ensemble weighs probes
        (:func:`jbim_reid.evaluation.ensemble.resolution_ratios`), so a synthetic-LR ratio ``jbim.ratio`` set to it
        reaches the LR camera's resolution. None when ``items`` lacks either side.
        """
        items = self.train if items is None else items
        lr = [genuine_size(it[0]) for it in items if it[0] in self.lr_paths]
        hr = [genuine_size(it[0]) for it in items if it[0] not in self.lr_paths]
        if not lr or not hr:
            return None
        return float(np.median(resolution_ratios(lr, hr)))

    def identity_lr_ratios(self, items=None) -> np.ndarray:
        """Genuine ratio ``r = sqrt(A_lr / mean area of the same identity's HR images)`` of every LR item.

        From on-disk sizes, over ``items`` (default: train); LR items whose identity has no HR item there
        are left out. What ``jbim.recipe auto`` reads to pick the synthetic-LR ratios.
        """
        items = self.train if items is None else items
        hr_areas = defaultdict(list)
        lr_items = []
        for impath, pid, *_ in items:
            h, w = genuine_size(impath)
            if impath in self.lr_paths:
                lr_items.append((pid, h * w))
            else:
                hr_areas[pid].append(h * w)
        ratios = [np.sqrt(area / np.mean(hr_areas[pid])) for pid, area in lr_items if hr_areas[pid]]
        return np.asarray(ratios, dtype=np.float64)

    def mean_genuine_area(self, items) -> float:
        """Mean ``h * w`` (header sizes) over ``items``; 0.0 when empty."""
        if not items:
            return 0.0
        areas = [h * w for h, w in (genuine_size(it[0]) for it in items)]
        return sum(areas) / len(areas)

    def show_summary(self) -> None:
        """torchreid's table plus LR/HR counts, the LR ratio histogram and genuine mean areas."""
        super().show_summary()
        n_lr_q = sum(1 for it in self.query if it[0] in self.lr_paths)
        n_lr_t = sum(1 for it in self.train if it[0] in self.lr_paths)
        hist = ", ".join(f"{k}: {v}" for k, v in self.lr_ratio_histogram().items()) or "none"
        print(f"  query: {len(self.query)} images ({n_lr_q} LR) | gallery: {len(self.gallery)} images "
              f"| train LR: {n_lr_t}/{len(self.train)}")
        print(f"  LR ratios: {hist}")
        print(f"  genuine mean area: query {self.mean_genuine_area(self.query):.0f} px^2, "
              f"gallery {self.mean_genuine_area(self.gallery):.0f} px^2")
        print("  ----------------------------------------")
