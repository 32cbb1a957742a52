"""The accuracy benchmark's command line: its flags, their value parsers and the presets they pick.

:func:`parse_args` checks everything that can fail before training starts (data root, datasets,
weights, device, ``--budget-min``), so that a run does not die after hours; the presets are
:data:`DEFAULTS`, :data:`PAPER` (``--paper``) and :data:`STANDARD_RUN` (``--standard-run``).
"""
import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence

import torch
from accuracy_budget import COSTS, measured_costs, plan_budget
from accuracy_methods import DEFAULT_METHODS, KINDS, METHODS, STAGE1_KINDS, method_kinds, stage_counts
from accuracy_records import REPO_ROOT
from accuracy_runs import lr_stepsize
from accuracy_warm import WARM_METHOD

from jbim_reid.datasets import DATASETS
from jbim_reid.models import SR_MODELS

__all__ = ["DESCRIPTION", "DEFAULT_WEIGHTS", "DEFAULTS", "PAPER", "STANDARD_RUN", "parse_args"]

DESCRIPTION = ("Accuracy of JBIM against plain torchreid on real cross-resolution data, resumable, each to its "
               "plateau.")  # --help; the first line of accuracy.py's docstring
DEFAULT_WEIGHTS = REPO_ROOT.parent / "shared" / "weights" / "mobilenetv2_x1_0_imagenet.pth"
DEFAULTS = dict(datasets="caviar,mlr_viper", splits=2, epochs=4, height=128, width=64, batch_size=32)
PAPER = dict(splits=10, epochs=60, height=256, width=128, batch_size=32)  # --paper
STANDARD_RUN = dict(caviar=5, mlr_viper=3)  # splits per dataset of the standard CPU comparison (--standard-run)


def _names(value: str, choices: Sequence[str], what: str) -> List[str]:
    """Comma-separated ``value`` -> names, each one of ``choices`` (argparse type helper)."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in choices]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown {what}(s) {unknown or value!r}; expected a "
                                         f"comma-separated subset of {list(choices)}")
    return names


def _methods(value: str) -> List[str]:
    names = _names(value, list(METHODS), "method")
    return [m for m in METHODS if m in names]  # table order


def _datasets(value: str) -> List[str]:
    return _names(value, sorted(DATASETS), "dataset")


def _split_ids(value: str) -> List[int]:
    try:
        ids = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        ids = []
    if not ids or any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise argparse.ArgumentTypeError(f"expected distinct comma-separated split indices >= 0, "
                                         f"got {value!r}")
    return ids


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return number


def _counts(value: str, names: Sequence[str], expected: str, zero: Sequence[str] = ()) -> Dict[str, int]:
    """``a=5,b=3`` -> ``{'a': 5, 'b': 3}`` with every name in ``names`` and every count >= 1 (>= 0 for the
    names in ``zero``)."""
    out = {}
    for part in (p.strip() for p in value.split(",") if p.strip()):
        name, _, count = part.partition("=")
        if name not in names or not count.isdigit() or int(count) < (0 if name in zero else 1):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {part!r}")
        out[name] = int(count)
    return out


def _splits_per_dataset(value: str) -> Dict[str, int]:
    """``caviar=5,mlr_viper=3`` -> ``{'caviar': 5, 'mlr_viper': 3}``."""
    return _counts(value, DATASETS, "NAME=COUNT pairs of registered datasets (e.g. caviar=5,mlr_viper=3)")


def _stage_epochs(value: str) -> Dict[str, int]:
    """``him=12,lim=12`` -> ``{'him': 12, 'lim': 12}`` (stage kinds of :data:`KINDS`; him / lim may be 0,
    which carries jbim_warm's initialisation through)."""
    return _counts(value, KINDS, f"KIND=EPOCHS pairs with KIND one of {', '.join(KINDS)}, EPOCHS >= 1 (him and "
                   "lim >= 0) (e.g. him=12,lim=12)", zero=STAGE1_KINDS)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse and check the command line (data root, datasets and weights exist; budget filled in).

    Args:
        argv (list of str, optional): arguments; None reads ``sys.argv``.

    Returns:
        argparse.Namespace: with ``weights`` '' for ``--weights none``, ``stepsize`` set and
        ``split_ids_of`` (dataset -> split indices).
    """
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--data-root", default=os.environ.get("JBIM_DATA_ROOT", ""),
                        help="folder with caviar/, viper/, ... (default: $JBIM_DATA_ROOT)")
    parser.add_argument("--datasets", type=_datasets, default=None,
                        help=f"comma-separated dataset names (default: {DEFAULTS['datasets']})")
    parser.add_argument("--splits", type=_positive, default=None,
                        help=f"number of splits, 0..N-1 (default: {DEFAULTS['splits']}; "
                             f"--paper: {PAPER['splits']})")
    parser.add_argument("--splits-per-dataset", type=_splits_per_dataset, default=None,
                        help="NAME=COUNT pairs overriding --splits per dataset, e.g. caviar=5,mlr_viper=3 "
                             "(--standard-run sets this)")
    parser.add_argument("--split-ids", type=_split_ids, default=None,
                        help="comma-separated split indices to run instead of 0..N-1 (e.g. to share "
                             "the splits out over machines)")
    parser.add_argument("--epochs", type=_positive, default=None,
                        help=f"epochs of every training stage, or the first E of --plateau "
                             f"(default: {DEFAULTS['epochs']}; --paper: {PAPER['epochs']})")
    parser.add_argument("--plateau", action="store_true",
                        help="search each method's (and each JBIM stage's) epochs: E vs 1.5E on the same "
                             "splits until neither rank-1 nor mAP gains more than its standard error")
    parser.add_argument("--stage-epochs", type=_stage_epochs, default={},
                        help="pin the epochs of some stage kinds, e.g. him=12,lim=12: they replace --epochs "
                             "for those kinds, and --plateau searches only the others; jbim_warm takes "
                             "him=0,lim=0 (the plain model carried through to the joint stage)")
    parser.add_argument("--max-epochs", type=_positive, default=120,
                        help="--plateau never trains more epochs than this (default: 120)")
    parser.add_argument("--height", type=_positive, default=None,
                        help=f"input height (default: {DEFAULTS['height']}; --paper: {PAPER['height']})")
    parser.add_argument("--width", type=_positive, default=None,
                        help=f"input width (default: {DEFAULTS['width']}; --paper: {PAPER['width']})")
    parser.add_argument("--batch-size", type=_positive, default=None,
                        help=f"training batch size, a multiple of 4 (default: {DEFAULTS['batch_size']})")
    parser.add_argument("--paper", action="store_true",
                        help="paper-sized recipe: 256x128 input, 10 splits, 60 epochs per stage")
    parser.add_argument("--standard-run", action="store_true",
                        help="the standard CPU comparison: CAVIAR on 5 splits, MLR-VIPeR on 3 "
                             "(128x64, MobileNetV2 from ../shared/weights)")
    # the flag's former name, kept so that recorded commands still run
    parser.add_argument("--budget-min", type=float, default=None,
                        help="choose splits and epochs that finish within this many minutes, from "
                             "per-epoch costs (--costs, else the built-in table); not with --plateau")
    parser.add_argument("--costs", default="",
                        help="an earlier JSON report whose stage timings replace the built-in cost table "
                             "of --budget-min")
    parser.add_argument("--methods", type=_methods, default=list(DEFAULT_METHODS),
                        help=f"comma-separated subset of {','.join(METHODS)} (default: all but the "
                             "diagnosis variants *_xstream, *_multiratio, *_genuine)")
    parser.add_argument("--anchor-training", choices=("joint", "him_joint"), default="joint",
                        help="anchors m=1/3, 1/4 of the ensemble: only a joint stage each from the shared "
                             "stage-1 HIM (m=1/2) and LIM (default), or their own HIM stage and a joint "
                             "stage")
    parser.add_argument("--sr", default="srcnn_915", choices=sorted(SR_MODELS),
                        help="SR module of the JBIM methods (jbim.sr; default: srcnn_915, the CPU configs')")
    parser.add_argument("--sr-epochs", type=int, default=20,
                        help="stage sr (SR pre-training) at most this many epochs per split, before HIM; "
                             "0 skips it (default: 20)")
    parser.add_argument("--sr-patience", type=_positive, default=5,
                        help="stage sr stops after this many epochs without a held-out PSNR gain (default: 5)")
    parser.add_argument("--backbone", default="mobilenetv2_x1_0",
                        help="torchreid backbone of every method; --weights must match it "
                             "(default: mobilenetv2_x1_0)")
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS),
                        help="local ImageNet weights of the backbone; 'none' trains from scratch "
                             "(default: ../shared/weights/mobilenetv2_x1_0_imagenet.pth from the "
                             "repository root)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default: cpu")
    parser.add_argument("--workers", type=int, default=2, help="data-loading worker processes (default: 2)")
    parser.add_argument("--threads", type=_positive, default=None,
                        help="torch CPU threads (default: torch's own choice, one per core)")
    parser.add_argument("--seed", type=int, default=1,
                        help="training seed (torchreid.utils.set_random_seed; default: 1)")
    parser.add_argument("--out", default="",
                        help="JSON report; every finished run is recorded there at once and skipped "
                             "when the same recipe is run again")
    parser.add_argument("--restart", action="store_true",
                        help="ignore (and overwrite) the records already in --out")
    parser.add_argument("--merge-from", action="append", default=[], metavar="JSON",
                        help="first adopt the runs and stages of another --out of the same recipe (e.g. "
                             "splits run in another process or machine); repeatable")
    parser.add_argument("--save-dir", default="",
                        help="checkpoints and logs, kept for later runs (default: a temporary folder, "
                             "deleted at the end)")
    parser.add_argument("--verbose", action="store_true", help="print torchreid's logs too")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)

    budget = PAPER if args.paper else DEFAULTS
    for key in ("splits", "epochs", "height", "width", "batch_size"):
        if getattr(args, key) is None:
            setattr(args, key, budget[key])
    if args.datasets is None:
        args.datasets = list(STANDARD_RUN) if args.standard_run else _datasets(DEFAULTS["datasets"])
    if args.standard_run and args.splits_per_dataset is None:
        args.splits_per_dataset = {d: n for d, n in STANDARD_RUN.items() if d in args.datasets}
    if args.batch_size % 4:
        parser.error(f"--batch-size {args.batch_size}: expected a multiple of 4 "
                     "(4 images per identity)")
    if args.budget_min is not None:
        if args.plateau or args.stage_epochs:
            parser.error("--budget-min plans the epochs; it cannot be combined with --plateau or --stage-epochs")
        if args.budget_min <= 0:
            parser.error(f"--budget-min {args.budget_min}: expected a positive number of minutes")
        if args.costs and not os.path.isfile(args.costs):
            parser.error(f"--costs '{args.costs}' not found")
    zero = sorted(k for k in STAGE1_KINDS if args.stage_epochs.get(k) == 0)
    others = [m for m in args.methods if m != WARM_METHOD and set(zero) & set(method_kinds(m))]
    if others:
        parser.error(f"--stage-epochs {','.join(f'{k}=0' for k in zero)}: 0 epochs carry the warm start's "
                     f"initialisation through (jbim_warm); {', '.join(others)} would train nothing")
    if args.plateau and args.epochs >= args.max_epochs:
        parser.error(f"--plateau: --epochs {args.epochs} must be below --max-epochs {args.max_epochs}")
    if not args.data_root:
        parser.error("no data root: pass --data-root or set JBIM_DATA_ROOT (e.g. ../shared/data)")
    if not os.path.isdir(args.data_root):
        parser.error(f"--data-root '{args.data_root}' is not a directory")
    for name in args.datasets:
        for sub in getattr(DATASETS[name], "required", ()):
            if not os.path.isdir(os.path.join(args.data_root, sub)):
                parser.error(f"dataset '{name}': folder '{os.path.join(args.data_root, sub)}' not found "
                             f"under --data-root")
    if args.weights.lower() == "none":
        args.weights = ""
    elif not os.path.isfile(args.weights):
        parser.error(f"--weights '{args.weights}' not found: pass the local ImageNet weights of "
                     f"{args.backbone} (e.g. ../shared/weights/mobilenetv2_x1_0_imagenet.pth), or "
                     "'--weights none' to train from scratch (plain torchreid then stays near chance)")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available on this machine")
    args.plan = None
    if args.budget_min is not None:
        costs = measured_costs(args.costs) if args.costs else COSTS[args.device]
        missing = sorted(k for k in stage_counts(args.methods) if k not in costs)
        if missing:
            parser.error(f"--costs '{args.costs}': no timing for stage kind(s) {missing}")
        scale = 1.0 if args.costs else args.height * args.width / (128 * 64)
        try:
            args.plan = plan_budget(args.budget_min, args.methods, args.datasets, costs, args.splits,
                                    args.epochs, pixels_scale=scale)
        except ValueError as err:
            parser.error(str(err))
        args.splits, args.epochs = args.plan["splits"], args.plan["epochs"]
    _fill_split_ids(args)
    args.stepsize = lr_stepsize(args.epochs)
    return args


def _fill_split_ids(args: argparse.Namespace) -> None:
    """Set ``split_ids_of`` (dataset -> split indices), and ``split_ids``, ``splits`` of the first dataset."""
    if args.split_ids:
        args.split_ids_of = {d: list(args.split_ids) for d in args.datasets}
    else:
        per = args.splits_per_dataset or {}
        args.split_ids_of = {d: list(range(per.get(d, args.splits))) for d in args.datasets}
    args.split_ids = args.split_ids_of[args.datasets[0]]
    args.splits = len(args.split_ids)

