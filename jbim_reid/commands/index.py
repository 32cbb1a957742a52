"""``jbim-reid index build | search``: the gallery index (:mod:`jbim_reid.deploy.index`) from the command line."""
import argparse
import glob
import os.path as osp
import shutil
import sys
import time

import numpy as np

from jbim_reid.deploy.index import INDEX_TYPES, GalleryIndex, build_index, list_gallery, recall_at_k
from jbim_reid.deploy.matcher import CrossResolutionMatcher
from jbim_reid.evaluation.reports import write_json
from jbim_reid.utils.locks import FolderInUseError, folder_lock

__all__ = ["INDEX_COMMAND", "index_command"]


def _add_index_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="index_command", required=True)
    build = sub.add_parser("build", help="embed a gallery once with the anchor checkpoints")
    build.add_argument("--checkpoints", nargs="+", required=True, help="anchor JBIM checkpoints")
    build.add_argument("--gallery", required=True, help="image folder, or a text file with one path a line")
    build.add_argument("--out", required=True, help="index folder")
    build.add_argument("--batch-size", type=int, default=32)
    build.add_argument("--shard-size", type=int, default=1024, help="images per resumable shard")
    build.add_argument("--device", default="cpu")
    build.add_argument("--ann", nargs="*", choices=INDEX_TYPES[1:], default=[],
                       help="also build and cache these approximate structures (ivf, hnsw)")
    search = sub.add_parser("search", help="rank the index for LR probes (Eq. 17-19 ensemble)")
    search.add_argument("index", help="index folder")
    search.add_argument("probes", nargs="+", help="probe images")
    search.add_argument("--checkpoints", nargs="+", default=None,
                        help="anchor checkpoints (default: the index's); must be those it was built with")
    search.add_argument("--top-k", type=int, default=10)
    search.add_argument("--index-type", choices=INDEX_TYPES, default="flat",
                        help="flat: exact; ivf / hnsw: approximate, recall@k against flat is printed")
    search.add_argument("--candidates", type=int, default=None, help="first k' per anchor (default max(4k, 64))")
    search.add_argument("--nprobe", type=int, default=32, help="IVF lists visited")
    search.add_argument("--ef-search", type=int, default=128, help="HNSW search depth")
    search.add_argument("--sigma", type=float, default=0.5, help="Gaussian width of the anchor weights")
    search.add_argument("--batch-size", type=int, default=32)
    search.add_argument("--device", default="cpu")
    search.add_argument("--out", default=None, help="write the results as JSON")


def _search_command(args: argparse.Namespace) -> int:
    index = GalleryIndex.load(args.index, sigma=args.sigma)
    checkpoints = args.checkpoints or [c["path"] for c in index.checkpoints]
    index.check_checkpoints(checkpoints)
    matcher = CrossResolutionMatcher(checkpoints, batch_size=args.batch_size, device=args.device)
    images, probe_hw = matcher._load_all(args.probes, "probes")
    probe_features = [matcher._features(m, images, "probe").numpy() for m in matcher.models]
    for checkpoint, feats in zip(checkpoints, probe_features):
        bad = [probe for probe, ok in zip(args.probes, np.isfinite(feats).all(axis=1)) if not ok]
        if bad:
            raise ValueError(f"anchor checkpoint '{checkpoint}' gives NaN or infinite features for probe(s) "
                             f"{bad[:3]}{' ...' if len(bad) > 3 else ''}")
    search = dict(k=args.top_k, candidates=args.candidates, nprobe=args.nprobe, ef_search=args.ef_search)
    start = time.perf_counter()
    result = index.search(probe_features, probe_hw, index_type=args.index_type, **search)
    elapsed = time.perf_counter() - start
    summary = {"index_type": args.index_type, "top_k": int(result.indices.shape[1]), "search_s": elapsed}
    if args.index_type != "flat":
        exact = index.search(probe_features, probe_hw, index_type="flat", **search)
        summary["recall_at_k"] = recall_at_k(result.indices, exact.indices)
    rows = []
    for q, probe in enumerate(args.probes):
        print(f"probe {probe} (r = {result.ratios[q]:.3f}, weights {np.round(result.weights[q], 3).tolist()}):")
        ranked = [{"rank": j + 1, "index": int(g), "path": index.paths[g] if index.paths else None,
                   "distance": float(d)} for j, (g, d) in enumerate(zip(result.indices[q], result.distances[q]))]
        for r in ranked:
            print(f"  {r['rank']:3d}  {r['distance']:12.4f}  {r['path']}")
        rows.append({"probe": probe, "ratio": float(result.ratios[q]), "weights": result.weights[q].tolist(),
                     "results": ranked})
    line = f"{len(args.probes)} probes searched in {elapsed * 1000:.1f} ms ({args.index_type})"
    if "recall_at_k" in summary:
        line += f"; recall@{summary['top_k']} against exact search: {summary['recall_at_k']:.4f}"
    print(line)
    if args.out:
        write_json({**summary, "index": osp.abspath(args.index), "probes": rows}, args.out)
    return 0


def _build_command(args: argparse.Namespace) -> int:
    """``index build`` with ``--out`` locked; a folder it created is removed again when nothing was embedded."""
    if osp.exists(args.out) and not osp.isdir(args.out):
        raise ValueError(f"--out '{args.out}' is a file; expected a folder for the index (new, or one to resume)")
    gallery = list_gallery(args.gallery)
    created = not osp.exists(args.out)
    with folder_lock(args.out, "--out"):
        try:
            meta = build_index(args.checkpoints, gallery, args.out, batch_size=args.batch_size,
                               shard_size=args.shard_size, device=args.device)
        except BaseException:
            if created and not glob.glob(osp.join(args.out, "shards", "*", "done.json")):
                shutil.rmtree(args.out, ignore_errors=True)  # refused before any shard: leave no folder
            raise
        print(f"=> Indexed {meta['num_images']} images with {len(meta['checkpoints'])} anchor(s) in '{args.out}'")
        index = GalleryIndex.load(args.out)
        for index_type in args.ann:
            index.prepare(index_type)
            print(f"=> Cached the {index_type} structure of every anchor")
    return 0


def index_command(args: argparse.Namespace) -> int:
    """``jbim-reid index build | search``; bad input (checkpoints, images, index files, a mismatch of index
    and checkpoints, an ``--out`` in use) is one line on stderr and exit code 2."""
    try:
        if args.index_command == "build":
            return _build_command(args)
        return _search_command(args)
    except (FolderInUseError, ValueError) as err:  # ValueError: IndexMismatchError, CheckpointError, bad files
        print(f"jbim-reid index {args.index_command}: error: {err}", file=sys.stderr)
        return 2


INDEX_COMMAND = ("build a persistent gallery index (index build) and search it with FAISS (index search)",
                 index_command, _add_index_arguments)  # cli.COMMANDS entry
