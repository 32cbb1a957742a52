"""Generic MLR machinery: ``MLRDataset`` (pool, re-split, simulate LR) and ``make_mlr_dataset``.

Every dataset of this package is a thin configuration of ``MLRDataset``: it says where its images
are (``collect``), which layout it expects, its split sizes and its default ``lr_mode``.
"""
import contextlib
import io
import json
import os
import os.path as osp
import random
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Type

import numpy as np

from jbim_reid.datasets.base import CrossResolutionDataset
from jbim_reid.datasets.cache import atomic_write_json, file_lock, resolve_cache_root
from jbim_reid.datasets.imagecheck import check_split_images
from jbim_reid.datasets.fetch import fetch_dataset
from jbim_reid.datasets.protocol import LR_MODES, PROTOCOL_FIELDS, MLRProtocol, resolve_protocol
from jbim_reid.datasets.simulate import ensure_lr_image, lr_cache_path
from jbim_reid.datasets.splits import Record, build_split, check_split

__all__ = ["MLRDataset", "make_mlr_dataset", "collect_torchreid", "layout_error"]


def layout_error(name: str, missing: str, root: str, layout: str, homepage: str = "") -> FileNotFoundError:
    """A FileNotFoundError naming the missing path, the expected layout and where to get the data."""
    where = (f"\nIt has no public download: get it from {homepage}, lay it out as above under "
             "data.root, or set data.root to a folder that holds it.") if homepage else ""
    return FileNotFoundError(f"{name}: '{missing}' not found. Expected layout under root '{root}':\n"
                             f"{layout}{where}")


class MLRDataset(CrossResolutionDataset):
    """Base of the cross-resolution datasets: pooled images, our own splits, cached LR images.

    Subclasses set the class attributes below and implement ``collect``. Construction loads split
    ``split_id`` of the resolved protocol from ``<cache>/<name>/splits/<protocol hash>/split_<k>.json``,
    generating it (and the LR PNGs it needs) under a file lock when missing.

    Args:
        root (str): data root. Default is ''.
        split_id (int): split index in ``[0, num_splits)``. Default is 0.
        protocol (MLRProtocol, optional): replaces the process-wide default protocol.
        pair_views (bool, optional): see ``CrossResolutionDataset``. Default is False.
        **kwargs: individual ``MLRProtocol`` fields (``seed``, ``ratios``, ...) and torchreid's
            dataset arguments (``transform``, ``mode``, ``verbose``, ...); other torchreid
            keyword arguments (``cuhk03_labeled``, ``market1501_500k``, ...) are ignored.

    Examples::

        ds = MLRVIPeR(root='data', split_id=3, seed=1, ratios=(0.5,), cache_dir='/tmp/jbim')
        ds.split_path   # .../mlr_viper/splits/<protocol hash>/split_3.json
    """

    name = ""  # registry name and cache sub-folder
    required: Tuple[str, ...] = ()  # paths relative to root that must exist
    layout = ""  # expected layout, shown in errors
    dataset_url: Optional[str] = None  # archive unpacked into <root>/<first part of required[0]> when missing
    homepage = ""  # where to get the dataset by hand, shown in errors
    default_lr_mode = "camera"
    lr_modes: Tuple[str, ...] = ("camera", "random_camera", "per_id", "half_images")
    default_images_per_camera = 0  # the dataset's own MLRProtocol.images_per_camera (0: all images)
    official_split = False  # whether official_test_persons knows the published train / test ids
    simulate = True  # False: LR side is genuine low resolution
    num_train_ids: Optional[int] = None  # None: half of the ids (rounded up) unless num_test_ids
    num_test_ids: Optional[int] = None
    num_splits = 10
    camera_pairs: Optional[Mapping[int, int]] = None  # camid -> camera-pair index

    def __init__(self, root: str = "", split_id: int = 0, protocol: Optional[MLRProtocol] = None,
                 pair_views: bool = False, **kwargs: Any):
        fields = {k: kwargs.pop(k) for k in PROTOCOL_FIELDS if k in kwargs}
        self.protocol = resolve_protocol(protocol, fields, self.default_lr_mode,
                                         self.default_images_per_camera)
        self.check_protocol(self.protocol)
        if isinstance(split_id, bool) or not isinstance(split_id, int) or not 0 <= split_id < self.num_splits:
            raise ValueError(f"{self.name}: split_id {split_id!r} out of range; expected 0..{self.num_splits - 1}")
        self.root = osp.abspath(osp.expanduser(str(root)))
        self.split_id = split_id
        self.check_layout()
        self.cache_root = resolve_cache_root(self.root, self.protocol.cache_dir) / self.name
        self.split_path = (self.cache_root / "splits" / self.protocol.short_hash() / f"split_{split_id}.json")
        split = self._load_or_build()
        self.split = split
        train, query, gallery, lr_paths, lr_ratios = self._materialize(split)
        train, query, gallery = check_split_images(train, query, gallery, self.name)
        super().__init__(train, query, gallery, lr_paths=lr_paths, lr_ratios=lr_ratios,
                         pair_views=pair_views, **kwargs)

    @classmethod
    def check_protocol(cls, protocol: MLRProtocol) -> None:
        """Raise ValueError when ``protocol.lr_mode`` is not supported by this dataset."""
        if protocol.lr_mode not in cls.lr_modes:
            raise ValueError(f"{cls.name}: lr_mode {protocol.lr_mode!r} is not supported; expected one of "
                             f"{list(cls.lr_modes)} (all modes: {list(LR_MODES)})")
        if protocol.id_split == "official" and not cls.official_split:
            raise ValueError(f"{cls.name}: id_split 'official' is not supported (no published train / test "
                             "id split is known for it); use 'random'")

    def check_layout(self) -> None:
        """Fetch a missing dataset that has a ``dataset_url``; then raise ``layout_error`` for the
        first missing path of ``required``."""
        name = type(self).__name__
        if self.dataset_url and not all(osp.exists(osp.join(self.root, rel)) for rel in self.required):
            fetch_dataset(self.root, self.required, self.dataset_url, name, self.layout, self.homepage)
        for rel in self.required:
            path = osp.join(self.root, rel)
            if not osp.exists(path):
                raise layout_error(name, path, self.root, self.layout,
                                   "" if self.dataset_url else self.homepage)

    def collect(self) -> List[Record]:
        """Every image of the dataset as ``Record(relpath, person, camid)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement collect()")

    def official_test_persons(self, records: Sequence[Record]) -> Set[str]:
        """The persons (``Record.person``) of the published test set of split ``self.split_id``.

        Only datasets with ``official_split = True`` implement it (``id_split='official'``).
        """
        raise NotImplementedError(f"{type(self).__name__} has no official id split")

    def _lr_file(self, relpath: str, ratio: float) -> Path:
        return lr_cache_path(self.cache_root / "lr", relpath, ratio, self.protocol.interpolation)

    def _missing_lr(self, split: Mapping[str, Any]) -> List[Tuple[str, Path, float]]:
        out = []
        for key in ("train", "query"):
            for it in split[key]:
                if it["ratio"] is not None:
                    dst = self._lr_file(it["path"], it["ratio"])
                    if not dst.is_file():
                        out.append((osp.join(self.root, it["path"]), dst, it["ratio"]))
        return out

    def _read_split(self) -> Optional[Dict[str, Any]]:
        """The cached split, or None when it is missing or corrupt (it is then rebuilt)."""
        if not self.split_path.is_file():
            return None
        try:
            with open(self.split_path, encoding="utf-8") as f:
                split = json.load(f)
            if not isinstance(split, dict) or not all(k in split for k in ("train", "query", "gallery")):
                raise ValueError("not a split (expected an object with train, query and gallery)")
        except ValueError as err:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
            warnings.warn(f"{self.name}: cached split file '{self.split_path}' is corrupt ({err}); "
                          "rebuilding it")
            return None
        check_split(split, self.protocol, self.split_id, str(self.split_path))
        return split

    def _load_or_build(self) -> Dict[str, Any]:
        split = self._read_split()
        if split is not None and not self._missing_lr(split):
            return split
        with file_lock(self.cache_root / ".lock"):
            split = self._read_split()
            if split is None:
                records = self.collect()
                official = None
                if self.protocol.id_split == "official":
                    official = self.official_test_persons(records)
                split = build_split(records, self.protocol, self.split_id, self.name,
                                    simulate=self.simulate, num_train_ids=self.num_train_ids,
                                    num_test_ids=self.num_test_ids, camera_pairs=self.camera_pairs,
                                    test_persons=official)
                atomic_write_json(self.split_path, split)
            for src, dst, ratio in self._missing_lr(split):
                ensure_lr_image(src, dst, ratio, self.protocol.interpolation)
        return split

    def _materialize(self, split: Mapping[str, Any]):
        lr_paths, lr_ratios = set(), {}
        subsets = []
        for key in ("train", "query", "gallery"):
            items = []
            for it in split[key]:
                if it["ratio"] is not None:
                    impath = str(self._lr_file(it["path"], it["ratio"]))
                    lr_ratios[impath] = it["ratio"]
                else:
                    impath = osp.join(self.root, it["path"])
                if it["lr"]:
                    lr_paths.add(impath)
                items.append((impath, it["pid"], it["camid"], 0))
            subsets.append(items)
        missing = [p for p, *_ in subsets[0] + subsets[1] + subsets[2] if not osp.isfile(p)]
        if missing:
            raise FileNotFoundError(f"{self.name}: split file '{self.split_path}' lists {len(missing)} missing "
                                    f"image(s), e.g. '{missing[0]}'; the data changed: delete the split file")
        return subsets[0], subsets[1], subsets[2], lr_paths, lr_ratios


def _mirror_root(root: str, dataset_dir: str, work_dir: Path) -> str:
    """A writable root whose ``dataset_dir`` links to the real one's entries.

    torchreid's VIPeR and PRID write split files into their dataset folder; pointing them at this
    mirror keeps the (possibly read-only, shared) data root untouched.
    """
    mirror = work_dir / "torchreid_root"
    target = mirror / dataset_dir
    target.mkdir(parents=True, exist_ok=True)
    real = Path(root) / dataset_dir
    for entry in sorted(os.listdir(real)):
        link = target / entry
        if not link.exists() and not link.is_symlink():
            os.symlink(real / entry, link)
    return str(mirror)


def collect_torchreid(base_cls: type, root: str, work_dir: Path, name: str, layout: str,
                      base_kwargs: Optional[Mapping[str, Any]] = None) -> List[Record]:
    """Pool train + query + gallery of a torchreid image dataset into ``Record`` s.

    Persons are keyed by subset and pid (torchreid datasets keep train and test ids disjoint;
    query and gallery share pids); ``base_cls._junk_pids`` in query / gallery are dropped; an
    image listed twice is kept once. Camids are torchreid's (0-based).
    """
    dataset_dir = getattr(base_cls, "dataset_dir")
    mirror = _mirror_root(root, dataset_dir, work_dir)
    # torchreid's split makers print and draw from the global random / numpy generators: keep
    # both quiet and leave the caller's random state as it was.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            base = base_cls(root=mirror, split_id=0, verbose=False, **dict(base_kwargs or {}))
    except (RuntimeError, AssertionError, ValueError, OSError, KeyError, IndexError) as e:
        raise RuntimeError(f"{name}: torchreid's {base_cls.__name__} could not read "
                           f"'{osp.join(root, dataset_dir)}' ({e}). Expected layout under root '{root}':\n"
                           f"{layout}") from e
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    junk = set(getattr(base_cls, "_junk_pids", []))
    records: Dict[str, Record] = {}
    missing = []
    for subset, items in (("train", base.train), ("test", base.query), ("test", base.gallery)):
        for path, pid, camid, *_ in items:
            if subset == "test" and pid in junk:
                continue
            rel = osp.relpath(path, mirror)
            if not osp.isfile(osp.join(root, rel)):
                # torchreid's PRID lists the file names its protocol expects (ids 1-200 in both
                # cameras) without checking that they exist
                missing.append(osp.join(root, rel))
                continue
            records.setdefault(rel, Record(rel, f"{subset}:{pid}", int(camid)))
    if missing:
        warnings.warn(f"{name}: torchreid's {base_cls.__name__} lists {len(missing)} image(s) that do not "
                      f"exist, e.g. '{missing[0]}'; they are left out")
    if not records:
        raise layout_error(name, osp.join(root, dataset_dir), root, layout)
    return list(records.values())


def make_mlr_dataset(name: str, base_cls: type, num_train_ids: Optional[int] = None,
                     num_test_ids: Optional[int] = None, default_lr_mode: str = "camera",
                     lr_modes: Sequence[str] = ("camera", "random_camera", "per_id", "half_images"),
                     required: Sequence[str] = (), layout: str = "", num_splits: int = 10,
                     base_kwargs: Optional[Mapping[str, Any]] = None,
                     doc: Optional[str] = None, dataset_url: Optional[str] = None,
                     homepage: str = "", official_split: bool = False) -> Type[MLRDataset]:
    """Turn a torchreid image dataset class into an MLR dataset class named ``mlr_<name>``.

    The new class pools all images of ``base_cls`` (built on a mirror of its folder so that its
    own split files land in our cache), keeps ids seen by >= 2 cameras and re-splits them by
    ``MLRProtocol``.

    Args:
        name (str): base name; the class registers as ``mlr_<name>``.
        base_cls (type): a ``torchreid.data.ImageDataset`` subclass with a ``dataset_dir`` attribute.
        num_train_ids (int, optional): training ids; None = half (rounded up) unless ``num_test_ids``.
        num_test_ids (int, optional): test ids when ``num_train_ids`` is None.
        default_lr_mode (str, optional): the dataset's own ``lr_mode``. Default is ``camera``.
        lr_modes (sequence of str, optional): supported ``lr_mode`` values.
        required (sequence of str, optional): paths relative to root checked before torchreid runs;
            default: ``base_cls.dataset_dir``.
        layout (str, optional): expected layout text for errors.
        num_splits (int, optional): valid split ids are ``0..num_splits-1``. Default is 10.
        base_kwargs (mapping, optional): extra keyword arguments for ``base_cls``.
        doc (str, optional): class docstring.
        dataset_url (str, optional): archive fetched when the dataset folder is missing (e.g.
            ``base_cls.dataset_url``); None: no download.
        homepage (str, optional): where to get the dataset by hand, shown in errors.
        official_split (bool, optional): ``base_cls``'s own train / test subsets are the published
            id split (offered as ``id_split='official'``). Default is False.

    Returns:
        The new ``MLRDataset`` subclass.

    Examples::

        MLRGRID = make_mlr_dataset('grid', torchreid.data.datasets.image.GRID)
        torchreid.data.register_image_dataset('mlr_grid', MLRGRID)
    """
    if default_lr_mode not in lr_modes:
        raise ValueError(f"default_lr_mode {default_lr_mode!r} not in lr_modes {list(lr_modes)}")
    full_name = f"mlr_{name}"

    def collect(self) -> List[Record]:
        return collect_torchreid(base_cls, self.root, self.cache_root, full_name, self.layout, base_kwargs)

    def official_test_persons(self, records: Sequence[Record]) -> Set[str]:
        return {r.person for r in records if r.person.startswith("test:")}  # collect_torchreid's keys

    attrs = {
        "name": full_name,
        "required": tuple(required) or (getattr(base_cls, "dataset_dir"),),
        "layout": layout or f"  {getattr(base_cls, 'dataset_dir')}/... (torchreid's {base_cls.__name__} layout)",
        "default_lr_mode": default_lr_mode,
        "lr_modes": tuple(lr_modes),
        "num_train_ids": num_train_ids,
        "num_test_ids": num_test_ids,
        "num_splits": num_splits,
        "dataset_url": dataset_url,
        "homepage": homepage,
        "collect": collect,
        "official_split": official_split,
        "official_test_persons": official_test_persons,
        "__doc__": doc or f"MLR version of torchreid's {base_cls.__name__}, made by ``make_mlr_dataset``.",
        "__module__": __name__,
    }
    cls_name = "MLR" + base_cls.__name__
    return type(cls_name, (MLRDataset,), attrs)
