"""The accuracy benchmark's records: the resumable ``--out`` JSON and the provenance of every result.

:class:`Records` keeps finished runs and trained stages so that a re-run with the same recipe skips
them; :func:`code_version` and :func:`machine_info` say which code and machine produced a result
(``diagnose.py`` records them too).
"""
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Optional

import torch
import torchreid
from accuracy_methods import spec_label

import jbim_reid
from jbim_reid.evaluation.reports import read_json, write_json

__all__ = ["REPO_ROOT", "Records", "code_version", "machine_info"]

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = "benchmarks/results"  # the records, relative to REPO_ROOT


class Records:
    """The ``--out`` JSON as a store of finished runs and trained stages, saved after every change.

    Layout: ``datasets.<name>.splits.<k>.runs.<method>.<spec label>`` (metrics, seconds, epochs,
    stages, code version) and ``datasets.<name>.splits.<k>.stages.<stage>``; ``accuracy.run`` derives the
    per-method results (``splits.<k>.methods.<method>``), summaries and plateaus from them.

    Args:
        path (str): the JSON file ('' keeps the records in memory only).
        report (dict): header fields (benchmark, command, settings, recipe, machine, ...).
        restart (bool): ignore the records already in ``path``.

    Raises:
        SystemExit: (code 2) when ``path`` holds records of another recipe and ``restart`` is False.
    """

    def __init__(self, path: str, report: dict, restart: bool = False):
        self.path = path
        old = read_json(path) if path and os.path.isfile(path) and not restart else None
        if old is not None:
            _same_recipe(old, report, f"--out '{path}'", "pass another --out, or --restart to discard them")
        self.report = report
        self.report["commands"] = (old or {}).get("commands", []) + [report["command"]]
        self.report["datasets"] = (old or {}).get("datasets", {})
        if (old or {}).get("merged_from"):
            self.report["merged_from"] = old["merged_from"]

    def merge(self, path: str) -> dict:
        """Adopt the runs and stages recorded in ``path`` by another invocation of the same recipe (e.g.
        splits run in parallel processes or on other machines, each with its own ``--out``), then save.

        A run recorded here is kept as it is; a stage is taken from ``path`` when it is missing here or
        its checkpoint here is no longer on disk while ``path``'s is. Their commands join ours.

        Returns:
            dict: ``{"path", "runs", "stages"}``, the numbers adopted.

        Raises:
            SystemExit: (code 2) when ``path`` is missing, is not a records JSON or holds another recipe.
        """
        try:
            other = read_json(path)
        except (OSError, ValueError) as error:
            print(f"error: --merge-from '{path}': {error}", file=sys.stderr)
            raise SystemExit(2) from None
        if not isinstance(other, dict) or "recipe_fingerprint" not in other:
            print(f"error: --merge-from '{path}' is not a records JSON of benchmarks/accuracy.py "
                  "(no recipe_fingerprint)", file=sys.stderr)
            raise SystemExit(2)
        _same_recipe(other, self.report, f"--merge-from '{path}'", "merge only records of the same recipe")
        runs = stages = 0
        for dataset, entry in other.get("datasets", {}).items():
            for split_id, theirs in entry.get("splits", {}).items():
                ours = self.split(dataset, int(split_id))
                for method, by_spec in theirs.get("runs", {}).items():
                    mine = ours["runs"].setdefault(method, {})
                    for label, run in by_spec.items():
                        if label not in mine:
                            mine[label], runs = run, runs + 1
                for name, stage in theirs.get("stages", {}).items():
                    if name not in ours["stages"] or (not _on_disk(ours["stages"][name]) and _on_disk(stage)):
                        ours["stages"][name], stages = stage, stages + 1
        commands = self.report["commands"]
        commands[-1:-1] = [c for c in other.get("commands", []) if c not in commands]
        merged = {"path": path, "runs": runs, "stages": stages}
        self.report.setdefault("merged_from", []).append(merged)
        self.save()
        return merged

    def split(self, dataset: str, split_id: int) -> dict:
        """The record of one split (created empty when missing)."""
        entry = self.report["datasets"].setdefault(dataset, {}).setdefault("splits", {})
        return entry.setdefault(str(split_id), {"runs": {}, "stages": {}})

    def run(self, dataset: str, split_id: int, method: str, spec: Mapping[str, int]) -> Optional[dict]:
        """The recorded run, or None."""
        return self.split(dataset, split_id)["runs"].get(method, {}).get(spec_label(spec))

    def add_run(self, dataset: str, split_id: int, method: str, spec: Mapping[str, int], entry: dict) -> None:
        """Record a finished run and save."""
        self.split(dataset, split_id)["runs"].setdefault(method, {})[spec_label(spec)] = entry
        self.save()

    def save(self) -> None:
        """Write the records to ``path`` (atomically; nothing without a path)."""
        if self.path:
            write_json(self.report, self.path)


def _same_recipe(theirs: dict, ours: dict, what: str, hint: str) -> None:
    """Exit (code 2) naming ``what`` and the differing recipe keys unless the fingerprints agree."""
    if theirs.get("recipe_fingerprint") == ours["recipe_fingerprint"]:
        return
    a, b = theirs.get("recipe", {}), ours["recipe"]
    differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    print(f"error: {what} holds results of another recipe (differs in: {', '.join(differ)}); {hint}",
          file=sys.stderr)
    raise SystemExit(2)


def _on_disk(stage: Mapping) -> bool:
    """Whether a stage record's checkpoint file exists here."""
    return bool(stage.get("checkpoint")) and os.path.isfile(stage["checkpoint"])


def code_version() -> dict:
    """``{'commit': hash or None, 'dirty': bool or None}`` of the repository this script is in; changes to
    tracked files under ``benchmarks/results/`` (records that a running benchmark writes) do not count."""
    def git(*cmd):
        return subprocess.run(["git", *cmd], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)

    try:
        head = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no", "--", ".", f":(exclude){RESULTS}")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if head.returncode:
        return {"commit": None, "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def machine_info(device: str) -> dict:
    """Processor, threads, library versions and device of this run (recorded beside every result)."""
    info = {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "torchreid": getattr(torchreid, "__version__", "unknown"),
            "jbim_reid": jbim_reid.__version__, "platform": platform.platform(), "node": platform.node(),
            "device": device}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info

