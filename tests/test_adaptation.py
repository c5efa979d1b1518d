"""Learned adaptation through the estimators: ``learn_inner_lr`` (Meta-SGD, LSLR) and
``adapted_layers`` (ANIL).

The kernels' gradients are checked against finite differences in ``test_rules.py``; here: the
learned step sizes are fitted state that moves in ``fit`` and that ``adapt``, ``score``,
``FewShotScorer``, pickling and ``warm_start`` use; head-only adaptation leaves the body alone;
the same model for any ``n_jobs`` and either fit form; clear errors for options that do not fit.
"""

import copy
import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from test_parallel import HEAVY, heavy_tasks

from helpers import classification_data
from skmaml import FewShotScorer, MAMLClassifier, MAMLRegressor
from skmaml._kernels._config import ACTIVATION_CODES, PER_LAYER, PER_PARAMETER
from skmaml._kernels._maml import inner_adapt
from skmaml._kernels._rules import Rule
from skmaml._params import pack
from skmaml.datasets import make_sinusoid_tasks

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

RULES = [dict(learn_inner_lr="per_parameter"), dict(learn_inner_lr="per_layer_step"),
         dict(adapted_layers=1), dict(adapted_layers=2, learn_inner_lr="per_parameter"),
         dict(adapted_layers=1, learn_inner_lr="per_layer_step")]


def _ids(rule):
    return "-".join(f"{k}={v}" for k, v in rule.items())


def _data(n_tasks=30, random_state=0):
    return make_sinusoid_tasks(n_tasks=n_tasks, n_samples=15, random_state=random_state,
                               flat=True)


def _regressor(**params):
    defaults = dict(hidden_layer_sizes=(8, 6), activation="tanh", inner_lr=0.05,
                    n_inner_steps=2, meta_lr=0.01, meta_batch_size=5, n_support=5, max_iter=40,
                    random_state=0)
    return MAMLRegressor(**{**defaults, **params})


def _rates(est):
    return np.concatenate([np.ravel(a) for a in est.inner_lr_coefs_ + est.inner_lr_intercepts_])


@pytest.mark.parametrize("rule", RULES, ids=_ids)
def test_learned_rates_move_and_have_the_documented_shapes(rule):
    X, y, g = _data()
    est = _regressor(**rule).fit(X, y, groups=g)
    n_inner = est.n_inner_steps
    first = 0 if rule.get("adapted_layers", "all") == "all" else 3 - rule["adapted_layers"]
    if "learn_inner_lr" not in rule:
        assert est.inner_lr_coefs_ is None and est.inner_lr_intercepts_ is None
        return
    for i, (W, b, rW, rb) in enumerate(zip(est.coefs_, est.intercepts_, est.inner_lr_coefs_,
                                            est.inner_lr_intercepts_)):
        if rule["learn_inner_lr"] == "per_parameter":
            assert rW.shape == W.shape and rb.shape == b.shape
        else:
            assert rW.shape == (n_inner,) and rb.shape == (n_inner,)
        assert rW.dtype == W.dtype
        if i < first:  # not adapted: step size 0
            assert not rW.any() and not rb.any()
        else:  # started at inner_lr, learned with θ
            assert np.abs(rW - 0.05).max() > 1e-4 and np.abs(rb - 0.05).max() > 1e-4


@pytest.mark.parametrize("rule", RULES, ids=_ids)
def test_adapt_uses_the_rule(rule):
    X, y, g = _data()
    est = _regressor(**rule).fit(X, y, groups=g)
    Xs, ys = X[g == 3][:5], y[g == 3][:5]
    model = est.adapt(Xs, ys, n_inner_steps=2)
    # By hand: the kernel on θ with the fitted step sizes and adapted layers.
    theta = pack(est.coefs_, est.intercepts_, np.float64)
    n_layers = len(est.coefs_)
    first = 1 if rule.get("adapted_layers", "all") == "all" else n_layers - rule["adapted_layers"] + 1
    if "learn_inner_lr" in rule:
        n_body = first - 1
        if rule["learn_inner_lr"] == "per_parameter":
            rates = np.concatenate([np.ravel(a) for pair in zip(est.inner_lr_coefs_[n_body:],
                                                                est.inner_lr_intercepts_[n_body:])
                                    for a in pair])
            kernel_rule = Rule(rates, 1, PER_PARAMETER, first, False)
        else:
            rates = np.stack([np.stack([c, b], axis=1) for c, b in
                              zip(est.inner_lr_coefs_[n_body:],
                                  est.inner_lr_intercepts_[n_body:])], axis=1).ravel()
            kernel_rule = Rule(rates, est.n_inner_steps, PER_LAYER, first, False)
    else:
        kernel_rule = Rule(np.array([0.05]), 1, 0, first, False)
    y_scaled = ((ys - est._y_mean) / est._y_scale).reshape(-1, 1)
    expected = inner_adapt(theta, np.array([1, 8, 6, 1]), ACTIVATION_CODES["tanh"],
                           np.ascontiguousarray(Xs), np.ascontiguousarray(y_scaled),
                           kernel_rule, 2)
    np.testing.assert_array_equal(pack(model.coefs_, model.intercepts_, np.float64), expected)
    # ... which is not plain MAML's adaptation (unless the rule is plain MAML on all layers)
    plain = copy.copy(est).set_params(learn_inner_lr=None, adapted_layers="all")
    plain.inner_lr_coefs_ = plain.inner_lr_intercepts_ = None
    assert not np.allclose(plain.adapt(Xs, ys, n_inner_steps=2).predict(X[:20]),
                           model.predict(X[:20]))
    # Head-only: the body is not moved by adaptation; the head is.
    for i in range(first - 1):
        np.testing.assert_array_equal(model.coefs_[i], est.coefs_[i])
        np.testing.assert_array_equal(model.intercepts_[i], est.intercepts_[i])
    assert not np.array_equal(model.coefs_[-1], est.coefs_[-1])
    # The adapted model keeps the learned step sizes.
    if "learn_inner_lr" in rule:
        np.testing.assert_array_equal(_rates(model), _rates(est))


def test_adapting_further_continues_the_per_step_schedule():
    X, y, g = _data()
    est = _regressor(learn_inner_lr="per_layer_step", n_inner_steps=3).fit(X, y, groups=g)
    Xs, ys = X[g == 1][:5], y[g == 1][:5]
    at_once = est.adapt(Xs, ys, n_inner_steps=5)  # steps 4 and 5 reuse the last learned set
    stepwise = est.adapt(Xs, ys, n_inner_steps=2).adapt(Xs, ys, n_inner_steps=1)
    stepwise = stepwise.adapt(Xs, ys, n_inner_steps=2)
    for a, b in zip(at_once.coefs_ + at_once.intercepts_, stepwise.coefs_ + stepwise.intercepts_):
        np.testing.assert_array_equal(a, b)
    # and the schedule matters: restarting at step 0 is another model
    restarted = est.adapt(Xs, ys, n_inner_steps=2)
    restarted._n_adapted_steps = 0
    restarted = restarted.adapt(Xs, ys, n_inner_steps=3)
    assert not np.array_equal(restarted.coefs_[0], at_once.coefs_[0])


@pytest.mark.parametrize("rule", RULES[:2] + RULES[3:4], ids=_ids)
def test_score_and_few_shot_scorer_use_the_learned_rates(rule):
    X, y, g = _data()
    Xt, yt, gt = _data(12, random_state=1)
    est = _regressor(**rule).fit(X, y, groups=g)
    scorer = FewShotScorer("r2", n_support=5, random_state=0)
    # FewShotScorer adapts through est.adapt; score adapts in the kernel directly: the same draws
    # and the same rule give the same score.
    assert scorer(est, Xt, yt, groups=gt) == pytest.approx(est.score(Xt, yt, gt), rel=1e-12)
    untrained_rates = clone(est).set_params(max_iter=1).fit(X, y, groups=g)
    untrained_rates.coefs_, untrained_rates.intercepts_ = est.coefs_, est.intercepts_
    assert untrained_rates.score(Xt, yt, gt) != est.score(Xt, yt, gt)


@pytest.mark.bit_identity
@pytest.mark.parametrize("rule", RULES[:2] + RULES[3:4], ids=_ids)
def test_pickle_round_trip_keeps_the_rule(rule):
    X, y, g = _data()
    est = _regressor(**rule).fit(X, y, groups=g)
    loaded = pickle.loads(pickle.dumps(est))
    Xs, ys = X[g == 2][:5], y[g == 2][:5]
    np.testing.assert_array_equal(loaded.adapt(Xs, ys).predict(X), est.adapt(Xs, ys).predict(X))
    assert loaded.score(X, y, g) == est.score(X, y, g)


def _fixed_tasks(n_tasks, random_state=0):
    rng = np.random.RandomState(random_state)
    tasks = []
    for _ in range(n_tasks):
        w = rng.normal(size=2)
        Xs, Xq = rng.normal(size=(5, 2)), rng.normal(size=(7, 2))
        tasks.append((Xs, Xs @ w, Xq, Xq @ w))
    return tasks


@pytest.mark.bit_identity
@pytest.mark.parametrize("rule", RULES[:2] + RULES[3:4], ids=_ids)
def test_warm_start_continues_the_learned_rates(rule):
    """3 + 2 warm-started meta-iterations over one full batch of fixed tasks are exactly 5: θ,
    the step sizes and Adam's state for both carry over."""
    tasks = _fixed_tasks(3)
    params = dict(meta_batch_size=3, max_iter=5, **rule)
    full = _regressor(**params).fit(tasks)
    warm = _regressor(**{**params, "max_iter": 3, "warm_start": True}).fit(tasks)
    warm.set_params(max_iter=2).fit(tasks)
    np.testing.assert_array_equal(_rates(warm), _rates(full))
    for a, b in zip(warm.coefs_ + warm.intercepts_, full.coefs_ + full.intercepts_):
        np.testing.assert_array_equal(a, b)


def test_warm_start_with_another_rule_starts_the_rates_afresh():
    tasks = _fixed_tasks(3)
    est = _regressor(meta_batch_size=3, max_iter=3, warm_start=True,
                     learn_inner_lr="per_parameter").fit(tasks)
    est.set_params(learn_inner_lr="per_layer_step").fit(tasks)
    assert est.inner_lr_coefs_[0].shape == (2,)
    # three meta-iterations from inner_lr: moved, but not far
    assert 0 < np.abs(_rates(est) - 0.05).max() < 0.05
    est.set_params(learn_inner_lr=None).fit(tasks)
    assert est.inner_lr_coefs_ is None and est.n_iter_ == 9


@pytest.mark.bit_identity
@pytest.mark.parametrize("rule", [dict(learn_inner_lr="per_parameter"),
                                  dict(learn_inner_lr="per_layer_step", adapted_layers=2)],
                         ids=_ids)
def test_same_model_for_any_n_jobs(rule):
    fitted = [MAMLRegressor(n_jobs=n_jobs, **HEAVY, **rule).fit(heavy_tasks())
              for n_jobs in (1, 2)]
    np.testing.assert_array_equal(_rates(fitted[0]), _rates(fitted[1]))
    for a, b in zip(fitted[0].coefs_ + fitted[0].intercepts_,
                    fitted[1].coefs_ + fitted[1].intercepts_):
        np.testing.assert_array_equal(a, b)


@pytest.mark.bit_identity
def test_fit_tasks_equals_fit_groups():
    X, y, g = _data()
    tasks = [(X[g == t], y[g == t]) for t in np.unique(g)]
    a = _regressor(learn_inner_lr="per_layer_step", adapted_layers=2).fit(X, y, groups=g)
    b = _regressor(learn_inner_lr="per_layer_step", adapted_layers=2).fit(tasks)
    np.testing.assert_array_equal(_rates(a), _rates(b))


def test_float32_stays_float32():
    X, y, g = _data()
    est = _regressor(learn_inner_lr="per_parameter").fit(X.astype(np.float32), y, groups=g)
    assert all(r.dtype == np.float32 for r in est.inner_lr_coefs_ + est.inner_lr_intercepts_)
    assert est.adapt(X[:5].astype(np.float32), y[:5]).coefs_[0].dtype == np.float32


@pytest.mark.parametrize("task_labels", ["shared", "per_task"])
@pytest.mark.parametrize("rule", RULES[:3], ids=_ids)
def test_classifier_learns_rates_in_both_label_regimes(task_labels, rule):
    X, y, g = classification_data(n_tasks=12)
    clf = MAMLClassifier(hidden_layer_sizes=(8,), n_support=2, meta_batch_size=4, max_iter=30,
                         meta_lr=0.01, inner_lr=0.3, n_inner_steps=2, random_state=0,
                         task_labels=task_labels, **rule).fit(X, y, groups=g)
    if "learn_inner_lr" in rule:
        assert np.abs(_rates(clf) - 0.3).max() > 1e-4
    accuracy = clf.score(X, y, g)
    assert 0.0 <= accuracy <= 1.0
    model = clf.adapt(X[g == 0], y[g == 0])
    assert set(model.predict(X[g == 0])) <= set(y[g == 0])


def test_options_that_do_not_fit_the_network_are_clear_errors():
    X, y, g = _data()
    with pytest.raises(ValueError, match=r"adapted_layers=4, but the network has 3 weight layers"):
        _regressor(adapted_layers=4).fit(X, y, groups=g)
    with pytest.raises(ValueError, match="n_inner_steps=0: there are none"):
        _regressor(learn_inner_lr="per_parameter", n_inner_steps=0).fit(X, y, groups=g)
    with pytest.raises(ValueError, match="learn_inner_lr"):
        _regressor(learn_inner_lr="per_layer").fit(X, y, groups=g)
    with pytest.raises(ValueError, match="adapted_layers"):
        _regressor(adapted_layers=0).fit(X, y, groups=g)
    # Options changed after fitting no longer describe the fitted step sizes: refused, not
    # silently ignored or read past.
    est = _regressor(learn_inner_lr="per_layer_step").fit(X, y, groups=g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for change in (dict(n_inner_steps=3), dict(learn_inner_lr=None),
                       dict(learn_inner_lr="per_parameter")):
            changed = copy.copy(est).set_params(**change)
            with pytest.raises(ValueError, match="refit the model"):
                changed.adapt(X[:5], y[:5])


def test_divergence_message_says_inner_lr_is_the_starting_value():
    X, y, g = _data()
    with pytest.raises(ValueError, match=r"inner_lr \(now 1000.0 \(the learned step sizes' "
                                         r"starting value\)\)"):
        _regressor(learn_inner_lr="per_parameter", inner_lr=1000.0).fit(X, y, groups=g)
