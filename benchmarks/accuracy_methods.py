"""The accuracy benchmark's methods: their stage kinds, training variants and stage epochs.

A method key is ``<base>`` or ``<base>_<variant>`` (``jbim_xstream_resaug``: base ``jbim``, variant
``xstream_resaug``); the variant says how its stages train differently (:data:`VARIANTS`). Shared by
``accuracy.py`` and its helpers beside it (stage runs, command line, budget planner, plateau search).
"""
from dataclasses import dataclass
from typing import Dict, List, Mapping, Sequence, Tuple

from jbim_reid.evaluation.reports import ACCURACY_METHODS

__all__ = ["METHODS", "KINDS", "STAGE1_KINDS", "BASE_KINDS", "ANCHORS", "Variant", "VARIANTS", "REPORTED_VARIANTS",
           "DEFAULT_METHODS", "variant_of", "base_of", "is_resaug", "method_kinds", "described", "spec_label",
           "search_plan", "stage_counts"]

METHODS = ACCURACY_METHODS  # --methods key -> row label of the table (table and run order)
# Stage kinds whose epochs each method needs (an "epoch spec" maps these kinds to epochs)
KINDS = ("plain", "him", "lim", "joint")
STAGE1_KINDS = ("him", "lim")  # the stage-1 kinds; a warm start may train them 0 epochs
BASE_KINDS = {"plain": ("plain",), "bicubic": ("him",), "lim_only": ("lim",), "him_only": ("him",),
              "him_lim": ("him", "lim"), "jbim": ("him", "lim", "joint"),
              "ensemble": ("him", "lim", "joint")}
ANCHORS = (1 / 2, 1 / 3, 1 / 4)  # ratios m of the ensemble's anchor models; the first is JBIM's


@dataclass(frozen=True)
class Variant:
    """How a ``<base>_<suffix>`` method trains differently from ``<base>``.

    ``tag`` marks its stages' names (stages are shared only within one variant); ``resaug`` adds
    ``random_resolution`` to the train transforms; ``jbim`` holds ``jbim.*`` overrides of every stage;
    ``genuine_ratio`` sets every stage's synthetic-LR ratio ``jbim.ratio`` to the split's measured genuine
    ratio of its training LR images (``accuracy_runs.SplitRunner.variant_ratio``) instead of 1/2;
    ``shares_lim``: the overrides touch only HIM's side (SR), so the variant's joint stage starts from the
    base recipe's stage-1 LIM, which keeps the comparison with ``jbim`` paired on one LIM. ``auto``: the
    recipe ``jbim.recipe auto`` resolves to on the split (one of these variants, ``accuracy_warm``);
    ``warm``: that recipe started from the split's plain + random resolution model (``jbim.init_from``).
    """

    tag: str = ""
    resaug: bool = False
    jbim: Tuple[Tuple[str, object], ...] = ()
    genuine_ratio: bool = False
    shares_lim: bool = False
    auto: bool = False
    warm: bool = False


_XSTREAM = (("cross_stream_triplet", True),)  # the jbim.* settings the variants combine
_MULTIRATIO = (("train_ratios", list(ANCHORS)),)
VARIANTS = {"": Variant(),
            "resaug": Variant("ra", resaug=True),
            "xstream": Variant("xs", jbim=_XSTREAM),
            "multiratio": Variant("mr", jbim=_MULTIRATIO),
            "xstream_resaug": Variant("xsra", resaug=True, jbim=_XSTREAM),
            "xstream_multiratio": Variant("xsmr", jbim=_XSTREAM + _MULTIRATIO),
            "genuine": Variant("gr", genuine_ratio=True),
            # the paper's "Bicubic" ablation inside JBIM: no F_sr, no L_sr, in every stage that has HIM
            "nosr": Variant("bi", jbim=(("sr", "bicubic"), ("alpha", 0.0)), shares_lim=True),
            "auto": Variant("auto", auto=True),
            "warm": Variant("warm", warm=True)}


def variant_of(method: str) -> str:
    """The variant suffix of ``method`` (a key of :data:`VARIANTS`): ``jbim_resaug`` -> ``resaug``.

    The longest matching suffix wins: ``jbim_xstream_resaug`` -> ``xstream_resaug``, not ``resaug``."""
    return max((v for v in VARIANTS if v and method.endswith(f"_{v}")), key=len, default="")


REPORTED_VARIANTS = ("", "resaug")  # the rest are diagnosis variants
# --methods default: every method but the diagnosis variants, which run only when named
DEFAULT_METHODS = [m for m in METHODS if variant_of(m) in REPORTED_VARIANTS]


def base_of(method: str) -> str:
    """``jbim_resaug`` -> ``jbim``; ``plain_time_matched`` -> ``plain``."""
    if method == "plain_time_matched":
        return "plain"
    suffix = variant_of(method)
    return method[:-len(suffix) - 1] if suffix else method


def is_resaug(method: str) -> bool:
    return VARIANTS[variant_of(method)].resaug


def method_kinds(method: str) -> Tuple[str, ...]:
    """Stage kinds whose epochs ``method`` (or a ``<base>_resaug`` variant) depends on; a warm start
    depends on the epochs of the plain model it starts from too."""
    return (("plain",) if VARIANTS[variant_of(method)].warm else ()) + BASE_KINDS[base_of(method)]


def described(variant: str) -> str:
    """``', cross_stream_triplet=True'``: the ``jbim.*`` overrides of ``variant`` for progress lines."""
    options = VARIANTS[variant]
    return "".join(f", {k}={v}" for k, v in options.jbim) + (", random_resolution" if options.resaug else "")


def spec_label(spec: Mapping[str, int]) -> str:
    """``{'him': 8, 'lim': 12}`` -> ``'him=8,lim=12'`` (kinds in :data:`KINDS` order)."""
    return ",".join(f"{k}={spec[k]}" for k in KINDS if k in spec)


def search_plan(method: str) -> List[Tuple[str, str]]:
    """``(kind, probe method)`` pairs searched in turn for ``method``'s epochs (``--plateau``)."""
    base, tag = base_of(method), f"_{variant_of(method)}" if variant_of(method) else ""
    him = ("him", "him_only" + tag)
    lim = ("lim", "lim_only" + tag)
    return {"plain": [("plain", method)], "bicubic": [("him", "bicubic")], "lim_only": [lim],
            "him_only": [him], "him_lim": [him, lim], "jbim": [him, lim, ("joint", "jbim" + tag)],
            "ensemble": [him, lim, ("joint", "jbim" + tag)]}[base]


def stage_counts(methods: Sequence[str]) -> Dict[str, int]:
    """Trained stages per split by kind for ``methods`` (shared stages counted once).

    ``plain_time_matched`` costs as much as JBIM's stages; anchors are counted as joint stages
    (``--anchor-training joint``).
    """
    stages = set()
    for method in methods:
        base, options = base_of(method), VARIANTS[variant_of(method)]
        tag, lim_tag = options.tag, "" if options.shares_lim else options.tag
        if method == "plain_time_matched":
            stages |= {("him", "tm"), ("lim", "tm"), ("joint", "tm")}
        elif base == "plain":
            stages.add(("plain", method))
        elif base == "bicubic":
            stages.add(("bicubic", ""))
        elif base == "lim_only":
            stages.add(("lim", lim_tag))
        elif base == "him_only":
            stages.add(("him", tag))
        elif base == "him_lim":
            stages |= {("him", tag), ("lim", lim_tag)}
        else:  # jbim and its variants, ensemble
            stages |= {("him", tag), ("lim", lim_tag), ("joint", tag)}
            if base == "ensemble":
                stages |= {("joint", f"m{m}{tag}") for m in ANCHORS[1:]}
    counts: Dict[str, int] = {}
    for kind, _ in stages:
        counts[kind] = counts.get(kind, 0) + 1
    return counts
