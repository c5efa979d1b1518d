"""Real grouped data: the target's scale, adaptation through a TransformedTargetRegressor."""

import warnings

import numpy as np
import pytest
from sklearn.compose import TransformedTargetRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import skmaml
from helpers import regression_data, small_regressor
from skmaml import FewShotScorer


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
    # A constant column is centred (scale 1), so the network learns to predict it exactly-ish.
    np.testing.assert_allclose(est.predict(X)[:, 2], 2.5, atol=0.5)
    plain = small_regressor().fit(X, y, groups=g)
    single = small_regressor().fit(X, 100 * y - 3, groups=g)
    assert est.score(X, Y, g) < 1 and plain.score(X, y, g) == pytest.approx(
        single.score(X, 100 * y - 3, g), rel=1e-9)


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
