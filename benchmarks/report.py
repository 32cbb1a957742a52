"""Markdown tables of an accuracy report (``benchmarks/accuracy.py --out``): the README's Results section.

One table per dataset: mean ± std over splits of rank-1/5/10 and mAP per method, the epochs each
method was trained (per stage kind; ``--plateau`` runs state the epochs found), its mean training
wall time per split and the number of splits; then the plateau searches, the paper-ordering verdict
and where the numbers come from (command, code version, machine).

Usage (from the repository root)::

    python benchmarks/report.py benchmarks/results/accuracy_cpu.json > results.md
    # several reports, every recorded run (method, epochs) compared on the same splits
    python benchmarks/report.py plain.json jbim.json --splits 0,1,2
    # ... and each row's per-split difference from one of them
    python benchmarks/report.py plain.json jbim.json --splits 0,1,2 --paired-against "plain torchreid [plain=27]"
"""
import argparse
import sys
from typing import Dict, Mapping, Optional, Sequence, Tuple

from jbim_reid.evaluation.reports import (ACCURACY_METHODS, paired_gain, read_json, summarize_splits,
                                          summary_cell)

__all__ = ["results_markdown", "runs_on_splits", "paired_markdown", "comparison_markdown", "main"]

LABELS = ACCURACY_METHODS  # method key -> row label (benchmarks/accuracy.py METHODS)
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
        cells += [summary_cell(s, k) for k, _ in METRICS]
        cells += [str(s.get("epochs", "")), _duration(s["seconds"]) if "seconds" in s else "",
                  str(s["num_splits"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plateaus(plateaus: Mapping[str, dict]) -> str:
    lines = []
    for search in plateaus.values():
        steps = "; ".join(
            f"{t['epochs']}→{t['next_epochs']}: rank-1 {t['rank1']['gain']:+.1f} ± {t['rank1']['noise']:.1f}, "
            f"mAP {t['mAP']['gain']:+.1f} ± {t['mAP']['noise']:.1f}" for t in search["trace"])
        fixed = ", ".join(f"{k}={v}" for k, v in search.get("fixed", {}).items())
        fixed = f" ({fixed})" if fixed else ""
        lines.append(f"- {search['kind']} epochs on `{search['probe']}`{fixed}: **{search['epochs']}** "
                     f"({search['status']}); paired gain of 1.5x epochs ± its standard error: {steps or 'no step'}")
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
            parts.append("\nPlateau search (E → 1.5E epochs, paired over the splits):\n\n")
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


def runs_on_splits(reports: Sequence[Mapping], dataset: str, split_ids: Sequence[str]) -> Dict[str, dict]:
    """Every recorded run (method and epochs) of ``dataset`` that has all of ``split_ids``, summarised.

    Several reports (e.g. one run of the plain baselines, one of JBIM, each resumable on its own) are
    read together; a run recorded in several of them counts once per split (the later report wins).
    Comparing only runs that share the same splits keeps split-to-split variation out of the
    comparison.

    Args:
        reports (sequence of dict): reports written by ``benchmarks/accuracy.py``.
        dataset (str): dataset name.
        split_ids (sequence of str): the splits every row must have.

    Returns:
        dict: ``"<method> [<epochs>]"`` -> :func:`jbim_reid.evaluation.reports.summarize_splits` plus
        ``seconds`` (mean training time per split) and ``per_split`` (the metrics in ``split_ids``
        order), in the order of :data:`LABELS`.
    """
    runs: Dict[Tuple[str, str], Dict[str, dict]] = {}
    for report in reports:
        for split_id, split in report.get("datasets", {}).get(dataset, {}).get("splits", {}).items():
            for method, by_spec in split.get("runs", {}).items():
                for spec, run in by_spec.items():
                    runs.setdefault((method, spec), {})[split_id] = run
    rows = {}
    order = sorted(runs, key=lambda key: (list(LABELS).index(key[0]) if key[0] in LABELS else len(LABELS),
                                          key[1]))
    for method, spec in order:
        per_split = runs[(method, spec)]
        if not all(s in per_split for s in split_ids):
            continue
        chosen = [per_split[s] for s in split_ids]
        summary = summarize_splits([run["metrics"] for run in chosen])
        summary["seconds"] = sum(run["seconds"] for run in chosen) / len(chosen)
        summary["epochs"] = spec
        summary["per_split"] = [run["metrics"] for run in chosen]
        rows[f"{LABELS.get(method, method)} [{spec}]"] = summary
    return rows


def paired_markdown(rows: Mapping[str, dict], baseline: str) -> str:
    """Each row of :func:`runs_on_splits` minus ``baseline``, split by split (:func:`paired_gain`).

    Raises:
        KeyError: ``baseline`` is not one of the rows (the message lists them).
    """
    if baseline not in rows:
        raise KeyError(f"--paired-against {baseline!r} is not a row on these splits; rows: {', '.join(rows)}")
    base = rows[baseline]["per_split"]
    lines = [f"Paired against {baseline}: mean per-split difference ± its standard error, and the splits "
             "where the row is above / below it (rank-1)\n",
             "| method | Rank-1 | mAP | splits above / below |", "| --- | --- | --- | --- |"]
    for label, row in rows.items():
        if label == baseline:
            continue
        pairs = {m: paired_gain([r[m] for r in base], [r[m] for r in row["per_split"]]) for m in ("rank1", "mAP")}
        # one split has no standard error: the difference alone
        cells = [f"{p['gain']:+.1f}" + (f" ± {p['noise']:.1f}" if len(base) > 1 else "") for p in pairs.values()]
        above, below = sum(d > 0 for d in pairs["rank1"]["diffs"]), sum(d < 0 for d in pairs["rank1"]["diffs"])
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {above} / {below} |")
    return "\n".join(lines) + "\n"


def comparison_markdown(reports: Sequence[Mapping], dataset: str, split_ids: Sequence[str],
                        baseline: str = "") -> str:
    """A table of :func:`runs_on_splits` (rows labelled with their epochs), the paired differences
    against ``baseline`` (a row label) when given, and the code versions."""
    rows = runs_on_splits(reports, dataset, split_ids)
    parts = [f"### {dataset}, splits {', '.join(split_ids)} (mean ± std, %)\n\n", _table(rows)]
    if baseline:
        parts += ["\n", paired_markdown(rows, baseline)]
    versions = sorted({(r.get("code_version") or {}).get("commit", "unknown")[:12] for r in reports})
    parts.append(f"\nCode {', '.join(versions)}; commands: "
                 + "; ".join(f"`{r.get('command', '?')}`" for r in reports) + "\n")
    return "".join(parts)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Print the markdown of the report file(s) given on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", help="JSON report(s) of benchmarks/accuracy.py")
    parser.add_argument("--datasets", default="", help="comma-separated subset of the report's datasets")
    parser.add_argument("--splits", default="",
                        help="comma-separated split ids: compare every recorded run (method and epochs) of "
                             "the report(s) on exactly these splits, instead of each report's summary")
    parser.add_argument("--paired-against", default="",
                        help="with --splits: a row label, e.g. 'plain torchreid [plain=27]'; adds every "
                             "other row's per-split difference from it (mean ± standard error)")
    args = parser.parse_args(argv)
    try:
        reports = [read_json(path) for path in args.reports]
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    names = [d for d in args.datasets.split(",") if d] or None
    if args.splits:
        split_ids = [s.strip() for s in args.splits.split(",") if s.strip()]
        missing, datasets = [], names or sorted({d for r in reports for d in r.get("datasets", {})})
        for name in datasets:
            try:
                sys.stdout.write(comparison_markdown(reports, name, split_ids, args.paired_against) + "\n")
            except KeyError as err:  # that dataset has no such row: its table alone
                missing.append(err.args[0])
                sys.stdout.write(comparison_markdown(reports, name, split_ids) + "\n")
        if missing and len(missing) == len(datasets):  # a wrong label, not one dataset without it
            parser.error("; ".join(missing))
        return 0
    if len(reports) > 1:
        parser.error("several reports need --splits (the splits to compare them on)")
    sys.stdout.write(results_markdown(reports[0], names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
