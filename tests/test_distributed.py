"""torchrun / DistributedDataParallel on CPU (gloo): sampler, single-process fallbacks, and real
2-rank launches of the CLI and of ``dist_worker.py`` on a synthetic CAVIAR tree."""
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torchreid
from synthetic import make_caviar

from jbim_reid.cli import main
from jbim_reid.engines import distributed
from jbim_reid.engines.distributed import DistributedIdentitySampler

REPO = Path(__file__).parent.parent
CPU_CONFIG = str(REPO / "configs" / "caviar" / "jbim_osnet_x0_25_cpu.yaml")
TINY = ["data.height", "32", "data.width", "16", "train.batch_size", "4", "sampler.num_instances", "2",
        "data.workers", "0", "train.print_freq", "1", "test.batch_size", "8", "train.dist_timeout", "60"]


def items(num_ids=10, per_id=6):
    return [(f"{pid}_{k}.jpg", pid, k % 2, 0) for pid in range(num_ids) for k in range(per_id)]


def batches(sampler, size):
    idx = list(sampler)
    return [idx[i:i + size] for i in range(0, len(idx), size)]


def test_ranks_draw_disjoint_whole_groups_whose_union_is_the_global_batch():
    data, per_rank, k, world = items(), 4, 2, 2
    ranks = [DistributedIdentitySampler(data, per_rank, k, num_replicas=world, rank=r, seed=5)
             for r in range(world)]
    single = DistributedIdentitySampler(data, per_rank * world, k, num_replicas=1, rank=0, seed=5)
    for epoch in (0, 1):
        for s in ranks + [single]:
            s.set_epoch(epoch)
        per_rank_batches = [batches(s, per_rank) for s in ranks]
        assert len(per_rank_batches[0]) == len(per_rank_batches[1]) > 0
        assert len(ranks[0]) == len(ranks[1]) == len(per_rank_batches[0]) * per_rank
        for step, global_batch in enumerate(batches(single, per_rank * world)):
            pids = [[data[i][1] for i in per_rank_batches[r][step]] for r in range(world)]
            for p in pids:  # P whole groups of K
                assert all(count == k for count in Counter(p).values())
            assert not set(pids[0]) & set(pids[1])
            assert per_rank_batches[0][step] + per_rank_batches[1][step] == global_batch


def test_set_epoch_makes_the_order_reproducible_and_leaves_global_rngs_alone():
    data = items()
    a = DistributedIdentitySampler(data, 4, 2, num_replicas=2, rank=1, seed=0)
    b = DistributedIdentitySampler(data, 4, 2, num_replicas=2, rank=1, seed=0)
    state = random.getstate(), np.random.get_state()[1].copy()
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    b.set_epoch(4)
    assert list(a) != list(b)
    assert random.getstate() == state[0] and np.array_equal(np.random.get_state()[1], state[1])


def test_sampler_rejects_a_global_batch_larger_than_the_identities():
    with pytest.raises(ValueError, match="global batch 16 .* needs 8 identities .* has 5"):
        DistributedIdentitySampler(items(num_ids=5), 8, 2, num_replicas=2, rank=0)
    with pytest.raises(ValueError, match="multiple of sampler.num_instances"):
        DistributedIdentitySampler(items(), 5, 2, num_replicas=2, rank=0)


def test_without_torchrun_everything_is_a_single_process(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert not distributed.launched_by_torchrun()
    assert distributed.setup("gloo", use_gpu=False) is False
    assert (distributed.get_rank(), distributed.get_world_size()) == (0, 1)
    assert distributed.is_main_process()
    loader = torch.utils.data.DataLoader(list(range(5)))
    assert distributed.shard_loader(loader) is loader
    x = torch.randn(3, 2, requires_grad=True)
    assert distributed.all_gather_with_local_grad(x) is x
    assert distributed.mean_over_ranks({"loss": 2.0}) == {"loss": 2.0}
    assert distributed.default_backend(use_gpu=False) == "gloo"


def test_amp_and_channels_last_are_harmless_on_cpu():
    """On CPU autocast is off and channels_last only changes the memory layout: same features, same
    loss."""
    from test_engine import batch, make_engine

    plain = make_engine()
    fast = make_engine(amp=True, test_amp=True, channels_last=True)
    assert fast.scaler.is_enabled() is False and fast._amp_dtype() is None
    plain.model.eval()
    fast.model.eval()
    loader, timer = plain.test_loader["fake"]["query"], torchreid.utils.AverageMeter()
    fa, fb = plain._extract(loader, "probe", timer)[0], fast._extract(loader, "probe", timer)[0]
    assert fb.dtype == torch.float32
    torch.testing.assert_close(fb, fa, rtol=1e-4, atol=1e-5)
    plain.model.train()
    fast.model.train()
    data = batch(plain)
    torch.manual_seed(1)  # the same fusion dropout masks
    a = plain.forward_backward(data)
    torch.manual_seed(1)
    b = fast.forward_backward(data)
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)


@pytest.mark.parametrize("opts, named", [(["train.dist_backend", "mpi"], "train.dist_backend"),
                                         (["train.dist_timeout", "0"], "train.dist_timeout")])
def test_bad_distributed_keys_exit_2_naming_the_key(opts, named, capsys):
    assert main(["train", "--config-file", CPU_CONFIG] + opts) == 2
    assert named in capsys.readouterr().err


# ---------------------------------------------------------------- real launches (gloo, CPU)

def env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def torchrun(nproc, args, timeout=400):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--master_port", str(29500 + random.randrange(1000))] + args
    return subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=timeout)


def cli_args(root, save_dir, *opts):
    return ["-m", "jbim_reid.cli", "train", "--config-file", CPU_CONFIG, "data.root", str(root),
            "data.save_dir", str(save_dir)] + TINY + list(opts)


def check(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def odd_root(tmp_path_factory):
    """CAVIAR with 10 two-camera ids and 9 LR images each: 5 train ids, 45 queries, 5 gallery images
    (neither divisible by 2 ranks)."""
    root = make_caviar(tmp_path_factory.mktemp("data"), num_two_cam=10, num_one_cam=1)
    for pid in range(1, 11):
        os.remove(root / "caviar" / "CAVIAR4REID" / "cropped_images" / f"{pid:04d}020.jpg")
    return root


@pytest.fixture(scope="module")
def two_rank_run(odd_root, tmp_path_factory):
    """``torchrun --nproc_per_node 2 -m jbim_reid.cli train`` of every stage (1 epoch each)."""
    save_dir = tmp_path_factory.mktemp("two_ranks")
    out = check(torchrun(2, cli_args(odd_root, save_dir, "train.max_epoch", "1", "jbim.stage", "all")))
    return save_dir, out


@pytest.mark.slow
def test_two_ranks_train_every_stage_and_write_one_set_of_outputs(two_rank_run):
    save_dir, out = two_rank_run
    for stage in ("him", "lim", "joint"):
        folder = save_dir / f"stage_{stage}"
        assert sorted(p.name for p in (folder / "model").iterdir()) == ["model.pth.tar-1"]
        assert len(list(folder.glob("events.out.tfevents.*"))) == 1  # rank 0's TensorBoard only
        assert json.loads((folder / "results.json").read_text())["stage"] == stage
    assert json.loads((save_dir / "results.json").read_text())["stage"] == "all"
    sr = save_dir / "stage_sr"  # every rank trains the SR module, rank 0 alone writes it
    assert sorted(p.name for p in (sr / "model").iterdir()) == ["sr_best.pth.tar", "sr_last.pth.tar"]
    assert json.loads((sr / "results.json").read_text())["stage"] == "sr"
    assert "torch.distributed: 2 ranks, backend gloo" in out
    assert out.count("Checkpoint saved to") == 3  # printed once per stage: rank 1 prints nothing


def adam_steps(path):
    state = torch.load(path, weights_only=True)["optimizer"]["state"]
    return {int(v["step"]) for v in state.values()}


def last_batch_count(out, epoch):
    found = re.findall(rf"epoch: \[{epoch}/\d+\]\[(\d+)/(\d+)\]", out)
    return int(found[-1][1])


@pytest.mark.slow
def test_resume_from_two_ranks_on_one_and_from_one_rank_on_two(two_rank_run, odd_root, tmp_path):
    save_dir, _ = two_rank_run
    two_rank_ckpt = save_dir / "stage_him" / "model" / "model.pth.tar-1"
    one = tmp_path / "one"  # plain single process (no torchrun) resumes the 2-rank checkpoint
    proc = subprocess.run([sys.executable] + cli_args(odd_root, one, "jbim.stage", "him",
                                                      "train.max_epoch", "2", "model.resume",
                                                      str(two_rank_ckpt)),
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=400)
    out = check(proc)
    assert "(epoch 1 finished)" in out and "torch.distributed" not in out
    one_ckpt = one / "model" / "model.pth.tar-2"
    assert adam_steps(one_ckpt) == {max(adam_steps(two_rank_ckpt)) + last_batch_count(out, 2)}

    two = tmp_path / "two"  # 2 ranks resume the 1-rank checkpoint
    out = check(torchrun(2, cli_args(odd_root, two, "jbim.stage", "him", "train.max_epoch", "3",
                                     "model.resume", str(one_ckpt))))
    assert "(epoch 2 finished)" in out
    ckpt = torch.load(two / "model" / "model.pth.tar-3", weights_only=True)
    assert ckpt["epoch"] == 3
    assert adam_steps(two / "model" / "model.pth.tar-3") == \
        {max(adam_steps(one_ckpt)) + last_batch_count(out, 3)}


@pytest.mark.slow
def test_two_ranks_equal_one_process_with_the_global_batch(odd_root, tmp_path):
    """Evaluation from the same weights, and one step on the same global batch (BatchNorm statistics
    frozen: per-rank BN statistics are the one expected difference on CPU, where SyncBatchNorm
    does not run), match a single process: metrics exactly, features and weights to float noise."""
    worker = str(REPO / "tests" / "dist_worker.py")
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    gather = ["train.dist_gather_triplet", "True"]
    one = subprocess.run([sys.executable, worker, str(odd_root), str(tmp_path / "one"),
                          "train.batch_size", "8"] + gather,
                         cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    check(one)
    check(torchrun(2, [worker, str(odd_root), str(tmp_path / "two"), "train.batch_size", "4"] + gather))

    a, b = np.load(tmp_path / "one" / "eval.npz"), np.load(tmp_path / "two" / "eval.npz")
    assert a["distmat"].shape == (45, 5)
    for key in ("cmc", "mAP", "q_pids", "g_pids", "q_hw", "g_hw"):
        assert np.array_equal(a[key], b[key]), key
    np.testing.assert_allclose(a["distmat"], b["distmat"], rtol=1e-5, atol=1e-5)

    sa, sb = (json.loads((tmp_path / d / "step.json").read_text()) for d in ("one", "two"))
    assert (sa["world"], sb["world"]) == (1, 2)
    for key in ("loss", "loss_him_reid", "loss_lim", "loss_fus", "loss_sr"):
        assert sb[key] == pytest.approx(sa[key], rel=1e-5), key
    wa, wb = (torch.load(tmp_path / d / "step.pt", weights_only=True) for d in ("one", "two"))
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], rtol=1e-5, atol=1e-6, msg=key)


def rank_pid(parent: int, rank: int) -> int:
    """Pid of the torchrun worker with ``RANK=rank`` below ``parent``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    raise LookupError(f"no rank {rank} below pid {parent}")


@pytest.mark.slow
def test_killing_one_rank_mid_epoch_ends_the_job_naming_the_rank(odd_root, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(29500 + random.randrange(1000))] + cli_args(odd_root, tmp_path, "jbim.stage", "him",
                                                           "train.max_epoch", "20")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:  # wait until rank 0 logs the first training step
            lines.append(line)
            if line.startswith("epoch: [1/20][1/"):
                break
        victim = rank_pid(proc.pid, 1)
        os.kill(victim, signal.SIGKILL)
        start = time.monotonic()
        rest, _ = proc.communicate(timeout=90)
        elapsed = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(lines) + rest
    assert proc.returncode != 0
    assert elapsed < 60, f"job took {elapsed:.0f} s to end after rank 1 died"
    assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)", out), out[-2000:]
    assert f"pid: {victim}" in out and "SIGKILL" in out
    assert not (tmp_path / "model").exists()  # no checkpoint from a half-trained epoch
