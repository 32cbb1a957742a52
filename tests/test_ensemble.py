"""Resolution weights and distance fusion (jbim_reid.evaluation.ensemble) against hand-computed values."""
import math

import numpy as np
import pytest

from jbim_reid.evaluation.ensemble import (anchor_subsets, anchor_weights, evaluate_subsets, fuse_distances,
                                           resolution_ratios)
from jbim_reid.metrics import evaluate_rank

GALLERY_HW = [[128, 64], [100, 40], [156, 88]]  # areas 8192, 4000, 13728: mean 8640


def test_resolution_ratios_hand_computed():
    probe_hw = [[64, 32], [30, 20], [128, 64]]
    r = resolution_ratios(probe_hw, GALLERY_HW)
    expected = [math.sqrt(2048 / 8640), math.sqrt(600 / 8640), math.sqrt(8192 / 8640)]
    np.testing.assert_allclose(r, expected, rtol=1e-12)


def test_resolution_ratios_rejects_bad_sizes():
    with pytest.raises(ValueError, match=r"probe_hw must be a non-empty \(N, 2\)"):
        resolution_ratios([64, 32], GALLERY_HW)
    with pytest.raises(ValueError, match=r"gallery_hw must hold positive.*\(0.0, 5.0\)"):
        resolution_ratios([[64, 32]], [[10, 10], [0, 5]])


def test_gaussian_weights_hand_computed():
    w = anchor_weights([0.5, 0.25], anchors=(1 / 2, 1 / 3, 1 / 4), sigma=0.5)
    expected = [[1.0, math.exp(-1 / 9), math.exp(-0.25)],  # (1/6)^2 / 0.25 = 1/9
                [math.exp(-0.25), math.exp(-1 / 36), 1.0]]  # (1/12)^2 / 0.25 = 1/36
    np.testing.assert_allclose(w, expected, rtol=1e-12)
    assert w[0, 1] == pytest.approx(0.8948393168)


def test_sigma_changes_the_weights():
    narrow = anchor_weights([0.5], anchors=(0.25,), sigma=0.1)
    assert narrow[0, 0] == pytest.approx(math.exp(-6.25))


def test_uniform_weights_and_errors():
    np.testing.assert_array_equal(anchor_weights([0.1, 0.9], anchors=(0.5, 0.25), scheme="uniform"),
                                  np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"Unknown weighting scheme 'softmax'; expected one of"):
        anchor_weights([0.5], scheme="softmax")
    with pytest.raises(ValueError, match="sigma must be a positive finite number, got 0"):
        anchor_weights([0.5], sigma=0)
    with pytest.raises(ValueError, match="anchors is empty"):
        anchor_weights([0.5], anchors=())


def test_fuse_row_by_row_hand_computed():
    d1 = np.array([[1.0, 2.0], [3.0, 4.0]])
    d2 = np.array([[10.0, 20.0], [30.0, 40.0]])
    fused = fuse_distances([d1, d2], [[1.0, 0.5], [0.0, 2.0]])
    np.testing.assert_allclose(fused, [[6.0, 12.0], [60.0, 80.0]])
    shared = fuse_distances([d1, d2], [2.0, 1.0])
    np.testing.assert_allclose(shared, 2 * d1 + d2)


def test_single_anchor_subset_equals_that_model():
    rng = np.random.default_rng(0)
    mats = {name: rng.random((4, 6)) for name in ("half", "third", "quarter")}
    ratios = {"half": 1 / 2, "third": 1 / 3, "quarter": 1 / 4}
    r = resolution_ratios(rng.integers(20, 80, (4, 2)), rng.integers(100, 160, (6, 2)))
    for subset in anchor_subsets(list(mats)):
        weights = anchor_weights(r, anchors=[ratios[n] for n in subset])
        fused = fuse_distances([mats[n] for n in subset], weights)
        if len(subset) == 1:
            # one anchor: a positive per-row scale, so the same ranking as that model; uniform: identical
            np.testing.assert_array_equal(np.argsort(fused, axis=1), np.argsort(mats[subset[0]], axis=1))
            np.testing.assert_array_equal(
                fuse_distances([mats[subset[0]]], anchor_weights(r, [ratios[subset[0]]], scheme="uniform")),
                mats[subset[0]])


def test_fuse_validation_names_the_value():
    d = np.ones((2, 3))
    with pytest.raises(ValueError, match="distmats is empty"):
        fuse_distances([], [])
    with pytest.raises(ValueError, match=r"distmats\[1\] has shape \(3, 3\)"):
        fuse_distances([d, np.ones((3, 3))], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"weights has shape \(3,\); expected \(2, 2\) or \(2,\)"):
        fuse_distances([d, d], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="weights must be non-negative, got -0.5"):
        fuse_distances([d, d], [1.0, -0.5])
    with pytest.raises(ValueError, match="weights must be finite, got nan"):
        fuse_distances([d, d], [[1.0, np.nan], [1.0, 1.0]])
    with pytest.raises(ValueError, match=r"distmats\[0\] holds a non-finite value \(inf\)"):
        fuse_distances([np.full((2, 3), np.inf)], [1.0])
    with pytest.raises(ValueError, match="all weights of probe 1 are 0"):
        fuse_distances([d], [[1.0], [0.0]])


def test_anchor_subsets_for_table_13():
    subsets = anchor_subsets(["1/2", "1/3", "1/4"])
    assert subsets == [("1/2",), ("1/3",), ("1/4",), ("1/2", "1/3"), ("1/2", "1/4"), ("1/3", "1/4"),
                       ("1/2", "1/3", "1/4")]
    assert len(anchor_subsets(range(4))) == 15
    with pytest.raises(ValueError, match="distinct"):
        anchor_subsets(["a", "a"])


def split_results(rng, names, num_ids=12):
    """Fake ``engine.last_results`` of several anchors on one split (single-shot gallery)."""
    shared = dict(q_pids=np.arange(num_ids), g_pids=np.arange(num_ids), q_camids=np.zeros(num_ids, int),
                  g_camids=np.ones(num_ids, int), q_hw=rng.integers(20, 70, (num_ids, 2)),
                  g_hw=np.tile([128, 64], (num_ids, 1)))
    return {n: dict(shared, distmat=rng.random((num_ids, num_ids)) + 0.3 * (1 - np.eye(num_ids))) for n in names}


def test_evaluate_subsets_single_anchor_equals_that_model():
    results = split_results(np.random.default_rng(1), ["half", "third", "quarter"])
    ratios = {"half": 1 / 2, "third": 1 / 3, "quarter": 1 / 4}
    out = evaluate_subsets(results, ratios, max_rank=10)
    assert list(out) == ["half", "third", "quarter", "half + third", "half + quarter", "third + quarter",
                         "half + third + quarter"]
    for name in ratios:
        r = results[name]
        cmc, mAP = evaluate_rank(r["distmat"], r["q_pids"], r["g_pids"], r["q_camids"], r["g_camids"], max_rank=10)
        np.testing.assert_allclose(out[name]["cmc"], cmc)
        assert out[name]["mAP"] == pytest.approx(mAP)
    both = out["half + quarter"]
    weights = anchor_weights(resolution_ratios(results["half"]["q_hw"], results["half"]["g_hw"]), (1 / 2, 1 / 4))
    fused = weights[:, :1] * results["half"]["distmat"] + weights[:, 1:] * results["quarter"]["distmat"]
    r = results["half"]
    cmc, mAP = evaluate_rank(fused, r["q_pids"], r["g_pids"], r["q_camids"], r["g_camids"], max_rank=10)
    np.testing.assert_allclose(both["cmc"], cmc)
    assert both["anchors"] == ["half", "quarter"] and both["mAP"] == pytest.approx(mAP)
    only = evaluate_subsets(results, ratios, max_rank=10, subsets=[("third", "quarter")])
    assert list(only) == ["third + quarter"]


def test_evaluate_subsets_checks_the_split():
    results = split_results(np.random.default_rng(2), ["a", "b"])
    with pytest.raises(ValueError, match=r"ratios lacks anchors \['b'\]"):
        evaluate_subsets(results, {"a": 0.5})
    results["b"]["g_pids"] = results["b"]["g_pids"][::-1].copy()
    with pytest.raises(ValueError, match="anchor 'b' has other g_pids than anchor 'a'"):
        evaluate_subsets(results, {"a": 0.5, "b": 0.25})
    del results["b"]["q_hw"]
    with pytest.raises(ValueError, match=r"results of anchor 'b' lack \['q_hw'\]"):
        evaluate_subsets(results, {"a": 0.5, "b": 0.25})
