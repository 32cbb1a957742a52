"""Accuracy of JBIM against plain torchreid on real cross-resolution data, resumable, each to its plateau.

Methods (``--methods``, all by default), trained with the same backbone, ImageNet weights, input
size, schedule shape, batch size and splits:

  ================== ===========================================================================
  plain              torchreid's backbone trained with ``torchreid.engine.ImageTripletEngine`` on
                     the same training images; LR probes are only resized
  plain_resaug       the same with the plugin's ``random_resolution`` transform (bicubic down by a
                     ratio in [1/4, 1] of the genuine size, then back up)
  plain_time_matched plain torchreid given JBIM's whole training wall time on the split: epochs =
                     JBIM's total stage seconds / plain's seconds per epoch on that split
  bicubic            bicubic + re-id: the HIM stage with ``jbim.sr bicubic`` and ``jbim.alpha 0``
  lim_only           stage-1 LIM (JBIM w/o HIM)
  him_only           stage-1 HIM, SRCNN + re-id trained with L_HIM (JBIM w/o LIM)
  him_lim            HIM and LIM trained independently, features concatenated (variant ``him_lim``)
  jbim               the joint stage from the two stage-1 checkpoints (m = 1/2)
  jbim_resaug        JBIM with every stage trained with ``random_resolution`` ([1/4, 1])
  ensemble           JBIM 3-anchor ensemble (m = 1/2, 1/3, 1/4): per-probe Gaussian weights from
                     the genuine image sizes (``jbim_reid.evaluation.ensemble``)
  ================== ===========================================================================

Diagnosis variants (run only when named in ``--methods``): ``<method>_xstream`` trains every stage
with ``jbim.cross_stream_triplet True`` (one triplet over a branch's streams, so an LR feature meets
the HR feature of the same person; ``lim_only``, ``him_only``, ``jbim``), and ``jbim_multiratio``
trains HIM, LIM and the joint stage with ``jbim.train_ratios [1/2, 1/3, 1/4]`` drawn per image
(stage ``sr`` stays the shared one at m = 1/2); ``jbim_xstream_resaug`` combines the cross-stream
triplet with ``random_resolution`` in every stage, ``jbim_xstream_multiratio`` with the three
training ratios; ``ensemble_xstream`` is the 3-anchor ensemble of cross-stream anchors;
``jbim_genuine`` trains every stage (its own stage ``sr`` too) at m = the median genuine ratio of the
split's training LR images to its HR images (``CrossResolutionDataset.lr_ratio``) instead of 1/2.

What methods share is trained once per split: stage-1 HIM (m = 1/2) and LIM serve ``lim_only``,
``him_only``, ``him_lim`` and the start of every joint stage. The anchors m = 1/3 and 1/4 get either
only their own joint stage from those shared stage-1 models (``--anchor-training joint``, the
default) or their own HIM stage and then the joint stage (``--anchor-training him_joint``).

Epochs: ``--epochs E`` trains every stage E epochs (lr x0.1 after 2/3 of them). ``--plateau``
instead searches each method's epochs, and for JBIM each stage's (HIM on ``him_only``, LIM on
``lim_only``, then the joint stage on ``jbim`` from the stage-1 models at their plateaus): train E
and 1.5E epochs (schedule scaled) on every split and accept E when neither rank-1 nor mAP rises
beyond noise, paired per split (mean per-split gain <= its standard error), else move E up by 1.5x. Each epoch count
is trained once per split and method (the 1.5E run is the next step's E run), so a search that ends
at E costs E0 + 1.5 E0 + ... + 1.5 E epochs per split.

Resumable: every finished run (dataset, split, method, epochs) and every trained stage is recorded
in the ``--out`` JSON at once (atomically); a re-run with the same recipe (the ``recipe`` block,
fingerprinted) skips what is recorded and reuses stage checkpoints kept under ``--save-dir``.
Parallel processes (or machines) can share the work: each runs some splits or epochs with its own
``--out`` and the same ``--save-dir``; ``--merge-from`` adopts their records into one ``--out``.

Every method is evaluated the same way: ``JBIMEngine``'s test (probe features of the LR query
images, gallery features of the HR gallery images, Euclidean distances, the rank evaluator of
``jbim_reid.metrics.get_rank_evaluator``); the plain model goes through it with the same feature for
both sides.

Usage (from the repository root)::

    JBIM_DATA_ROOT=../shared/data python benchmarks/accuracy.py --out accuracy.json
    python benchmarks/accuracy.py --datasets caviar --splits 5 --methods plain,plain_resaug --plateau \\
        --epochs 8 --out accuracy.json --save-dir run
    python benchmarks/accuracy.py --paper --device cuda --budget-min 10   # splits/epochs that fit
    python benchmarks/report.py accuracy.json                              # markdown tables

torchreid's own logs go to ``<save-dir>/<dataset>/split_<k>/<stage>.log`` (``--verbose`` prints
them too). This script runs the benchmark (:func:`run`: per dataset the epochs, the runs and the
summaries); beside it: ``accuracy_cli.py`` (flags, presets, checks), ``accuracy_runs.py`` (stage
configs and names, :class:`SplitRunner`), ``accuracy_records.py`` (the ``--out`` records, code version,
machine), ``accuracy_methods.py`` (methods, variants, stage kinds), ``accuracy_plateau.py`` (plateau
search, ordering verdict), ``accuracy_budget.py`` (``--budget-min``).
"""
import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from jbim_reid.evaluation.ensemble import ratio_label
from jbim_reid.evaluation.reports import rank_results, summarize_splits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy_budget import COSTS, STAGE_OVERHEAD_S, measured_costs, plan_budget  # noqa: E402  (beside this script)
from accuracy_cli import DEFAULTS, PAPER, parse_args  # noqa: E402
from accuracy_methods import (ANCHORS, DEFAULT_METHODS, METHODS, STAGE1_KINDS, base_of,  # noqa: E402
                              method_kinds, search_plan, spec_label, stage_counts, variant_of)
from accuracy_plateau import (PLATEAU_GROWTH, PLATEAU_METRICS, next_epochs, ordering_verdict,  # noqa: E402
                              plateau_search, plateau_step)
from accuracy_records import Records, code_version, machine_info  # noqa: E402
from accuracy_runs import RESAUG_RANGE, SIGMA, PlainFeatures, SplitRunner, build_config, stage_name  # noqa: E402
from accuracy_warm import AUTO_METHOD, STAGE1_LADDER, WARM_METHOD, BenchmarkSplitRunner  # noqa: E402
from report import results_markdown  # noqa: E402

# the script's API, with what it takes from its helper modules beside it (tests and users call them here)
__all__ = ["METHODS", "ANCHORS", "DEFAULTS", "PAPER", "COSTS", "PlainFeatures", "SplitRunner", "Records",
           "build_config", "ordering_verdict", "plateau_search", "plateau_step", "next_epochs", "plan_budget",
           "measured_costs", "STAGE_OVERHEAD_S", "stage_counts", "search_plan", "base_of", "variant_of",
           "DEFAULT_METHODS", "code_version", "machine_info", "parse_args", "run", "main"]


def _recipe(args: argparse.Namespace) -> dict:
    """What a recorded run depends on besides its dataset, split, method and epochs."""
    weights = args.weights
    recipe = {
        "height": args.height, "width": args.width, "batch_size": args.batch_size, "backbone": args.backbone,
        "weights": (os.path.basename(weights), os.path.getsize(weights)) if weights else "none",
        "anchors": [ratio_label(m) for m in ANCHORS], "sigma": SIGMA, "anchor_training": args.anchor_training,
        "optimizer": "adam, lr 3.5e-4, weight decay 5e-4", "lr_schedule": "x0.1 after 2/3 of the epochs",
        "transforms": ["random_flip", "random_crop"], "resaug_range": list(RESAUG_RANGE),
        "seed": args.seed, "device": args.device,
    }
    if any("him" in method_kinds(m) and base_of(m) != "bicubic" for m in args.methods):
        # only runs with a learned SR depend on it: plain-only records stay valid when --sr changes
        recipe.update(sr=args.sr, sr_pretraining={"max_epochs": args.sr_epochs, "patience": args.sr_patience})
    return recipe


def _fingerprint(recipe: Mapping) -> str:
    """Short hash of a recipe (sorted JSON)."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def _settings(args: argparse.Namespace) -> dict:
    return {
        "datasets": args.datasets, "splits": args.split_ids_of, "epochs": args.epochs,
        "epochs_mode": "plateau" if args.plateau else "fixed", "max_epochs": args.max_epochs,
        "stage_epochs": args.stage_epochs,
        "plateau_growth": PLATEAU_GROWTH, "height": args.height, "width": args.width,
        "batch_size": args.batch_size, "paper": args.paper, "methods": args.methods,
        "backbone": args.backbone,
        "weights": args.weights or "none (from scratch)", "anchors": [ratio_label(m) for m in ANCHORS],
        "sigma": SIGMA, "anchor_training": args.anchor_training, "resaug_range": list(RESAUG_RANGE),
        "optimizer": "adam, lr 3.5e-4, weight decay 5e-4",
        "lr_schedule": "x0.1 after round(2/3 of the epochs)", "seed": args.seed, "device": args.device,
        "workers": args.workers, "data_root": args.data_root, "budget_min": args.budget_min,
        "plan": args.plan,
    }


class _Benchmark:
    """One invocation: split runners, the records and the per-dataset logic (search, time matching)."""

    def __init__(self, args: argparse.Namespace, records: Records, save_root: str):
        self.args, self.records, self.save_root = args, records, save_root
        self.runners: Dict[Tuple[str, int], BenchmarkSplitRunner] = {}

    def runner(self, dataset: str, split_id: int) -> BenchmarkSplitRunner:
        key = (dataset, split_id)
        if key not in self.runners:
            ids = self.args.split_ids_of[dataset]
            tag = f"[{dataset} split {split_id} ({ids.index(split_id) + 1}/{len(ids)})]"
            self.runners[key] = BenchmarkSplitRunner(
                build_config(self.args, dataset, split_id),
                os.path.join(self.save_root, dataset, f"split_{split_id}"),
                self.args.anchor_training, self.args.verbose,
                progress=lambda line, tag=tag: print(f"{tag}{line}", flush=True),
                stage_records=self.records.split(dataset, split_id)["stages"], on_stage=self.records.save,
                keep_plain=WARM_METHOD in self.args.methods)
        return self.runners[key]

    def evaluate(self, dataset: str, split_id: int, method: str, spec: Mapping[str, int]) -> dict:
        """The run's record: trained (and recorded at once) unless already recorded."""
        done = self.records.run(dataset, split_id, method, spec)
        if done is not None:
            return done
        runner = self.runner(dataset, split_id)
        if method == AUTO_METHOD:  # the runs of the variant it resolves to, recorded under both names
            resolved = runner.auto_method()
            done = self.records.run(dataset, split_id, resolved, spec)
            entry = {**(done or self.evaluate(dataset, split_id, resolved, spec)), "resolved_to": resolved,
                     "reused_record_of": resolved if done else None}
            self.records.add_run(dataset, split_id, method, spec, entry)
            return entry
        if method == "plain_time_matched":
            name = stage_name("plain_tm", e=spec["plain"])
            results = runner.results(runner.plain(spec["plain"], name=name))
            stages = [name]
        else:
            results = runner.method(method, spec)
            stages = runner.method_stages(method, spec)
        metrics = rank_results(results["cmc"], results["mAP"])
        if "mean_weights" in results:
            metrics["mean_anchor_weights"] = results["mean_weights"]
            metrics["anchors"] = results["anchors"]
        entry = {"metrics": metrics, "epochs": dict(spec), "stages": stages,
                 "seconds": sum(runner.stages[n].seconds for n in stages),
                 "code_version": self.records.report["code_version"],
                 "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if method == WARM_METHOD:  # the recipe it trains, and the plain model's share of its training time
            plain = stage_name("plain", variant="resaug", e=spec["plain"])
            entry.update(resolved_to=runner.auto_method(), seconds_plain=runner.stages[plain].seconds)
        self.records.add_run(dataset, split_id, method, spec, entry)
        runner.progress(f" {METHODS.get(method, method)} [{spec_label(spec)}]: rank-1 {metrics['rank1']:.1f}"
                        f"  rank-5 {metrics['rank5']:.1f}  rank-10 {metrics['rank10']:.1f}"
                        f"  mAP {metrics['mAP']:.1f}  ({entry['seconds']:.0f} s)")
        return entry

    def split_metrics(self, dataset: str, method: str, spec: Mapping[str, int]) -> Dict[str, List[float]]:
        """``PLATEAU_METRICS`` of ``method`` at ``spec``, one value per split of ``dataset`` in order."""
        runs = [self.evaluate(dataset, s, method, spec)["metrics"] for s in self.args.split_ids_of[dataset]]
        return {m: [r[m] for r in runs] for m in PLATEAU_METRICS}

    def spec_of(self, dataset: str, method: str, plateaus: Dict[str, dict]) -> Dict[str, int]:
        """The epochs ``method`` runs at: ``--stage-epochs``, else ``--epochs`` or the searched plateaus."""
        pinned = self.args.stage_epochs
        if not self.args.plateau:
            return {k: pinned.get(k, self.args.epochs) for k in method_kinds(method)}
        if method == WARM_METHOD:
            return self.warm_spec(dataset, plateaus)
        spec: Dict[str, int] = {}
        for kind, probe in search_plan(method):
            if kind in pinned:
                spec[kind] = pinned[kind]
                continue
            spec[kind] = self._searched(
                dataset, plateaus, f"{probe}:{kind}", kind, probe, spec, lambda e, kind=kind: {kind: e},
                f"plateau search of {kind} epochs on {probe} (fixed: {spec_label(spec) or '-'})")
        return spec

    def _searched(self, dataset: str, plateaus: Dict[str, dict], key: str, kind: str, probe: str,
                  fixed: Mapping[str, int], epochs_of: Callable[[int], Dict[str, int]], title: str,
                  ladder: Sequence[int] = ()) -> int:
        """The epochs search ``key`` accepts: ``probe`` at ``fixed`` plus ``epochs_of(E)``, searched once
        (announced by ``title``) and recorded in ``plateaus`` and the records."""
        if key not in plateaus:
            print(f"[{dataset}] {title}", flush=True)
            fixed = dict(fixed)
            plateaus[key] = {"kind": kind, "probe": probe, "fixed": fixed, **plateau_search(
                lambda e: self.split_metrics(dataset, probe, {**fixed, **epochs_of(e)}), self.args.epochs,
                self.args.max_epochs, progress=lambda line: print(f"[{dataset}]{line}", flush=True),
                ladder=ladder)}
            self.records.report["datasets"][dataset]["plateau"] = plateaus
            self.records.save()
        return plateaus[key]["epochs"]

    def warm_spec(self, dataset: str, plateaus: Dict[str, dict]) -> Dict[str, int]:
        """``jbim_warm``'s epochs: the plain model's at plain + random resolution's plateau, stage-1 epochs
        (HIM and LIM alike) on :data:`STAGE1_LADDER` and then the joint stage's, each by the paired rule;
        the epochs ``--stage-epochs`` sets are taken as they are, not searched."""
        pinned, spec = self.args.stage_epochs, {}
        spec["plain"] = pinned.get("plain") or self.spec_of(dataset, "plain_resaug", plateaus)["plain"]
        searches = (("stage1", lambda e: {"him": e, "lim": e, "joint": self.args.epochs}, STAGE1_LADDER,
                     STAGE1_KINDS), ("joint", lambda e: {"joint": e}, (), ("joint",)))
        for kind, epochs_of, ladder, kinds in searches:
            if all(k in pinned for k in kinds):  # --stage-epochs sets them: not searched
                spec.update({k: pinned[k] for k in kinds})
                continue
            spec.update(epochs_of(self._searched(
                dataset, plateaus, f"{WARM_METHOD}:{kind}", kind, WARM_METHOD, spec, epochs_of,
                f"{WARM_METHOD}: search of {kind} epochs (fixed: {spec_label(spec)})", ladder)))
        return {**spec, **{k: v for k, v in pinned.items() if k in spec}}

    def dataset(self, dataset: str) -> dict:
        """Runs every method on every split of ``dataset``; returns its derived report entry."""
        entry = self.records.report["datasets"].setdefault(dataset, {})
        plateaus = entry["plateau"] = {}  # searched again: cheap, every run it needs is recorded
        chosen: Dict[str, Dict[int, dict]] = {}
        for method in self.args.methods:
            if method == "plain_time_matched":
                continue
            spec = self.spec_of(dataset, method, plateaus)
            chosen[method] = {s: self.evaluate(dataset, s, method, spec)
                              for s in self.args.split_ids_of[dataset]}
        if "plain_time_matched" in self.args.methods:
            matched = self.time_matched(dataset, chosen)
            if matched:
                chosen["plain_time_matched"] = matched
        for split_id in self.args.split_ids_of[dataset]:
            split = self.records.split(dataset, split_id)
            split["methods"] = {m: {**runs[split_id]["metrics"], "epochs": runs[split_id]["epochs"],
                                    "seconds": runs[split_id]["seconds"]} for m, runs in chosen.items()}
        summaries = {}
        for method, runs in chosen.items():
            summary = summarize_splits([r["metrics"] for r in runs.values()])
            labels = sorted({spec_label(r["epochs"]) for r in runs.values()})
            summary["epochs"] = labels[0] if len(labels) == 1 else "per split: " + "; ".join(
                f"{s}: {spec_label(r['epochs'])}" for s, r in runs.items())
            summary["seconds"] = float(np.mean([r["seconds"] for r in runs.values()]))
            summaries[method] = summary
        entry["summary"] = summaries
        verdict, checks = ordering_verdict(summaries)
        entry["verdict"] = {"line": verdict, "metric": "rank1", "checks": checks}
        self.records.save()
        return entry

    def time_matched(self, dataset: str, chosen: Dict[str, Dict[int, dict]]) -> Optional[Dict[int, dict]]:
        """``plain_time_matched`` per split: plain trained for JBIM's whole training wall time."""
        if "jbim" not in chosen or "plain" not in chosen:
            print(f"[{dataset}] plain_time_matched needs the methods jbim and plain in the same run; skipped",
                  flush=True)
            return None
        out = {}
        for split_id, jbim in chosen["jbim"].items():
            plain = chosen["plain"][split_id]
            per_epoch = plain["seconds"] / plain["epochs"]["plain"]
            epochs = max(1, int(round(jbim["seconds"] / per_epoch)))
            out[split_id] = self.evaluate(dataset, split_id, "plain_time_matched", {"plain": epochs})
            out[split_id]["matched_to"] = {"jbim_seconds": jbim["seconds"],
                                           "plain_seconds_per_epoch": per_epoch}
        return out


def run(args: argparse.Namespace) -> dict:
    """Train and evaluate every requested method on every dataset split; print and return the report.

    Args:
        args: from :func:`parse_args`.

    Returns:
        dict: the JSON report (header, records, per split per method results, summaries, plateaus).
    """
    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    save_root = args.save_dir or tempfile.mkdtemp(prefix="jbim_accuracy_")
    recipe = _recipe(args)
    header = {"benchmark": "accuracy", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(["python benchmarks/accuracy.py"] + args.argv),
              "code_version": code_version(), "settings": _settings(args), "recipe": recipe,
              "recipe_fingerprint": _fingerprint(recipe),
              "machine": machine_info(args.device)}
    records = Records(args.out, header, restart=args.restart)
    for path in args.merge_from:
        merged = records.merge(path)
        print(f"merged {merged['runs']} run(s) and {merged['stages']} stage(s) from {path}")
    splits = "; ".join(f"{d}: {len(ids)} split(s) ({', '.join(map(str, ids))})"
                       for d, ids in args.split_ids_of.items())
    epochs = (f"plateau search from {args.epochs} epochs (x{PLATEAU_GROWTH}, at most {args.max_epochs})"
              if args.plateau else f"{args.epochs} epochs per stage")
    print(f"accuracy benchmark: {splits}; {epochs}; input {args.height}x{args.width}; "
          f"batch {args.batch_size}; backbone {args.backbone} from "
          f"{args.weights or 'scratch (--weights none)'}; device {args.device}")
    if args.plan:
        print(f"budget {args.budget_min:g} min: {args.plan['splits']} split(s) x {args.plan['epochs']} "
              f"epochs, estimated {args.plan['estimated_seconds'] / 60:.1f} min")
    print(f"methods: {', '.join(args.methods)}; checkpoints and logs: {save_root}; "
          f"records: {args.out or '(none)'}", flush=True)
    bench = _Benchmark(args, records, save_root)
    for dataset in args.datasets:
        bench.dataset(dataset)
    total = time.perf_counter() - started
    records.report["total_seconds"] = total
    records.save()
    print()
    print(results_markdown(records.report, datasets=args.datasets), end="")
    print(f"\ntotal time of this invocation {total:.0f} s ({total / 60:.1f} min)")
    if args.out:
        print(f"wrote {args.out}")
    if not args.save_dir:
        shutil.rmtree(save_root, ignore_errors=True)
    return records.report


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the exit code."""
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
