"""Persistent gallery index: embed a gallery once (``jbim-reid index build``), rank it for LR probes with
FAISS and the resolution-weighted ensemble of Eq. 17-19 (``jbim-reid index search``).

Index folder layout::

    index.json            metadata: checkpoints (path, sha256, ratio), feature sizes, image count
    gallery_paths.json    gallery image paths, in index order
    hw.npy                genuine sizes (G, 2) int64
    features_<i>.npy      gallery features of anchor i (G, D_i) float32
    plan.json, shards/    while building: finished shards are kept, so an interrupted build resumes

Everything is ``.npy`` (read with ``allow_pickle=False``) or JSON; a damaged or mis-shaped file, or
features that are NaN or infinite (at build or at load), is refused with a ``ValueError`` naming the
file, the image or the anchor checkpoint. An IVF or HNSW structure is built
from the stored features on its first search (or by ``index build --ann``) and cached beside them
(``faiss_<type><param>_<i>.npy``, FAISS's own serialisation as bytes).

Search (:meth:`GalleryIndex.search`): the fused distance of Eq. 19, ``D(q, g) = sum_i w_i(q) d_i(q, g)``
with squared Euclidean ``d_i`` (as torchreid's ``compute_distance_matrix``), does not fit one FAISS
index because the weights change per probe. Each anchor's FAISS index gives its ``k'`` nearest
gallery images, the union of those candidates is ranked by the exact fused distance, and in exact
mode (``flat``) the result is certified: an image outside every anchor's top ``k'`` has a fused
distance of at least ``sum_i w_i d_i^(k')``; while the k-th candidate is above that bound, ``k'``
doubles. So ``flat`` returns exactly the top k of the full ranking; ``ivf`` and ``hnsw`` search each
anchor approximately (one round) and report their recall@k against ``flat``.
"""
import hashlib
import json
import os
import os.path as osp
import shutil
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from jbim_reid.evaluation.ensemble import anchor_weights, resolution_ratios
from jbim_reid.evaluation.reports import write_json
from jbim_reid.utils.download import sha256_file
from jbim_reid.utils.fileio import atomic_write
from jbim_reid.utils.optional import require

__all__ = ["INDEX_TYPES", "IMAGE_EXTENSIONS", "IndexMismatchError", "list_gallery", "build_index",
           "GalleryIndex", "SearchResult", "recall_at_k"]

INDEX_FORMAT = 1  # version of the index folder layout
INDEX_TYPES = ("flat", "ivf", "hnsw")  # flat: exact; ivf / hnsw: approximate per-anchor retrieval
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")  # files a gallery folder contributes


class IndexMismatchError(ValueError):
    """An index used with other checkpoints (or another gallery) than it was built with."""


def _save_npy(array: np.ndarray, path: str) -> None:
    atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))


def _load_npy(path: str, mmap: bool = False) -> np.ndarray:
    if not osp.isfile(path):
        raise FileNotFoundError(f"index file not found: '{path}' (incomplete or not a jbim-reid index)")
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError) as err:  # empty, truncated, not .npy, or pickled objects
        raise ValueError(f"index file '{path}' is damaged (empty, truncated or not a .npy array: {err}); "
                         "rebuild the index with jbim-reid index build") from None


def _read_json(path: str) -> Any:
    if not osp.isfile(path):
        raise FileNotFoundError(f"index file not found: '{path}' (incomplete or not a jbim-reid index)")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"index file '{path}' is not valid JSON ({err}); rebuild the index with "
                         "jbim-reid index build") from None


def _check_array(array: np.ndarray, path: str, shape: Tuple[int, ...], floats: bool) -> np.ndarray:
    """``array`` (read from ``path``) when it has ``shape`` and finite values of the right kind, else ValueError."""
    rebuild = "rebuild the index with jbim-reid index build"
    if array.shape != shape:
        raise ValueError(f"index file '{path}' holds an array of shape {array.shape}, expected {shape}; {rebuild}")
    if array.dtype.kind not in ("f" if floats else "iu"):
        raise ValueError(f"index file '{path}' holds {array.dtype} values, expected "
                         f"{'floats' if floats else 'integers'}; {rebuild}")
    if floats and not np.isfinite(array).all():
        raise ValueError(f"index file '{path}' holds NaN or infinite values; {rebuild}")
    return array


def list_gallery(spec: str) -> List[str]:
    """Gallery image paths from a folder (every image below it, sorted) or a text file (one path a line).

    Relative paths in a list file are taken relative to the file's folder.

    Args:
        spec (str): folder or list file.

    Returns:
        list of str: absolute paths.
    """
    if osp.isdir(spec):
        paths = sorted(osp.join(root, name) for root, _, names in os.walk(spec) for name in names
                       if name.lower().endswith(IMAGE_EXTENSIONS))
        if not paths:
            raise ValueError(f"--gallery '{spec}': no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
        return [osp.abspath(p) for p in paths]
    if osp.isfile(spec):
        base = osp.dirname(osp.abspath(spec))
        with open(spec, encoding="utf-8") as f:
            paths = [line.strip() for line in f if line.strip() and not line.startswith("#")]
        if not paths:
            raise ValueError(f"--gallery '{spec}': the list file names no images")
        return [p if osp.isabs(p) else osp.normpath(osp.join(base, p)) for p in paths]
    raise FileNotFoundError(f"--gallery '{spec}': no such folder or list file")


def _checkpoint_records(checkpoints: Sequence[str]) -> List[Dict[str, str]]:
    records = []
    for i, path in enumerate(checkpoints):
        if not osp.isfile(path):
            raise FileNotFoundError(f"--checkpoints[{i}]: checkpoint file not found: '{path}'")
        records.append({"path": osp.abspath(path), "sha256": sha256_file(path)})
    return records


def build_index(checkpoints: Sequence[str], gallery: Sequence[str], out_dir: str, batch_size: int = 32,
                shard_size: int = 1024, device: str = "cpu", progress: bool = True) -> Dict[str, Any]:
    """Embed a gallery with every anchor checkpoint and write an index folder (resumable).

    Shards of ``shard_size`` images are embedded in turn and written to ``out_dir/shards``; a rerun
    after an interruption keeps the finished shards and embeds the rest. At the end the shards are
    joined into ``features_<i>.npy`` and ``hw.npy`` and ``index.json`` is written last.

    Args:
        checkpoints (list of str): anchor checkpoints (JBIM checkpoints with ``jbim_kwargs``).
        gallery (list of str): image paths.
        out_dir (str): index folder.
        batch_size (int): images per forward pass.
        shard_size (int): images per shard.
        device (str): torch device.
        progress (bool): show a tqdm progress bar.

    Returns:
        dict: the content of ``index.json``.
    """
    from tqdm import tqdm

    from jbim_reid.deploy.matcher import CrossResolutionMatcher
    from jbim_reid.utils.images import load_rgb

    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    gallery = [os.fspath(p) for p in gallery]
    if not gallery:
        raise ValueError("the gallery is empty: expected at least one image")
    records = _checkpoint_records(checkpoints)
    # the checkpoints load before anything is written: a refused one leaves no folder behind
    matcher = CrossResolutionMatcher(list(checkpoints), batch_size=batch_size, device=device)
    plan = {"format": INDEX_FORMAT, "checkpoints": records, "num_images": len(gallery),
            "shard_size": shard_size,
            "gallery_sha256": hashlib.sha256("\n".join(gallery).encode("utf-8")).hexdigest()}
    os.makedirs(osp.join(out_dir, "shards"), exist_ok=True)
    plan_path = osp.join(out_dir, "plan.json")
    if osp.isfile(plan_path):
        if _read_json(plan_path) != plan:
            raise IndexMismatchError(f"'{out_dir}' holds an unfinished build of another gallery, checkpoints "
                                     "or shard size; delete it or choose another --out")
    else:
        write_json(plan, plan_path)
    write_json(gallery, osp.join(out_dir, "gallery_paths.json"))
    num_shards = (len(gallery) + shard_size - 1) // shard_size
    shard_dir = lambda k: osp.join(out_dir, "shards", f"{k:06d}")  # noqa: E731
    done = [k for k in range(num_shards) if osp.isfile(osp.join(shard_dir(k), "done.json"))]
    initial = sum(min(shard_size, len(gallery) - k * shard_size) for k in done)
    with tqdm(total=len(gallery), initial=initial, unit="img", desc="embedding gallery",
              disable=not progress) as bar:
        for k in range(num_shards):
            if k in done:
                continue
            paths = gallery[k * shard_size:(k + 1) * shard_size]
            images = [load_rgb(p, f"gallery[{k * shard_size + j}]") for j, p in enumerate(paths)]
            os.makedirs(shard_dir(k), exist_ok=True)
            _save_npy(np.array([(img.height, img.width) for img in images], dtype=np.int64),
                      osp.join(shard_dir(k), "hw.npy"))
            for i, model in enumerate(matcher.models):
                feats = matcher._features(model, images, "gallery").numpy().astype(np.float32)
                _check_finite(feats, paths, records[i]["path"], k * shard_size)
                _save_npy(feats, osp.join(shard_dir(k), f"features_{i}.npy"))
            write_json({"images": len(paths)}, osp.join(shard_dir(k), "done.json"))  # the shard is complete
            bar.update(len(paths))
    dims = []
    for i in range(len(records)):
        feats = np.concatenate([_load_npy(osp.join(shard_dir(k), f"features_{i}.npy")) for k in range(num_shards)])
        _save_npy(feats, osp.join(out_dir, f"features_{i}.npy"))
        dims.append(int(feats.shape[1]))
    _save_npy(np.concatenate([_load_npy(osp.join(shard_dir(k), "hw.npy")) for k in range(num_shards)]),
              osp.join(out_dir, "hw.npy"))
    meta = {**plan, "feature_dims": dims, "ratios": matcher.ratios, "distance": "squared_euclidean"}
    for record, ratio in zip(meta["checkpoints"], matcher.ratios):
        record["ratio"] = ratio
    write_json(meta, osp.join(out_dir, "index.json"))  # last: the index is complete
    shutil.rmtree(osp.join(out_dir, "shards"))
    os.remove(plan_path)
    return meta


def _check_finite(feats: np.ndarray, paths: Sequence[str], checkpoint: str, offset: int = 0) -> None:
    """ValueError naming the images (or, when all are, the anchor) whose features are NaN or infinite."""
    bad = np.flatnonzero(~np.isfinite(feats).all(axis=1))
    if bad.size == 0:
        return
    if bad.size == len(paths):
        raise ValueError(f"anchor checkpoint '{checkpoint}' gives NaN or infinite features for every image "
                         f"(e.g. gallery[{offset}] '{paths[0]}'); its weights are probably damaged")
    named = ", ".join(f"gallery[{offset + j}] '{paths[j]}'" for j in bad[:3])
    raise ValueError(f"anchor checkpoint '{checkpoint}' gives NaN or infinite features for {bad.size} image(s): "
                     f"{named}{' ...' if bad.size > 3 else ''}; replace or leave out these images")


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of the exact top k that a search found: ``|found_q & exact_q| / k`` over probes."""
    found, exact = np.asarray(found), np.asarray(exact)
    hits = [len(np.intersect1d(f, e)) / e.size for f, e in zip(found, exact)]
    return float(np.mean(hits))


class SearchResult:
    """Top k of a search: ``indices (Q, k)``, fused ``distances (Q, k)``, ``weights (Q, n)``, ``ratios (Q,)``."""

    def __init__(self, indices: np.ndarray, distances: np.ndarray, weights: np.ndarray, ratios: np.ndarray):
        self.indices, self.distances, self.weights, self.ratios = indices, distances, weights, ratios


class GalleryIndex:
    """Gallery features of one or more anchors with FAISS retrieval and the fused ranking of Eq. 17-19.

    Args:
        features (list of numpy.ndarray): per anchor, gallery features ``(G, D_i)``.
        gallery_hw (numpy.ndarray): genuine gallery sizes ``(G, 2)``.
        ratios (list of float): the anchors' ratios m_i.
        paths (list of str, optional): gallery image paths.
        checkpoints (list of dict, optional): ``{'path', 'sha256'}`` of the anchors.
        sigma (float, optional): Gaussian width of the weights. Default is 0.5.
        weighting (str, optional): ``'gaussian'`` or ``'uniform'``. Default is ``'gaussian'``.
        folder (str, optional): the index folder, where IVF / HNSW structures are cached once built.
    """

    def __init__(self, features: Sequence[np.ndarray], gallery_hw: np.ndarray, ratios: Sequence[float],
                 paths: Optional[List[str]] = None, checkpoints: Optional[List[Dict[str, str]]] = None,
                 sigma: float = 0.5, weighting: str = "gaussian", folder: str = ""):
        self.features = [np.ascontiguousarray(f, dtype=np.float32) for f in features]
        self.gallery_hw = np.asarray(gallery_hw)
        self.ratios = [float(r) for r in ratios]
        if len(self.features) != len(self.ratios) or not self.features:
            raise ValueError(f"{len(self.features)} feature arrays for {len(self.ratios)} anchor ratios")
        sizes = {f.shape[0] for f in self.features} | {self.gallery_hw.shape[0]}
        if len(sizes) != 1:
            raise ValueError(f"features and gallery_hw disagree on the gallery size: {sorted(sizes)}")
        self.size = sizes.pop()
        self.paths = paths
        self.checkpoints = checkpoints or []
        self.folder = folder
        self.sigma, self.weighting = sigma, weighting
        self._faiss: Dict[Tuple, list] = {}
        self._norms = [np.einsum("ij,ij->i", f, f) for f in self.features]

    @classmethod
    def load(cls, folder: str, **kwargs) -> "GalleryIndex":
        """Open an index folder written by :func:`build_index` (``.npy`` and JSON only)."""
        meta_path = osp.join(folder, "index.json")
        if not osp.isfile(meta_path):
            unfinished = osp.isfile(osp.join(folder, "plan.json"))
            raise FileNotFoundError(f"'{folder}' is not a finished jbim-reid index (no index.json)"
                                    + ("; its build was interrupted: rerun jbim-reid index build to resume"
                                       if unfinished else ""))
        meta = _read_json(meta_path)
        if not isinstance(meta, dict) or meta.get("format") != INDEX_FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise ValueError(f"'{meta_path}': index format {found}, this version reads {INDEX_FORMAT}")
        try:
            num, dims, ratios = int(meta["num_images"]), [int(d) for d in meta["feature_dims"]], meta["ratios"]
            if len(dims) != len(meta["checkpoints"]) or len(ratios) != len(dims):
                raise ValueError("checkpoints, feature_dims and ratios differ in length")
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"'{meta_path}' is not a complete index.json ({type(err).__name__}: {err}); "
                             "rebuild the index with jbim-reid index build") from None
        features = []
        for i, dim in enumerate(dims):
            path = osp.join(folder, f"features_{i}.npy")
            features.append(_check_array(_load_npy(path), path, (num, dim), floats=True))
        hw_path, paths_path = osp.join(folder, "hw.npy"), osp.join(folder, "gallery_paths.json")
        paths = _read_json(paths_path)
        if not isinstance(paths, list) or len(paths) != num:
            raise ValueError(f"index file '{paths_path}' does not list the {num} gallery images of index.json; "
                             "rebuild the index with jbim-reid index build")
        return cls(features, _check_array(_load_npy(hw_path), hw_path, (num, 2), floats=False), ratios,
                   paths=paths, checkpoints=meta["checkpoints"], folder=folder, **kwargs)

    def prepare(self, index_type: str, nlist: int = 0, hnsw_m: int = 16) -> None:
        """Build (and cache in the index folder) every anchor's FAISS structure of ``index_type``."""
        for anchor in range(len(self.features)):
            self._index(anchor, index_type, nlist, 1, hnsw_m, 16)

    def check_checkpoints(self, checkpoints: Sequence[str]) -> None:
        """Refuse checkpoints other than the index's (by sha256, in order) with :class:`IndexMismatchError`."""
        given = [sha256_file(p) if osp.isfile(p) else "missing file" for p in checkpoints]
        built = [c["sha256"] for c in self.checkpoints]
        if given == built:
            return
        lines = []
        for i in range(max(len(given), len(built))):
            mine = f"{built[i][:12]} ({self.checkpoints[i]['path']})" if i < len(built) else "-"
            theirs = f"{given[i][:12]} ({checkpoints[i]})" if i < len(given) else "-"
            lines.append(f"  anchor {i}: index {mine}, given {theirs}")
        raise IndexMismatchError("the index was built with other checkpoints than those given (sha256 "
                                 "differs); rebuild it with jbim-reid index build or pass its checkpoints:\n"
                                 + "\n".join(lines))

    def _index(self, anchor: int, index_type: str, nlist: int, nprobe: int, hnsw_m: int, ef_search: int):
        if index_type not in INDEX_TYPES:
            raise ValueError(f"Unknown index type '{index_type}'; expected one of {list(INDEX_TYPES)}")
        lists = max(1, min(nlist or int(np.sqrt(self.size)), self.size // 39))
        key = {"flat": "flat", "ivf": f"ivf{lists}", "hnsw": f"hnsw{hnsw_m}"}[index_type]
        built = self._faiss.setdefault(key, [None] * len(self.features))
        if built[anchor] is None:
            faiss = require("faiss", "jbim-reid index search")
            # approximate structures are cached in the index folder as serialised bytes in .npy
            cache = osp.join(self.folder, f"faiss_{key}_{anchor}.npy") if self.folder and index_type != "flat" else ""
            if cache and osp.isfile(cache):
                built[anchor] = faiss.deserialize_index(_load_npy(cache))
            else:
                feats = self.features[anchor]
                dim = feats.shape[1]
                if index_type == "flat":
                    index = faiss.IndexFlatL2(dim)
                elif index_type == "ivf":
                    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, lists)
                    index.cp.max_points_per_centroid = 64  # k-means on a sample: seconds, not minutes
                    index.train(feats)
                else:
                    index = faiss.IndexHNSWFlat(dim, hnsw_m)
                index.add(feats)
                if cache:
                    _save_npy(faiss.serialize_index(index), cache)
                built[anchor] = index
        index = built[anchor]
        if index_type == "ivf":
            index.nprobe = nprobe
        elif index_type == "hnsw":
            index.hnsw.efSearch = ef_search
        return index

    def weights(self, probe_hw: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Resolution ratios ``(Q,)`` and anchor weights ``(Q, n)`` (all 1 for a single anchor)."""
        ratios = resolution_ratios(probe_hw, self.gallery_hw)
        if len(self.features) == 1:
            return ratios, np.ones((ratios.size, 1))
        return ratios, anchor_weights(ratios, self.ratios, sigma=self.sigma, scheme=self.weighting)

    def fused_distances(self, probe_features: Sequence[np.ndarray], weights: np.ndarray, q: int,
                        candidates: np.ndarray) -> np.ndarray:
        """Exact fused squared Euclidean distances of probe ``q`` to gallery rows ``candidates``."""
        out = np.zeros(candidates.size)
        for i, (feats, norms) in enumerate(zip(self.features, self._norms)):
            x = probe_features[i][q].astype(np.float32)
            g = feats[candidates]
            d = np.float32(x @ x) + norms[candidates] - 2 * (g @ x)
            out += weights[q, i] * d.astype(np.float64)
        return out

    def search(self, probe_features: Sequence[np.ndarray], probe_hw: np.ndarray, k: int = 10,
               index_type: str = "flat", candidates: Optional[int] = None, nlist: int = 0, nprobe: int = 32,
               hnsw_m: int = 16, ef_search: int = 128) -> SearchResult:
        """Top k gallery images per probe by the fused distance (see the module docstring).

        Args:
            probe_features (list of numpy.ndarray): per anchor, probe features ``(Q, D_i)``.
            probe_hw (numpy.ndarray): genuine probe sizes ``(Q, 2)``.
            k (int): results per probe (at most the gallery size).
            index_type (str): ``flat`` (exact), ``ivf`` or ``hnsw``.
            candidates (int, optional): first ``k'`` per anchor; None gives ``max(4k, 64)``.
            nlist (int): IVF lists; 0 gives ``sqrt(G)``.
            nprobe (int): IVF lists visited per search.
            hnsw_m (int): HNSW links per node.
            ef_search (int): HNSW search depth.

        Returns:
            SearchResult: ``indices (Q, k)``, ``distances (Q, k)``, ``weights``, ``ratios``.
        """
        if len(probe_features) != len(self.features):
            raise ValueError(f"{len(probe_features)} probe feature arrays for an index of "
                             f"{len(self.features)} anchors")
        k = min(int(k), self.size)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        probe_features = [np.ascontiguousarray(f, dtype=np.float32) for f in probe_features]
        ratios, weights = self.weights(probe_hw)
        num_q = ratios.size
        indices = np.zeros((num_q, k), dtype=np.int64)
        distances = np.zeros((num_q, k))
        kc = min(self.size, max(k, candidates or max(4 * k, 64)))
        todo = np.arange(num_q)
        while todo.size:
            per_anchor = []
            for i in range(len(self.features)):
                index = self._index(i, index_type, nlist, nprobe, hnsw_m, ef_search)
                per_anchor.append(index.search(probe_features[i][todo], kc))
            retry = []
            for row, q in enumerate(todo):
                cands = np.unique(np.concatenate([ids[row] for _, ids in per_anchor]))
                cands = cands[cands >= 0]  # FAISS pads with -1 when it finds fewer than kc
                fused = self.fused_distances(probe_features, weights, q, cands)
                order = np.lexsort((cands, fused))[:k]
                bound = sum(weights[q, i] * dist[row, -1] for i, (dist, _) in enumerate(per_anchor))
                if index_type == "flat" and kc < self.size and (order.size < k or fused[order[-1]] > bound):
                    retry.append(q)  # an image outside every top-kc could still beat the k-th candidate
                    continue
                indices[q, :order.size], distances[q, :order.size] = cands[order], fused[order]
            todo = np.asarray(retry, dtype=np.int64)
            kc = min(self.size, 2 * kc)
        return SearchResult(indices, distances, weights, ratios)
