"""jbim_reid.metrics.evaluate_rank against torchreid's Python evaluator."""
import numpy as np
import pytest
import torchreid

from jbim_reid import metrics
from jbim_reid.metrics import evaluate_rank, get_rank_evaluator
from jbim_reid.metrics import rank as rank_module


def torchreid_rank(*args, seed=0, **kwargs):
    np.random.seed(seed)
    return torchreid.metrics.evaluate_rank(*args, use_cython=False, **kwargs)


def ours(*args, seed=0, **kwargs):
    np.random.seed(seed)
    return evaluate_rank(*args, **kwargs)


def assert_same(expected, got):
    """torchreid's CMC is a prefix of ours (ours is padded with 1 where its lists are short)."""
    exp_cmc, exp_map = expected
    cmc, mAP = got
    assert cmc.dtype == np.float32
    n = exp_cmc.shape[0]
    np.testing.assert_allclose(cmc[:n], exp_cmc, atol=1e-6)
    assert np.all(cmc[n:] == 1.0)
    assert mAP == pytest.approx(float(exp_map), abs=1e-6)


def random_case(rng, num_q, num_g, num_ids, num_cams, integer_distances=False):
    q_pids = rng.integers(0, num_ids, num_q)
    g_pids = rng.integers(0, num_ids, num_g)
    q_camids = rng.integers(0, num_cams, num_q)
    g_camids = rng.integers(0, num_cams, num_g)
    if integer_distances:  # many ties: the order must follow the same argsort call
        distmat = rng.integers(0, 3, (num_q, num_g)).astype(np.float64)
    else:
        distmat = rng.random((num_q, num_g)).astype(np.float32)
    return distmat, q_pids, g_pids, q_camids, g_camids


@pytest.mark.filterwarnings("ignore:Number of gallery samples")
@pytest.mark.parametrize("cuhk03", [False, True])
@pytest.mark.parametrize("integer_distances", [False, True])
def test_equals_torchreid_on_random_inputs(cuhk03, integer_distances):
    rng = np.random.default_rng(1 + cuhk03 + 2 * integer_distances)
    compared = 0
    for trial in range(40):
        num_g = int(rng.integers(20, 70))
        case = random_case(rng, int(rng.integers(1, 25)), num_g, int(rng.integers(2, 10)), 3, integer_distances)
        max_rank = int(rng.integers(1, num_g))
        try:
            expected = torchreid_rank(*case, seed=trial, max_rank=max_rank, use_metric_cuhk03=cuhk03)
        except (AssertionError, ValueError):  # no valid query, or torchreid's ragged per-query lists
            continue
        assert_same(expected, ours(*case, seed=trial, max_rank=max_rank, use_metric_cuhk03=cuhk03))
        compared += 1
    assert compared >= 20


def test_cuhk03_consumes_the_same_random_stream():
    case = random_case(np.random.default_rng(5), 12, 60, 6, 2)
    torchreid_rank(*case, seed=3, max_rank=5, use_metric_cuhk03=True)
    after_torchreid = np.random.randint(1 << 30)
    ours(*case, seed=3, max_rank=5, use_metric_cuhk03=True)
    assert np.random.randint(1 << 30) == after_torchreid


def test_cuhk03_depends_on_seed_like_torchreid():
    case = random_case(np.random.default_rng(6), 10, 60, 4, 2)
    results = [ours(*case, seed=s, max_rank=10, use_metric_cuhk03=True)[0] for s in range(4)]
    assert any(not np.array_equal(results[0], r) for r in results[1:])


@pytest.mark.parametrize("cuhk03", [False, True])
def test_queries_without_valid_match_are_skipped(cuhk03):
    g_pids = np.array([0, 0, 1, 1, 2])
    g_camids = np.array([0, 1, 0, 1, 0])
    q_pids = np.array([0, 1, 2, 7])  # pid 2 only under the query's camera; pid 7 absent
    q_camids = np.array([0, 0, 0, 1])
    distmat = np.random.default_rng(0).random((4, 5))
    expected = torchreid_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=3, use_metric_cuhk03=cuhk03)
    got = ours(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=3, use_metric_cuhk03=cuhk03)
    assert_same(expected, got)
    # only queries 0 and 1 count: each has a single true match
    assert got[1] == pytest.approx(np.mean([1.0 / _kept_rank(distmat, g_pids, g_camids, q, p, c)
                                            for q, p, c in [(0, 0, 0), (1, 1, 0)]]))


def _kept_rank(distmat, g_pids, g_camids, q, pid, camid):
    order = np.argsort(distmat[q])
    kept = [g for g in order if not (g_pids[g] == pid and g_camids[g] == camid)]
    return 1 + [g_pids[g] for g in kept].index(pid)


@pytest.mark.filterwarnings("ignore:Number of gallery samples")
@pytest.mark.parametrize("cuhk03", [False, True])
def test_no_valid_query_raises(cuhk03):
    with pytest.raises(AssertionError):
        torchreid_rank(np.zeros((2, 2)), np.array([5, 6]), np.array([0, 1]), np.zeros(2), np.ones(2),
                       use_metric_cuhk03=cuhk03)
    with pytest.raises(ValueError, match="No query has a true match"):
        evaluate_rank(np.zeros((2, 2)), np.array([5, 6]), np.array([0, 1]), np.zeros(2), np.ones(2),
                      use_metric_cuhk03=cuhk03)


@pytest.mark.filterwarnings("ignore:Number of gallery samples")
@pytest.mark.parametrize("cuhk03", [False, True])
def test_single_image_gallery(cuhk03):
    distmat = np.array([[0.3], [0.1], [0.2]])
    q_pids, q_camids = np.array([4, 4, 5]), np.array([0, 1, 0])
    g_pids, g_camids = np.array([4]), np.array([1])
    expected = torchreid_rank(distmat, q_pids, g_pids, q_camids, g_camids, use_metric_cuhk03=cuhk03)
    cmc, mAP = ours(distmat, q_pids, g_pids, q_camids, g_camids, use_metric_cuhk03=cuhk03)
    assert_same(expected, (cmc, mAP))
    assert cmc.shape == (1,) and cmc[0] == 1.0 and mAP == 1.0  # only query 0 is valid


@pytest.mark.parametrize("cuhk03", [False, True])
def test_max_rank_above_gallery_size_warns_and_truncates(cuhk03):
    case = random_case(np.random.default_rng(2), 6, 8, 3, 3)
    case = (case[0], case[1], case[2], np.zeros(6), np.ones(8))  # nothing removed: full-length lists
    expected = torchreid_rank(*case, max_rank=50, use_metric_cuhk03=cuhk03)
    with pytest.warns(UserWarning, match="got 8"):
        got = ours(*case, max_rank=50, use_metric_cuhk03=cuhk03)
    assert got[0].shape == (8,)
    assert_same(expected, got)


@pytest.mark.filterwarnings("ignore:Number of gallery samples")
def test_short_kept_lists_are_padded_with_one():
    # every query loses its same-camera match, so torchreid's lists are 3 long for max_rank 4
    distmat = np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])
    g_pids, g_camids = np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1])
    q_pids, q_camids = np.array([0, 1]), np.array([0, 1])
    expected = torchreid_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=4)
    assert expected[0].shape == (3,)
    cmc, mAP = ours(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=4)
    assert_same(expected, (cmc, mAP))
    np.testing.assert_allclose(cmc, [0.0, 1.0, 1.0, 1.0])
    assert mAP == pytest.approx(0.5)


def test_chunking_does_not_change_results(monkeypatch):
    case = random_case(np.random.default_rng(3), 37, 50, 8, 3, integer_distances=True)
    full = ours(*case, max_rank=10)
    monkeypatch.setattr(rank_module, "CHUNK_ELEMENTS", 120)  # 2 queries per chunk
    chunked = ours(*case, max_rank=10)
    np.testing.assert_array_equal(full[0], chunked[0])
    assert full[1] == chunked[1]
    assert_same(torchreid_rank(*case, max_rank=10), chunked)


def test_accepts_lists_and_checks_shapes():
    distmat = [[0.1, 0.9], [0.8, 0.2]]
    cmc, mAP = evaluate_rank(distmat, [0, 1], [0, 1], [0, 0], [1, 1], max_rank=2)
    np.testing.assert_allclose(cmc, [1.0, 1.0])
    assert mAP == 1.0
    with pytest.raises(ValueError, match="g_pids has 3 entries"):
        evaluate_rank(np.zeros((2, 2)), [0, 1], [0, 1, 2], [0, 0], [1, 1])
    with pytest.raises(ValueError, match="2-D"):
        evaluate_rank(np.zeros(3), [0], [0, 1, 2], [0], [1, 1, 1])


def test_get_rank_evaluator_prefers_cython(monkeypatch):
    monkeypatch.setattr(torchreid.metrics.rank, "IS_CYTHON_AVAI", False)
    assert get_rank_evaluator() is metrics.evaluate_rank
    monkeypatch.setattr(torchreid.metrics.rank, "IS_CYTHON_AVAI", True)
    assert get_rank_evaluator() is torchreid.metrics.evaluate_rank
