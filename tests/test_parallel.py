"""Parallel meta-training: chunking by work, bit-identical results for any n_jobs, thread hygiene."""

import joblib
import numpy as np
import pytest
from threadpoolctl import threadpool_info

from skmaml import MAMLClassifier, MAMLRegressor
from skmaml._kernels._config import RELU
from skmaml._kernels._maml import meta_batch_grad
from skmaml._kernels._rules import plain_rule
from skmaml._parallel import (
    MAX_CHUNKS,
    MIN_CHUNK_FLOPS,
    MetaGradient,
    chunk_bounds,
    flops_per_row,
    resolve_n_jobs,
)


def heavy_tasks(n_tasks=12, n_rows=120, n_features=5, seed=0):
    """Tasks big enough that a meta-batch is split into several chunks."""
    rng = np.random.RandomState(seed)
    tasks = []
    for _ in range(n_tasks):
        w = rng.normal(size=n_features)
        X = rng.normal(size=(n_rows, n_features))
        tasks.append((X, np.sin(X @ w)))
    return tasks


pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

HEAVY = dict(hidden_layer_sizes=(64, 64), n_inner_steps=2, n_support=60, meta_batch_size=12,
             max_iter=6, random_state=0)


def test_heavy_batches_are_split_and_sinusoid_is_not():
    layer_sizes = np.array([5, 64, 64, 1])
    support, query = flops_per_row(layer_sizes, 2, False)
    offsets = np.arange(0, 12 * 60 + 1, 60)
    bounds = chunk_bounds(offsets, offsets, support, query)
    assert 2 < bounds.shape[0] - 1 <= MAX_CHUNKS
    assert bounds[0] == 0 and bounds[-1] == 12 and np.all(np.diff(bounds) > 0)
    sinusoid = np.array([1, 40, 40, 1])
    support, query = flops_per_row(sinusoid, 1, False)
    offsets = np.arange(0, 25 * 10 + 1, 10)
    assert chunk_bounds(offsets, offsets, support, query).tolist() == [0, 25]


def test_chunks_balance_ragged_work():
    support, query = 1e6, 1e6
    sizes = np.array([100, 10, 10, 10, 10, 100, 10, 10, 10, 10])
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    bounds = chunk_bounds(offsets, offsets, support, query)
    work = np.add.reduceat(2e6 * sizes, bounds[:-1])
    assert work.max() <= 2.5 * work.mean()
    assert (2e6 * sizes).sum() / (bounds.shape[0] - 1) >= MIN_CHUNK_FLOPS


@pytest.mark.parametrize("first_order", [False, True])
def test_chunked_meta_gradient_equals_one_batch(first_order):
    """Chunk means recombined give the batch mean (to rounding) and the same task losses."""
    rng = np.random.RandomState(1)
    layer_sizes = np.array([5, 64, 64, 1], dtype=np.int64)
    theta = rng.uniform(-0.2, 0.2, size=int((layer_sizes[:-1] + 1) @ layer_sizes[1:]))
    sizes = rng.randint(40, 90, size=10)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    X = rng.normal(size=(offsets[-1], 5))
    Y = np.sin(X.sum(axis=1, keepdims=True))
    direct, chunked = np.empty_like(theta), np.empty_like(theta)
    losses_direct, losses_chunked = np.empty(10), np.empty(10)
    loss = meta_batch_grad(theta, layer_sizes, RELU, X, Y, offsets, X, Y, offsets,
                           plain_rule(0.05, theta.dtype), 2, first_order, direct, losses_direct)
    with MetaGradient(layer_sizes, RELU, plain_rule(0.05, theta.dtype), 2, first_order,
                      n_jobs=2) as meta_gradient:
        assert chunk_bounds(offsets, offsets, meta_gradient.support_flops,
                            meta_gradient.query_flops).shape[0] > 2
        loss_chunked = meta_gradient(theta, X, Y, offsets, X, Y, offsets, chunked,
                                     losses_chunked)
    np.testing.assert_allclose(chunked, direct, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(losses_chunked, losses_direct, rtol=1e-12)
    assert loss_chunked == pytest.approx(loss, rel=1e-12)


@pytest.mark.bit_identity
@pytest.mark.parametrize("Estimator", [MAMLRegressor, MAMLClassifier])
def test_same_model_for_any_n_jobs(Estimator):
    tasks = heavy_tasks()
    if Estimator is MAMLClassifier:
        tasks = [(X, (y > 0).astype(int)) for X, y in tasks]
        params = {**HEAVY, "n_support": 30}
    else:
        params = HEAVY
    fitted = [Estimator(n_jobs=n_jobs, **params).fit(tasks) for n_jobs in (1, 2, -1, 1)]
    for other in fitted[1:]:
        for a, b in zip(fitted[0].coefs_ + fitted[0].intercepts_,
                        other.coefs_ + other.intercepts_):
            np.testing.assert_array_equal(a, b)
        assert other.loss_curve_ == fitted[0].loss_curve_


def test_thread_settings_are_restored():
    before = [(lib["internal_api"], lib["num_threads"]) for lib in threadpool_info()]
    MAMLRegressor(n_jobs=2, **HEAVY).fit(heavy_tasks())
    after = [(lib["internal_api"], lib["num_threads"]) for lib in threadpool_info()]
    assert after == before


def test_resolve_n_jobs():
    assert resolve_n_jobs(None) == 1
    assert resolve_n_jobs(3) == 3
    assert resolve_n_jobs(-1) == joblib.cpu_count()
    assert resolve_n_jobs(-2) == max(1, joblib.cpu_count() - 1)
    # joblib's context decides None, as sklearn documents for n_jobs ...
    with joblib.parallel_config(n_jobs=2):
        assert resolve_n_jobs(None) == 2
    # ... but not that the threads are local: a process or cluster backend changes nothing.
    with joblib.parallel_config(backend="loky"):
        assert resolve_n_jobs(-1) == joblib.cpu_count()


def test_n_jobs_zero_is_rejected():
    with pytest.raises(ValueError, match="n_jobs"):
        MAMLRegressor(n_jobs=0, max_iter=1).fit(heavy_tasks(n_tasks=2, n_rows=12))
