"""Scaling out: searches on a ``dask.distributed`` cluster of worker processes give the sequential
results, and the within-fit threads stay on the worker that runs the fit.

Needs the optional ``dask[distributed]``; skipped without it. The cluster binds to the loopback
interface only (``host="127.0.0.1"``) and starts no dashboard.
"""

import importlib.util
import os
import threading
import warnings

import joblib
import numpy as np
import pytest
import sklearn
from numpy.testing import assert_array_equal
from sklearn import config_context
from sklearn.model_selection import GridSearchCV, GroupKFold, cross_validate
from sklearn.utils.parallel import Parallel, delayed

from _dask_probe import ThreadProbeRegressor  # tests/ is on sys.path, as for naive
from helpers import regression_data, small_regressor
from skmaml import MAMLRegressor
from skmaml._parallel import chunk_bounds, flops_per_row

pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

GRID = {"inner_lr": [0.01, 0.1], "meta_lr": [0.003, 0.01], "n_inner_steps": [1, 2]}


@pytest.fixture(scope="module")
def client():
    """Two single-threaded worker processes on 127.0.0.1, no dashboard; closed after the module."""
    with warnings.catch_warnings():
        # distributed may warn about its own start-up (e.g. ports); not what is tested here.
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           host="127.0.0.1", dashboard_address=None)
        client = distributed.Client(cluster)
    try:
        client.wait_for_workers(2, timeout=60)
        yield client
    finally:
        client.close()
        cluster.close()


def heavy_data(n_tasks=12, n_rows=120, n_features=5, seed=0):
    """Flat tasks big enough that each meta-batch is cut into several chunks (threads used)."""
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n_tasks * n_rows, n_features))
    W = rng.normal(size=(n_tasks, n_features))
    groups = np.repeat(np.arange(n_tasks), n_rows)
    y = np.sin(np.einsum("ij,ij->i", X, W[groups]))
    return X, y, groups


HEAVY = dict(hidden_layer_sizes=(64, 64), n_inner_steps=2, n_support=60, meta_batch_size=8,
             max_iter=4, random_state=0)


def search(estimator, X, y, groups, *, n_jobs=None):
    gs = GridSearchCV(estimator, GRID, cv=GroupKFold(3), n_jobs=n_jobs, error_score="raise")
    with config_context(enable_metadata_routing=True):
        return gs.fit(X, y, groups=groups)


def assert_same_search(a, b):
    assert a.best_params_ == b.best_params_
    assert a.best_index_ == b.best_index_
    assert a.cv_results_["params"] == b.cv_results_["params"]
    for key in ["mean_test_score", "std_test_score", "rank_test_score"] + [
            f"split{k}_test_score" for k in range(3)]:
        assert_array_equal(a.cv_results_[key], b.cv_results_[key], err_msg=key)
    for p, q in zip(a.best_estimator_.coefs_ + a.best_estimator_.intercepts_,
                    b.best_estimator_.coefs_ + b.best_estimator_.intercepts_):
        assert_array_equal(p, q)


def test_sklearn_config_reaches_dask_workers(client):
    """scikit-learn's config is thread-local: its Parallel/delayed carry it to the workers (which is
    how GridSearchCV's routing setting gets there); plain joblib does not."""
    worker_pids = set(client.run(os.getpid).values())
    assert os.getpid() not in worker_pids
    with config_context(enable_metadata_routing=True), joblib.parallel_config(backend="dask"):
        configs = Parallel(n_jobs=-1)(delayed(sklearn.get_config)() for _ in range(4))
        pids = Parallel(n_jobs=-1)(delayed(os.getpid)() for _ in range(4))
        plain = joblib.Parallel(n_jobs=-1)(joblib.delayed(sklearn.get_config)()
                                           for _ in range(4))
    assert set(pids) <= worker_pids
    assert all(c["enable_metadata_routing"] for c in configs)
    assert not any(c["enable_metadata_routing"] for c in plain)


@pytest.mark.bit_identity
def test_grid_search_on_dask_equals_sequential(client):
    X, y, g = regression_data()
    sequential = search(small_regressor(), X, y, g)
    with joblib.parallel_config(backend="dask"):
        distributed_search = search(small_regressor(), X, y, g, n_jobs=-1)
    assert_same_search(distributed_search, sequential)
    # The scores depend on the routed groups (the comparison would notice them missing).
    assert len(set(sequential.cv_results_["mean_test_score"])) > 1


def test_grid_search_with_within_fit_threads_on_dask(client):
    """n_jobs=2 inside each fit, candidates on the cluster: the same as everything sequential."""
    X, y, g = heavy_data()
    layer_sizes = np.array([X.shape[1], 64, 64, 1])
    support, query = flops_per_row(layer_sizes, 1, False)  # the grid's cheapest N
    offsets = np.arange(HEAVY["meta_batch_size"] + 1) * HEAVY["n_support"]
    assert chunk_bounds(offsets, offsets, support, query).shape[0] > 2  # threads really used
    sequential = search(MAMLRegressor(n_jobs=1, **HEAVY), X, y, g)
    with joblib.parallel_config(backend="dask"):
        distributed_search = search(MAMLRegressor(n_jobs=2, **HEAVY), X, y, g, n_jobs=-1)
    assert_same_search(distributed_search, sequential)


def test_within_fit_threads_stay_on_the_worker(client):
    """The chunk threads of a fit run inside the worker process that runs the fit: dask sees one
    task per fit, never the chunks."""
    # The probe's class must unpickle on the workers, whatever pytest's import mode: send its
    # module to them (distributed makes an uploaded file importable).
    client.upload_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_dask_probe.py"))
    assert all(client.run(lambda: importlib.util.find_spec("_dask_probe") is not None).values())
    X, y, g = heavy_data()
    with config_context(enable_metadata_routing=True):
        reference = cross_validate(MAMLRegressor(n_jobs=1, **HEAVY), X, y, cv=GroupKFold(3),
                                   params={"groups": g}, error_score="raise")
        with joblib.parallel_config(backend="dask"):
            result = cross_validate(ThreadProbeRegressor(n_jobs=2, **HEAVY), X, y,
                                    cv=GroupKFold(3), params={"groups": g}, n_jobs=-1,
                                    return_estimator=True, error_score="raise")
    assert_array_equal(result["test_score"], reference["test_score"])
    worker_pids = set(client.run(os.getpid).values())
    for est in result["estimator"]:
        assert est.probe_pids_ <= worker_pids and os.getpid() not in est.probe_pids_
        assert {"skmaml_0", "skmaml_1"} <= est.probe_threads_
    # ... and none were ever started here.
    assert not any(t.name.startswith("skmaml") for t in threading.enumerate())
