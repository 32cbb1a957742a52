"""Gallery index search at scale: exact (flat) against approximate (IVF, HNSW) FAISS retrieval.

Random features with identity structure stand in for a large gallery: ``gallery / 4`` identities with
a latent code each; anchor i's features are the code through a random projection of its own plus
noise (4 images per identity), so anchors agree on who is who, as trained anchors do. Probes are noisy
codes of random identities. The fused top-k of Eq. 17-19 (:class:`jbim_reid.deploy.index.GalleryIndex`) is
searched with each index type; recall@k is measured against the exact search and the speed-up against
it and against the matcher's way (full distance matrices, then a sort). Times are CPU seconds of
this process (run it with ``OMP_NUM_THREADS=1``: one thread, so a shared machine's load does not
distort them).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/index_search.py --out benchmarks/results/index_search_cpu.json
    python benchmarks/index_search.py --gallery 20000      # quicker
"""
import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from typing import Dict, List

import numpy as np


def make_data(gallery: int, dim: int, queries: int, anchors: int, seed: int = 0):
    """Gallery features per anchor, genuine sizes, probe features per anchor and probe sizes."""
    rng = np.random.default_rng(seed)
    latent = 32
    ids = max(1, gallery // 4)
    codes = rng.standard_normal((ids, latent)).astype(np.float32)
    owner = np.arange(gallery) % ids
    projections = [rng.standard_normal((latent, dim)).astype(np.float32) / np.sqrt(latent) for _ in range(anchors)]
    feats = [(codes[owner] @ p + 0.5 * rng.standard_normal((gallery, dim), dtype=np.float32)).astype(np.float32)
             for p in projections]
    probe_codes = codes[rng.integers(0, ids, queries)] + 0.2 * rng.standard_normal((queries, latent), dtype=np.float32)
    probes = [(probe_codes @ p + 0.5 * rng.standard_normal((queries, dim), dtype=np.float32)).astype(np.float32)
              for p in projections]
    return feats, rng.integers(64, 160, (gallery, 2)), probes, rng.integers(16, 80, (queries, 2))


def full_ranking_top_k(index, probes: List[np.ndarray], probe_hw: np.ndarray, k: int, chunk: int = 50):
    """The matcher's way: every (Q, G) distance matrix, fused, then a stable sort."""
    from jbim_reid.evaluation.ensemble import fuse_distances

    _, weights = index.weights(probe_hw)
    out = []
    for start in range(0, probes[0].shape[0], chunk):
        rows = slice(start, start + chunk)
        mats = []
        for q, g, norms in zip(probes, index.features, index._norms):
            x = q[rows]
            mats.append(np.einsum("ij,ij->i", x, x)[:, None] + norms[None] - 2 * x @ g.T)
        fused = fuse_distances(mats, weights[rows])
        out.append(np.argsort(fused, axis=1, kind="stable")[:, :k])
    return np.concatenate(out)


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gallery", type=int, default=200_000, help="gallery images")
    parser.add_argument("--dim", type=int, default=128, help="feature size per anchor")
    parser.add_argument("--anchors", type=int, default=2, help="anchor models (ratios 1/2, 1/3, 1/4, ...)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument("--ef-search", type=int, default=128)
    parser.add_argument("--min-recall", type=float, default=0.95, help="recall@k each approximate index must reach")
    parser.add_argument("--out", default=None, help="write the results as JSON")
    args = parser.parse_args(argv)

    import faiss

    from jbim_reid.deploy.index import GalleryIndex, recall_at_k

    feats, hw, probes, probe_hw = make_data(args.gallery, args.dim, args.queries, args.anchors)
    index = GalleryIndex(feats, hw, [1 / (i + 2) for i in range(args.anchors)])
    k = args.top_k
    results: Dict[str, Dict] = {}
    start = time.process_time()
    brute = full_ranking_top_k(index, probes, probe_hw, k)
    results["full_ranking"] = {"search_s": time.process_time() - start}
    for name, kwargs in (("flat", {}), ("ivf", {"nprobe": args.nprobe}), ("hnsw", {"ef_search": args.ef_search})):
        start = time.process_time()
        index.search([p[:1] for p in probes], probe_hw[:1], k=k, index_type=name, **kwargs)  # builds FAISS
        build_s = time.process_time() - start
        start = time.process_time()
        result = index.search(probes, probe_hw, k=k, index_type=name, **kwargs)
        results[name] = {"build_s": build_s, "search_s": time.process_time() - start, **kwargs,
                         "indices": result.indices}
    exact = results["flat"].pop("indices")
    results["flat"]["equals_full_ranking"] = bool(np.array_equal(exact, brute))
    for name in ("ivf", "hnsw"):
        results[name]["recall_at_k"] = recall_at_k(results[name].pop("indices"), exact)
    for name in ("flat", "ivf", "hnsw"):
        r = results[name]
        r["queries_per_s"] = args.queries / r["search_s"]
        r["speedup_vs_flat"] = results["flat"]["search_s"] / r["search_s"]
        r["speedup_vs_full_ranking"] = results["full_ranking"]["search_s"] / r["search_s"]

    print(f"{args.gallery} gallery images x {args.anchors} anchors x {args.dim}-d, {args.queries} probes, "
          f"top-{k}, {faiss.omp_get_max_threads()} FAISS thread(s)")
    print("| search | build (s) | search (s) | probes/s | speed-up vs flat | vs full ranking | recall@k |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| full distance matrices + sort | - | {results['full_ranking']['search_s']:.2f} | "
          f"{args.queries / results['full_ranking']['search_s']:.0f} | - | 1.00 | 1 |")
    for name in ("flat", "ivf", "hnsw"):
        r = results[name]
        print(f"| {name} | {r['build_s']:.2f} | {r['search_s']:.2f} | {r['queries_per_s']:.0f} | "
              f"{r['speedup_vs_flat']:.1f} | {r['speedup_vs_full_ranking']:.1f} | {r.get('recall_at_k', 1.0):.4f} |")
    print(f"flat equals the full ranking: {results['flat']['equals_full_ranking']}")
    ok = results["flat"]["equals_full_ranking"] and all(results[n]["recall_at_k"] >= args.min_recall
                                                        for n in ("ivf", "hnsw"))
    if args.out:
        payload = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "machine": {"processor": platform.processor() or platform.machine(),
                               "faiss_threads": faiss.omp_get_max_threads(), "python": sys.version.split()[0],
                               "faiss": faiss.__version__},
                   "settings": {k_: v for k_, v in vars(args).items() if k_ != "out"},
                   "results": results, "passed": ok}
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2)
        print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
