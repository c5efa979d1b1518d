"""Real grouped data: the target's scale (and adaptation through a TransformedTargetRegressor),
why and when training stops, run-away training, warnings, and few-shot scoring of few tasks."""

import warnings

import numpy as np
import pytest
from sklearn.compose import TransformedTargetRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import skmaml
from helpers import regression_data, small_regressor
from skmaml import FewShotScorer, MAMLRegressor
from skmaml._base import CHECK_MIN_ITERATIONS


@pytest.fixture
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def test_normalize_y_makes_the_model_equivariant_to_the_target_scale(quiet):
    """With the default normalize_y=True, fitting on a·y + b gives the model of y in a·y + b's
    units (and inner_lr means the same): predictions, adaptation and scores follow."""
    X, y, g = regression_data(n_tasks=16)
    a, b = 1000.0, 5e4
    plain = small_regressor().fit(X, y, groups=g)
    scaled = small_regressor().fit(X, a * y + b, groups=g)
    np.testing.assert_allclose(scaled.loss_curve_, plain.loss_curve_, rtol=1e-9)
    np.testing.assert_allclose(scaled.predict(X), a * plain.predict(X) + b, rtol=1e-9)
    adapted = scaled.adapt(X[:4], a * y[:4] + b).predict(X)
    np.testing.assert_allclose(adapted, a * plain.adapt(X[:4], y[:4]).predict(X) + b, rtol=1e-9)
    assert scaled.score(X, a * y + b, g) == pytest.approx(plain.score(X, y, g), rel=1e-9)
    mse = FewShotScorer("neg_mean_squared_error", n_support=3)
    assert mse(scaled, X, a * y + b, groups=g) == pytest.approx(a**2 * mse(plain, X, y, groups=g),
                                                                rel=1e-7)


def test_normalize_y_is_standardising_y_by_hand(quiet):
    """normalize_y=True trains exactly the network that normalize_y=False trains on y
    standardised with the mean and (population) standard deviation of all training rows."""
    X, y, g = regression_data(n_tasks=12)
    y = 40 + 7 * y
    z = (y - y.mean()) / y.std()
    auto = small_regressor().fit(X, y, groups=g)
    by_hand = small_regressor(normalize_y=False).fit(X, z, groups=g)
    for W_auto, W_hand in zip(auto.coefs_ + auto.intercepts_, by_hand.coefs_ + by_hand.intercepts_):
        np.testing.assert_array_equal(W_auto, W_hand)
    np.testing.assert_allclose(auto.predict(X), by_hand.predict(X) * y.std() + y.mean(),
                               rtol=1e-12)


def test_normalize_y_false_trains_on_y_as_given(quiet):
    X, y, g = regression_data(n_tasks=12)
    given = small_regressor(normalize_y=False).fit(X, 10 * y, groups=g)
    standardised = small_regressor().fit(X, 10 * y, groups=g)
    # The same first θ, so the first losses differ by the variance of 10·y (about 100 vs 1).
    assert given.loss_curve_[0] > 20 * standardised.loss_curve_[0]


def test_normalize_y_per_target_column_and_constant_targets(quiet):
    X, y, g = regression_data(n_tasks=12)
    Y = np.column_stack([y, 100 * y - 3, np.full_like(y, 2.5)])
    est = small_regressor().fit(X, Y, groups=g)
    assert est.predict(X).shape == Y.shape
    # Each column with its own mean and (population) standard deviation; a constant column is
    # centred with scale 1, so the network sees all-zero targets there, not a division by zero.
    np.testing.assert_array_equal(est._y_mean, Y.mean(axis=0))
    np.testing.assert_array_equal(est._y_scale[:2], Y[:, :2].std(axis=0))
    assert est._y_scale[2] == 1.0
    Y_kernel = est._as_targets(Y, np.float64)
    assert np.all(Y_kernel[:, 2] == 0.0)
    np.testing.assert_allclose(Y_kernel[:, 0], Y_kernel[:, 1], rtol=1e-12, atol=1e-12)
    # Predictions come back in each column's units.
    raw = est._raw_output(X)
    np.testing.assert_allclose(est.predict(X), raw * est._y_scale + est._y_mean, rtol=1e-12)


def test_warm_start_keeps_the_target_scaling(quiet):
    X, y, g = regression_data(n_tasks=12)
    est = small_regressor(warm_start=True).fit(X, y, groups=g)
    before = est.predict(X)
    est.set_params(max_iter=1)
    est.fit(X, y + 100, groups=g)  # new data with another mean: θ continues in the old units
    after = est.predict(X)
    assert np.abs(after - before).max() < 5  # not shifted by 100
    fresh = small_regressor().fit(X, y + 100, groups=g)
    np.testing.assert_allclose(fresh.predict(X).mean(), 100 + y.mean(), atol=1.0)


@pytest.mark.bit_identity
@pytest.mark.parametrize("inner", ["estimator", "pipeline"])
def test_adapt_goes_through_transformed_target_regressor(inner, quiet):
    """skmaml.adapt(TransformedTargetRegressor(...)) adapts its regressor_ on the transformed y
    and returns a TransformedTargetRegressor predicting in the original units."""
    X, y, g = regression_data(n_tasks=12)
    y = np.exp(y / 3)
    regressor = small_regressor() if inner == "estimator" else make_pipeline(StandardScaler(),
                                                                             small_regressor())
    fit_params = {"groups": g} if inner == "estimator" else {"mamlregressor__groups": g}
    ttr = TransformedTargetRegressor(regressor=regressor, func=np.log, inverse_func=np.exp,
                                     check_inverse=False).fit(X, y, **fit_params)
    adapted = skmaml.adapt(ttr, X[:5], y[:5], n_inner_steps=2)
    assert isinstance(adapted, TransformedTargetRegressor)
    expected = np.exp(skmaml.adapt(ttr.regressor_, X[:5], np.log(y[:5]),
                                   n_inner_steps=2).predict(X))
    np.testing.assert_array_equal(adapted.predict(X), expected)
    # The input is unchanged, and a Pipeline around the TransformedTargetRegressor works too.
    np.testing.assert_array_equal(ttr.predict(X), np.exp(ttr.regressor_.predict(X)))
    outer = make_pipeline(StandardScaler(), TransformedTargetRegressor(
        regressor=small_regressor(), func=np.log, inverse_func=np.exp, check_inverse=False))
    outer.fit(X, y, transformedtargetregressor__groups=g)
    Xt = outer[0].transform(X)
    inner_ttr = outer[-1]
    np.testing.assert_array_equal(
        skmaml.adapt(outer, X[:5], y[:5]).predict(X),
        np.exp(inner_ttr.regressor_.adapt(Xt[:5], np.log(y[:5])).predict(Xt)))


def test_few_shot_scorer_names_the_transformed_target_regressor(quiet):
    X, y, g = regression_data(n_tasks=12)
    ttr = TransformedTargetRegressor(regressor=small_regressor()).fit(X, y, groups=g)
    with pytest.raises(TypeError, match="only skmaml.adapt goes through a "
                                        "TransformedTargetRegressor"):
        FewShotScorer()(ttr, X, y, groups=g)
    with pytest.raises(TypeError, match="got StandardScaler"):
        skmaml.adapt(StandardScaler().fit(X), X, y)


# -------------------------------------------------------------------------------------------------
# Why and when training stops
# -------------------------------------------------------------------------------------------------


def _best_so_far_stop(pass_losses, n_iter_no_change, tol):
    """The former rule (MLPRegressor's): stop after n_iter_no_change + 1 passes whose loss is not
    tol below the best pass so far."""
    best, count = np.inf, 0
    for p, loss in enumerate(pass_losses):
        count = count + 1 if loss > best - tol else 0
        best = min(best, loss)
        if count > n_iter_no_change:
            return p + 1
    return None


def test_loss_plateau_rule_is_not_fooled_by_noisy_checks():
    """A check's mean query loss is noisy. Compared with the best check so far (the lowest of
    many noisy values), a loss still falling steadily looks flat and training stopped by chance;
    two adjacent windows of n_iter_no_change checks do not."""
    rng = np.random.RandomState(0)
    passes = 1.0 - 0.001 * np.arange(300) + 0.005 * rng.normal(size=300)
    assert _best_so_far_stop(passes, 10, 1e-4) == 32  # stopped while falling
    est = small_regressor(n_iter_no_change=10, tol=1e-4)
    est.best_loss_, est._check_losses = np.inf, []
    stops = [est._end_of_epoch([loss], None, None, None, None)[1] for loss in passes]
    assert stops == [None] * 300
    # Flat noise: it stops, at the first full pair of windows that shows no progress.
    est.best_loss_, est._check_losses = np.inf, []
    flat = 1.0 + 0.01 * rng.normal(size=300)
    stops = [est._end_of_epoch([loss], None, None, None, None)[1] for loss in flat]
    first = stops.index("loss_plateau")
    assert first >= 19
    assert np.mean(flat[first - 9:first + 1]) > np.mean(flat[first - 19:first - 9]) - 1e-4


def test_stop_reason_and_verbose_say_why_training_stopped(capsys):
    X, y, g = regression_data(n_tasks=10)
    est = small_regressor(max_iter=1000, meta_batch_size=5, tol=1e6, n_iter_no_change=2,
                          verbose=1).fit(X, y, groups=g)
    # A pass is 2 meta-iterations, so a check is 25 passes (CHECK_MIN_ITERATIONS = 50); the rule
    # compares 2 windows of 2 checks.
    assert CHECK_MIN_ITERATIONS == 50
    assert est.stop_reason_ == "loss_plateau" and est.n_iter_ == 4 * 50
    out = capsys.readouterr().out
    assert ("Stopped after 200 meta-iterations: the mean query loss of the last 2 checks (each a "
            "pass over the tasks of at least 50 meta-iterations) was not lower than that of the 2 "
            "checks before by tol=1000000.0.") in out
    # best_loss_ is still the lowest mean loss of a pass.
    passes = np.asarray(est.loss_curve_).reshape(-1, 2).mean(axis=1)
    assert est.best_loss_ == pytest.approx(passes.min(), rel=1e-12)
    with pytest.warns(ConvergenceWarning, match="Maximum meta-iterations"):
        est = small_regressor(max_iter=3, verbose=1).fit(X, y, groups=g)
    assert est.stop_reason_ == "max_iter"
    assert "Stopped after 3 meta-iterations: max_iter=3 reached." in capsys.readouterr().out
    est = small_regressor(max_iter=1000, early_stopping=True, tol=1e6, n_iter_no_change=1,
                          meta_batch_size=3).fit(X, y, groups=g)
    assert est.stop_reason_ == "validation_plateau"


def test_runaway_training_is_divergence_even_while_finite():
    """inner_lr far too large: the query loss after adaptation is finite but astronomically
    large (1e133 at the first meta-iteration here). fit stops with the divergence error and keeps
    the last θ below the limit, here the initial one."""
    X, y, g = regression_data(n_tasks=20, n_samples=20)
    X = StandardScaler().fit_transform(X)
    est = small_regressor(inner_lr=2.0, n_inner_steps=5, hidden_layer_sizes=(40, 40),
                          n_support=10, max_iter=200)
    with pytest.raises(ValueError, match=r"diverged at meta-iteration 1: the mean query loss "
                                         r"after adaptation is .*e\+\d+, more than 1e\+08 times"):
        est.fit(X, y, groups=g)
    assert est.stop_reason_ == "diverged" and est.n_iter_ == 0
    start = small_regressor(hidden_layer_sizes=(40, 40), max_iter=1, meta_lr=1e-300)
    with pytest.warns(ConvergenceWarning):
        start.fit(X, y, groups=g)
    for W, W0 in zip(est.coefs_, start.coefs_):
        np.testing.assert_allclose(W, W0, rtol=0, atol=1e-250)


def test_runaway_after_some_progress_keeps_the_last_parameters_below_the_limit():
    X, y, g = regression_data(n_tasks=20, n_samples=20)
    X = StandardScaler().fit_transform(X)
    est = small_regressor(inner_lr=0.5, n_inner_steps=5, hidden_layer_sizes=(40, 40),
                          n_support=10, max_iter=200)
    with pytest.raises(ValueError, match="diverged at meta-iteration") as info:
        est.fit(X, y, groups=g)
    k = est.n_iter_
    assert k > 1 and f"meta-iteration {k + 1}:" in str(info.value)
    assert f"those meta-iteration {k} started from" in str(info.value)
    assert len(est.loss_curve_) == k and max(est.loss_curve_) < 1e8
    assert all(np.isfinite(W).all() for W in est.coefs_ + est.intercepts_)
    # Meta-iteration k + 1 measured the θ that meta-iteration k made: that one is kept out, and
    # the θ kept is the one whose (finite, small) loss meta-iteration k measured, i.e. that of a
    # fit of k - 1 meta-iterations.
    before = small_regressor(inner_lr=0.5, n_inner_steps=5, hidden_layer_sizes=(40, 40),
                             n_support=10, max_iter=k - 1)
    with pytest.warns(ConvergenceWarning):
        before.fit(X, y, groups=g)
    for W, W_before in zip(est.coefs_, before.coefs_):
        np.testing.assert_array_equal(W, W_before)


def test_unscaled_features_far_from_zero_still_fit(quiet):
    """A start far from the data (X around 100, as in scikit-learn's common checks) makes large
    losses that are not a run-away: the limit is relative to the unadapted starting loss."""
    rng = np.random.RandomState(0)
    X, y = rng.normal(loc=100, size=(100, 2)), rng.normal(size=100)
    est = small_regressor(max_iter=30, meta_batch_size=1).fit(X, y, groups=np.arange(100) // 10)
    assert est.loss_curve_[0] > 1e4 and est.stop_reason_ in ("max_iter", "loss_plateau")


@pytest.mark.parametrize("wrap", ["estimator", "pipeline", "search"])
def test_warnings_point_at_the_users_line(wrap):
    """A ConvergenceWarning (or the small-task warning) names the user's file, not
    sklearn/pipeline.py or skmaml's internals, however deep the fit is called."""
    from sklearn.model_selection import GridSearchCV, GroupKFold

    X, y, g = regression_data(n_tasks=9)
    est = small_regressor(max_iter=2, n_support=20)  # more support rows than tasks have
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        if wrap == "estimator":
            est.fit(X, y, groups=g)
        elif wrap == "pipeline":
            make_pipeline(StandardScaler(), est).fit(X, y, mamlregressor__groups=g)
        else:
            GridSearchCV(est, {"inner_lr": [0.01]}, cv=GroupKFold(3)).fit(X, y, groups=g)
    ours = [r for r in records if any(
        words in str(r.message) for words in ("Maximum meta-iterations", "n_support=20 is more",
                                              "without groups"))]
    # In the search, fit sees no groups (no metadata routing), and says so instead.
    assert {type(r.message) for r in ours} == {ConvergenceWarning, UserWarning}
    assert {r.filename for r in ours} == {__file__}


def test_parameters_that_do_not_chain_are_refused_before_any_kernel_reads_them():
    """A trusted type can still carry edited values: a bias vector cut short must give a clear
    error in predict and adapt, not a kernel reading past θ's end."""
    X, y, g = regression_data(n_tasks=6)
    est = small_regressor(max_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y, groups=g)
    est.intercepts_[0] = est.intercepts_[0][:2]
    for call in (lambda: est.predict(X), lambda: est.adapt(X[:4], y[:4])):
        with pytest.raises(ValueError, match="do not match the network.*refit the model"):
            call()


# -------------------------------------------------------------------------------------------------
# FewShotScorer on few, small tasks
# -------------------------------------------------------------------------------------------------


def _with_one_class_tasks():
    from helpers import classification_data
    X, y, g = classification_data(n_tasks=8)
    # Two more tasks ("shared" labels allow them) whose rows are all of class 0.
    rng = np.random.RandomState(1)
    X_one = rng.normal(size=(20, X.shape[1]))
    return (np.vstack([X, X_one]), np.concatenate([y, np.zeros(20, dtype=y.dtype)]),
            np.concatenate([g, np.repeat([100, 101], 10)]))


def test_few_shot_scorer_gives_metrics_the_model_classes(quiet):
    """neg_log_loss on a task whose query rows are all of one class used to fail ("y_true
    contains only one label"): the model's classes are passed as labels."""
    from sklearn.metrics import log_loss, make_scorer

    from helpers import small_classifier

    X, y, g = _with_one_class_tasks()
    clf = small_classifier(n_support=2).fit(X, y, groups=g)
    score = FewShotScorer("neg_log_loss", n_support=2)(clf, X, y, groups=g)
    explicit = make_scorer(log_loss, greater_is_better=False, response_method="predict_proba",
                           labels=clf.classes_)
    assert np.isfinite(score)
    assert score == FewShotScorer(explicit, n_support=2)(clf, X, y, groups=g)
    # A metric without labels is scored as before: accuracy is the estimator's own metric.
    assert FewShotScorer("accuracy", n_support=2)(clf, X, y, groups=g) == FewShotScorer(
        n_support=2)(clf, X, y, groups=g)


def test_few_shot_scorer_repeated_draws_average_and_stay_deterministic(quiet):
    X, y, g = regression_data(n_tasks=12)
    est = small_regressor().fit(X, y, groups=g)
    once = FewShotScorer("neg_mean_squared_error", n_support=3)
    thrice = FewShotScorer("neg_mean_squared_error", n_support=3, n_repeats=3)
    assert once(est, X, y, groups=g) == FewShotScorer(
        "neg_mean_squared_error", n_support=3, n_repeats=1)(est, X, y, groups=g)
    assert thrice(est, X, y, groups=g) == thrice(est, X, y, groups=g)
    # The draws are those of one RandomState(random_state) consumed draw after draw (every task
    # scored in each, so the mean of the draws' means is the mean over all).
    rng = np.random.RandomState(0)
    draws = [FewShotScorer("neg_mean_squared_error", n_support=3, random_state=rng)(
        est, X, y, groups=g) for _ in range(3)]
    assert draws[0] == once(est, X, y, groups=g)
    assert thrice(est, X, y, groups=g) == pytest.approx(np.mean(draws), rel=1e-12)
    assert len(set(draws)) == 3
    with pytest.raises(ValueError, match="n_repeats must be a positive int"):
        FewShotScorer(n_repeats=0)


def test_scoring_without_groups_warns_like_fit(quiet):
    """A search without metadata routing gives the scorer no groups: it scored each validation
    fold as one task, silently."""
    X, y, g = regression_data(n_tasks=12)
    est = small_regressor().fit(X, y, groups=g)
    for score in (lambda: est.score(X, y), lambda: FewShotScorer()(est, X, y)):
        with pytest.warns(UserWarning, match=r"MAMLRegressor.score got X and y without groups, "
                                             r"so all rows are scored as ONE task"):
            score()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        est.score(X, y, g)


def test_targets_near_the_float_range_are_standardised_without_overflow():
    # Found by the random malformed-input test: the std of [1e300, 0] overflowed to inf, and
    # the fitted model predicted inf.
    est = MAMLRegressor(hidden_layer_sizes=(), max_iter=1, meta_batch_size=1, n_support=1,
                        n_inner_steps=0, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit([(np.zeros((2, 1)), np.array([1e300, 0.0]))])
    np.testing.assert_allclose(est._y_mean, [5e299])
    np.testing.assert_allclose(est._y_scale, [5e299])
    assert np.isfinite(est.predict(np.zeros((3, 1)))).all()
