"""Training checkpoints of ``JBIMEngine`` and ``PlainTripletEngine``: where they are written, the random state
they carry, saving / resuming them and the epoch loop that writes them (``CheckpointMixin``).
"""
import os
import os.path as osp
import random
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from jbim_reid.engines import distributed
from jbim_reid.utils.fileio import (CheckpointMismatchError, load_torch_file, save_torch_file,
                                    strip_module_prefix)

__all__ = ["CheckpointMixin", "checkpoint_path", "list_checkpoints", "rng_state", "set_rng_state"]


def checkpoint_path(save_dir: str, epoch: int) -> str:
    """Where ``JBIMEngine.save_model`` writes the checkpoint after ``epoch`` finished epochs:
    ``<save_dir>/model/model.pth.tar-<epoch>`` (torchreid's name). The one place that names them."""
    return osp.join(save_dir, "model", f"model.pth.tar-{epoch}")


def list_checkpoints(save_dir: str) -> List[Tuple[int, str]]:
    """``(epoch, path)`` of every checkpoint named by :func:`checkpoint_path` in ``save_dir``, oldest first."""
    folder, prefix = osp.split(checkpoint_path(save_dir, 0)[:-1])
    if not osp.isdir(folder):
        return []
    found = [(int(name[len(prefix):]), osp.join(folder, name)) for name in os.listdir(folder)
             if name.startswith(prefix) and name[len(prefix):].isdigit()]
    return sorted(found)


def rng_state(loader=None) -> Dict[str, Any]:
    """The random state of torch (CPU and CUDA), numpy, python and ``loader``'s generators.

    Stored as tensors, lists and numbers, so a checkpoint holding it loads with ``weights_only=True``.
    torchreid's samplers draw from the global ``random`` / ``numpy`` generators, and a DataLoader
    without its own generator seeds each epoch from torch's: together they are the sampler's state.
    """
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "loader": [g.get_state() for g in _loader_generators(loader)],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any], loader=None) -> None:
    """Restore a :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    for generator, saved in zip(_loader_generators(loader), state.get("loader", [])):
        generator.set_state(saved)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _loader_generators(loader) -> List[torch.Generator]:
    """The explicit generators of a DataLoader and its sampler (none by default)."""
    found = []
    for owner in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
            found.append(generator)
    return found


class CheckpointMixin:
    """``save_model`` / ``resume`` of ``JBIMEngine``: torchreid's checkpoint dict written atomically, plus
    what rebuilds the model and continues the run bit for bit."""

    def save_model(self, epoch: int, rank1: Optional[float], save_dir: str, is_best: bool = False) -> None:
        """Checkpoint after epoch ``epoch`` (0-based) at ``checkpoint_path(save_dir, epoch + 1)``.

        torchreid's checkpoint dict (``state_dict``, ``epoch``, ``rank1``, ``optimizer``,
        ``scheduler``) plus ``jbim_kwargs`` of a JBIM model (so ``load_jbim_checkpoint`` rebuilds it),
        ``stage`` and ``rng`` (:func:`rng_state`), written with ``jbim_reid.utils.fileio.save_torch_file``
        (temporary file, fsync, rename: never a truncated file under the final name; torchreid's
        ``save_checkpoint`` writes in place). Older checkpoints beyond ``keep_checkpoints`` are then
        deleted. ``rank1`` is None when no evaluation ran at this epoch.
        """
        if not distributed.is_main_process():  # rank 0 writes; every rank waits until it is on disk
            distributed.barrier()
            return
        model = self._models["model"]
        state = {
            "state_dict": model.state_dict(),
            "epoch": epoch + 1,
            "rank1": None if rank1 is None else float(rank1),
            "optimizer": self._optims["model"].state_dict(),
            "scheduler": self._scheds["model"].state_dict(),
            # a JBIM model's constructor arguments; a torchreid model (stage plain) has none, so that its
            # checkpoint stays a torchreid checkpoint for jbim.init_from
            **({"jbim_kwargs": dict(model.jbim_kwargs)} if hasattr(model, "jbim_kwargs") else {}),
            "stage": self.stage,
            "rng": rng_state(self.train_loader),
            **getattr(self, "run_info", {}),  # the recipe and jbim.init_from it was trained with
        }
        path = checkpoint_path(save_dir, epoch + 1)
        save_torch_file(state, path)
        print(f"=> Checkpoint saved to '{path}'")
        if is_best:
            save_torch_file(state, osp.join(osp.dirname(path), "model-best.pth.tar"))
        keep = getattr(self, "keep_checkpoints", 0)
        if keep > 0:
            for _, old in list_checkpoints(save_dir)[:-keep]:
                os.remove(old)
        distributed.barrier()

    def train_epochs(self, save_dir: str, max_epoch: int, start_epoch: int = 0, checkpoint_freq: int = 1,
                     keep_checkpoints: int = 2, evaluate: Optional[Callable[[int], Optional[float]]] = None,
                     **train_kwargs: Any) -> None:
        """torchreid's epoch loop with crash-safe checkpoints: ``self.train(**train_kwargs)`` for epochs
        ``start_epoch`` .. ``max_epoch - 1``, a checkpoint after every ``checkpoint_freq`` epochs (0: none
        but the last), after every epoch that ``evaluate`` tested and after the last.

        Args:
            evaluate (callable, optional): finished epochs -> rank-1 when it tested then, else None.
            keep_checkpoints (int, optional): checkpoints kept, newest first; 0 keeps all.
            train_kwargs: ``print_freq``, ``fixbase_epoch``, ``open_layers`` of torchreid's ``Engine.train``.
        """
        if checkpoint_freq < 0 or keep_checkpoints < 0:
            raise ValueError(f"checkpoint_freq ({checkpoint_freq}) and keep_checkpoints "
                             f"({keep_checkpoints}) must be >= 0")
        self.keep_checkpoints = keep_checkpoints
        if self.writer is None:
            self.writer = SummaryWriter(log_dir=save_dir)
        self.start_epoch, self.max_epoch = start_epoch, max_epoch
        print("=> Start training")
        for self.epoch in range(start_epoch, max_epoch):
            self.train(**train_kwargs)
            done = self.epoch + 1
            rank1 = None if evaluate is None else evaluate(done)
            if done == max_epoch or rank1 is not None or (checkpoint_freq > 0 and done % checkpoint_freq == 0):
                self.save_model(self.epoch, rank1, save_dir)

    def resume(self, fpath: str, check: Optional[Callable[[dict], None]] = None) -> int:
        """Restore model, optimizer, scheduler and random state from a ``save_model`` checkpoint.

        Nothing is changed unless the whole checkpoint fits this engine.

        Args:
            fpath (str): the checkpoint.
            check (callable, optional): called with the loaded checkpoint once it fits; what it raises
                refuses the checkpoint before anything changes (the runner's check of the run's config).

        Returns:
            int: the epoch to start at (the checkpoint's finished epochs).

        Raises:
            CheckpointError: the file is missing, empty, truncated or unsafe.
            CheckpointMismatchError: it holds another model, stage or optimizer, or is not a training
                checkpoint.
        """
        checkpoint = load_torch_file(fpath, what="resume checkpoint")
        self._check_fits(checkpoint, fpath)
        if check is not None:
            check(checkpoint)
        state = strip_module_prefix(checkpoint["state_dict"])
        self.model.load_state_dict(state)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        if "rng" in checkpoint:
            set_rng_state(checkpoint["rng"], self.train_loader)
        epoch = int(checkpoint["epoch"])
        print(f"=> Resumed from '{fpath}' (epoch {epoch} finished)")
        return epoch

    def _check_fits(self, checkpoint: Any, fpath: str) -> None:
        """Raise CheckpointMismatchError unless ``checkpoint`` resumes this engine's model and stage."""
        def mismatch(reason: str) -> CheckpointMismatchError:
            return CheckpointMismatchError(
                f"resume checkpoint '{fpath}' {reason}; it cannot resume this run: use another "
                "data.save_dir (or delete the file) to train this model from scratch")

        needed = ("state_dict", "epoch", "optimizer", "scheduler")
        if not isinstance(checkpoint, dict) or any(k not in checkpoint for k in needed):
            raise mismatch(f"is not a training checkpoint (expected the keys {list(needed)})")
        own_kwargs = getattr(self.model, "jbim_kwargs", None)
        theirs = checkpoint.get("jbim_kwargs")
        if own_kwargs is not None and theirs is not None and dict(theirs) != dict(own_kwargs):
            diff = {k: (theirs.get(k), v) for k, v in own_kwargs.items() if theirs.get(k) != v}
            raise mismatch("was written for another model (checkpoint vs this run: "
                           + ", ".join(f"{k} {a!r} vs {b!r}" for k, (a, b) in diff.items()) + ")")
        if checkpoint.get("stage", self.stage) != self.stage:
            raise mismatch(f"belongs to stage '{checkpoint['stage']}', not '{self.stage}'")
        own = self.model.state_dict()
        state = strip_module_prefix(checkpoint["state_dict"])
        wrong = sorted(set(own) ^ set(state)) or [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
        if wrong:
            raise mismatch(f"holds other weights than this model ({len(wrong)} keys differ, e.g. {wrong[:3]})")
        groups = checkpoint["optimizer"].get("param_groups", [])
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in self.optimizer.param_groups]:
            raise mismatch("holds the state of another optimizer (its parameter groups differ)")
