"""Worker for tests/test_distributed.py: run with ``python -m torch.distributed.run`` (N ranks) or as a
plain single process, then compare what rank 0 wrote.

``python dist_worker.py DATA_ROOT OUT_DIR [KEY VALUE ...]``:
  1. evaluates the freshly built (seeded) model: ``OUT_DIR/eval.npz`` (distmat, cmc, mAP, pids, hw);
  2. takes one optimisation step on the first global batch (``train.batch_size`` x world size),
     each rank on its own slice, with BatchNorm statistics frozen (eval-mode BN, dropout 0) so the
     step does not depend on how the batch is split: ``OUT_DIR/step.pt`` (state dict) and
     ``OUT_DIR/step.json`` (the loss summary, averaged over ranks).
"""
import json
import random
import sys
from pathlib import Path

import numpy as np
import torch
import torchreid

from jbim_reid.config import engine_kwargs, optimizer_kwargs
from jbim_reid.engines import JBIMEngine, distributed
from jbim_reid.training.checks import load_config
from jbim_reid.training.runner import build_datamanager, build_model

CONFIG = str(Path(__file__).parent.parent / "configs" / "caviar" / "jbim_osnet_x0_25_cpu.yaml")


def main(root: str, out: str, opts) -> None:
    cfg = load_config(CONFIG, ["data.root", root, "data.height", "32", "data.width", "16",
                               "data.workers", "0", "data.transforms", "[]", "train.batch_size", "4",
                               "sampler.num_instances", "2", "test.batch_size", "8",
                               "jbim.stage", "joint", "jbim.dropout", "0.0", "train.optim", "sgd",
                               "train.lr", "0.01", "train.staged_lr", "False", "train.seed", "3"]
                      + list(opts))
    with distributed.session("gloo", use_gpu=False, timeout_s=60):
        dm = build_datamanager(cfg)
        torchreid.utils.set_random_seed(cfg.train.seed)
        model = build_model(cfg, dm.num_train_pids)
        optimizer = torchreid.optim.build_optimizer(model, **optimizer_kwargs(cfg))
        engine = JBIMEngine(dm, model, optimizer, **{**engine_kwargs(cfg), "use_gpu": False})
        engine.test(ranks=[1, 5])
        res = engine.last_results["caviar"]
        if distributed.is_main_process():
            np.savez(Path(out) / "eval.npz", **{k: np.asarray(res[k]) for k in
                                                ("distmat", "cmc", "q_pids", "g_pids", "q_hw", "g_hw")},
                     mAP=res["mAP"])

        world, rank, per_rank = distributed.get_world_size(), distributed.get_rank(), cfg.train.batch_size
        sampler = distributed.DistributedIdentitySampler(
            dm.train_loader.dataset.train, per_rank * world, cfg.sampler.num_instances,
            num_replicas=1, rank=0, seed=cfg.train.seed)
        random.seed(0)  # the partner views, drawn by the dataset, are the same on every rank
        loader = torch.utils.data.DataLoader(dm.train_loader.dataset, sampler=sampler,
                                             batch_size=per_rank * world)
        batch = next(iter(loader))
        mine = slice(rank * per_rank, (rank + 1) * per_rank)
        batch = {k: v[mine] for k, v in batch.items() if isinstance(v, torch.Tensor)}
        model.train()
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
        summary = engine.forward_backward(batch)
        if distributed.is_main_process():
            torch.save(model.state_dict(), Path(out) / "step.pt")
            (Path(out) / "step.json").write_text(json.dumps({**summary, "world": world}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
