"""Behaviour of the estimators: the meta-update, the training loop's bookkeeping (convergence,
warm start, early stopping, interruption, divergence), dtypes, adaptation, the two classifier label
regimes, few-shot scoring, verbosity, and an end-to-end comparison on the paper's sinusoid tasks.

Every fit is small (a few features, a hidden layer of a few units, a handful of meta-iterations),
except the end-to-end test, which is budgeted at a few seconds.
"""

import copy
import importlib
import itertools
import time
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPRegressor
from sklearn.utils import check_random_state

from skmaml import FewShotScorer, MAMLClassifier, MAMLRegressor
from skmaml._base import BaseMAML, _epoch_order
from skmaml._kernels._config import ACTIVATION_CODES
from skmaml._kernels._maml import meta_batch_grad
from skmaml._kernels._rules import plain_rule
from skmaml._params import init_theta, layer_sizes_array, pack, unpack
from skmaml.datasets import _flatten as _flat
from skmaml.datasets import make_sinusoid_tasks

# -------------------------------------------------------------------------------------------------
# Helpers
# -------------------------------------------------------------------------------------------------


def _small_regressor(**params):
    defaults = dict(hidden_layer_sizes=(8,), activation="tanh", inner_lr=0.05, n_inner_steps=1,
                    meta_lr=0.01, meta_batch_size=4, n_support=5, max_iter=6, random_state=0)
    defaults.update(params)
    return MAMLRegressor(**defaults)


def _sinusoids(n_tasks=10, n_samples=15, random_state=0):
    return make_sinusoid_tasks(n_tasks=n_tasks, n_samples=n_samples, random_state=random_state)


def _fixed_tasks(n_tasks, n_features=2, n_s=5, n_q=7, random_state=0):
    """4-tuple regression tasks (fixed support/query: no randomness in the episodes)."""
    rng = np.random.RandomState(random_state)
    tasks = []
    for _ in range(n_tasks):
        w = rng.normal(size=n_features)
        Xs, Xq = rng.normal(size=(n_s, n_features)), rng.normal(size=(n_q, n_features))
        tasks.append((Xs, Xs @ w + 0.1 * rng.normal(size=n_s), Xq, Xq @ w))
    return tasks


def _reference_sgd_step(theta0, layer_sizes, activation, tasks, inner_lr, n_steps, first_order,
                        meta_lr):
    """θ0 − β·g and the mean query loss, g the kernel's mean meta-gradient over the 4-tuple tasks
    in index order: the order in which the estimator hands a meta-batch's tasks to the kernel
    (``skmaml._base._epoch_order``), so the same arrays reach the same kernel in the same order."""
    Xs = np.ascontiguousarray(np.concatenate([t[0] for t in tasks]))
    ys = np.ascontiguousarray(np.concatenate([t[1] for t in tasks]).reshape(-1, 1))
    Xq = np.ascontiguousarray(np.concatenate([t[2] for t in tasks]))
    yq = np.ascontiguousarray(np.concatenate([t[3] for t in tasks]).reshape(-1, 1))
    s_off = np.concatenate([[0], np.cumsum([t[0].shape[0] for t in tasks])]).astype(np.int64)
    q_off = np.concatenate([[0], np.cumsum([t[2].shape[0] for t in tasks])]).astype(np.int64)
    grad = np.empty_like(theta0)
    losses = np.empty(len(tasks), dtype=theta0.dtype)
    loss = meta_batch_grad(theta0, layer_sizes, ACTIVATION_CODES[activation], Xs, ys, s_off,
                           Xq, yq, q_off, plain_rule(inner_lr, theta0.dtype), n_steps, first_order,
                           grad, losses)
    return theta0 - theta0.dtype.type(meta_lr) * grad, loss


def _theta_of(est):
    return pack(est.coefs_, est.intercepts_, est.coefs_[0].dtype)


def _assert_same_params(a, b):
    assert len(a.coefs_) == len(b.coefs_)
    for W1, W2 in zip(a.coefs_, b.coefs_):
        np.testing.assert_array_equal(W1, W2)
    for b1, b2 in zip(a.intercepts_, b.intercepts_):
        np.testing.assert_array_equal(b1, b2)


def _all_finite(est):
    return all(np.isfinite(W).all() for W in est.coefs_ + est.intercepts_)


def _patch_meta_batch_grad(monkeypatch, make_wrapper):
    """Wrap the meta-gradient kernel where the training loop calls it (``skmaml._base`` or, since
    n_jobs, ``skmaml._parallel``): it becomes ``make_wrapper(current)``, so patches stack. The
    problems in this file are small enough to be one chunk, so one call is one meta-iteration.
    The meta-iterations run from Python (the compiled runs of ``skmaml._base`` call the kernel
    from compiled code, which no patch reaches; tests/test_training_loop.py holds them to the
    same bits)."""
    monkeypatch.setattr("skmaml._base._COMPILED_LOOP", False)
    patched = []
    for name in ("skmaml._base", "skmaml._parallel"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        current = getattr(module, "meta_batch_grad", None)
        if current is not None:
            monkeypatch.setattr(module, "meta_batch_grad", make_wrapper(current))
            patched.append(name)
    assert patched, "meta_batch_grad is not called from skmaml._base or skmaml._parallel"


@pytest.fixture
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


# -------------------------------------------------------------------------------------------------
# The meta-update
# -------------------------------------------------------------------------------------------------


@pytest.mark.bit_identity
@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("hidden", [(), (6,), (5, 4)])
def test_sgd_is_exactly_theta_minus_beta_mean_meta_gradient(hidden, first_order):
    """meta_optimizer="sgd": one meta-iteration over all (fixed) tasks is θ0 − β·g, bit for bit,
    starting from coefs_/intercepts_ set by hand on an unfitted estimator (warm_start)."""
    tasks = _fixed_tasks(3)
    activation, inner_lr, n_steps, meta_lr = "tanh", 0.1, 2, 0.05
    layer_sizes = layer_sizes_array(2, hidden, 1)
    theta0 = init_theta(layer_sizes, activation, np.random.RandomState(7), np.float64)
    est = MAMLRegressor(hidden, activation, inner_lr=inner_lr, n_inner_steps=n_steps,
                        meta_lr=meta_lr, meta_optimizer="sgd", first_order=first_order,
                        meta_batch_size=3, n_support=5, max_iter=1, warm_start=True,
                        normalize_y=False, random_state=0)
    est.coefs_, est.intercepts_ = unpack(theta0, layer_sizes)
    with pytest.warns(ConvergenceWarning):
        est.fit(tasks)

    theta1 = _theta_of(est)
    assert theta1.dtype == np.float64
    assert not np.array_equal(theta1, theta0)
    expected, loss = _reference_sgd_step(theta0, layer_sizes, activation, tasks, inner_lr,
                                         n_steps, first_order, meta_lr)
    np.testing.assert_array_equal(theta1, expected)
    assert est.loss_curve_ == [loss]
    assert est.n_iter_ == 1 and len(est.loss_curve_) == 1


@pytest.mark.bit_identity
@pytest.mark.parametrize("weight_init", [None, "uniform_fan_in", "glorot_uniform"])
def test_sgd_first_step_from_default_initialisation(weight_init):
    """Without warm start, θ0 is drawn from random_state by skmaml._params.init_theta with the
    chosen weight_init (default "uniform_fan_in"), and the first update is exactly θ0 − β·g."""
    tasks = _fixed_tasks(2)
    hidden, activation = (6,), "relu"
    params = {} if weight_init is None else {"weight_init": weight_init}
    est = MAMLRegressor(hidden, activation, inner_lr=0.05, n_inner_steps=1, meta_lr=0.1,
                        meta_optimizer="sgd", meta_batch_size=2, n_support=5, max_iter=1,
                        normalize_y=False, random_state=3, **params)
    with pytest.warns(ConvergenceWarning):
        est.fit(tasks)
    layer_sizes = layer_sizes_array(2, hidden, 1)
    theta0 = init_theta(layer_sizes, activation, check_random_state(3), np.float64,
                        weight_init or "uniform_fan_in")
    expected, loss = _reference_sgd_step(theta0, layer_sizes, activation, tasks, 0.05, 1, False,
                                         0.1)
    np.testing.assert_array_equal(_theta_of(est), expected)
    assert est.loss_curve_ == [loss]


@pytest.mark.parametrize("activation", ["relu", "logistic"])
def test_weight_init_bounds(activation):
    """uniform_fan_in: U(±1/√fan_in) for weights and biases (PyTorch's nn.Linear); glorot_uniform:
    MLPRegressor's U(±√(f / (fan_in + fan_out))), f = 2 for logistic, else 6."""
    layer_sizes = layer_sizes_array(3, (400,), 2)
    for weight_init, bounds in (("uniform_fan_in", [1 / np.sqrt(3), 1 / np.sqrt(400)]),
                                ("glorot_uniform", [np.sqrt((2 if activation == "logistic" else 6)
                                                            / (a + b)) for a, b in
                                                    ((3, 400), (400, 2))])):
        theta = init_theta(layer_sizes, activation, np.random.RandomState(0), np.float64,
                           weight_init)
        coefs, intercepts = unpack(theta, layer_sizes)
        for W, b, bound in zip(coefs, intercepts, bounds):
            for values in (W, b):
                assert np.abs(values).max() <= bound
                if values.size >= 100:
                    assert np.abs(values).max() > 0.9 * bound  # the full range is used
    with pytest.raises(ValueError, match="weight_init"):
        MAMLRegressor(weight_init="zeros").fit(_sinusoids())


# -------------------------------------------------------------------------------------------------
# Iterations, convergence
# -------------------------------------------------------------------------------------------------


def test_loss_curve_and_n_iter_when_not_converged():
    est = _small_regressor(max_iter=7, tol=0.0)
    with pytest.warns(ConvergenceWarning, match="Maximum meta-iterations"):
        est.fit(_sinusoids())
    assert est.n_iter_ == 7
    assert len(est.loss_curve_) == 7
    assert all(isinstance(v, float) and np.isfinite(v) for v in est.loss_curve_)
    assert np.isfinite(est.best_loss_)
    assert est.validation_scores_ is None and est.best_validation_score_ is None


def test_convergence_stops_early_with_large_tol():
    # 10 tasks, 5 per meta-batch: 2 meta-iterations per pass, so a check of the training loss
    # spans 25 passes (CHECK_MIN_ITERATIONS = 50 meta-iterations). With tol huge no window of
    # checks improves on the one before, so training stops after 2 * n_iter_no_change checks.
    est = _small_regressor(max_iter=1000, meta_batch_size=5, tol=1e6, n_iter_no_change=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est.fit(_sinusoids(n_tasks=10))
    assert est.n_iter_ == 2 * 2 * 50
    assert est.stop_reason_ == "loss_plateau"
    assert len(est.loss_curve_) == est.n_iter_
    epoch_means = np.asarray(est.loss_curve_).reshape(-1, 2).mean(axis=1)
    assert est.best_loss_ == pytest.approx(epoch_means.min(), rel=1e-12)


def test_no_convergence_warning_when_converging_exactly_at_max_iter():
    tasks = _sinusoids(n_tasks=10)
    params = dict(meta_batch_size=5, tol=1e6, n_iter_no_change=2)
    n_converged = _small_regressor(max_iter=1000, **params).fit(tasks).n_iter_
    est = _small_regressor(max_iter=n_converged, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est.fit(tasks)


# -------------------------------------------------------------------------------------------------
# warm_start
# -------------------------------------------------------------------------------------------------


@pytest.mark.bit_identity
@pytest.mark.parametrize("meta_optimizer", ["sgd", "adam"])
def test_warm_start_continues_training(meta_optimizer, quiet):
    """What warm_start promises: the next fit starts from the current θ and optimiser state (Adam's
    moments and step count) and continues the history; its random stream restarts from
    random_state. With fixed (4-tuple) tasks in one full meta-batch nothing is random, and every
    meta-iteration hands the same tasks to the kernel in the same (index) order whatever order
    the epoch drew them in, so 3 + 2 warm-started meta-iterations are exactly 5 in one go."""
    tasks = _fixed_tasks(3)
    params = dict(meta_optimizer=meta_optimizer, meta_batch_size=3, meta_lr=0.05)
    full = _small_regressor(max_iter=5, **params).fit(tasks)
    warm = _small_regressor(max_iter=3, warm_start=True, **params).fit(tasks)
    coefs_after_3 = [W.copy() for W in warm.coefs_]
    warm.set_params(max_iter=2)
    warm.fit(tasks)
    assert warm.n_iter_ == 5
    assert len(warm.loss_curve_) == 5
    np.testing.assert_array_equal(warm.loss_curve_, full.loss_curve_)
    _assert_same_params(warm, full)
    assert not np.array_equal(coefs_after_3[0], warm.coefs_[0])


@pytest.mark.parametrize("meta_optimizer", ["sgd", "adam"])
def test_warm_start_keeps_the_optimiser_state(meta_optimizer, quiet):
    """A warm-started fit is not a fit from θ alone: Adam's moments and step count carry over
    (SGD has none), so restarting from the same θ with a fresh optimiser differs for Adam only."""
    tasks = _fixed_tasks(3)
    params = dict(meta_optimizer=meta_optimizer, meta_batch_size=3, meta_lr=0.05)
    warm = _small_regressor(max_iter=3, warm_start=True, **params).fit(tasks)
    fresh_state = _small_regressor(max_iter=2, warm_start=True, **params)
    fresh_state.coefs_ = [W.copy() for W in warm.coefs_]
    fresh_state.intercepts_ = [b.copy() for b in warm.intercepts_]
    warm.set_params(max_iter=2).fit(tasks)
    fresh_state.fit(tasks)
    same = np.array_equal(_theta_of(warm), _theta_of(fresh_state))
    assert same == (meta_optimizer == "sgd")


@pytest.mark.bit_identity
def test_warm_start_from_user_set_coefs_on_fitted_estimator(quiet):
    tasks = _fixed_tasks(2)
    est = _small_regressor(meta_optimizer="sgd", meta_batch_size=2, meta_lr=0.05, max_iter=2,
                           n_inner_steps=2, normalize_y=False).fit(tasks)
    layer_sizes = layer_sizes_array(2, (8,), 1)
    theta_user = init_theta(layer_sizes, "tanh", np.random.RandomState(11), np.float64)
    est.coefs_, est.intercepts_ = unpack(theta_user, layer_sizes)
    est.set_params(warm_start=True, max_iter=1)
    est.fit(tasks)
    expected, _ = _reference_sgd_step(theta_user, layer_sizes, "tanh", tasks, 0.05, 2, False,
                                      0.05)
    np.testing.assert_array_equal(_theta_of(est), expected)
    assert est.n_iter_ == 3  # history continues


@pytest.mark.bit_identity
def test_no_warm_start_restarts(quiet):
    tasks = _sinusoids()
    fresh = _small_regressor(max_iter=4).fit(tasks)
    est = _small_regressor(max_iter=4)
    est.fit(tasks)
    est.fit(tasks)
    assert est.n_iter_ == 4 and len(est.loss_curve_) == 4
    _assert_same_params(est, fresh)
    assert est.loss_curve_ == fresh.loss_curve_


@pytest.mark.parametrize("first, second", [(np.float64, np.float32), (np.float32, np.float64)])
def test_warm_start_follows_the_new_data_dtype(first, second, quiet):
    tasks = _sinusoids()
    est = _small_regressor(max_iter=2, warm_start=True)
    est.fit([(X.astype(first), y.astype(first)) for X, y in tasks])
    est.fit([(X.astype(second), y.astype(second)) for X, y in tasks])
    assert est.n_iter_ == 4
    assert all(W.dtype == second for W in est.coefs_ + est.intercepts_)
    assert est.predict(tasks[0][0].astype(second)).dtype == second


def test_warm_start_with_wrong_shapes_raises(quiet):
    est = _small_regressor(max_iter=2).fit(_sinusoids())
    est.set_params(warm_start=True, hidden_layer_sizes=(5,))
    with pytest.raises(ValueError, match="do not match"):
        est.fit(_sinusoids())


# -------------------------------------------------------------------------------------------------
# Early stopping
# -------------------------------------------------------------------------------------------------


class _Spy:
    """Records every validation scoring (θ, tasks, score) and every training meta-batch."""

    def __init__(self, monkeypatch):
        self.validations = []
        self.train_rows = []
        original_score = BaseMAML._few_shot_score_theta

        def score(est, theta, layer_sizes, activation, task_set, *args, **kwargs):
            value = original_score(est, theta, layer_sizes, activation, task_set, *args, **kwargs)
            self.validations.append((theta.copy(), task_set, value))
            return value

        def make_grad(original_grad):
            def grad(theta, layer_sizes, activation, Xs, ys, s_off, Xq, yq, *rest):
                self.train_rows.append(np.concatenate([Xs, Xq]).copy())
                return original_grad(theta, layer_sizes, activation, Xs, ys, s_off, Xq, yq,
                                     *rest)
            return grad

        monkeypatch.setattr(BaseMAML, "_few_shot_score_theta", score)
        _patch_meta_batch_grad(monkeypatch, make_grad)


def _early_stopping_regressor(**params):
    defaults = dict(early_stopping=True, validation_fraction=0.25, meta_lr=0.05,
                    meta_batch_size=4, max_iter=40, n_iter_no_change=100, tol=0.0)
    defaults.update(params)
    return _small_regressor(**defaults)


def test_early_stopping_restores_best_theta(monkeypatch, quiet):
    tasks = _sinusoids(n_tasks=12)
    spy = _Spy(monkeypatch)
    est = _early_stopping_regressor().fit(tasks)

    # 12 tasks, 3 held out; scored once per pass over the 9 others (3 meta-iterations).
    assert len(est.validation_scores_) == len(spy.validations) == 40 // 3 + 1
    assert est.validation_scores_ == [v[2] for v in spy.validations]
    assert est.best_validation_score_ == max(est.validation_scores_)
    assert est.best_loss_ is None
    best = int(np.argmax(est.validation_scores_))
    assert best != len(est.validation_scores_) - 1, "make the test exercise the restore"
    np.testing.assert_array_equal(_theta_of(est), spy.validations[best][0])

    # The held-out tasks never reach a meta-batch.
    valid_set = spy.validations[0][1]
    assert valid_set.n_tasks == 3
    train_rows = np.concatenate(spy.train_rows)
    assert not np.isin(valid_set.X[:, 0], train_rows[:, 0]).any()

    # Re-scoring the held-out tasks with the final (restored) θ gives the best score.
    monkeypatch.undo()
    groups = np.repeat(np.arange(valid_set.n_tasks), valid_set.sizes())
    assert est.score(valid_set.X, valid_set.y, groups=groups) == est.best_validation_score_


def test_early_stopping_stops(quiet):
    est = _early_stopping_regressor(max_iter=1000, tol=1e6, n_iter_no_change=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est.fit(_sinusoids(n_tasks=12))
    assert est.n_iter_ < 1000
    assert len(est.validation_scores_) <= 2 + 2


def test_early_stopping_needs_two_tasks():
    with pytest.raises(ValueError, match="at least 2 tasks"):
        _early_stopping_regressor().fit(_sinusoids(n_tasks=1))


@pytest.mark.parametrize("form", ["list", "flat"])
def test_early_stopping_on_given_validation_tasks(monkeypatch, form, quiet):
    """X_val: every training task trains, the given tasks validate, the best θ is restored,
    and its validation score is the few-shot score of those tasks."""
    tasks, valid_tasks = _sinusoids(n_tasks=8), _sinusoids(n_tasks=4, random_state=9)
    spy = _Spy(monkeypatch)
    Xv, yv, gv = _flat(valid_tasks)
    val = {"X_val": valid_tasks} if form == "list" else {"X_val": Xv, "y_val": yv,
                                                          "groups_val": gv}
    est = _early_stopping_regressor(meta_batch_size=4).fit(tasks, **val)
    assert len(est.validation_scores_) == 40 // 2
    train_rows = np.concatenate(spy.train_rows)
    assert np.isin(np.concatenate([t[0][:, 0] for t in tasks]), train_rows[:, 0]).all()
    assert not np.isin(Xv[:, 0], train_rows[:, 0]).any()
    best = int(np.argmax(est.validation_scores_))
    np.testing.assert_array_equal(_theta_of(est), spy.validations[best][0])
    monkeypatch.undo()
    assert est.score(Xv, yv, groups=gv) == est.best_validation_score_


def test_given_validation_tasks_need_early_stopping_and_matching_columns(quiet):
    tasks = _sinusoids(n_tasks=4)
    with pytest.raises(ValueError, match="early_stopping=False"):
        _small_regressor().fit(tasks, X_val=tasks)
    with pytest.raises(ValueError, match="X_val has 2 features, but the training tasks have 1"):
        _early_stopping_regressor().fit(tasks, X_val=[(np.ones((9, 2)), np.ones(9))])
    with pytest.raises(ValueError, match="groups_val"):
        _early_stopping_regressor().fit(tasks, X_val=tasks[0][0], y_val=tasks[0][1])
    pd = pytest.importorskip("pandas")
    frames = [(pd.DataFrame({"a": X[:, 0], "b": -X[:, 0]}), y) for X, y in tasks]
    swapped = [(X[["b", "a"]], y) for X, y in frames]
    with pytest.raises(ValueError, match="X_val task 0: X: .*feature names"):
        _early_stopping_regressor().fit(frames, X_val=swapped)


def _class_combination_tasks(classes, n_way=3, per_class=12, random_state=0):
    rng = np.random.RandomState(random_state)
    X, y = load_digits(return_X_y=True)
    tasks = []
    for combo in itertools.combinations(classes, n_way):
        rows = np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False)
                               for c in combo])
        tasks.append((X[rows] / 16.0, y[rows]))
    return tasks


def test_per_task_early_stopping_holds_out_classes(monkeypatch):
    """task_labels='per_task': validation tasks are made only of held-out classes, and no
    training task holds one; tasks mixing both are left out, with a warning."""
    tasks = _class_combination_tasks(range(7))
    spy = _Spy(monkeypatch)
    clf = MAMLClassifier(hidden_layer_sizes=(8,), task_labels="per_task", n_support=2,
                         inner_lr=0.3, max_iter=10, meta_batch_size=4, early_stopping=True,
                         validation_fraction=0.3, random_state=0)
    with pytest.warns(UserWarning, match=r"holds out classes \[.*\]: 1 task made only of "
                                         r"them validate, 4 without them train, and 30"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(tasks)
    valid_set = spy.validations[0][1]
    held = set(np.unique(valid_set.y).tolist())
    assert len(held) == 3
    X_all = np.concatenate([t[0] for t in tasks])
    y_all = np.concatenate([t[1] for t in tasks])
    train_rows = np.concatenate(spy.train_rows)
    # Training rows (found by their pixels) are of the other four classes only.
    trained = {int(y_all[np.flatnonzero((X_all == row).all(axis=1))[0]]) for row in train_rows}
    assert trained.isdisjoint(held) and len(trained) == 4


def test_per_task_early_stopping_needs_enough_classes():
    with pytest.raises(ValueError, match="fewer than n_way=3 for training.*X_val"):
        MAMLClassifier(task_labels="per_task", early_stopping=True, n_support=2,
                       max_iter=2).fit(_class_combination_tasks(range(5)))


# -------------------------------------------------------------------------------------------------
# Ctrl-C
# -------------------------------------------------------------------------------------------------


def _interrupt_on_call(monkeypatch, k):
    calls = {"n": 0}

    def make_wrapper(original):
        def wrapper(*args):
            calls["n"] += 1
            if calls["n"] == k:
                raise KeyboardInterrupt
            return original(*args)
        return wrapper

    _patch_meta_batch_grad(monkeypatch, make_wrapper)


@pytest.mark.parametrize("k", [1, 5])
def test_keyboard_interrupt_keeps_finite_theta(monkeypatch, k):
    _interrupt_on_call(monkeypatch, k)
    est = _small_regressor(max_iter=50)
    with pytest.warns(UserWarning, match="interrupted"):
        est.fit(_sinusoids())
    assert est.n_iter_ == k - 1
    assert len(est.loss_curve_) == k - 1
    assert _all_finite(est)
    assert np.isfinite(est.predict(_sinusoids()[0][0])).all()


def test_keyboard_interrupt_with_early_stopping_keeps_best(monkeypatch):
    tasks = _sinusoids(n_tasks=12)
    spy = _Spy(monkeypatch)
    _interrupt_on_call(monkeypatch, 12)  # after 11 meta-iterations: 3 full passes and a partial
    est = _early_stopping_regressor(max_iter=1000)
    with pytest.warns(UserWarning, match="interrupted"):
        est.fit(tasks)
    assert est.n_iter_ == 11
    assert est.validation_scores_
    assert est.best_validation_score_ == max(est.validation_scores_)
    best = int(np.argmax(est.validation_scores_))
    np.testing.assert_array_equal(_theta_of(est), spy.validations[best][0])
    assert _all_finite(est)


# -------------------------------------------------------------------------------------------------
# Divergence
# -------------------------------------------------------------------------------------------------


def test_divergence_huge_inner_lr():
    tasks = _sinusoids()
    est = _small_regressor(inner_lr=1e6, n_inner_steps=3, hidden_layer_sizes=(16, 16),
                           activation="relu")
    with pytest.raises(ValueError, match="diverged"):
        est.fit(tasks)
    assert _all_finite(est)
    assert np.isfinite(est.predict(tasks[0][0])).all()


def test_divergence_keeps_last_finite_theta(monkeypatch):
    """Iteration 4's query loss is not finite, so its starting θ is not a usable model either:
    coefs_ is the last θ whose query loss was finite, the one iteration 3 started from."""
    thetas = []

    def make_wrapper(original):
        def wrapper(theta, *args):
            thetas.append(theta.copy())
            loss = original(theta, *args)
            return np.nan if len(thetas) == 4 else loss
        return wrapper

    _patch_meta_batch_grad(monkeypatch, make_wrapper)
    est = _small_regressor(max_iter=10)
    with pytest.raises(ValueError, match="diverged at meta-iteration 4"):
        est.fit(_sinusoids())
    np.testing.assert_array_equal(_theta_of(est), thetas[2])
    assert est.n_iter_ == 3


@pytest.mark.parametrize("max_iter", [1, 3])
def test_divergence_huge_meta_lr_never_gives_nan_predictions(max_iter):
    tasks = _sinusoids()
    est = _small_regressor(activation="relu", meta_optimizer="sgd", meta_lr=1e200,
                           max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            est.fit(tasks)
        except ValueError as exc:
            assert "diverged" in str(exc)
    assert np.isfinite(est.predict(tasks[0][0])).all()


def test_adapt_divergence_raises(quiet):
    tasks = _sinusoids()
    est = _small_regressor(meta_optimizer="sgd", max_iter=2).fit(tasks)
    X, y = tasks[0]
    est.set_params(inner_lr=1e300)
    with pytest.raises(ValueError, match="diverged"):
        est.adapt(X * 1e3, y * 1e3, n_inner_steps=5)


# -------------------------------------------------------------------------------------------------
# dtypes
# -------------------------------------------------------------------------------------------------


@pytest.mark.bit_identity
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(dtype, quiet):
    tasks = [(X.astype(dtype), y.astype(dtype)) for X, y in _sinusoids()]
    est = _small_regressor().fit(tasks)
    assert all(W.dtype == dtype for W in est.coefs_ + est.intercepts_)
    X = tasks[0][0]
    assert est.predict(X).dtype == dtype
    model = est.adapt(X[:5], tasks[0][1][:5])
    assert all(W.dtype == dtype for W in model.coefs_ + model.intercepts_)
    assert model.predict(X).dtype == dtype
    assert np.isfinite(est.loss_curve_).all()

    X_flat, y_flat, groups = _flat(tasks)
    flat = _small_regressor().fit(X_flat, y_flat, groups=groups)
    assert flat.coefs_[0].dtype == dtype
    _assert_same_params(flat, est)


def test_mixed_float32_float64_tasks_give_float64(quiet):
    tasks = _sinusoids()
    tasks[0] = (tasks[0][0].astype(np.float32), tasks[0][1])
    est = _small_regressor().fit(tasks)
    assert est.coefs_[0].dtype == np.float64


@pytest.mark.bit_identity
def test_flat_and_list_forms_give_identical_models(quiet):
    tasks = _sinusoids()
    a = _small_regressor().fit(tasks)
    b = _small_regressor().fit(*_flat(tasks)[:2], groups=_flat(tasks)[2])
    _assert_same_params(a, b)
    assert a.loss_curve_ == b.loss_curve_


# -------------------------------------------------------------------------------------------------
# adapt
# -------------------------------------------------------------------------------------------------


def test_adapt_returns_copy_and_reduces_support_loss(quiet):
    tasks = _sinusoids()
    est = _small_regressor(max_iter=20, inner_lr=0.02).fit(tasks)
    coefs = [W.copy() for W in est.coefs_]
    intercepts = [b.copy() for b in est.intercepts_]
    loss_curve = list(est.loss_curve_)
    X, y = _sinusoids(n_tasks=1, random_state=5)[0]
    Xs, ys = X[:5], y[:5]

    model = est.adapt(Xs, ys, n_inner_steps=5)
    assert model is not est
    assert type(model) is type(est)
    for W, W0 in zip(est.coefs_ + est.intercepts_, coefs + intercepts):
        np.testing.assert_array_equal(W, W0)
    assert est.loss_curve_ == loss_curve
    assert not any(np.shares_memory(a, b) for a in model.coefs_ for b in est.coefs_)
    assert not np.array_equal(model.coefs_[0], est.coefs_[0])

    def support_mse(m):
        return np.mean((m.predict(Xs) - ys) ** 2)

    assert support_mse(model) < support_mse(est)

    # Changing the adapted model does not touch the estimator.
    model.coefs_[0][...] = 0.0
    model.loss_curve_.append(1.0)
    np.testing.assert_array_equal(est.coefs_[0], coefs[0])
    assert est.loss_curve_ == loss_curve


def test_adapt_zero_steps_predicts_like_original(quiet):
    tasks = _sinusoids()
    est = _small_regressor().fit(tasks)
    X, y = tasks[1]
    model = est.adapt(X[:5], y[:5], n_inner_steps=0)
    np.testing.assert_array_equal(model.predict(X), est.predict(X))


# -------------------------------------------------------------------------------------------------
# random_state, architecture
# -------------------------------------------------------------------------------------------------


@pytest.mark.bit_identity
def test_random_state_reproducible(quiet):
    tasks = _sinusoids()
    a = _small_regressor(random_state=1).fit(tasks)
    b = _small_regressor(random_state=1).fit(tasks)
    c = _small_regressor(random_state=2).fit(tasks)
    _assert_same_params(a, b)
    assert a.loss_curve_ == b.loss_curve_
    assert not np.array_equal(a.coefs_[0], c.coefs_[0])
    assert a.loss_curve_ != c.loss_curve_
    X, y, g = _flat(_sinusoids(n_tasks=3, random_state=9))
    assert a.score(X, y, groups=g) == b.score(X, y, groups=g)


@pytest.mark.bit_identity
def test_random_state_instance_and_clone(quiet):
    tasks = _sinusoids()
    a = _small_regressor(random_state=np.random.RandomState(4)).fit(tasks)
    b = _small_regressor(random_state=4).fit(tasks)
    _assert_same_params(a, b)
    c = clone(b).fit(tasks)
    _assert_same_params(b, c)


def test_hidden_layer_sizes_as_one_int(quiet):
    """As MLPRegressor: hidden_layer_sizes=8 is one hidden layer of 8 units."""
    est = _small_regressor(hidden_layer_sizes=8).fit(_sinusoids())
    assert [W.shape for W in est.coefs_] == [(1, 8), (8, 1)]
    for bad in (0, -3, (8, 0), 2.5):
        with pytest.raises(ValueError, match="hidden_layer_sizes"):
            _small_regressor(hidden_layer_sizes=bad).fit(_sinusoids())


def test_fewshotscorer_checks_its_integers():
    FewShotScorer(n_support=1, n_inner_steps=0)
    for kwargs, message in (({"n_support": 0}, "n_support must be a positive int"),
                            ({"n_inner_steps": -1}, "n_inner_steps must be a non-negative int"),
                            ({"n_support": True}, "n_support must be a positive int")):
        with pytest.raises(ValueError, match=message):
            FewShotScorer(**kwargs)


def test_empty_hidden_layers_regressor_is_linear(quiet):
    tasks = _sinusoids()
    est = _small_regressor(hidden_layer_sizes=(), normalize_y=False).fit(tasks)
    assert est.n_layers_ == 2
    assert len(est.coefs_) == 1 and est.coefs_[0].shape == (1, 1)
    X = tasks[0][0]
    np.testing.assert_allclose(est.predict(X), (X @ est.coefs_[0] + est.intercepts_[0])[:, 0],
                               rtol=1e-12)
    model = est.adapt(X[:5], tasks[0][1][:5])
    assert model.predict(X).shape == (X.shape[0],)


def test_empty_hidden_layers_classifier_is_multinomial_logistic(quiet):
    tasks = _label_tasks(["a", "b", "c"])
    clf = _small_classifier(hidden_layer_sizes=()).fit(tasks)
    X = tasks[0][0]
    logits = X @ clf.coefs_[0] + clf.intercepts_[0]
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(clf.predict_proba(X), expected, rtol=1e-10)


def test_multi_output_regression(quiet):
    rng = np.random.RandomState(0)
    tasks = []
    for _ in range(6):
        W = rng.normal(size=(3, 2))
        X = rng.normal(size=(12, 3))
        tasks.append((X, X @ W))
    est = _small_regressor().fit(tasks)
    assert est.n_outputs_ == 2
    assert est.predict(tasks[0][0]).shape == (12, 2)
    assert est.adapt(tasks[0][0][:5], tasks[0][1][:5]).predict(tasks[0][0]).shape == (12, 2)


# -------------------------------------------------------------------------------------------------
# Classifier
# -------------------------------------------------------------------------------------------------


def _small_classifier(**params):
    defaults = dict(hidden_layer_sizes=(8,), activation="tanh", inner_lr=0.3, n_inner_steps=1,
                    meta_lr=0.01, meta_batch_size=4, n_support=3, max_iter=6, random_state=0)
    defaults.update(params)
    return MAMLClassifier(**defaults)


def _label_tasks(labels, n_tasks=8, per_class=6, n_features=3, random_state=0):
    """Tasks holding 2 or 3 of ``labels`` each (labels mean the same in every task)."""
    rng = np.random.RandomState(random_state)
    centres = {label: rng.normal(scale=2.0, size=n_features) for label in labels}
    tasks = []
    for t in range(n_tasks):
        present = labels if t % 2 == 0 else rng.choice(labels, 2, replace=False)
        X = np.concatenate([centres[c] + rng.normal(size=(per_class, n_features))
                            for c in present])
        y = np.repeat(np.asarray(present), per_class)
        tasks.append((X, y))
    return tasks


@pytest.mark.parametrize("labels, unseen", [(["cat", "dog", "emu"], "fox"), ([3, 10, 42], 99)])
def test_classifier_shared_labels(labels, unseen, quiet):
    tasks = _label_tasks(labels)
    clf = _small_classifier().fit(tasks)
    np.testing.assert_array_equal(clf.classes_, np.sort(np.asarray(labels)))
    assert clf.n_outputs_ == 3
    X = np.concatenate([t[0] for t in tasks])
    proba = clf.predict_proba(X)
    assert proba.shape == (X.shape[0], 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert (proba >= 0).all()
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(proba), rtol=1e-10, atol=1e-12)
    assert set(clf.predict(X)) <= set(labels)

    # adapt on a task with two of the classes: the model keeps all classes
    Xs, ys = tasks[1]
    model = clf.adapt(Xs, ys)
    np.testing.assert_array_equal(model.classes_, clf.classes_)
    assert set(model.predict(X)) <= set(labels)

    bad_y = np.asarray(ys).copy()
    bad_y[0] = unseen
    with pytest.raises(ValueError, match=str(unseen)):
        clf.adapt(Xs, bad_y)


def _digit_tasks(classes, n_tasks, per_class, rng, X, y):
    tasks = []
    for _ in range(n_tasks):
        chosen = rng.choice(classes, 3, replace=False)
        rows = np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False)
                               for c in chosen])
        tasks.append((X[rows], y[rows]))
    return tasks


@pytest.fixture(scope="module")
def digits_per_task():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    rng = np.random.RandomState(0)
    train = _digit_tasks(np.arange(7), 100, 15, rng, X, y)  # meta-train classes 0..6
    test = _digit_tasks(np.array([7, 8, 9]), 20, 15, np.random.RandomState(1), X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MAMLClassifier(hidden_layer_sizes=(32,), task_labels="per_task", n_support=5,
                             inner_lr=0.3, n_inner_steps=5, meta_lr=0.001, meta_batch_size=10,
                             max_iter=300, random_state=0).fit(train)
    return clf, test


def test_classifier_per_task_unseen_classes(digits_per_task):
    clf, test = digits_per_task
    np.testing.assert_array_equal(clf.classes_, np.arange(3))
    assert clf.n_outputs_ == 3
    accuracies = []
    for X, y in test:
        support = np.concatenate([np.flatnonzero(y == c)[:5] for c in (7, 8, 9)])
        query = np.setdiff1d(np.arange(y.shape[0]), support)
        model = clf.adapt(X[support], y[support])
        np.testing.assert_array_equal(model.classes_, [7, 8, 9])
        predicted = model.predict(X[query])
        assert set(predicted) <= {7, 8, 9}
        accuracies.append(np.mean(predicted == y[query]))
        proba = model.predict_proba(X[query])
        assert proba.shape == (query.shape[0], 3)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(clf.classes_, np.arange(3))  # the estimator is unchanged
    print(f"per_task 3-way 5-shot accuracy on held-out digits 7/8/9: {np.mean(accuracies):.3f}")
    assert np.mean(accuracies) > 0.6  # chance is 1/3


def test_classifier_per_task_string_labels_and_wrong_n_way(digits_per_task):
    clf, test = digits_per_task
    X, y = test[0]
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                      "nine"])
    model = clf.adapt(X, names[y])
    np.testing.assert_array_equal(model.classes_, ["eight", "nine", "seven"])
    assert set(model.predict(X)) <= {"seven", "eight", "nine"}
    two_classes = y != 9
    with pytest.raises(ValueError, match="2 classes"):
        clf.adapt(X[two_classes], y[two_classes])
    four = np.r_[y, [0, 0]]
    with pytest.raises(ValueError, match="4 classes"):
        clf.adapt(np.vstack([X, X[:2]]), four)


def test_classifier_per_task_score_and_fewshotscorer(digits_per_task):
    clf, test = digits_per_task
    X, y, groups = _flat(test)
    score = clf.score(X, y, groups=groups)
    assert 0.4 < score <= 1.0
    assert clf.score(X, y, groups=groups) == score
    assert FewShotScorer(n_support=5)(clf, X, y, groups=groups) == score


# -------------------------------------------------------------------------------------------------
# Few-shot score and FewShotScorer
# -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted_regressor_and_tasks():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = _small_regressor(max_iter=30, inner_lr=0.02).fit(_sinusoids(n_tasks=20))
    return est, _flat(_sinusoids(n_tasks=6, n_samples=15, random_state=3))


def test_score_is_deterministic(fitted_regressor_and_tasks):
    est, (X, y, groups) = fitted_regressor_and_tasks
    s1 = est.score(X, y, groups=groups)
    s2 = est.score(X, y, groups=groups)
    assert s1 == s2 and np.isfinite(s1)


def test_fewshotscorer_is_deterministic_and_depends_on_n_support(fitted_regressor_and_tasks):
    est, (X, y, groups) = fitted_regressor_and_tasks
    assert FewShotScorer()(est, X, y, groups=groups) == est.score(X, y, groups=groups)
    s3 = FewShotScorer(n_support=3)(est, X, y, groups=groups)
    assert s3 == FewShotScorer(n_support=3)(est, X, y, groups=groups)
    s10 = FewShotScorer(n_support=10)(est, X, y, groups=groups)
    assert s3 != s10
    mse = FewShotScorer("neg_mean_squared_error", n_support=3)
    m1 = mse(est, X, y, groups=groups)
    assert m1 == mse(est, X, y, groups=groups) and m1 < 0
    assert FewShotScorer(n_support=3, random_state=1)(est, X, y, groups=groups) != s3


def test_score_sample_weight_all_equal_is_unweighted(fitted_regressor_and_tasks):
    est, (X, y, groups) = fitted_regressor_and_tasks
    w = np.full(X.shape[0], 2.0)
    assert est.score(X, y, groups=groups, sample_weight=w) == pytest.approx(
        est.score(X, y, groups=groups), rel=1e-12)
    for metric in (None, "neg_mean_squared_error"):
        scorer = FewShotScorer(metric, n_support=4)
        assert scorer(est, X, y, groups=groups, sample_weight=w) == pytest.approx(
            scorer(est, X, y, groups=groups), rel=1e-12)
    # ... and unequal weights do change the score
    w_uneven = np.random.RandomState(0).uniform(0.1, 5.0, size=X.shape[0])
    assert est.score(X, y, groups=groups, sample_weight=w_uneven) != est.score(X, y,
                                                                              groups=groups)


def test_classifier_score_sample_weight(quiet):
    tasks = _label_tasks(["a", "b", "c"])
    clf = _small_classifier().fit(tasks)
    X, y, groups = _flat(_label_tasks(["a", "b", "c"], random_state=1))
    s = clf.score(X, y, groups=groups)
    assert s == clf.score(X, y, groups=groups)
    assert 0.0 <= s <= 1.0
    assert clf.score(X, y, groups=groups, sample_weight=np.ones(len(y))) == pytest.approx(s)


# -------------------------------------------------------------------------------------------------
# verbose
# -------------------------------------------------------------------------------------------------


@pytest.fixture(params=["lines", "bar"])
def progress_mode(request, monkeypatch):
    """Printed lines (tqdm missing) or a tqdm bar (tqdm installed, on stderr)."""
    if request.param == "bar":
        pytest.importorskip("tqdm")
    else:
        import builtins
        real_import = builtins.__import__

        def no_tqdm(name, *args, **kwargs):
            if name.startswith("tqdm"):
                raise ImportError(name)
            return real_import(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", no_tqdm)
    return request.param


def _shown(capsys):
    captured = capsys.readouterr()
    return captured.out + captured.err


def test_verbose_prints_progress(capsys, quiet, progress_mode):
    _small_regressor(verbose=1).fit(_sinusoids())
    shown = _shown(capsys)
    assert ("Meta-iteration" if progress_mode == "lines" else "meta-training") in shown
    assert "loss" in shown


def test_verbose_with_early_stopping_shows_validation(capsys, quiet, progress_mode):
    _early_stopping_regressor(verbose=1, max_iter=6).fit(_sinusoids(n_tasks=12))
    assert "validation" in _shown(capsys)


def test_not_verbose_prints_nothing(capsys, quiet):
    _small_regressor(verbose=0).fit(_sinusoids())
    _early_stopping_regressor(verbose=0, max_iter=6).fit(_sinusoids(n_tasks=12))
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ""


# -------------------------------------------------------------------------------------------------
# End to end: the paper's sinusoid experiment, on a small budget
# -------------------------------------------------------------------------------------------------


def test_sinusoid_maml_beats_pooled_pretraining_then_finetuning(quiet):
    """K=10 regression on new sinusoids (Finn et al. 2017, section 5.1): adapting the MAML
    initialisation gives a much lower query MSE than an MLP of the same architecture trained on
    all tasks pooled and fine-tuned on the same support rows with the same number of steps."""
    K, steps = 10, 10
    train = make_sinusoid_tasks(n_tasks=500, n_samples=20, random_state=0)
    test = make_sinusoid_tasks(n_tasks=50, n_samples=20, random_state=1)

    start = time.perf_counter()
    maml = MAMLRegressor(hidden_layer_sizes=(40, 40), activation="relu", inner_lr=0.01,
                         n_inner_steps=1, meta_lr=0.001, meta_batch_size=25, n_support=K,
                         max_iter=3000, random_state=0).fit(train)
    maml_time = time.perf_counter() - start
    mse_maml = np.mean([np.mean((maml.adapt(X[:K], y[:K], n_inner_steps=steps).predict(X[K:])
                                 - y[K:]) ** 2) for X, y in test])

    X_pool, y_pool, _ = _flat(train)
    pooled = MLPRegressor(hidden_layer_sizes=(40, 40), activation="relu", max_iter=50,
                          random_state=0).fit(X_pool, y_pool)

    def finetuned_mse(learning_rate):
        errors = []
        for X, y in test:
            model = copy.deepcopy(pooled)
            model._optimizer.learning_rate_init = learning_rate
            for _ in range(steps):
                model.partial_fit(X[:K], y[:K])
            errors.append(np.mean((model.predict(X[K:]) - y[K:]) ** 2))
        return np.mean(errors)

    # The baseline gets the better of two fine-tuning step sizes.
    mse_pooled = min(finetuned_mse(lr) for lr in (0.001, 0.01))
    print(f"\nsinusoid K={K}, {steps} adaptation steps, {len(test)} new tasks: query MSE "
          f"MAML {mse_maml:.3f} vs pooled MLP + fine-tuning {mse_pooled:.3f} "
          f"(MAML fit {maml_time:.1f} s)")
    assert mse_maml * 2 < mse_pooled


@pytest.mark.parametrize("n_tasks, batch_size", [(1, 1), (7, 3), (25, 25), (26, 25), (1003, 25),
                                                 (10, 40)])
def test_epoch_order_sorts_each_batch(n_tasks, batch_size):
    # The epoch's batches are those of the shuffled order, each batch's tasks in increasing index
    # (the last, shorter batch too); the order of the batches is the shuffle's.
    permutation = np.random.RandomState(n_tasks).permutation(n_tasks)
    order = _epoch_order(permutation, batch_size)
    for lo in range(0, n_tasks, batch_size):
        np.testing.assert_array_equal(order[lo:lo + batch_size],
                                      np.sort(permutation[lo:lo + batch_size]))
    np.testing.assert_array_equal(permutation, np.random.RandomState(n_tasks).permutation(n_tasks))
