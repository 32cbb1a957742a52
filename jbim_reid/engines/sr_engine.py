"""``SREngine``: stage ``sr``, the SR pre-training that the paper gets from a trained SRCNN.

F_sr alone learns L_sr (Eq. 2, pixel MSE) on pairs (x^{h2l}, x^h) made from the training set's HR
images at the anchor's ratio(s); a fixed share of those images is held out, and training stops when
their PSNR has not risen for ``patience`` epochs. The best epoch's weights are kept.

Under ``torchrun`` every rank trains the same small module on the same data with the same seed
(no collective calls, so no rank waits out ``train.dist_timeout`` for another's SR training) and
only rank 0 writes; ``jbim_reid.training.sr_stage.run_sr_stage`` holds the ranks at a barrier until its
checkpoint is on disk, and stage ``him`` reads that one file on every rank.
"""
import copy
import os.path as osp
import random
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
import torchreid
from torch.utils.data import DataLoader, Dataset

from jbim_reid.datasets.base import read_image
from jbim_reid.engines import distributed
from jbim_reid.engines.checkpoints import rng_state, set_rng_state
from jbim_reid.evaluation.ensemble import ratio_label
from jbim_reid.metrics.image_quality import psnr, ssim
from jbim_reid.models.jbim import synthesize_lr
from jbim_reid.models.pixel import PixelSpaceSR
from jbim_reid.transforms import without_random_resolution
from jbim_reid.utils.fileio import CheckpointError, load_torch_file, save_torch_file

__all__ = ["SREngine", "HRImages", "hr_train_paths", "split_holdout", "sr_checkpoint_path", "sr_progress_path"]

HOLDOUT_SEED = 0  # the held-out images depend on the training set only, not on train.seed
MIN_GAIN_DB = 0.01  # a held-out PSNR counts as higher when it beats the best by more than this (dB)


def sr_checkpoint_path(save_dir: str) -> str:
    """Where stage ``sr`` leaves its best weights: ``<save_dir>/model/sr_best.pth.tar``."""
    return osp.join(save_dir, "model", "sr_best.pth.tar")


def sr_progress_path(save_dir: str) -> str:
    """Where stage ``sr`` keeps its state after each epoch (``<save_dir>/model/sr_last.pth.tar``),
    so that a killed stage continues from its last finished epoch."""
    return osp.join(save_dir, "model", "sr_last.pth.tar")


def hr_train_paths(dataset) -> List[str]:
    """Sorted paths of the HR-side training images of a ``CrossResolutionDataset``.

    Args:
        dataset: a ``jbim_reid.datasets.CrossResolutionDataset`` (``train`` items and ``lr_paths``).

    Returns:
        list of str: unique paths not on the LR side.
    """
    lr_paths = getattr(dataset, "lr_paths", frozenset())
    return sorted({item[0] for item in dataset.train if item[0] not in lr_paths})


def split_holdout(paths: Sequence[str], fraction: float, seed: int = HOLDOUT_SEED
                  ) -> Tuple[List[str], List[str]]:
    """Split image paths into (train, held out): a seeded shuffle of the sorted paths.

    Args:
        paths (sequence of str): image paths.
        fraction (float): share held out, in (0, 1); at least one image, at least one left to train.
        seed (int, optional): shuffle seed. Default is ``HOLDOUT_SEED``.

    Returns:
        tuple: ``(train, held_out)`` lists of paths, each sorted.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"jbim.sr_holdout must be in (0, 1), got {fraction}")
    paths = sorted(set(paths))
    if len(paths) < 2:
        raise ValueError(f"stage sr needs at least 2 training HR images (one held out), got {len(paths)}")
    shuffled = list(paths)
    random.Random(seed).shuffle(shuffled)
    n_held = min(len(paths) - 1, max(1, round(fraction * len(paths))))
    return sorted(shuffled[n_held:]), sorted(shuffled[:n_held])


class HRImages(Dataset):
    """HR images with their genuine sizes: items ``{'img', 'hw', 'impath'}``.

    Args:
        paths (sequence of str): image files.
        transform (callable): PIL image -> normalised ``(3, H, W)`` tensor (torchreid's transforms).
    """

    def __init__(self, paths: Sequence[str], transform):
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        raw = read_image(path)
        return {"img": self.transform(raw), "hw": torch.LongTensor([raw.height, raw.width]),
                "impath": path}


class SREngine(torchreid.engine.Engine):
    """Pre-trains an SR module on synthetic LR / HR pairs; evaluation is PSNR, not rank.

    Each batch holds training HR images x^h; x^{h2l} is x^h shrunk by a ratio drawn per image from
    ``ratios`` of its genuine size and bicubic back up (:func:`jbim_reid.models.synthesize_lr`), and
    the loss is the MSE of F_sr(x^{h2l}) against x^h in [0, 1] RGB. :meth:`evaluate` gives PSNR and
    SSIM of SR and of bicubic (x^{h2l} itself) on the held-out images at every ratio.

    Args:
        datamanager: ``torchreid.data.ImageDataManager`` over a cross-resolution dataset; its train
            set's HR images and its train / test transforms are used.
        model (PixelSpaceSR): the SR net wrapped to run in pixel space.
        optimizer (Optimizer, optional): over ``model``'s parameters; None for an SR module without
            parameters (``bicubic``), which :meth:`run` only evaluates. Default is None.
        scheduler (LRScheduler, optional): stepped after each epoch. Default is None (constant).
        use_gpu (bool, optional): use CUDA when available. Default is False.
        ratios (sequence of float, optional): training and evaluation ratios m. Default is (0.5,).
        holdout (float, optional): share of the HR images held out. Default is 0.1.
        batch_size (int, optional): images per batch. Default is 32.
        workers (int, optional): data-loading processes. Default is 0.
        checkpoint_info (dict, optional): plain values stored in the checkpoint (e.g. the SR name); a
            progress file with other values is not continued.
        run_info (dict, optional): how the run was configured (the runner's ``run_info``), stored in the
            checkpoint and not compared here (the runner checks it before the stage runs).

    Examples::
        >>> model = PixelSpaceSR(build_sr('srcnn_915'))
        >>> engine = SREngine(datamanager, model, torch.optim.Adam(model.parameters(), 1e-3))
        >>> results = engine.run(save_dir='log/stage_sr', max_epoch=100, patience=10)
        >>> results['psnr_sr'], results['psnr_bicubic']
    """

    def __init__(self, datamanager, model: PixelSpaceSR, optimizer=None, scheduler=None,
                 use_gpu: bool = False, ratios: Sequence[float] = (0.5,), holdout: float = 0.1,
                 batch_size: int = 32, workers: int = 0, checkpoint_info: Optional[dict] = None,
                 run_info: Optional[dict] = None):
        super().__init__(datamanager, use_gpu)
        ratios = [float(m) for m in ratios]
        if not ratios or not all(0 < m <= 1 for m in ratios):
            raise ValueError(f"SR ratios must be a non-empty list in (0, 1], got {ratios}")
        if optimizer is None and any(p.requires_grad for p in model.parameters()):
            raise ValueError("SREngine needs an optimizer for an SR module with parameters")
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.register_model("model", model, optimizer, scheduler)
        self.ratios = ratios
        self.checkpoint_info = dict(checkpoint_info or {})
        self.run_info = dict(run_info or {})
        dataset = datamanager.train_loader.dataset
        train_paths, held_out = split_holdout(hr_train_paths(dataset), holdout)
        # the HR images are SR's targets: flips and crops, but never random_resolution
        transform_tr = without_random_resolution(datamanager.transform_tr)
        self.train_loader = DataLoader(
            HRImages(train_paths, transform_tr), batch_size=batch_size, shuffle=True,
            drop_last=len(train_paths) > batch_size, num_workers=workers, pin_memory=self.use_gpu)
        self.holdout_loader = DataLoader(HRImages(held_out, datamanager.transform_te),
                                         batch_size=batch_size, shuffle=False, num_workers=workers)
        self.test_loader = {}  # no rank evaluation in this stage
        self._losses: List[float] = []

    def _to_device(self, data: dict) -> Tuple[torch.Tensor, torch.Tensor]:
        x = data["img"].cuda() if self.use_gpu else data["img"]
        return x, data["hw"]

    def forward_backward(self, data: dict) -> Dict[str, float]:
        """One step of L_sr on a batch of HR images.

        Args:
            data (dict): ``img`` ``(B, 3, H, W)`` normalised HR images, ``hw`` ``(B, 2)`` genuine sizes.

        Returns:
            dict: ``loss_sr`` (pixel MSE) as a float.
        """
        x_hr, hw = self._to_device(data)
        picks = torch.randint(len(self.ratios), (x_hr.shape[0],)).tolist()
        x_h2l = synthesize_lr(x_hr, hw, [self.ratios[i] for i in picks])
        pixels = self.model.pixels
        loss = F.mse_loss(pixels.to_pixels(self.model(x_h2l)), pixels.to_pixels(x_hr))
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self._losses.append(loss.item())
        return {"loss_sr": loss.item()}

    @torch.no_grad()
    def evaluate(self) -> dict:
        """PSNR (dB) and SSIM of SR and of bicubic against x^h on the held-out images.

        Returns:
            dict: ``psnr_sr``, ``psnr_bicubic``, ``ssim_sr``, ``ssim_bicubic`` (means over images and
            ratios), ``psnr_gain`` (SR - bicubic), ``num_images`` and ``ratios``: the same four per
            ratio label (``'1/2'``, ...).
        """
        was_training = self.model.training
        self.model.eval()
        pixels = self.model.pixels
        scores = {m: {k: [] for k in ("psnr_sr", "psnr_bicubic", "ssim_sr", "ssim_bicubic")}
                  for m in self.ratios}
        for data in self.holdout_loader:
            x_hr, hw = self._to_device(data)
            target = pixels.to_pixels(x_hr).clamp(0, 1)
            for m in self.ratios:
                x_h2l = synthesize_lr(x_hr, hw, m)
                images = {"sr": pixels.to_pixels(self.model(x_h2l)).clamp(0, 1),
                          "bicubic": pixels.to_pixels(x_h2l).clamp(0, 1)}
                for name, img in images.items():
                    scores[m][f"psnr_{name}"].extend(psnr(img, target).tolist())
                    scores[m][f"ssim_{name}"].extend(ssim(img, target).tolist())
        self.model.train(was_training)
        per_ratio = {ratio_label(m): {k: float(np.mean(v)) for k, v in s.items()}
                     for m, s in scores.items()}
        results = {k: float(np.mean([r[k] for r in per_ratio.values()]))
                   for k in ("psnr_sr", "psnr_bicubic", "ssim_sr", "ssim_bicubic")}
        results["psnr_gain"] = results["psnr_sr"] - results["psnr_bicubic"]
        results["num_images"] = len(self.holdout_loader.dataset)
        results["ratios"] = per_ratio
        return results

    def test(self, *args, **kwargs) -> float:
        """torchreid's evaluation hook: the held-out PSNR of SR (dB)."""
        return self.evaluate()["psnr_sr"]

    def save_model(self, epoch: int, psnr_sr: float, save_dir: str, is_best: bool = False) -> str:
        """Write the model's state (keys ``sr.*``) to :func:`sr_checkpoint_path` atomically (rank 0
        only under torchrun).

        Returns:
            str: the checkpoint's path.
        """
        path = sr_checkpoint_path(save_dir)
        if not distributed.is_main_process():
            return path
        save_torch_file({"state_dict": self.model.state_dict(), "epoch": int(epoch),
                         "psnr": float(psnr_sr), "stage": "sr", **self.checkpoint_info, **self.run_info}, path)
        return path

    def _save_progress(self, save_dir: str, history: list, seconds: list, best: float, best_epoch: int,
                       stale: int, best_state: dict) -> None:
        """State after epoch ``self.epoch + 1`` (weights, optimizer, early-stopping counters, random
        state), written atomically (by rank 0), so that a crash costs at most the epoch under way."""
        if not distributed.is_main_process():
            return
        save_torch_file({"epoch": self.epoch + 1, "state_dict": self.model.state_dict(),
                         "optimizer": self.optimizer.state_dict(), "best_state": best_state,
                         "best": float(best), "best_epoch": int(best_epoch), "stale": int(stale),
                         "history": history, "seconds": list(seconds), "rng": rng_state(self.train_loader),
                         **self.checkpoint_info, **self.run_info}, sr_progress_path(save_dir))

    def _load_progress(self, save_dir: str) -> Optional[dict]:
        """The state :meth:`_save_progress` left in ``save_dir``, restored into this engine; None when
        there is none, or it is damaged or of another SR module (then the stage starts over)."""
        path = sr_progress_path(save_dir)
        if not osp.isfile(path):
            return None
        try:
            progress = load_torch_file(path, what="stage sr progress")
            if any(progress.get(k) != v for k, v in self.checkpoint_info.items()):
                raise CheckpointError(f"'{path}' was written for another SR set-up")
            self.model.load_state_dict(progress["state_dict"])
            self.optimizer.load_state_dict(progress["optimizer"])
        except (CheckpointError, KeyError, RuntimeError, ValueError) as err:
            print(f"=> SR stage: {err}; starting over")
            return None
        set_rng_state(progress["rng"], self.train_loader)
        return progress

    def run(self, save_dir: str = "log", max_epoch: int = 100, patience: int = 10,
            print_freq: int = 10, **kwargs) -> dict:
        """Train until the held-out PSNR has not risen for ``patience`` epochs (or ``max_epoch``).

        The model ends with the weights of its best epoch (epoch 0 = the initial weights), which
        are saved with :meth:`save_model` when the module has parameters.

        Args:
            save_dir (str): output folder (the checkpoint goes under ``model/``).
            max_epoch (int): most epochs.
            patience (int): epochs without a PSNR gain (> ``MIN_GAIN_DB``) before stopping, >= 1.
            print_freq (int): print the loss every ``print_freq`` batches.
            **kwargs: other ``Engine.run`` arguments, ignored (no rank evaluation here).

        Returns:
            dict: :meth:`evaluate` of the best weights plus ``best_epoch``, ``epochs`` (trained),
            ``stopped_early``, ``seconds_per_epoch`` (training only), ``history`` (per epoch:
            ``epoch``, ``loss_sr``, ``psnr_sr``, ``seconds``), ``checkpoint`` ('' when nothing trains)
            and ``trained``.
        """
        if patience < 1:
            raise ValueError(f"jbim.sr_patience must be >= 1, got {patience}")
        trains = self.optimizer is not None and max_epoch > 0
        self.max_epoch = max_epoch
        current = self.evaluate()
        history = [{"epoch": 0, "psnr_sr": current["psnr_sr"]}]
        print(f"=> SR stage: held-out PSNR {current['psnr_sr']:.2f} dB (bicubic "
              f"{current['psnr_bicubic']:.2f} dB) on {current['num_images']} images before training")
        best, best_epoch, stale = current["psnr_sr"], 0, 0
        best_state = copy.deepcopy(self.model.state_dict())
        train_seconds = []
        start_epoch = 0
        progress = self._load_progress(save_dir) if trains else None
        if progress is not None:
            start_epoch, history, train_seconds = progress["epoch"], progress["history"], progress["seconds"]
            best, best_epoch, stale = progress["best"], progress["best_epoch"], progress["stale"]
            best_state = progress["best_state"]
            print(f"=> SR stage: continuing after epoch {start_epoch} from '{sr_progress_path(save_dir)}'")
        for self.epoch in range(start_epoch, max_epoch if trains else 0):
            if stale >= patience:
                break
            self._losses = []
            start = time.perf_counter()
            self.train(print_freq=print_freq)
            train_seconds.append(time.perf_counter() - start)
            value = self.evaluate()["psnr_sr"]
            history.append({"epoch": self.epoch + 1, "loss_sr": float(np.mean(self._losses)),
                            "psnr_sr": value, "seconds": train_seconds[-1]})
            print(f"=> SR epoch {self.epoch + 1}: loss_sr {history[-1]['loss_sr']:.5f}, held-out "
                  f"PSNR {value:.2f} dB (best {max(best, value):.2f}), {train_seconds[-1]:.1f} s")
            if value > best + MIN_GAIN_DB:
                best, best_epoch, stale = value, self.epoch + 1, 0
                best_state = copy.deepcopy(self.model.state_dict())
            else:
                stale += 1
            self._save_progress(save_dir, history, train_seconds, best, best_epoch, stale, best_state)
            if stale >= patience:
                print(f"=> SR stage: no PSNR gain for {patience} epochs, stopping")
                break
        self.model.load_state_dict(best_state)
        results = self.evaluate()
        checkpoint = self.save_model(best_epoch, results["psnr_sr"], save_dir) if trains else ""
        results.update(best_epoch=best_epoch, epochs=len(train_seconds), trained=trains,
                       stopped_early=trains and len(train_seconds) < max_epoch,
                       seconds_per_epoch=float(np.mean(train_seconds)) if train_seconds else 0.0,
                       history=history,
                       checkpoint=checkpoint)
        print(f"=> SR stage: best epoch {best_epoch}, held-out PSNR {results['psnr_sr']:.2f} dB vs "
              f"bicubic {results['psnr_bicubic']:.2f} dB, SSIM {results['ssim_sr']:.4f} vs "
              f"{results['ssim_bicubic']:.4f}")
        return results
