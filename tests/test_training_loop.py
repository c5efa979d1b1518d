"""The compiled training loop (``skmaml._kernels._train.meta_train_run``) against the Python one.

``fit`` runs small meta-batches in compiled runs of up to ``_RUN_LENGTH`` meta-iterations and
anything else one meta-iteration at a time from Python. Both must give the same model to the bit:
parameters, loss curve, optimiser state, iteration count, stop reason and, when training
diverges, the same error and the same kept parameters. Each test fits twice, once with the
compiled loop and once with ``skmaml._base._COMPILED_LOOP = False``.
"""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

import skmaml._base as base
from helpers import classification_data, regression_data, small_classifier, small_regressor
from skmaml import MAMLClassifier, MAMLRegressor
from skmaml._kernels._config import ACTIVATION_CODES, ADAM, REGRESSION_EPISODES, SGD
from skmaml._kernels._train import (
    RUN_BAD_LOSS,
    RUN_BAD_UPDATE,
    RUN_CHUNKED,
    RUN_DONE,
    meta_train_run,
)
from skmaml._progress import Progress


def _fit(est, *args, compiled, monkeypatch, **kwargs):
    """``est.fit(*args)`` with or without the compiled loop, counting the compiled runs; the
    fitted estimator (or the error it raised) and the number of runs."""
    runs = []

    def counted(*a):
        runs.append(a[23])  # n_batches
        return meta_train_run(*a)

    with monkeypatch.context() as m:
        m.setattr(base, "_COMPILED_LOOP", compiled)
        m.setattr(base, "meta_train_run", counted)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            try:
                est.fit(*args, **kwargs)
            except ValueError as exc:
                return est, exc, runs
    return est, None, runs


def _assert_same_model(a, b):
    for name in ("coefs_", "intercepts_"):
        for wa, wb in zip(getattr(a, name), getattr(b, name)):
            np.testing.assert_array_equal(wa, wb)
    for name in ("inner_lr_coefs_", "inner_lr_intercepts_"):
        if getattr(a, name, None) is not None:
            for wa, wb in zip(getattr(a, name), getattr(b, name)):
                np.testing.assert_array_equal(wa, wb)
    assert a.loss_curve_ == b.loss_curve_
    assert a.n_iter_ == b.n_iter_ and a.stop_reason_ == b.stop_reason_
    state_a, state_b = vars(a._optimizer), vars(b._optimizer)
    assert state_a.keys() == state_b.keys()
    for key, value in state_a.items():
        np.testing.assert_array_equal(value, state_b[key])


def _both(est_factory, *args, monkeypatch, **kwargs):
    compiled, error_c, runs = _fit(est_factory(), *args, compiled=True, monkeypatch=monkeypatch,
                                   **kwargs)
    python, error_p, no_runs = _fit(est_factory(), *args, compiled=False,
                                    monkeypatch=monkeypatch, **kwargs)
    assert not no_runs
    assert (error_c is None) == (error_p is None)
    if error_c is not None:
        assert str(error_c) == str(error_p)
    _assert_same_model(compiled, python)
    return compiled, runs


REGRESSORS = {
    "adam": {},
    "sgd, float32 data": {"meta_optimizer": "sgd"},
    "second order, 3 steps": {"n_inner_steps": 3, "first_order": False},
    "meta-sgd": {"learn_inner_lr": "per_parameter"},
    "lslr, head only": {"learn_inner_lr": "per_layer_step", "adapted_layers": 1,
                        "n_inner_steps": 2, "hidden_layer_sizes": (6, 5)},
    "early stopping": {"early_stopping": True, "validation_fraction": 0.25, "tol": 0.0},
}


@pytest.mark.bit_identity
@pytest.mark.parametrize("case", list(REGRESSORS))
def test_compiled_loop_is_the_python_loop_for_regression(case, monkeypatch):
    X, y, g = regression_data(n_tasks=14, n_samples=9)
    if "float32" in case:
        X = X.astype(np.float32)
    params = dict(max_iter=150, meta_batch_size=4, **REGRESSORS[case])
    est, runs = _both(lambda: small_regressor(**params), X, y, groups=g,
                      monkeypatch=monkeypatch)
    # 14 tasks in batches of 4: epochs of 4 batches; the first batch runs from Python (it sets
    # the divergence limit), the rest in compiled runs that end with each epoch.
    assert runs and max(runs) <= base._RUN_LENGTH
    assert est.n_iter_ == 150 or case == "early stopping"


@pytest.mark.bit_identity
@pytest.mark.parametrize("params", [
    {"task_labels": "shared"},
    {"task_labels": "per_task"},
    {"support_per": "task", "n_support": 3},
], ids=["shared", "per_task", "unstratified"])
def test_compiled_loop_is_the_python_loop_for_classification(params, monkeypatch):
    X, y, g = classification_data(n_tasks=10)
    est, runs = _both(lambda: small_classifier(max_iter=60, **params), X, y, groups=g,
                      monkeypatch=monkeypatch)
    assert runs and isinstance(est, MAMLClassifier)


@pytest.mark.bit_identity
def test_compiled_loop_with_given_splits_and_warm_start(monkeypatch):
    """4-tuple tasks (fixed support/query rows), then a warm-started second fit: Adam's step
    count and moments carry over the same way."""
    rng = np.random.default_rng(0)
    tasks = [(rng.normal(size=(3, 2)), rng.normal(size=3), rng.normal(size=(4, 2)),
              rng.normal(size=4)) for _ in range(9)]

    def factory():
        return MAMLRegressor(hidden_layer_sizes=(5,), meta_batch_size=2, max_iter=40,
                             warm_start=True, random_state=3)

    fitted = {}
    for compiled in (True, False):
        est = factory()
        for _ in range(2):
            est, error, _ = _fit(est, tasks, compiled=compiled, monkeypatch=monkeypatch)
            assert error is None
        fitted[compiled] = est
    _assert_same_model(fitted[True], fitted[False])
    assert fitted[True]._optimizer.t == 80


@pytest.mark.bit_identity
@pytest.mark.parametrize("meta_lr", [30.0, 1e200], ids=["exploded", "not_finite"])
def test_compiled_loop_diverges_as_the_python_loop(meta_lr, monkeypatch):
    """A run that diverges (at meta-iteration 2, the first of a compiled run: the query loss
    explodes, or overflows) stops at the same meta-iteration with the same message and keeps
    the same last finite parameters."""
    X, y, g = regression_data(n_tasks=14, n_samples=9)
    est, runs = _both(lambda: small_regressor(max_iter=100, activation="relu",
                                              meta_optimizer="sgd", meta_lr=meta_lr),
                      X, y, groups=g, monkeypatch=monkeypatch)
    assert est.stop_reason_ == "diverged" and est.n_iter_ == 1 and runs
    assert all(np.isfinite(W).all() for W in est.coefs_ + est.intercepts_)


@pytest.mark.bit_identity
def test_batches_too_big_for_one_call_leave_the_compiled_loop(monkeypatch):
    """A batch that would be cut into chunks stops the compiled run before it is computed; it and
    every later batch run from Python (chunks on threads with n_jobs), with the same bits."""
    X, y, g = regression_data(n_tasks=12, n_samples=10)
    monkeypatch.setattr(base, "MAX_ONE_CHUNK_FLOPS", 10.0)  # so that these batches are "big"
    monkeypatch.setattr("skmaml._parallel.MAX_ONE_CHUNK_FLOPS", 10.0)
    monkeypatch.setattr("skmaml._parallel.MIN_CHUNK_FLOPS", 5.0)
    est, runs = _both(lambda: small_regressor(max_iter=20), X, y, groups=g,
                      monkeypatch=monkeypatch)
    assert len(runs) == 1  # tried once (from the second batch), then never again
    threaded, _, _ = _fit(small_regressor(max_iter=20, n_jobs=2), X, y, groups=g, compiled=True,
                          monkeypatch=monkeypatch)
    _assert_same_model(threaded, est)


@pytest.mark.parametrize("meta_lr", [0.01, 1e200], ids=["training", "diverging"])
def test_ctrl_c_during_a_compiled_run(meta_lr, monkeypatch):
    """A KeyboardInterrupt that Python raises as a compiled run returns (a Ctrl-C during it):
    the run's iterations are all accounted for (``n_iter_``, ``loss_curve_``, Adam's step count
    agree with the parameters), a divergence in that run is still reported, and the model is
    finite."""
    calls = []
    interrupt_at = 2 if meta_lr < 1 else 1  # the run that diverges, for the diverging fit

    def interrupted(*args):
        result = meta_train_run(*args)
        calls.append(result)
        if len(calls) == interrupt_at:
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(base, "meta_train_run", interrupted)
    X, y, g = regression_data(n_tasks=40, n_samples=9)
    est = small_regressor(max_iter=500, meta_optimizer="adam" if meta_lr < 1 else "sgd",
                          meta_lr=meta_lr)
    if meta_lr < 1:
        with pytest.warns(UserWarning, match="interrupted"):
            est.fit(X, y, groups=g)
        # The first batch ran from Python, then two compiled runs (of an epoch of 10 batches).
        assert est.n_iter_ == len(est.loss_curve_) == 1 + calls[0][0] + calls[1][0] == 20
        assert est._optimizer.t == est.n_iter_
        monkeypatch.setattr(base, "meta_train_run", meta_train_run)
        reference, _, _ = _fit(small_regressor(max_iter=20, meta_lr=meta_lr), X, y, groups=g,
                               compiled=True, monkeypatch=monkeypatch)
        assert reference.loss_curve_ == est.loss_curve_  # the same 20 meta-iterations
        for a, b in zip(reference.coefs_, est.coefs_):
            np.testing.assert_array_equal(a, b)
    else:
        with pytest.raises(ValueError, match="diverged at meta-iteration 2"):
            est.fit(X, y, groups=g)  # the divergence, not the interrupt, and θ restored
        assert calls[0][1] != 0
    assert all(np.isfinite(W).all() for W in est.coefs_ + est.intercepts_)


def test_run_statuses():
    """The kernel's own account of a run: done, a bad loss (its loss recorded, no update), a
    batch too big (nothing computed), an update that overflows (counted as done)."""
    est = small_regressor(max_iter=1).fit(*regression_data(n_tasks=6, n_samples=9))
    params, layer_sizes = est._theta()
    X, y, g = regression_data(n_tasks=6, n_samples=9)
    task_set = est._prepare_fit(X, y, g)[1]
    Y = task_set.targets
    order = np.arange(6, dtype=np.int64)
    seeds = np.arange(6, dtype=np.int64)
    rule = est._layout(layer_sizes).kernel_rule(params, est.inner_lr)[1]
    activation = ACTIVATION_CODES[est.activation]

    def run(limit, max_flops, n_batches=3, optimizer=ADAM, learning_rate=0.01):
        p = params.copy()
        losses = np.full(4, np.nan)
        m, v = np.zeros_like(p), np.zeros_like(p)
        outcome = np.full(2, -1, dtype=np.int64)
        n_done, status = meta_train_run(
            p, p.copy(), np.empty_like(p), np.empty(2, p.dtype), p.shape[0], layer_sizes,
            activation, rule, 1, True, task_set.X, Y, task_set.offsets, task_set.fixed_support,
            task_set.support_sizes, 3, REGRESSION_EPISODES, 0, False, order, seeds, 0, 2,
            n_batches, optimizer, m, v, 0, learning_rate, 0.9, 0.999, 1e-8, limit, 1.0, 1.0,
            max_flops, losses, outcome)
        assert outcome.tolist() == [n_done, status]  # what a Ctrl-C during the run leaves
        return n_done, status, losses, p

    n_done, status, losses, p = run(np.inf, np.inf)
    assert (n_done, status) == (3, RUN_DONE) and np.isfinite(losses[:3]).all()
    assert not np.array_equal(p, params)
    n_done, status, losses, p = run(-1.0, np.inf)
    assert (n_done, status) == (0, RUN_BAD_LOSS) and np.isfinite(losses[0])
    np.testing.assert_array_equal(p, params)
    n_done, status, losses, p = run(np.inf, 0.0)
    assert (n_done, status) == (0, RUN_CHUNKED) and np.isnan(losses[0])
    n_done, status, losses, p = run(np.inf, np.inf, optimizer=SGD, learning_rate=np.inf)
    assert (n_done, status) == (1, RUN_BAD_UPDATE) and np.isfinite(losses[0])
    assert not np.isfinite(p).all()


def test_progress_ticks_at_each_multiple_crossed(monkeypatch):
    """A run of several meta-iterations reports as the single ones would: whenever it passes a
    multiple of ``CHECK_EVERY``."""
    shown = []
    monkeypatch.setattr(Progress, "update", lambda self, n_done, *args: shown.append(n_done))
    progress = Progress(1000, verbose=0)
    progress.enabled = True
    for n_done, n_new in ((63, 63), (127, 64), (130, 3), (190, 60), (192, 2), (200, 8)):
        progress.tick(n_done, 1.0, None, n_new)
    assert shown == [127, 130, 192]
    # One at a time, as the Python loop ticks: at the multiples themselves.
    shown.clear()
    for n_done in range(1, 200):
        progress.tick(n_done, 1.0, None)
    assert shown == [64, 128, 192]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_finite_finds_any_non_finite_entry(dtype):
    """The divergence checks' all_finite (a reduction with no early exit) sees a NaN or an
    infinity wherever it is, and is True for finite values, the largest ones included."""
    from skmaml._kernels._numeric import all_finite

    values = np.random.default_rng(0).standard_normal(1761).astype(dtype)
    values[7] = np.finfo(dtype).max
    values[8] = -np.finfo(dtype).max
    values[9] = np.finfo(dtype).smallest_subnormal
    assert all_finite(values) and all_finite(values[:0])
    for position in (0, 1, 17, 1000, 1760):
        for bad in (np.nan, np.inf, -np.inf):
            spoiled = values.copy()
            spoiled[position] = bad
            assert not all_finite(spoiled)
