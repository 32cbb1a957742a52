"""MLR protocol options (``MLRProtocol``) and their process-wide defaults.

Published cross-resolution papers build their multiple-low-resolution (MLR) test beds slightly
differently; every such choice is a field here, with the JBIM paper's default, and is recorded in
each split file.
"""
import contextlib
import dataclasses
import hashlib
import json
import numbers
from typing import Any, Dict, Iterator, Optional, Tuple

__all__ = [
    "MLRProtocol", "LR_MODES", "RATIO_PER", "INTERPOLATIONS", "GALLERY_DRAWS", "ID_SPLITS",
    "protocol_overrides", "current_defaults", "resolve_protocol", "PROTOCOL_FIELDS",
]

LR_MODES = ("camera", "random_camera", "per_id", "camera_pair", "half_images")
RATIO_PER = ("image", "id")
INTERPOLATIONS = ("bicubic", "bilinear", "area", "nearest")
GALLERY_DRAWS = ("one_random", "all")
ID_SPLITS = ("random", "official")
# Fields added after split files were first written, with the value that reproduces the older
# splits: recorded() leaves them out at that value, so existing split files (and hashes) stay valid.
_LATER_FIELDS = {"images_per_camera": 0, "id_split": "random"}


def _choice(field: str, value: Any, choices: Tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"Unknown {field} {value!r}; expected one of {list(choices)}")


@dataclasses.dataclass(frozen=True)
class MLRProtocol:
    """How low-resolution images, splits and galleries are made.

    Args:
        seed (int, optional): split seed; a split is a function of ``(seed, split_id)``. Default is 0.
        lr_mode (str, optional): which images are LR: ``camera`` (camera ``lr_camid``),
            ``random_camera`` (one camera drawn per split, recorded in the split file), ``per_id``
            (a random camera per id), ``camera_pair`` (a random camera of each camera pair),
            ``half_images`` (a random half of each id's images). Default is None: the dataset's own.
        lr_camid (int, optional): the LR camera (0-based) when ``lr_mode == 'camera'``. Default is 1.
        ratios (tuple of float, optional): downsampling ratios, each in (0, 1).
            Default is (1/2, 1/3, 1/4).
        ratio_per (str, optional): draw the ratio per ``image`` or per ``id``. Default is ``image``.
        interpolation (str, optional): ``bicubic``, ``bilinear``, ``area`` or ``nearest``.
            Default is ``bicubic``.
        train_lr (bool, optional): whether training images on the LR side are downsampled too
            (False: training has no LR images). Default is True.
        gallery (str, optional): ``one_random`` HR image per test id or ``all`` HR images.
            Default is ``one_random``.
        images_per_camera (int, optional): keep this many random images per person per camera
            (0: all). Default is None: the dataset's own (3 for ``mlr_sysu``, else 0).
        id_split (str, optional): ``random`` train / test ids drawn per split, or ``official``: the
            dataset's published id split (``mlr_cuhk03``: the k-th of CUHK03's 20 classic
            1,367 / 100 splits; ``mlr_market1501``: Market-1501's 751 / 750). Default is ``random``.
        cache_dir (str, optional): LR image / split cache; None = ``<root>/jbim_cache`` with a
            per-user fallback (see ``cache.resolve_cache_root``). Not part of the protocol hash.
            Default is None.
    """

    seed: int = 0
    lr_mode: Optional[str] = None
    lr_camid: int = 1
    ratios: Tuple[float, ...] = (1 / 2, 1 / 3, 1 / 4)
    ratio_per: str = "image"
    interpolation: str = "bicubic"
    train_lr: bool = True
    gallery: str = "one_random"
    images_per_camera: Optional[int] = None
    id_split: str = "random"
    cache_dir: Optional[str] = None

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) or self.seed < 0:
            raise ValueError(f"Invalid seed {self.seed!r}; expected an integer >= 0")
        if self.lr_mode is not None:
            _choice("lr_mode", self.lr_mode, LR_MODES)
        if isinstance(self.lr_camid, bool) or not isinstance(self.lr_camid, numbers.Integral) \
                or self.lr_camid < 0:
            raise ValueError(f"Invalid lr_camid {self.lr_camid!r}; expected a 0-based camera id (int >= 0)")
        ratios = self.ratios
        if isinstance(ratios, numbers.Real):
            ratios = (ratios,)
        try:
            ratios = tuple(float(r) for r in ratios)
        except (TypeError, ValueError):
            raise ValueError(f"Invalid ratios {self.ratios!r}; expected a sequence of floats in (0, 1)") from None
        if not ratios or any(not 0.0 < r < 1.0 for r in ratios):
            raise ValueError(f"Invalid ratios {self.ratios!r}; expected a non-empty sequence of floats in (0, 1)")
        object.__setattr__(self, "ratios", ratios)
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "lr_camid", int(self.lr_camid))
        _choice("ratio_per", self.ratio_per, RATIO_PER)
        _choice("interpolation", self.interpolation, INTERPOLATIONS)
        if not isinstance(self.train_lr, bool):
            raise ValueError(f"Invalid train_lr {self.train_lr!r}; expected True or False")
        _choice("gallery", self.gallery, GALLERY_DRAWS)
        per_camera = self.images_per_camera
        valid = not isinstance(per_camera, bool) and isinstance(per_camera, numbers.Integral) and per_camera >= 0
        if per_camera is not None and not valid:
            raise ValueError(f"Invalid images_per_camera {per_camera!r}; expected an integer >= 0 (0: all "
                             "images) or None (the dataset's own)")
        _choice("id_split", self.id_split, ID_SPLITS)
        if self.cache_dir is not None and not isinstance(self.cache_dir, (str, bytes)) \
                and not hasattr(self.cache_dir, "__fspath__"):
            raise ValueError(f"Invalid cache_dir {self.cache_dir!r}; expected a path or None")

    def recorded(self) -> Dict[str, Any]:
        """The fields a split depends on (all but ``cache_dir``), JSON-ready.

        Fields added later are left out at the value that reproduces the older splits (or unresolved).
        """
        out = dataclasses.asdict(self)
        out.pop("cache_dir")
        out["ratios"] = list(self.ratios)
        for name, old in _LATER_FIELDS.items():
            if out[name] in (old, None):
                del out[name]
        return out

    def short_hash(self) -> str:
        """A stable 10-hex-digit hash of ``recorded()``; names the split folder."""
        text = json.dumps(self.recorded(), sort_keys=True)
        return hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]


PROTOCOL_FIELDS = tuple(f.name for f in dataclasses.fields(MLRProtocol))

_overrides: Dict[str, Any] = {}  # field name -> process-wide default set by protocol_overrides


def current_defaults() -> MLRProtocol:
    """The process-wide default protocol (``MLRProtocol()`` plus active ``protocol_overrides``)."""
    return MLRProtocol(**_overrides)


@contextlib.contextmanager
def protocol_overrides(**fields: Any) -> Iterator[MLRProtocol]:
    """Change the default protocol inside a ``with`` block (nests; restored on exit).

    torchreid's ``ImageDataManager`` cannot pass extra keyword arguments to datasets, so wrap its
    construction in this block instead.

    Examples::

        with protocol_overrides(seed=3, interpolation='bilinear'):
            dm = torchreid.data.ImageDataManager(root='data', sources='mlr_viper')
    """
    unknown = sorted(set(fields) - set(PROTOCOL_FIELDS))
    if unknown:
        raise ValueError(f"Unknown protocol field(s) {unknown}; expected some of {list(PROTOCOL_FIELDS)}")
    saved = dict(_overrides)
    merged = {**_overrides, **fields}
    protocol = MLRProtocol(**merged)  # validate before changing anything
    _overrides.clear()
    _overrides.update(merged)
    try:
        yield protocol
    finally:
        _overrides.clear()
        _overrides.update(saved)


def resolve_protocol(protocol: Optional[MLRProtocol], fields: Dict[str, Any],
                     default_lr_mode: str, default_images_per_camera: int = 0) -> MLRProtocol:
    """Combine defaults, an explicit ``protocol`` and per-field keyword arguments.

    Args:
        protocol (MLRProtocol, optional): replaces the process-wide defaults when given.
        fields (dict): individual field values; they win over ``protocol``.
        default_lr_mode (str): the dataset's own ``lr_mode``, used when the result has none.
        default_images_per_camera (int, optional): the dataset's own ``images_per_camera``. Default is 0.

    Returns:
        MLRProtocol with ``lr_mode`` and ``images_per_camera`` filled in.
    """
    if protocol is not None and not isinstance(protocol, MLRProtocol):
        raise TypeError(f"protocol must be an MLRProtocol, got {type(protocol).__name__}")
    base = protocol if protocol is not None else current_defaults()
    resolved = dataclasses.replace(base, **fields)
    if resolved.lr_mode is None:
        resolved = dataclasses.replace(resolved, lr_mode=default_lr_mode)
    if resolved.images_per_camera is None:
        resolved = dataclasses.replace(resolved, images_per_camera=default_images_per_camera)
    return resolved
