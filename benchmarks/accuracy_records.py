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
        if old is not None and old.get("recipe_fingerprint") != report["recipe_fingerprint"]:
            theirs, ours = old.get("recipe", {}), report["recipe"]
            differ = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
            print(f"error: --out '{path}' holds results of another recipe (differs in: {', '.join(differ)}); "
                  "pass another --out, or --restart to discard them", file=sys.stderr)
            raise SystemExit(2)
        self.report = report
        self.report["commands"] = (old or {}).get("commands", []) + [report["command"]]
        self.report["datasets"] = (old or {}).get("datasets", {})

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


def code_version() -> dict:
    """``{'commit': hash or None, 'dirty': bool or None}`` of the repository this script is in."""
    def git(*cmd):
        return subprocess.run(["git", *cmd], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)

    try:
        head = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no")
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

