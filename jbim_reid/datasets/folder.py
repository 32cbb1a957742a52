"""``crossres_folder``: your own genuine cross-resolution data in the Market-1501 naming convention.

Layout under ``root``::

    <name>/train/    <pid>_c<camid>_<anything>.jpg   both sides, train ids relabelled 0..N-1
    <name>/query/    the LR images of it are the probes
    <name>/gallery/  the HR images of it are the gallery

``<pid>`` is an integer (-1: junk, skipped as torchreid does for Market-1501); ``<camid>`` the
camera number as written (kept as the camid). Market-1501's own names (``0002_c1s1_000451_03.jpg``)
fit. Which images are LR is one rule: the cameras ``lr_cameras`` or the heights up to
``lr_max_height``. torchreid's ``ImageDataManager`` passes only its own keyword arguments, so the
options are process-wide defaults too, set with :func:`folder_overrides` (the CLI sets them from the
config node ``folder``).
"""
import contextlib
import dataclasses
import hashlib
import json
import numbers
import os
import os.path as osp
import re
import warnings
from collections import defaultdict
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from jbim_reid.datasets.base import CrossResolutionDataset, genuine_size
from jbim_reid.datasets.cache import atomic_write_json, file_lock, json_bytes, resolve_cache_root
from jbim_reid.datasets.imagecheck import check_images, check_split_images
from jbim_reid.datasets.mlr_builder import layout_error
from jbim_reid.datasets.protocol import current_defaults

__all__ = ["CrossResolutionFolder", "FolderOptions", "FOLDER_FIELDS", "folder_overrides"]

_NAME = re.compile(r"(-?\d+)_c(\d+)(\D.*)?\.(?:jpe?g|png|bmp)", re.IGNORECASE)
_IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp")
_SUBSETS = ("train", "query", "gallery")
RECORD_VERSION = 1


@dataclasses.dataclass(frozen=True)
class FolderOptions:
    """Options of ``crossres_folder`` (config node ``folder``); exactly one LR rule must be set.

    Args:
        name (str, optional): the dataset's folder under the data root. Default is ``custom``.
        lr_cameras (sequence of int, optional): camera ids (as in the file names) of the LR side.
        lr_max_height (int, optional): images at most this tall (pixels) are LR, whatever their
            camera; 0 = unused. Default is 0.
        drop_unmatched_query (bool, optional): drop (with a warning) query images whose id has no
            gallery image under another camera; False raises instead. Default is True.
    """

    name: str = "custom"
    lr_cameras: Tuple[int, ...] = ()
    lr_max_height: int = 0
    drop_unmatched_query: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or osp.isabs(self.name) \
                or ".." in self.name.replace("\\", "/").split("/"):
            raise ValueError(f"Invalid folder.name {self.name!r}; expected a folder name under data.root")
        cams = self.lr_cameras
        if isinstance(cams, numbers.Integral) and not isinstance(cams, bool):
            cams = (cams,)
        if isinstance(cams, (str, bytes)) or not all(
                isinstance(c, numbers.Integral) and not isinstance(c, bool) and c >= 0 for c in cams):
            raise ValueError(f"Invalid folder.lr_cameras {self.lr_cameras!r}; expected a list of camera ids "
                             "(integers >= 0, as in the file names' c<camid>)")
        object.__setattr__(self, "lr_cameras", tuple(sorted({int(c) for c in cams})))
        height = self.lr_max_height
        if isinstance(height, bool) or not isinstance(height, numbers.Integral) or height < 0:
            raise ValueError(f"Invalid folder.lr_max_height {height!r}; expected pixels (an integer >= 0, "
                             "0 = unused)")
        object.__setattr__(self, "lr_max_height", int(height))
        if not isinstance(self.drop_unmatched_query, bool):
            raise ValueError(f"Invalid folder.drop_unmatched_query {self.drop_unmatched_query!r}; "
                             "expected True or False")
        if bool(self.lr_cameras) == bool(self.lr_max_height):
            raise ValueError(f"crossres_folder: set exactly one of folder.lr_cameras (camera ids of the LR "
                             f"side) and folder.lr_max_height (LR = images at most this many pixels tall); "
                             f"got lr_cameras {list(self.lr_cameras)} and lr_max_height {self.lr_max_height}")

    def recorded(self) -> Dict[str, Any]:
        """The options as JSON-ready values."""
        out = dataclasses.asdict(self)
        out["lr_cameras"] = list(self.lr_cameras)
        return out

    def short_hash(self) -> str:
        """A stable 10-hex-digit hash of ``recorded()``; names the record's folder."""
        return hashlib.sha1(json.dumps(self.recorded(), sort_keys=True).encode("utf-8")).hexdigest()[:10]


FOLDER_FIELDS = tuple(f.name for f in dataclasses.fields(FolderOptions))

_overrides: Dict[str, Any] = {}  # field name -> process-wide default set by folder_overrides


@contextlib.contextmanager
def folder_overrides(**fields: Any) -> Iterator[None]:
    """Change the default ``FolderOptions`` inside a ``with`` block (nests; restored on exit).

    Values are checked when a ``crossres_folder`` dataset is built, so the config defaults (no LR
    rule) may be entered by runs on other datasets.

    Examples::

        with folder_overrides(name='shop', lr_cameras=[3]):
            dm = torchreid.data.ImageDataManager(root='data', sources='crossres_folder')
    """
    unknown = sorted(set(fields) - set(FOLDER_FIELDS))
    if unknown:
        raise ValueError(f"Unknown folder option(s) {unknown}; expected some of {list(FOLDER_FIELDS)}")
    saved = dict(_overrides)
    _overrides.update(fields)
    try:
        yield
    finally:
        _overrides.clear()
        _overrides.update(saved)


class CrossResolutionFolder(CrossResolutionDataset):
    """A folder of genuine cross-resolution images in the Market-1501 naming convention.

    Query = the LR images of ``query/``; gallery = the HR images of ``gallery/`` (ids no probe has
    are distractors, kept); train = ``train/``, which must hold both sides. HR images in ``query/``
    and LR images in ``gallery/`` are left out with a warning. The split is the folders themselves
    (``num_splits = 1``); a record of it and of the options is written to
    ``<cache>/crossres_folder/splits/<options hash>/split_0.json`` (cache: ``mlr.cache_dir``).

    Args:
        root (str): data root. Default is ''.
        split_id (int): must be 0. Default is 0.
        cache_dir (str, optional): record cache; None = the protocol's (``protocol_overrides``).
        pair_views (bool, optional): see ``CrossResolutionDataset``. Default is False.
        **kwargs: ``FolderOptions`` fields (over the ``folder_overrides`` defaults) and torchreid's
            dataset arguments (``transform``, ``mode``, ``verbose``, ...).

    Examples::

        ds = CrossResolutionFolder(root='data', name='shop', lr_cameras=[3])
        ds.query[0], ds[0]['hw'], ds[0]['is_lr']
    """

    name = "crossres_folder"
    num_splits = 1
    layout = ("  <folder.name>/{train,query,gallery}/<pid>_c<camid>_<anything>.<jpg|jpeg|png|bmp>\n"
              "  pid -1: junk (skipped); LR side: folder.lr_cameras or folder.lr_max_height")

    def __init__(self, root: str = "", split_id: int = 0, cache_dir: Optional[str] = None,
                 pair_views: bool = False, **kwargs: Any):
        fields = {k: kwargs.pop(k) for k in FOLDER_FIELDS if k in kwargs}
        self.options = FolderOptions(**{**_overrides, **fields})
        if isinstance(split_id, bool) or split_id != 0:
            raise ValueError(f"{self.name}: split_id {split_id!r} out of range; the folders are the one "
                             "split, expected 0")
        self.root = osp.abspath(osp.expanduser(str(root)))
        self.split_id = 0
        self.folder = osp.join(self.root, self.options.name)
        for path in [self.folder] + [osp.join(self.folder, s) for s in _SUBSETS]:
            if not osp.isdir(path):
                raise layout_error(type(self).__name__, path, self.root, self.layout)
        if cache_dir is None:
            cache_dir = current_defaults().cache_dir
        self.cache_root = resolve_cache_root(self.root, cache_dir) / self.name
        self.split_path = self.cache_root / "splits" / self.options.short_hash() / "split_0.json"
        self.split = self._build_record()
        self._write_record()
        train, query, gallery, lr_paths = self._materialize()
        train, query, gallery = check_split_images(train, query, gallery, self.name)
        super().__init__(train, query, gallery, lr_paths=lr_paths, pair_views=pair_views, **kwargs)

    def _list(self, subset: str) -> List[Tuple[str, int, int]]:
        """``(relpath, pid, camid)`` of the images in ``<folder>/<subset>``, junk (pid -1) left out."""
        folder = osp.join(self.folder, subset)
        items = []
        for fname in sorted(os.listdir(folder)):
            if fname.startswith(".") or not fname.lower().endswith(_IMAGE_EXT):
                continue
            match = _NAME.fullmatch(fname)
            if match is None:
                raise ValueError(f"{self.name}: unexpected file name '{osp.join(folder, fname)}'; expected "
                                 "<pid>_c<camid>_<anything>.<jpg|jpeg|png|bmp> (e.g. 0002_c1s1_000451_03.jpg)")
            pid, camid = int(match.group(1)), int(match.group(2))
            if pid == -1:
                continue
            if pid < 0:
                raise ValueError(f"{self.name}: person id {pid} of '{osp.join(folder, fname)}' is negative; "
                                 "expected an integer >= 0 (or -1 for junk)")
            items.append((osp.join(self.options.name, subset, fname), pid, camid))
        return items

    def _lr_flags(self, items: Sequence[Tuple[str, int, int]], subset: str) -> Tuple[list, List[bool]]:
        """``items`` with a readable LR rule input and, per item, whether it is on the LR side.

        With ``lr_max_height`` the header is read; an unreadable file goes through the image check
        (``DataError``, or skipped with ``data.skip_bad_images``).
        """
        if self.options.lr_cameras:
            return list(items), [camid in self.options.lr_cameras for _, _, camid in items]
        kept, flags, bad = [], [], []
        for it in items:
            try:
                h, _ = genuine_size(osp.join(self.root, it[0]))
            except OSError:
                bad.append((osp.join(self.root, it[0]),) + it[1:])
                continue
            kept.append(it)
            flags.append(h <= self.options.lr_max_height)
        check_images(bad, self.name, subset)  # raises, or warns that they are skipped
        return kept, flags

    def _rule(self) -> str:
        if self.options.lr_cameras:
            return f"folder.lr_cameras {list(self.options.lr_cameras)}"
        return f"folder.lr_max_height {self.options.lr_max_height}"

    def _side(self, subset: str, want_lr: bool) -> List[Dict[str, Any]]:
        """Record items of ``subset`` on the wanted side; the others are left out with a warning."""
        items, flags = self._lr_flags(self._list(subset), subset)
        chosen = [it for it, lr in zip(items, flags) if lr == want_lr]
        side = "LR" if want_lr else "HR"
        where = osp.join(self.folder, subset)
        if not chosen:
            cams = sorted({camid for _, _, camid in items})
            raise ValueError(f"{self.name}: no {side} image in '{where}' under {self._rule()} ({len(items)} "
                             f"image(s), cameras {cams}); the {subset} side needs {side} images named "
                             "<pid>_c<camid>_<anything>.<jpg|jpeg|png|bmp>")
        if len(chosen) < len(items):
            other = next(it for it, lr in zip(items, flags) if lr != want_lr)
            warnings.warn(f"{self.name}: left out {len(items) - len(chosen)} {'HR' if want_lr else 'LR'} "
                          f"image(s) of '{where}' under {self._rule()}, e.g. '{osp.join(self.root, other[0])}'; "
                          f"{subset} holds {side} images only")
        return [{"path": rel, "pid": pid, "camid": camid, "lr": want_lr, "ratio": None}
                for rel, pid, camid in chosen]

    def _match_query(self, query: List[Dict[str, Any]], gallery: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """Query items with a gallery image of their id under another camera (torchreid evaluates
        only those); the others are dropped with a warning or raise, per ``drop_unmatched_query``."""
        cams: Dict[int, Set[int]] = defaultdict(set)
        for g in gallery:
            cams[g["pid"]].add(g["camid"])
        kept = [q for q in query if cams[q["pid"]] - {q["camid"]}]
        if len(kept) == len(query):
            return kept
        ids = sorted({q["pid"] for q in query if not cams[q["pid"]] - {q["camid"]}})
        listing = f"{len(query) - len(kept)} query image(s) of id(s) {ids[:20]}{' ...' if len(ids) > 20 else ''}"
        where = f"'{osp.join(self.folder, 'gallery')}'"
        if not self.options.drop_unmatched_query:
            raise ValueError(f"{self.name}: {listing} have no HR image of their id under another camera in "
                             f"{where}; add gallery images or set folder.drop_unmatched_query True to drop them")
        if not kept:
            raise ValueError(f"{self.name}: no query image has an HR image of its id under another camera in "
                             f"{where}; expected query and gallery to share ids")
        warnings.warn(f"{self.name}: dropped {listing}: no HR image of their id under another camera in "
                      f"{where} (folder.drop_unmatched_query)")
        return kept

    def _build_record(self) -> Dict[str, Any]:
        """The split record: options, counts and ``{path, pid, camid, lr, ratio}`` items (as ``splits``)."""
        items, flags = self._lr_flags(self._list("train"), "train")
        for want_lr in (True, False):
            if want_lr not in flags:
                side = "LR" if want_lr else "HR"
                raise ValueError(f"{self.name}: no {side} image in '{osp.join(self.folder, 'train')}' under "
                                 f"{self._rule()} ({len(items)} image(s)); the train side needs both LR and "
                                 "HR images")
        labels = {pid: i for i, pid in enumerate(sorted({pid for _, pid, _ in items}))}
        train = [{"path": rel, "pid": labels[pid], "camid": camid, "lr": lr, "ratio": None}
                 for (rel, pid, camid), lr in zip(items, flags)]
        gallery = self._side("gallery", want_lr=False)
        query_all = self._side("query", want_lr=True)
        query = self._match_query(query_all, gallery)
        return {
            "version": RECORD_VERSION,
            "dataset": self.name,
            "split_id": 0,
            "options": self.options.recorded(),
            "options_hash": self.options.short_hash(),
            "simulated": False,
            "num_train_pids": len(labels),
            "dropped_query": len(query_all) - len(query),
            "train": train,
            "query": query,
            "gallery": gallery,
        }

    def _write_record(self) -> None:
        """Write ``self.split`` to ``self.split_path`` unless the file already holds it."""
        data = json_bytes(self.split)
        with file_lock(self.cache_root / ".lock"):
            if not self.split_path.is_file() or self.split_path.read_bytes() != data:
                atomic_write_json(self.split_path, self.split)

    def _materialize(self):
        lr_paths, subsets = set(), []
        for key in _SUBSETS:
            items = []
            for it in self.split[key]:
                impath = osp.join(self.root, it["path"])
                if it["lr"]:
                    lr_paths.add(impath)
                items.append((impath, it["pid"], it["camid"], 0))
            subsets.append(items)
        return subsets[0], subsets[1], subsets[2], lr_paths
