"""Speed and memory of JBIM next to what a plain torchreid user runs, measured side by side.

Measures, in one run on this machine:
  * inference throughput (images/s) and peak memory of a plain torchreid backbone, the JBIM probe
    path (SR -> HIM + LIM -> FFN), the JBIM gallery path (HIM + LIM on the downsampled image -> FFN)
    and the 3-anchor ensemble probe path;
  * one training step of JBIM (joint stage) against torchreid's ``ImageTripletEngine`` step;
  * rank evaluation at Market-1501 scale (3,368 x 15,913): ``jbim_reid.metrics.evaluate_rank`` against
    torchreid's Python ``evaluate_rank``, with a parity check;
  * on a CUDA device only (skipped with the reason otherwise): a JBIM training step and the probe path
    in fp32 against mixed precision (``train.amp`` / ``test.amp``, with ``train.channels_last``):
    images/s and peak GPU memory.

Every measurement runs in a fresh child process so that its peak resident memory (``ru_maxrss``) is its
own; the report gives absolute figures and ratios against the plain baseline.

Usage::

    python benchmarks/speed.py                 # full run (a few minutes on 2 cores)
    python benchmarks/speed.py --quick         # about a minute
    python benchmarks/speed.py --out speed.json
"""
import argparse
import json
import multiprocessing as mp
import platform
import resource
import sys
import time
from datetime import datetime, timezone
from typing import Callable, Dict, List

import numpy as np


def _peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _throughput(fn: Callable[[], None], images_per_call: int, repeats: int,
                clock: Callable[[], float] = time.perf_counter) -> float:
    """Images per second of ``fn`` over ``repeats`` calls after one warm-up call.

    ``clock``: ``time.perf_counter`` (wall time) or ``time.process_time`` (CPU time of this process:
    with one thread, what the work costs whatever else the machine runs).
    """
    fn()
    start = clock()
    for _ in range(repeats):
        fn()
    return images_per_call * repeats / (clock() - start)


def _build_jbim(args, ratio: float = 0.5, sr: str = None):
    import jbim_reid  # noqa: F401  (registers the builders)
    from jbim_reid.models import JBIM

    model = JBIM(num_classes=args.num_classes, backbone=args.backbone, sr=sr or args.sr, ratio=ratio,
                 height=args.height, width=args.width)
    return model


def _measure_inference(kind: str, args) -> Dict[str, float]:
    import torch
    import torchreid

    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.height, args.width)
    if kind == "plain_backbone":
        model = torchreid.models.build_model(args.backbone, num_classes=args.num_classes,
                                             loss="softmax", pretrained=False).eval()
        call = lambda: model(x)  # noqa: E731
    elif kind in ("jbim_probe", "jbim_gallery"):
        model = _build_jbim(args).eval()
        fn = model.probe_features if kind == "jbim_probe" else model.gallery_features
        call = lambda: fn(x)  # noqa: E731
    elif kind == "ensemble_probe":
        from jbim_reid.evaluation.ensemble import anchor_weights, fuse_distances

        anchors = [1 / 2, 1 / 3, 1 / 4]
        models = [_build_jbim(args, ratio=m).eval() for m in anchors]
        with torch.no_grad():  # a gallery of one batch, precomputed
            gallery = [m.gallery_features(x) for m in models]
        ratios = np.full(args.batch_size, 0.4)

        def call():
            dists = [torch.cdist(m.probe_features(x), g).numpy() for m, g in zip(models, gallery)]
            fuse_distances(dists, anchor_weights(ratios, anchors))
    else:
        raise ValueError(f"unknown inference measurement {kind!r}")
    with torch.no_grad():
        ips = _throughput(call, args.batch_size, args.repeats)
    return {"images_per_s": ips, "peak_rss_mib": _peak_rss_mib()}


def _clock(args) -> Callable[[], float]:
    """CPU time with one thread (robust on a shared machine), else wall time."""
    return time.process_time if getattr(args, "threads", 0) == 1 else time.perf_counter


def _probe_parts(model, x, fast: bool) -> Dict[str, Callable[[], None]]:
    """Calls of each part of the probe path (SR, HIM, LIM, FFN) and of the whole path.

    ``fast``: the model and input in channels_last memory format (run under ``inference_mode`` by the
    caller); otherwise the contiguous layout of a plain call.
    """
    import torch

    if fast:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    sr_out = model.sr(x)
    f_h, f_l = model.him(sr_out)["bn"], model.lim(x)["bn"]
    return {
        "sr": lambda: model.sr(x),
        "him": lambda: model.him(sr_out),
        "lim": lambda: model.lim(x),
        "ffn": lambda: model.fusion(f_h, f_l),
        "probe_path": lambda: model.probe_features(x),
    }


def _measure_probe_parts(args) -> Dict[str, Dict[str, float]]:
    """Images/s of the plain backbone and of each probe-path part, before and after the speed-ups.

    before: ``jbim.sr`` = ``args.sr``, ``torch.no_grad``, contiguous tensors (the probe path as the
    engine ran it); after: ``args.fast_sr``, ``torch.inference_mode``, channels_last. With
    ``--threads 1`` the timings are CPU time of this process, so a shared machine's load does not
    distort them.
    """
    import contextlib

    import torch
    import torchreid

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.height, args.width)
    plain = torchreid.models.build_model(args.backbone, num_classes=args.num_classes, loss="softmax",
                                         pretrained=False).eval()
    out: Dict[str, Dict[str, float]] = {}
    for name, sr, fast in (("before", args.sr, False), ("after", args.fast_sr, True)):
        model = _build_jbim(args, sr=sr).eval()
        ctx = torch.inference_mode if fast else torch.no_grad
        base, xb = plain, x
        if fast:
            base = torchreid.models.build_model(args.backbone, num_classes=args.num_classes, loss="softmax",
                                                pretrained=False).eval().to(memory_format=torch.channels_last)
            xb = x.contiguous(memory_format=torch.channels_last)
        with ctx():
            calls = _probe_parts(model, x, fast)
            row = {"plain_backbone": _throughput(lambda: base(xb), args.batch_size, args.repeats, _clock(args))}
            for part, call in calls.items():
                row[part] = _throughput(call, args.batch_size, args.repeats, _clock(args))
        row["probe_slowdown_vs_plain"] = row["plain_backbone"] / row["probe_path"]
        row["settings"] = {"sr": sr, "inference_mode": fast, "channels_last": fast,
                           "clock": "cpu" if _clock(args) is time.process_time else "wall"}
        out[name] = row
        del model
    with contextlib.suppress(ImportError):
        out["onnx"] = _measure_onnx_probe(args)
    return out


def _measure_onnx_probe(args) -> Dict[str, float]:
    """Images/s of the exported probe graph in onnxruntime (CPU, ``args.threads`` threads) next to the
    same model's fast torch path, in one process."""
    import tempfile

    import onnxruntime as ort
    import torch

    from jbim_reid.deploy.export import export_model

    torch.manual_seed(0)
    model = _build_jbim(args, sr=args.fast_sr).eval()
    x = torch.randn(args.batch_size, 3, args.height, args.width)
    with tempfile.TemporaryDirectory() as folder:
        meta = export_model(model, folder)
        options = ort.SessionOptions()
        if args.threads:
            options.intra_op_num_threads = args.threads
            options.inter_op_num_threads = 1
        session = ort.InferenceSession(f"{folder}/probe.onnx", options, providers=["CPUExecutionProvider"])
        feed = {"image": x.numpy()}
        onnx_ips = _throughput(lambda: session.run(["feature"], feed), args.batch_size, args.repeats, _clock(args))
    fast_model = model.to(memory_format=torch.channels_last)
    xc = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        torch_ips = _throughput(lambda: fast_model.probe_features(xc), args.batch_size, args.repeats, _clock(args))
    return {"onnx_probe_path": onnx_ips, "torch_probe_path": torch_ips, "onnx_vs_torch": onnx_ips / torch_ips,
            "probe_onnx_mib": meta["files"]["probe.onnx"]["bytes"] / 2 ** 20,
            "gallery_onnx_mib": meta["files"]["gallery.onnx"]["bytes"] / 2 ** 20}


class _FakeDataManager:
    """The few attributes torchreid's Engine constructor reads; no data is loaded."""

    def __init__(self, num_classes: int):
        import types

        self.train_loader = types.SimpleNamespace(dataset=types.SimpleNamespace(pair_views=False))
        self.test_loader = {}
        self.sources = []
        self.targets = []
        self.num_train_pids = num_classes


def _measure_train_step(kind: str, args) -> Dict[str, float]:
    import torch
    import torchreid

    torch.manual_seed(0)
    b = args.batch_size
    pids = torch.arange(b) // 4 % args.num_classes
    dm = _FakeDataManager(args.num_classes)
    if kind == "plain_triplet_step":
        model = torchreid.models.build_model(args.backbone, num_classes=args.num_classes,
                                             loss="triplet", pretrained=False)
        optim = torch.optim.Adam(model.parameters(), lr=3e-4)
        engine = torchreid.engine.ImageTripletEngine(dm, model, optim, use_gpu=False)
        data = {"img": torch.randn(b, 3, args.height, args.width), "pid": pids}
    elif kind == "jbim_joint_step":
        from jbim_reid.engines import JBIMEngine

        model = _build_jbim(args)
        optim = torch.optim.Adam(model.parameters(), lr=3e-4)
        engine = JBIMEngine(dm, model, optim, stage="joint")
        data = {"img_lr": torch.randn(b, 3, args.height, args.width),
                "img_hr": torch.randn(b, 3, args.height, args.width), "pid": pids}
    else:
        raise ValueError(f"unknown training measurement {kind!r}")
    model.train()
    ips = _throughput(lambda: engine.forward_backward(data), b, max(1, args.repeats // 2))
    return {"images_per_s": ips, "peak_rss_mib": _peak_rss_mib()}


def _measure_ranking(args) -> Dict[str, float]:
    import torchreid

    from jbim_reid.metrics import evaluate_rank

    rng = np.random.default_rng(0)
    nq, ng = args.rank_queries, 15913
    q_pids = rng.integers(0, 750, nq)
    g_pids = rng.integers(0, 750, ng)
    q_camids = rng.integers(0, 6, nq)
    g_camids = rng.integers(0, 6, ng)
    distmat = rng.random((nq, ng), dtype=np.float32)
    start = time.perf_counter()
    cmc_fast, map_fast = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids)
    t_fast = time.perf_counter() - start
    start = time.perf_counter()
    cmc_ref, map_ref = torchreid.metrics.evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids,
                                                       use_cython=False)
    t_ref = time.perf_counter() - start
    return {
        "num_query": nq, "num_gallery": ng,
        "fast_s": t_fast, "torchreid_python_s": t_ref, "speedup": t_ref / t_fast,
        "max_abs_cmc_diff": float(np.abs(np.asarray(cmc_fast) - np.asarray(cmc_ref)).max()),
        "abs_map_diff": float(abs(map_fast - map_ref)),
        "peak_rss_mib": _peak_rss_mib(),
    }


def _measure_gpu_amp(args) -> Dict[str, object]:
    """JBIM training step and probe path on CUDA, fp32 vs autocast (+ channels_last); a ``skipped``
    reason without a CUDA device."""
    import torch

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device: mixed precision (train.amp, test.amp) is GPU-only"}
    from jbim_reid.engines import JBIMEngine

    b = args.batch_size
    pids = (torch.arange(b) // 4 % args.num_classes).cuda()
    out: Dict[str, object] = {"device": torch.cuda.get_device_name(),
                              "amp_dtype": "bf16" if torch.cuda.is_bf16_supported() else "fp16"}
    for name, amp in (("fp32", False), ("amp_channels_last", True)):
        torch.manual_seed(0)
        torch.cuda.reset_peak_memory_stats()
        model = _build_jbim(args).cuda()
        optim = torch.optim.Adam(model.parameters(), lr=3e-4)
        engine = JBIMEngine(_FakeDataManager(args.num_classes), model, optim, stage="joint",
                            use_gpu=True, amp=amp, test_amp=amp, channels_last=amp)
        data = {"img_lr": torch.randn(b, 3, args.height, args.width, device="cuda"),
                "img_hr": torch.randn(b, 3, args.height, args.width, device="cuda"), "pid": pids}

        def step():
            engine.forward_backward(data)
            torch.cuda.synchronize()

        model.train()
        train_ips = _throughput(step, b, args.repeats)
        train_mib = torch.cuda.max_memory_allocated() / 2 ** 20
        model.eval()
        x = engine._to_device(data["img_lr"])

        @torch.no_grad()
        def probe():
            with engine._autocast(amp):
                model.probe_features(x)
            torch.cuda.synchronize()

        out[name] = {"train_images_per_s": train_ips, "train_peak_gpu_mib": train_mib,
                     "probe_images_per_s": _throughput(probe, b, args.repeats)}
    fp32, amp = out["fp32"]["train_images_per_s"], out["amp_channels_last"]["train_images_per_s"]
    out["train_speedup"] = amp / fp32
    return out


def _child(target: str, kind: str, args, queue) -> None:
    if getattr(args, "threads", 0):
        import torch

        torch.set_num_threads(args.threads)
    try:
        if target == "inference":
            queue.put(_measure_inference(kind, args))
        elif target == "train":
            queue.put(_measure_train_step(kind, args))
        elif target == "gpu":
            queue.put(_measure_gpu_amp(args))
        elif target == "parts":
            queue.put(_measure_probe_parts(args))
        else:
            queue.put(_measure_ranking(args))
    except Exception as exc:  # reported by the parent, which keeps measuring the rest
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def _run_isolated(target: str, kind: str, args) -> Dict[str, float]:
    """Run one measurement in a fresh process and return its result dict."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(target, kind, args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def _fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="mobilenetv2_x1_0", help="torchreid backbone name")
    parser.add_argument("--sr", default="srcnn", help="SR module of the JBIM models")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement")
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--rank-queries", type=int, default=3368,
                        help="queries in the ranking benchmark (Market-1501: 3,368)")
    parser.add_argument("--quick", action="store_true",
                        help="128x64 input, batch 8, 2 repeats, 600 ranking queries: about a minute")
    parser.add_argument("--fast-sr", default="espcn", help="SR module of the fast probe path")
    parser.add_argument("--threads", type=int, default=0, help="torch / onnxruntime threads (0: default)")
    parser.add_argument("--parts-only", action="store_true",
                        help="only the probe path per part, before and after the speed-ups, and ONNX")
    parser.add_argument("--out", default=None, help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.height, args.width, args.batch_size, args.repeats = 128, 64, 8, 2
        args.rank_queries = min(args.rank_queries, 600)

    import torch

    started = time.perf_counter()
    results: Dict[str, Dict] = {}
    print("measuring the probe path per part ...", flush=True)
    results["probe_parts"] = _run_isolated("parts", "", args)
    _print_parts(results["probe_parts"], args)
    if args.parts_only:
        return _write(args, results, started)
    for kind in ("plain_backbone", "jbim_probe", "jbim_gallery", "ensemble_probe"):
        print(f"measuring {kind} ...", flush=True)
        results[kind] = _run_isolated("inference", kind, args)
    for kind in ("plain_triplet_step", "jbim_joint_step"):
        print(f"measuring {kind} ...", flush=True)
        results[kind] = _run_isolated("train", kind, args)
    print(f"measuring rank evaluation ({args.rank_queries} x 15913) ...", flush=True)
    results["ranking"] = _run_isolated("ranking", "", args)
    print("measuring mixed precision on CUDA ...", flush=True)
    results["gpu_amp"] = _run_isolated("gpu", "", args)

    base_inf = results["plain_backbone"].get("images_per_s")
    base_train = results["plain_triplet_step"].get("images_per_s")
    for kind, base in (("jbim_probe", base_inf), ("jbim_gallery", base_inf),
                       ("ensemble_probe", base_inf), ("jbim_joint_step", base_train)):
        ips = results[kind].get("images_per_s")
        if ips and base:
            results[kind]["slowdown_vs_plain"] = base / ips

    print(f"\nbackbone {args.backbone}, input {args.height}x{args.width}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print("| measurement | images/s | x slower than plain | peak RSS (MiB) |")
    print("| --- | --- | --- | --- |")
    for kind in ("plain_backbone", "jbim_probe", "jbim_gallery", "ensemble_probe",
                 "plain_triplet_step", "jbim_joint_step"):
        r = results[kind]
        if "error" in r:
            print(f"| {kind} | error: {r['error']} | | |")
            continue
        print(f"| {kind} | {_fmt(r['images_per_s'])} | {_fmt(r.get('slowdown_vs_plain', 1.0), 2)} "
              f"| {_fmt(r['peak_rss_mib'], 0)} |")
    rk = results["ranking"]
    if "error" in rk:
        print(f"ranking: error: {rk['error']}")
    else:
        print(f"\nrank evaluation {rk['num_query']} x {rk['num_gallery']}: "
              f"jbim_reid {rk['fast_s']:.2f} s, torchreid Python {rk['torchreid_python_s']:.2f} s "
              f"({rk['speedup']:.1f}x faster); parity: max |dCMC| = {rk['max_abs_cmc_diff']:.2e}, "
              f"|dmAP| = {rk['abs_map_diff']:.2e}")
    amp = results["gpu_amp"]
    if "skipped" in amp or "error" in amp:
        print(f"\nmixed precision: {amp.get('skipped') or 'error: ' + amp['error']}")
    else:
        print(f"\nmixed precision on {amp['device']} ({amp['amp_dtype']} autocast + channels_last):")
        for name in ("fp32", "amp_channels_last"):
            r = amp[name]
            print(f"  {name}: train {r['train_images_per_s']:.1f} images/s, peak "
                  f"{r['train_peak_gpu_mib']:.0f} MiB; probe {r['probe_images_per_s']:.1f} images/s")
    return _write(args, results, started)


def _print_parts(parts: Dict, args) -> None:
    """Markdown table of the probe path per part, before and after."""
    if "error" in parts:
        print(f"probe parts: error: {parts['error']}")
        return
    before, after = parts["before"], parts["after"]
    print(f"\nprobe path per part, {args.backbone}, {args.height}x{args.width}, batch {args.batch_size}; "
          f"before: sr {before['settings']['sr']}, no_grad; after: sr {after['settings']['sr']}, "
          "inference_mode, channels_last")
    print("| part | before (images/s) | after (images/s) | speed-up |")
    print("| --- | --- | --- | --- |")
    for part in ("plain_backbone", "sr", "him", "lim", "ffn", "probe_path"):
        print(f"| {part} | {before[part]:.1f} | {after[part]:.1f} | {after[part] / before[part]:.2f} |")
    print(f"| probe path x slower than plain | {before['probe_slowdown_vs_plain']:.2f} | "
          f"{after['probe_slowdown_vs_plain']:.2f} | |")
    onnx = parts.get("onnx")
    if onnx:
        print(f"ONNX (onnxruntime) probe path {onnx['onnx_probe_path']:.1f} images/s vs torch (after) "
              f"{onnx['torch_probe_path']:.1f}: {onnx['onnx_vs_torch']:.2f}x; probe.onnx "
              f"{onnx['probe_onnx_mib']:.1f} MiB, gallery.onnx {onnx['gallery_onnx_mib']:.1f} MiB")


def _write(args, results: Dict, started: float) -> int:
    import torch

    total = time.perf_counter() - started
    print(f"total time {total:.0f} s")

    if args.out:
        payload = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {"processor": platform.processor() or platform.machine(),
                        "threads": args.threads or torch.get_num_threads(), "python": sys.version.split()[0],
                        "torch": torch.__version__},
            "settings": {k: v for k, v in vars(args).items() if k != "out"},
            "results": results, "total_s": total,
        }
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2)
        print(f"wrote {args.out}")
    return 0 if not any("error" in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
