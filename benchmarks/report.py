"""Markdown tables of an accuracy report (``benchmarks/accuracy.py --out``): the README's Results section.

One table per dataset: mean ± std over splits of rank-1/5/10 and mAP per method, the epochs each
method was trained (per stage kind; ``--plateau`` runs state the epochs found), its mean training
wall time per split and the number of splits; then the plateau searches, the paper-ordering verdict
and where the numbers come from (command, code version, machine).

Usage (from the repository root)::

    python benchmarks/report.py benchmarks/results/accuracy_cpu.json > results.md
"""
import argparse
import sys
from typing import Mapping, Optional, Sequence

from jbim_reid.reports import read_json

__all__ = ["results_markdown", "main"]

LABELS = {  # method key -> row label (benchmarks/accuracy.py METHODS)
    "plain": "plain torchreid",
    "plain_resaug": "plain torchreid + random resolution",
    "bicubic": "bicubic + re-id",
    "lim_only": "LIM only",
    "him_only": "HIM only",
    "him_lim": "HIM+LIM independent",
    "jbim": "JBIM",
    "jbim_resaug": "JBIM + random resolution",
    "ensemble": "JBIM 3-anchor ensemble",
    "plain_time_matched": "plain torchreid, JBIM's training time",
}
METRICS = (("rank1", "Rank-1"), ("rank5", "Rank-5"), ("rank10", "Rank-10"), ("mAP", "mAP"))


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}:{secs:02d}" if minutes < 60 else f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def _table(summaries: Mapping[str, dict]) -> str:
    head = ["method"] + [h for _, h in METRICS] + ["epochs", "train time / split", "splits"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    order = [m for m in LABELS if m in summaries] + [m for m in summaries if m not in LABELS]
    for method in order:
        s = summaries[method]
        cells = [LABELS.get(method, method)]
        cells += [f"{s['mean'][k]:.1f} ± {s['std'][k]:.1f}" for k, _ in METRICS]
        cells += [str(s.get("epochs", "")), _duration(s["seconds"]) if "seconds" in s else "",
                  str(s["num_splits"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plateaus(plateaus: Mapping[str, dict]) -> str:
    lines = []
    for search in plateaus.values():
        steps = ", ".join(f"{t['epochs']}→{t['next_epochs']}: {t['mean']:.1f}→{t['next_mean']:.1f} "
                          f"(spread {t['spread']:.1f})" for t in search["trace"])
        fixed = ", ".join(f"{k}={v}" for k, v in search.get("fixed", {}).items())
        fixed = f" ({fixed})" if fixed else ""
        lines.append(f"- {search['kind']} epochs on `{search['probe']}`{fixed}: **{search['epochs']}** "
                     f"({search['status']}); rank-1 {steps or 'no step'}")
    return "\n".join(lines) + ("\n" if lines else "")


def results_markdown(report: Mapping, datasets: Optional[Sequence[str]] = None) -> str:
    """The markdown of ``report``: per dataset a table, the plateau searches and the verdict; then provenance.

    Args:
        report (dict): a report written by ``benchmarks/accuracy.py``.
        datasets (sequence of str, optional): only these datasets. Default: all with a summary.

    Returns:
        str: markdown text.
    """
    parts = []
    for name, entry in report.get("datasets", {}).items():
        if (datasets is not None and name not in datasets) or not entry.get("summary"):
            continue
        splits = sorted({s["num_splits"] for s in entry["summary"].values()})
        parts.append(f"### {name} (mean ± std over {'/'.join(map(str, splits))} split(s), %)\n\n")
        parts.append(_table(entry["summary"]))
        if entry.get("plateau"):
            parts.append("\nPlateau search (mean rank-1 at E → 1.5E epochs):\n\n")
            parts.append(_plateaus(entry["plateau"]))
        if entry.get("verdict"):
            parts.append(f"\nVerdict: {entry['verdict']['line']}\n")
        parts.append("\n")
    version = report.get("code_version") or {}
    machine = report.get("machine") or {}
    commit = (version.get("commit") or "unknown")[:12] + (" (dirty)" if version.get("dirty") else "")
    where = machine.get("gpu") or (f"{machine.get('processor', '?')}, "
                                   f"{machine.get('torch_threads', '?')} torch thread(s)")
    parts.append(f"Code {commit}; {where}, device {machine.get('device', '?')}; "
                 f"command: `{report.get('command', '?')}`\n")
    return "".join(parts)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Print the markdown of the report file given on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", help="JSON report of benchmarks/accuracy.py")
    parser.add_argument("--datasets", default="", help="comma-separated subset of the report's datasets")
    args = parser.parse_args(argv)
    try:
        report = read_json(args.report)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    names = [d for d in args.datasets.split(",") if d] or None
    sys.stdout.write(results_markdown(report, names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
