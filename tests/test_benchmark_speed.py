"""Smoke test of benchmarks/speed.py: each measurement runs in-process on tiny inputs."""
import argparse
import math

import pytest
from benchmark_scripts import load_benchmark

speed = load_benchmark("speed")


@pytest.fixture
def args():
    return argparse.Namespace(backbone="osnet_x0_25", sr="srcnn", height=32, width=16, batch_size=8,
                              repeats=1, num_classes=4, rank_queries=20, fast_sr="espcn", threads=1)


@pytest.mark.parametrize("kind", ["plain_backbone", "jbim_probe", "jbim_gallery", "ensemble_probe"])
def test_inference_measurements_report_throughput_and_memory(args, kind):
    result = speed._measure_inference(kind, args)
    assert result["images_per_s"] > 0 and math.isfinite(result["images_per_s"])
    assert result["peak_rss_mib"] > 0


@pytest.mark.parametrize("kind", ["plain_triplet_step", "jbim_joint_step"])
def test_training_step_measurements_run_a_real_step(args, kind):
    assert speed._measure_train_step(kind, args)["images_per_s"] > 0


def test_ranking_measurement_checks_parity_with_torchreid(args):
    result = speed._measure_ranking(args)
    assert result["max_abs_cmc_diff"] < 1e-6 and result["abs_map_diff"] < 1e-6
    assert result["num_gallery"] == 15913


def test_unknown_measurement_is_rejected(args):
    with pytest.raises(ValueError, match="unknown inference measurement"):
        speed._measure_inference("nope", args)


def test_mixed_precision_measurement_is_skipped_with_a_reason_without_cuda(args, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert "no CUDA device" in speed._measure_gpu_amp(args)["skipped"]
@pytest.mark.slow
def test_probe_parts_are_measured_before_and_after_with_onnx(args):
    pytest.importorskip("onnxruntime")
    result = speed._measure_probe_parts(args)
    for name in ("before", "after"):
        row = result[name]
        assert all(row[p] > 0 for p in ("plain_backbone", "sr", "him", "lim", "ffn", "probe_path"))
        assert row["probe_slowdown_vs_plain"] == pytest.approx(row["plain_backbone"] / row["probe_path"])
    assert result["before"]["settings"]["sr"] == "srcnn" and result["after"]["settings"]["sr"] == "espcn"
    assert result["onnx"]["onnx_probe_path"] > 0 and result["onnx"]["probe_onnx_mib"] > 0
