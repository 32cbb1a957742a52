"""torch.distributed for jbim-reid: set-up from ``torchrun``'s environment, rank helpers, the
distributed identity sampler, evaluation shards and feature gathering.

A process is *distributed* when ``torchrun`` launched it (it sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``); then :func:`setup` joins the process group (``train.dist_backend``: NCCL on GPUs,
gloo on CPU) with ``train.dist_timeout`` seconds as the collective timeout, so that a rank that dies
ends the job instead of hanging it. Without ``torchrun`` every helper here answers as a single
process (rank 0 of 1) and nothing is initialised.

Examples::
    >>> with distributed.session(cfg):     # no-op without torchrun
    ...     run_training(cfg)
    >>> if distributed.is_main_process():
    ...     write_json(results, path)
"""
import builtins
import contextlib
import os
import random
import sys
from datetime import timedelta
from typing import Iterator, List, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torchreid
from torch.utils.data import DataLoader, Sampler, Subset

__all__ = ["launched_by_torchrun", "setup", "shutdown", "session", "is_distributed", "get_rank",
           "get_world_size", "is_main_process", "barrier", "default_backend",
           "DistributedIdentitySampler", "build_train_sampler", "shard_loader",
           "train_loader", "gather_rows", "all_gather_with_local_grad", "mean_over_ranks"]

BACKENDS = ("nccl", "gloo")  # train.dist_backend values ('' = nccl on GPU, gloo on CPU)


def launched_by_torchrun() -> bool:
    """True when ``torchrun`` (``python -m torch.distributed.run``) started this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def is_distributed() -> bool:
    """True once the default process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """Global rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0: the one process that writes logs, TensorBoard, checkpoints and results."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if is_distributed():
        dist.barrier()


def default_backend(use_gpu: bool) -> str:
    """``nccl`` when training on CUDA, else ``gloo``."""
    return "nccl" if use_gpu and torch.cuda.is_available() else "gloo"


def setup(backend: str = "", use_gpu: bool = True, timeout_s: float = 600.0) -> bool:
    """Join the process group described by ``torchrun``'s environment variables.

    Args:
        backend (str, optional): ``nccl``, ``gloo`` or '' (by device). Default is ''.
        use_gpu (bool, optional): training runs on CUDA; selects ``cuda:LOCAL_RANK``. Default is True.
        timeout_s (float, optional): collective timeout in seconds; a rank blocked longer than this
            on a peer (e.g. a dead one) raises instead of hanging. Default is 600.

    Returns:
        bool: True when a process group was initialised (False without ``torchrun``).
    """
    if not launched_by_torchrun() or is_distributed():
        return is_distributed()
    backend = backend or default_backend(use_gpu)
    if backend not in BACKENDS:
        raise ValueError(f"Unknown train.dist_backend '{backend}'; expected one of {list(BACKENDS)} "
                         "or '' (nccl on GPU, gloo on CPU)")
    if timeout_s <= 0:
        raise ValueError(f"train.dist_timeout must be > 0 seconds, got {timeout_s}")
    local_rank = int(os.environ["LOCAL_RANK"])
    if use_gpu and torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    elif backend == "nccl":
        raise ValueError("train.dist_backend 'nccl' needs CUDA; use 'gloo' on CPU")
    if backend == "nccl":  # a failed NCCL collective aborts the communicator instead of hanging
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    _print_on_main_only()
    print(f"=> torch.distributed: {get_world_size()} ranks, backend {backend}, "
          f"timeout {timeout_s:g} s")
    return True


def shutdown() -> None:
    """Leave the process group (no-op without one)."""
    if is_distributed():
        dist.destroy_process_group()
        builtins.print = _BUILTIN_PRINT


@contextlib.contextmanager
def session(backend: str = "", use_gpu: bool = True, timeout_s: float = 600.0):
    """:func:`setup` on entry, :func:`shutdown` on exit; a no-op without ``torchrun``.

    An exception on one rank is printed with its rank before it propagates (``torchrun`` then
    reports that rank as failed and stops the others).
    """
    started = setup(backend, use_gpu, timeout_s)
    try:
        yield started
    except BaseException as err:
        if started and not isinstance(err, SystemExit):
            print(f"[rank {get_rank()}] {type(err).__name__}: {err}", file=sys.stderr, force=True)
        raise
    finally:
        if started:
            shutdown()


_BUILTIN_PRINT = builtins.print


def _print_on_main_only() -> None:
    """Silence ``print`` on ranks other than 0 (``print(..., force=True)`` still prints), as
    torchvision's reference scripts do, so a log shows each line once."""
    main = is_main_process()

    def print_(*args, force: bool = False, **kwargs):
        if main or force:
            _BUILTIN_PRINT(*args, **kwargs)

    builtins.print = print_


@contextlib.contextmanager
def _seeded_global_rngs(seed: int):
    """Seed Python's and numpy's global RNGs for the block, then restore their states."""
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


class DistributedIdentitySampler(Sampler):
    """torchreid's ``RandomIdentitySampler`` split across ranks: P x K identity groups per rank.

    One global index list is drawn by torchreid's ``RandomIdentitySampler`` with the *global*
    batch ``batch_size * num_replicas`` from an RNG seeded with ``seed + epoch`` (identical on every
    rank); global batch ``b`` holds ``P * num_replicas`` distinct identities with K indices each, and
    rank ``r`` takes its ``r``-th ``batch_size`` slice. So every rank draws P = batch_size / K whole
    groups per step, no identity is on two ranks in one step, and the ranks' union is the batch a
    single process with ``batch_size * num_replicas`` would draw from the same seed.

    Args:
        data_source (list): ``(impath, pid, camid, dsetid)`` items.
        batch_size (int): per-rank batch size (a multiple of ``num_instances``).
        num_instances (int): K, items per identity per batch.
        num_replicas (int, optional): number of ranks. Default is the world size.
        rank (int, optional): this rank. Default is the global rank.
        seed (int, optional): seed shared by all ranks. Default is 0.

    Examples::
        >>> sampler = DistributedIdentitySampler(dataset.train, 32, 4, seed=cfg.train.seed)
        >>> sampler.set_epoch(epoch)   # before each epoch, on every rank
    """

    def __init__(self, data_source: Sequence, batch_size: int, num_instances: int,
                 num_replicas: Optional[int] = None, rank: Optional[int] = None, seed: int = 0):
        self.num_replicas = get_world_size() if num_replicas is None else num_replicas
        self.rank = get_rank() if rank is None else rank
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} outside 0..{self.num_replicas - 1}")
        if batch_size % num_instances:
            raise ValueError(f"train.batch_size {batch_size} must be a multiple of "
                             f"sampler.num_instances {num_instances}")
        self.batch_size, self.seed, self.epoch = batch_size, seed, 0
        self.global_batch = batch_size * self.num_replicas
        pids = {item[1] for item in data_source}
        if len(pids) < self.global_batch // num_instances:
            raise ValueError(
                f"global batch {self.global_batch} (train.batch_size {batch_size} x "
                f"{self.num_replicas} ranks) / sampler.num_instances {num_instances} needs "
                f"{self.global_batch // num_instances} identities per step; the training set has "
                f"{len(pids)}")
        self.sampler = torchreid.data.sampler.RandomIdentitySampler(
            data_source, self.global_batch, num_instances)
        self._cache = (None, [])

    def set_epoch(self, epoch: int) -> None:
        """Use ``seed + epoch`` for the next iteration (call on every rank before each epoch)."""
        self.epoch = epoch

    def _indices(self) -> List[int]:
        if self._cache[0] != self.epoch:
            with _seeded_global_rngs(self.seed + self.epoch):
                indices = list(iter(self.sampler))
            mine = []
            for start in range(0, len(indices) - self.global_batch + 1, self.global_batch):
                offset = start + self.rank * self.batch_size
                mine.extend(int(i) for i in indices[offset:offset + self.batch_size])
            self._cache = (self.epoch, mine)
        return self._cache[1]

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._indices()))

    def __len__(self) -> int:
        return len(self._indices())


def build_train_sampler(data_source: Sequence, train_sampler: str, batch_size: int,
                        num_instances: int, seed: int) -> Sampler:
    """The per-rank sampler for torchreid's ``sampler.train_sampler`` name under torchrun.

    ``RandomIdentitySampler`` -> :class:`DistributedIdentitySampler`; ``RandomSampler`` /
    ``SequentialSampler`` -> ``torch.utils.data.DistributedSampler`` (shuffled or not). Both have
    ``set_epoch``.
    """
    if train_sampler == "RandomIdentitySampler":
        return DistributedIdentitySampler(data_source, batch_size, num_instances, seed=seed)
    if train_sampler in ("RandomSampler", "SequentialSampler"):
        return torch.utils.data.DistributedSampler(
            data_source, shuffle=train_sampler == "RandomSampler", seed=seed, drop_last=True)
    raise ValueError(f"sampler.train_sampler '{train_sampler}' has no distributed version; expected "
                     "RandomIdentitySampler, RandomSampler or SequentialSampler")


def train_loader(loader: DataLoader, sampler: Sampler) -> DataLoader:
    """A copy of torchreid's train ``loader`` drawing from ``sampler`` (per-rank batches)."""
    return DataLoader(loader.dataset, sampler=sampler, batch_size=loader.batch_size,
                      shuffle=False, num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                      drop_last=True, collate_fn=loader.collate_fn)


def shard_loader(loader: DataLoader) -> DataLoader:
    """This rank's contiguous shard of a test ``loader`` (same batch size and workers).

    ``numpy.array_split`` over the items in order: shard sizes differ by at most one, nothing is
    padded or repeated, so concatenating the shards in rank order gives the whole set in order.
    """
    if not is_distributed():
        return loader
    indices = np.array_split(np.arange(len(loader.dataset)), get_world_size())[get_rank()]
    return DataLoader(Subset(loader.dataset, indices.tolist()), batch_size=loader.batch_size,
                      shuffle=False, num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                      drop_last=False, collate_fn=loader.collate_fn)


def gather_rows(obj):
    """Concatenate a per-rank tensor / ndarray / list over ranks in rank order (CPU objects).

    ``None`` parts (e.g. an empty shard's missing ``hw``) are skipped; all ``None`` gives ``None``.
    """
    if not is_distributed():
        return obj
    parts = [None] * get_world_size()
    dist.all_gather_object(parts, obj)
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts)
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    return [x for part in parts for x in part]


def all_gather_with_local_grad(x: torch.Tensor) -> torch.Tensor:
    """``(B, ...)`` on each rank -> ``(world * B, ...)`` in rank order; gradients flow only through
    this rank's own rows (the others are constants). Needs equal ``B`` on every rank."""
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[get_rank()] = x
    return torch.cat(parts)


def mean_over_ranks(values: dict) -> dict:
    """Average a dict of floats over ranks (same keys on every rank); identity without a group."""
    if not is_distributed() or not values:
        return values
    keys = sorted(values)
    backend = dist.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else "cpu"
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= get_world_size()
    return {**values, **dict(zip(keys, t.tolist()))}
