"""Split summaries, markdown tables and atomic JSON (jbim_reid.evaluation.reports)."""
import json

import numpy as np
import pytest

from jbim_reid.evaluation.reports import (markdown_table, paired_gain, rank_results, read_json,
                                          summarize_splits, write_json)

SPLITS = [
    {"rank1": 50.0, "rank5": 70.0, "rank10": 80.0, "rank20": 90.0, "mAP": 55.0},
    {"rank1": 54.0, "rank5": 74.0, "rank10": 84.0, "rank20": 94.0, "mAP": 57.0},
]


def test_rank_results_in_percent_and_short_cmc():
    cmc = np.linspace(0.1, 1.0, 10).astype(np.float32)
    result = rank_results(cmc, 0.25)
    assert result["rank1"] == pytest.approx(10.0)
    assert result["rank5"] == pytest.approx(50.0)
    assert result["rank10"] == pytest.approx(100.0)
    assert result["rank20"] == pytest.approx(100.0)  # beyond the CMC: its last value
    assert result["mAP"] == pytest.approx(25.0)
    with pytest.raises(ValueError, match="cmc is empty"):
        rank_results([], 0.5)


def test_summarize_splits_mean_and_std():
    summary = summarize_splits(SPLITS)
    assert summary["num_splits"] == 2
    assert summary["mean"]["rank1"] == pytest.approx(52.0)
    assert summary["std"]["rank1"] == pytest.approx(2.0)  # population std
    assert summary["mean"]["mAP"] == pytest.approx(56.0)
    assert summarize_splits(SPLITS, ddof=1)["std"]["mAP"] == pytest.approx(np.sqrt(2.0))
    single = summarize_splits(SPLITS[:1], ddof=1)
    assert single["std"]["rank5"] == 0.0


def test_summarize_splits_errors():
    with pytest.raises(ValueError, match="results is empty"):
        summarize_splits([])
    with pytest.raises(ValueError, match=r"results\[1\] lacks \['mAP'\]"):
        summarize_splits([SPLITS[0], {k: v for k, v in SPLITS[1].items() if k != "mAP"}])


def test_markdown_table_rows_and_cells():
    table = markdown_table({"JBIM (all anchors)": summarize_splits(SPLITS), "single": SPLITS[0]})
    lines = table.strip().split("\n")
    assert lines[0] == "| method | Rank-1 | Rank-5 | Rank-10 | Rank-20 | mAP |"
    assert lines[1] == "| --- | --- | --- | --- | --- | --- |"
    assert lines[2] == "| JBIM (all anchors) | 52.0 ± 2.0 | 72.0 ± 2.0 | 82.0 ± 2.0 | 92.0 ± 2.0 | 56.0 ± 1.0 |"
    assert lines[3] == "| single | 50.0 | 70.0 | 80.0 | 90.0 | 55.0 |"
    one = markdown_table({"one split": summarize_splits(SPLITS[:1])}, metrics=("rank1",))
    assert "| one split | 50.0 |" in one  # no spread to show
    short = markdown_table({"m": SPLITS[1]}, metrics=("rank1", "mAP"), digits=2)
    assert "| m | 54.00 | 57.00 |" in short
    with pytest.raises(ValueError, match=r"Unknown metrics \['rank3'\]"):
        markdown_table({"m": SPLITS[0]}, metrics=("rank3",))


def test_write_and_read_json_roundtrip(tmp_path):
    path = tmp_path / "sub" / "ensemble.json"
    data = {"summary": summarize_splits(SPLITS), "cmc": np.array([0.5, 1.0], dtype=np.float32),
            "rank1": np.float32(0.5)}
    assert write_json(data, path) == path
    loaded = read_json(path)
    assert loaded["cmc"] == [0.5, 1.0] and loaded["rank1"] == 0.5
    assert loaded["summary"]["mean"]["rank1"] == pytest.approx(52.0)
    assert [p.name for p in path.parent.iterdir()] == ["ensemble.json"]  # no temporary left


def test_write_json_keeps_existing_file_on_error(tmp_path):
    path = tmp_path / "results.json"
    write_json({"ok": 1}, path)
    with pytest.raises(TypeError, match="object is not JSON serializable|not JSON serializable"):
        write_json({"bad": object()}, path)
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_read_json_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_json(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json is not valid JSON"):
        read_json(broken)


def test_paired_gain_removes_the_split_difficulty():
    easy_and_hard = [30.0, 10.0, 20.0]  # splits differ by 20 points
    better_by_two = [32.0, 12.5, 21.5]  # +2, +2.5, +1.5 on each
    pair = paired_gain(easy_and_hard, better_by_two)
    assert pair["gain"] == pytest.approx(2.0) and pair["diffs"] == pytest.approx([2.0, 2.5, 1.5])
    assert pair["noise"] == pytest.approx(np.std([2.0, 2.5, 1.5], ddof=1) / np.sqrt(3))
    assert pair["noise"] < pair["gain"] < np.std(easy_and_hard)  # visible paired, hidden by the spread
    assert paired_gain([1.0], [3.0])["noise"] == 0.0
    with pytest.raises(ValueError, match="same non-empty splits"):
        paired_gain([1.0, 2.0], [1.0])
