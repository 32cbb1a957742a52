"""Split generation from ``(protocol, split_id)`` and the split JSON format.

A split file holds every protocol choice plus the train / query / gallery lists as items
``{"path": <relative to the data root>, "pid", "camid", "lr": bool, "ratio": float or null}``
(``ratio`` is the simulated downsampling ratio; null for HR images and genuine LR images).
"""
import math
import random
from collections import defaultdict
from typing import AbstractSet, Any, Dict, List, Mapping, NamedTuple, Optional, Sequence

from jbim_reid.datasets.protocol import MLRProtocol

__all__ = ["Record", "SPLIT_VERSION", "build_split", "check_split", "validate_probes"]

SPLIT_VERSION = 1


class Record(NamedTuple):
    """One pooled image: ``relpath`` (relative to the data root), ``person`` key, 0-based ``camid``."""

    relpath: str
    person: str
    camid: int


def _group(records: Sequence[Record]) -> List[List[Record]]:
    """Persons seen by >= 2 cameras, in canonical order (by their first image path)."""
    by_person: Dict[str, List[Record]] = defaultdict(list)
    for rec in records:
        by_person[rec.person].append(rec)
    persons = [sorted(recs) for recs in by_person.values() if len({r.camid for r in recs}) >= 2]
    return sorted(persons, key=lambda recs: recs[0].relpath)


def _per_camera(persons: List[List[Record]], count: int, rng: random.Random) -> List[List[Record]]:
    """Each person's images reduced to ``count`` random ones per camera (all when fewer)."""
    out = []
    for recs in persons:
        kept = []
        for camid in sorted({r.camid for r in recs}):
            mine = [r for r in recs if r.camid == camid]
            kept += mine if len(mine) <= count else rng.sample(mine, count)
        out.append(sorted(kept))
    return out


def _lr_flags(persons: List[List[Record]], protocol: MLRProtocol, rng: random.Random,
              camera_pairs: Optional[Mapping[int, int]], drawn: Dict[str, Any]) -> List[List[bool]]:
    """Per person, per image: whether the image is on the LR side (a drawn LR camera goes into ``drawn``)."""
    mode = protocol.lr_mode
    if mode in ("camera", "random_camera"):
        cams = sorted({r.camid for recs in persons for r in recs})
        if mode == "random_camera":
            drawn["lr_camid"] = lr_camid = rng.choice(cams)
        elif protocol.lr_camid not in cams:
            raise ValueError(f"lr_camid {protocol.lr_camid} is not a camera of this dataset; "
                             f"expected one of {cams}")
        else:
            lr_camid = protocol.lr_camid
        return [[r.camid == lr_camid for r in recs] for recs in persons]
    if mode == "per_id":
        flags = []
        for recs in persons:
            lr_cam = rng.choice(sorted({r.camid for r in recs}))
            flags.append([r.camid == lr_cam for r in recs])
        return flags
    if mode == "camera_pair":
        if camera_pairs is None:
            raise ValueError("lr_mode 'camera_pair' needs a dataset with camera pairs (e.g. mlr_cuhk03)")
        pair_cams: Dict[int, set] = defaultdict(set)
        for recs in persons:
            for r in recs:
                pair_cams[camera_pairs[r.camid]].add(r.camid)
        lr_cams = {rng.choice(sorted(cams)) for _, cams in sorted(pair_cams.items())}
        return [[r.camid in lr_cams for r in recs] for recs in persons]
    if mode == "half_images":
        flags = []
        for recs in persons:
            chosen = set(rng.sample(range(len(recs)), len(recs) // 2))
            flags.append([i in chosen for i in range(len(recs))])
        return flags
    raise ValueError(f"Unknown lr_mode {mode!r}")


def validate_probes(query: Sequence[Mapping[str, Any]], gallery: Sequence[Mapping[str, Any]]) -> None:
    """Raise ValueError unless every probe's pid is in the gallery under a different camid."""
    cams: Dict[int, set] = defaultdict(set)
    for g in gallery:
        cams[g["pid"]].add(g["camid"])
    for q in query:
        if not cams[q["pid"]] - {q["camid"]}:
            raise ValueError(f"Probe '{q['path']}' (pid {q['pid']}, camid {q['camid']}) has no true match in "
                             "the gallery under another camid; torchreid's evaluation would drop it")


def build_split(records: Sequence[Record], protocol: MLRProtocol, split_id: int, dataset: str,
                simulate: bool = True, num_train_ids: Optional[int] = None,
                num_test_ids: Optional[int] = None,
                camera_pairs: Optional[Mapping[int, int]] = None,
                test_persons: Optional[AbstractSet[str]] = None) -> Dict[str, Any]:
    """Generate split ``split_id`` of ``records`` under ``protocol``.

    Args:
        records (sequence of Record): every image of the dataset (any order).
        protocol (MLRProtocol): resolved protocol (``lr_mode`` set).
        split_id (int): split index; the random stream is ``random.Random(f"{seed}-{split_id}")``.
        dataset (str): dataset name, recorded.
        simulate (bool, optional): downsample LR-side images (False: genuine LR, no ratios). Default is True.
        num_train_ids (int, optional): training ids; default: half of the ids, rounded up.
        num_test_ids (int, optional): test ids (the rest train) when ``num_train_ids`` is None.
        camera_pairs (mapping, optional): camid -> camera-pair index, for ``lr_mode='camera_pair'``.
        test_persons (set of str, optional): the test persons (``Record.person``) of an official id
            split (``protocol.id_split == 'official'``); the others train. Default: drawn at random.

    Returns:
        The split as a JSON-ready dict (see the module docstring).
    """
    rng = random.Random(f"{protocol.seed}-{split_id}")
    persons = _group(records)
    if protocol.images_per_camera:
        persons = _per_camera(persons, protocol.images_per_camera, rng)
    n = len(persons)
    if protocol.id_split == "official":
        if test_persons is None:
            raise ValueError(f"{dataset}: id_split 'official' needs the official test persons")
        test_idx = [i for i, recs in enumerate(persons) if recs[0].person in test_persons]
        train_idx = [i for i, recs in enumerate(persons) if recs[0].person not in test_persons]
        if not train_idx or not test_idx:
            raise ValueError(f"{dataset}: the official id split leaves {len(train_idx)} training and "
                             f"{len(test_idx)} test ids seen by >= 2 cameras; expected both > 0")
    else:
        if num_train_ids is None:
            num_train_ids = n - num_test_ids if num_test_ids is not None else math.ceil(n / 2)
        if not 0 < num_train_ids < n:
            raise ValueError(f"{dataset}: cannot split {n} ids seen by >= 2 cameras into {num_train_ids} "
                             "training ids and at least one test id")
        order = list(range(n))
        rng.shuffle(order)
        train_idx = sorted(order[:num_train_ids])
        test_idx = sorted(order[num_train_ids:])
    drawn: Dict[str, Any] = {}
    lr_flags = _lr_flags(persons, protocol, rng, camera_pairs, drawn)
    id_ratio = [rng.choice(protocol.ratios) for _ in persons]

    def ratio_for(pidx: int) -> Optional[float]:
        if not simulate:
            return None
        return id_ratio[pidx] if protocol.ratio_per == "id" else rng.choice(protocol.ratios)

    train = []
    for label, pidx in enumerate(train_idx):
        for rec, lr in zip(persons[pidx], lr_flags[pidx]):
            lr = lr and (protocol.train_lr or not simulate)  # genuine LR images stay LR
            train.append({"path": rec.relpath, "pid": label, "camid": rec.camid, "lr": lr,
                          "ratio": ratio_for(pidx) if lr else None})
    query, gallery, dropped = [], [], 0
    for pidx in test_idx:
        probes = [r for r, lr in zip(persons[pidx], lr_flags[pidx]) if lr]
        hr = [r for r, lr in zip(persons[pidx], lr_flags[pidx]) if not lr]
        if not hr:
            raise ValueError(f"{dataset}: test id with images {persons[pidx][0].relpath}... has no HR image "
                             f"for the gallery under lr_mode '{protocol.lr_mode}'")
        if protocol.gallery == "one_random":
            probe_cams = {r.camid for r in probes}
            other = [r for r in hr if r.camid not in probe_cams]
            chosen = [rng.choice(other or hr)]
        else:
            chosen = hr
        gallery_cams = {r.camid for r in chosen}
        kept = [r for r in probes if gallery_cams - {r.camid}]
        dropped += len(probes) - len(kept)
        for rec in kept:
            query.append({"path": rec.relpath, "pid": pidx, "camid": rec.camid, "lr": True,
                          "ratio": ratio_for(pidx)})
        for rec in chosen:
            gallery.append({"path": rec.relpath, "pid": pidx, "camid": rec.camid, "lr": False, "ratio": None})
    if not query:
        raise ValueError(f"{dataset}: split {split_id} has no probe under lr_mode '{protocol.lr_mode}' "
                         f"({dropped} LR test images lacked a gallery match under another camid)")
    validate_probes(query, gallery)
    return {
        "version": SPLIT_VERSION,
        "dataset": dataset,
        "split_id": split_id,
        "protocol": protocol.recorded(),
        "protocol_hash": protocol.short_hash(),
        **({"drawn": drawn} if drawn else {}),  # random choices of the protocol (lr_camid of random_camera)
        "simulated": simulate,
        "num_ids": n,
        "num_train_pids": len(train_idx),
        "num_test_pids": len(test_idx),
        "dropped_probes": dropped,
        "train": train,
        "query": query,
        "gallery": gallery,
    }


def check_split(split: Mapping[str, Any], protocol: MLRProtocol, split_id: int, path: str) -> None:
    """Raise ValueError naming ``path`` when a loaded split file does not match the requested protocol /
    version, or its items are not those :func:`build_split` writes (a hand-edited or foreign file)."""
    if split.get("version") != SPLIT_VERSION:
        raise ValueError(f"Split file '{path}' has version {split.get('version')!r}, expected "
                         f"{SPLIT_VERSION}; delete it to regenerate")
    if split.get("protocol") != protocol.recorded() or split.get("split_id") != split_id:
        raise ValueError(f"Split file '{path}' records protocol {split.get('protocol')} / split "
                         f"{split.get('split_id')}, expected {protocol.recorded()} / {split_id}; delete it")
    _check_items(split, path)
    validate_probes(split["query"], split["gallery"])


_ITEM_FIELDS = {"path": (str, "a path"), "pid": (int, "an integer person id"), "camid": (int, "an integer camid"),
                "lr": (bool, "true or false")}  # field of a split item -> (type, what the error asks for)


def _check_items(split: Mapping[str, Any], path: str) -> None:
    """Raise ValueError naming the file, subset and item when a split's train / query / gallery lists are
    not non-empty lists of items as :func:`build_split` writes them."""
    fix = "delete it to regenerate"
    for key in ("train", "query", "gallery"):
        items = split.get(key)
        if not isinstance(items, list) or not items:
            found = "an empty list" if isinstance(items, list) else f"a {type(items).__name__}"
            raise ValueError(f"Split file '{path}': '{key}' is {found}, expected a non-empty list of images; {fix}")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ValueError(f"Split file '{path}': {key}[{i}] is a {type(item).__name__}, expected an object "
                                 f"with {list(_ITEM_FIELDS) + ['ratio']}; {fix}")
            for field, (kind, expected) in _ITEM_FIELDS.items():
                value = item.get(field)
                if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                    found = f"{field} {value!r}" if field in item else f"no '{field}'"
                    raise ValueError(f"Split file '{path}': {key}[{i}] has {found}, expected {expected}; {fix}")
            ratio = item.get("ratio")
            if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float))
                                      or not 0 < ratio <= 1):
                raise ValueError(f"Split file '{path}': {key}[{i}] has ratio {ratio!r}, expected null or a "
                                 f"number in (0, 1]; {fix}")
