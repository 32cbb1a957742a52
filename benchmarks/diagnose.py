"""Where JBIM's gain is lost: re-evaluate the accuracy benchmark's trained stages with parts switched off.

For each split of an ``accuracy.py --save-dir`` folder it loads the kept stage checkpoints (stage-1
HIM and the joint model) and tests them as trained and with the learned SR module replaced by the
identity (the probe is then only bicubic-upscaled), on the same LR probes and single-shot HR
gallery, through ``JBIMEngine``'s test. Nothing is trained, so it costs a few test passes per split.

Usage (from the repository root)::

    python benchmarks/diagnose.py --save-dir run_jbim --data-root ../shared/data --dataset caviar \\
        --splits 0,1,2 --out diagnosis.json
"""
import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence

import torch

from jbim_reid.engines import JBIMEngine, list_checkpoints
from jbim_reid.models import BicubicSR, load_jbim_checkpoint
from jbim_reid.reports import markdown_table, rank_results, summarize_splits, write_json
from jbim_reid.runner import build_datamanager, load_config

__all__ = ["STAGE_PREFIXES", "newest_checkpoint", "evaluate", "diagnose", "main"]

STAGE_PREFIXES = {"him": "him_m1-2_e", "jbim": "joint_m1-2_h"}  # stage folders of accuracy.py (m = 1/2)


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
             width: int = 64) -> Dict[str, Dict[str, dict]]:
    """``{row: {split: metrics}}`` for each stage as trained and with its SR replaced by the identity."""
    rows: Dict[str, Dict[str, dict]] = {}
    for split in splits:
        split_dir = os.path.join(save_dir, dataset, f"split_{split}")
        cfg = load_config("", ["data.root", data_root, "data.sources", f"['{dataset}']", "data.targets",
                               f"['{dataset}']", "data.split_id", str(split), "data.workers", "0",
                               "data.height", str(height), "data.width", str(width), "use_gpu", "False",
                               "model.pretrained", "False", "sampler.train_sampler", "RandomSampler"])
        datamanager = build_datamanager(cfg)
        for stage, prefix in STAGE_PREFIXES.items():
            path = newest_checkpoint(split_dir, prefix)
            if path is None:
                print(f"split {split}: no {prefix}* checkpoint in '{split_dir}', skipped", file=sys.stderr)
                continue
            model = load_jbim_checkpoint(path)
            rows.setdefault(f"{stage} (as trained)", {})[str(split)] = evaluate(datamanager, model)
            model.sr = BicubicSR()  # the probe is only bicubic-upscaled
            rows.setdefault(f"{stage}, SR replaced by bicubic", {})[str(split)] = evaluate(datamanager, model)
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
    parser.add_argument("--out", default="", help="JSON file for the per-split metrics and summaries")
    args = parser.parse_args(argv)
    splits = [int(s) for s in args.splits.split(",") if s.strip()]
    rows = diagnose(args.save_dir, args.data_root, args.dataset, splits, args.height, args.width)
    summaries = {row: summarize_splits(list(per_split.values())) for row, per_split in rows.items()}
    print(markdown_table(summaries))
    if args.out:
        write_json({"save_dir": args.save_dir, "dataset": args.dataset, "splits": splits, "rows": rows,
                    "summary": summaries}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
