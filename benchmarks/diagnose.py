"""Where JBIM's gain is lost: re-evaluate the accuracy benchmark's trained stages with parts switched off.

For each split of an ``accuracy.py --save-dir`` folder it loads the kept stage checkpoints (stage-1
HIM and the joint model) and tests them as trained and with the learned SR module replaced by the
identity (the probe is then only bicubic-upscaled); the joint model also with its fusion head (FFN)
replaced by the concatenation of its own HIM and LIM features, and with each of those branches alone,
which separates what the FFN adds from what the joint stage's further training of both backbones adds.
Every row uses the same LR probes and single-shot HR gallery, through ``JBIMEngine``'s test. Nothing
is trained, so it costs a few test passes per split.

Usage (from the repository root)::

    python benchmarks/diagnose.py --save-dir run_jbim --data-root ../shared/data --dataset caviar \\
        --splits 0,1,2 --out diagnosis.json
"""
import argparse
import copy
import os
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from jbim_reid.engines import JBIMEngine, list_checkpoints
from jbim_reid.evaluation.reports import markdown_table, rank_results, summarize_splits, write_json
from jbim_reid.models import BicubicSR, load_jbim_checkpoint
from jbim_reid.training.checks import load_config
from jbim_reid.training.runner import build_datamanager

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy_records import code_version, machine_info  # noqa: E402  (beside this script)

__all__ = ["STAGE_PREFIXES", "stage_prefixes", "ABLATIONS", "row_label", "newest_checkpoint", "evaluate",
           "diagnose", "main"]

STAGE_PREFIXES = {"him": "him_m1-2_e", "jbim": "joint_m1-2_h"}  # stage folders of accuracy.py (m = 1/2)


def stage_prefixes(tag: str = "") -> Dict[str, str]:
    """Stage folder prefixes of one accuracy.py method family: ``tag`` is its variant's folder tag
    (``xsra`` for ``jbim_xstream_resaug``: ``him_m1-2_xsra_e12``, ``joint_m1-2_xsra_h12_l12_e12``)."""
    if not tag:
        return dict(STAGE_PREFIXES)
    return {"him": f"him_m1-2_{tag}_e", "jbim": f"joint_m1-2_{tag}_h"}


def _sr_to_bicubic(model) -> None:
    model.sr = BicubicSR()  # the probe is only bicubic-upscaled


def _ffn_to_concat(model) -> None:
    model.fusion = None  # JBIM._features then concatenates the HIM and LIM features


def _him_branch(model) -> None:
    model.fusion, model.lim = None, None


def _lim_branch(model) -> None:
    model.fusion, model.him, model.sr = None, None, None


# stage -> {row suffix: change made to the loaded model before testing it (None: as trained)}
ABLATIONS: Dict[str, Dict[str, Optional[Callable]]] = {
    "him": {"as trained": None, "SR replaced by bicubic": _sr_to_bicubic},
    "jbim": {"as trained": None, "SR replaced by bicubic": _sr_to_bicubic,
             "FFN replaced by concatenation": _ffn_to_concat, "its HIM branch alone": _him_branch,
             "its LIM branch alone": _lim_branch},
}


def row_label(stage: str, ablation: str) -> str:
    """``him (as trained)``, ``him, SR replaced by bicubic``, ...: the row names of the JSON record."""
    return f"{stage} ({ablation})" if ablation == "as trained" else f"{stage}, {ablation}"


def newest_checkpoint(split_dir: str, prefix: str) -> Optional[str]:
    """The newest checkpoint of the (first, sorted) stage folder of ``split_dir`` named ``prefix*``."""
    for name in sorted(os.listdir(split_dir)):
        if name.startswith(prefix) and os.path.isdir(os.path.join(split_dir, name)):
            found = list_checkpoints(os.path.join(split_dir, name))
            if found:
                return found[-1][1]
    return None


def evaluate(datamanager, model) -> Dict[str, float]:
    """rank-1/5/10/20 and mAP (%) of ``model`` on the datamanager's target through JBIMEngine's test."""
    engine = JBIMEngine(datamanager, model, torch.optim.SGD(model.parameters(), lr=0.0))
    engine.test(ranks=[1, 5, 10, 20])
    datamanager.train_loader.dataset.pair_views = False
    result = next(iter(engine.last_results.values()))
    return rank_results(result["cmc"], result["mAP"])


def diagnose(save_dir: str, data_root: str, dataset: str, splits: Sequence[int], height: int = 128,
             width: int = 64, tag: str = "", prefixes: Optional[Dict[str, str]] = None) -> Dict[str, Dict[str, dict]]:
    """``{row: {split: metrics}}`` for each stage and each of its :data:`ABLATIONS`.

    ``prefixes`` (stage -> folder prefix) replaces the tag's prefix of the stages it names, e.g.
    ``{"jbim": "joint_warm_m1-2_w27_h0_l0_e"}`` for one rung of ``jbim_warm``'s stage-1 search.
    """
    rows: Dict[str, Dict[str, dict]] = {}
    chosen = {**stage_prefixes(tag), **(prefixes or {})}
    for split in splits:
        split_dir = os.path.join(save_dir, dataset, f"split_{split}")
        cfg = load_config("", ["data.root", data_root, "data.sources", f"['{dataset}']", "data.targets",
                               f"['{dataset}']", "data.split_id", str(split), "data.workers", "0",
                               "data.height", str(height), "data.width", str(width), "use_gpu", "False",
                               "model.pretrained", "False", "sampler.train_sampler", "RandomSampler"])
        datamanager = build_datamanager(cfg)
        for stage, prefix in chosen.items():
            path = newest_checkpoint(split_dir, prefix)
            if path is None:
                print(f"split {split}: no {prefix}* checkpoint in '{split_dir}', skipped", file=sys.stderr)
                continue
            trained = load_jbim_checkpoint(path)
            for ablation, change in ABLATIONS[stage].items():
                model = copy.deepcopy(trained)
                if change is not None:
                    change(model)
                rows.setdefault(row_label(stage, ablation), {})[str(split)] = evaluate(datamanager, model)
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    """Run :func:`diagnose`, print a markdown table of mean ± std over splits, write JSON (``--out``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save-dir", required=True, help="--save-dir of benchmarks/accuracy.py")
    parser.add_argument("--data-root", default=os.environ.get("JBIM_DATA_ROOT", ""))
    parser.add_argument("--dataset", default="caviar")
    parser.add_argument("--splits", default="0", help="comma-separated split ids")
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--tag", default="", help="the stage folders' variant tag, e.g. xsra for "
                        "jbim_xstream_resaug (default: the paper's recipe, jbim)")
    for stage in STAGE_PREFIXES:
        parser.add_argument(f"--{stage}-stage", default="", help=f"folder prefix of the {stage} stage "
                            "(overrides --tag's), e.g. him_warm_m1-2_w27_e0 / joint_warm_m1-2_w27_h0_l0_e12 "
                            "for jbim_warm")
    parser.add_argument("--out", default="", help="JSON file for the per-split metrics and summaries")
    args = parser.parse_args(argv)
    splits = [int(s) for s in args.splits.split(",") if s.strip()]
    prefixes = {stage: getattr(args, f"{stage}_stage") for stage in STAGE_PREFIXES if getattr(args, f"{stage}_stage")}
    rows = diagnose(args.save_dir, args.data_root, args.dataset, splits, args.height, args.width, args.tag,
                    prefixes)
    if not rows:
        print(f"diagnose.py: no checkpoint of the stages {sorted({**stage_prefixes(args.tag), **prefixes}.values())}"
              f" under '{args.save_dir}/{args.dataset}/split_<id>' for splits {splits}", file=sys.stderr)
        return 2
    summaries = {row: summarize_splits(list(per_split.values())) for row, per_split in rows.items()}
    print(markdown_table(summaries))
    if args.out:
        command = " ".join(shlex.quote(a) for a in ["python", "benchmarks/diagnose.py", *(
            sys.argv[1:] if argv is None else argv)])
        write_json({"benchmark": "diagnose", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "command": command, "code_version": code_version(), "machine": machine_info("cpu"),
                    "save_dir": args.save_dir, "dataset": args.dataset, "tag": args.tag,
                    "stage_prefixes": {**stage_prefixes(args.tag), **prefixes}, "splits": splits,
                    "rows": rows, "summary": summaries}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
