"""Bad input gives a clean ValueError/TypeError whose message names the problem (which task, its
size, which class, ...) -- never a numba error, an IndexError, a hang or a NaN.

The first part spells out each case; the last test feeds random malformed input (hypothesis) to
fit / adapt / predict / score of both estimators.
"""

import faulthandler
import math
import os
import traceback
import warnings
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.utils._param_validation import InvalidParameterError

from skmaml import FewShotScorer, MAMLClassifier, MAMLRegressor
from skmaml.datasets import _flatten as _flat

# -------------------------------------------------------------------------------------------------
# Helpers
# -------------------------------------------------------------------------------------------------


def _regressor(**params):
    defaults = dict(hidden_layer_sizes=(4,), max_iter=2, n_support=3, meta_batch_size=2,
                    random_state=0)
    defaults.update(params)
    return MAMLRegressor(**defaults)


def _classifier(**params):
    defaults = dict(hidden_layer_sizes=(4,), max_iter=2, n_support=2, meta_batch_size=2,
                    random_state=0)
    defaults.update(params)
    return MAMLClassifier(**defaults)


def _reg_task(n=12, n_features=2, seed=0):
    rng = np.random.RandomState(seed)
    return rng.normal(size=(n, n_features)), rng.normal(size=n)


def _clf_task(labels=(0, 1), per_class=6, n_features=2, seed=0):
    rng = np.random.RandomState(seed)
    y = np.repeat(np.asarray(labels), per_class)
    return rng.normal(size=(y.shape[0], n_features)), y


@pytest.fixture(autouse=True)
def _no_warnings_noise():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.fixture(scope="module")
def fitted_regressor():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _regressor().fit([_reg_task(seed=s) for s in range(3)])


@pytest.fixture(scope="module")
def fitted_classifier():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _classifier().fit([_clf_task(("cat", "dog"), seed=s) for s in range(3)])


@pytest.fixture(scope="module")
def fitted_per_task():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tasks = [_clf_task(labels, seed=s)
                 for s, labels in enumerate([(0, 1, 2), (3, 4, 5), (0, 4, 6), (1, 2, 6)])]
        return _classifier(task_labels="per_task", n_support=3).fit(tasks)


# -------------------------------------------------------------------------------------------------
# Tasks
# -------------------------------------------------------------------------------------------------


def test_tasks_with_different_numbers_of_features():
    tasks = [_reg_task(), _reg_task(seed=1), _reg_task(n_features=3, seed=2)]
    with pytest.raises(ValueError, match=r"task 2.*3 features.*task 0 has 2"):
        _regressor().fit(tasks)


def test_tasks_with_different_numbers_of_features_in_query():
    Xs, ys = _reg_task(n=4)
    Xq, yq = _reg_task(n=5, n_features=3)
    with pytest.raises(ValueError, match=r"task 1: X_query has 3 features"):
        _regressor().fit([_reg_task(), (Xs, ys, Xq, yq)])


@pytest.mark.parametrize("form", ["list", "flat"])
def test_task_too_small_for_n_support_uses_a_smaller_support_set(form):
    """As MLPRegressor clips batch_size: the small task gives all but one row to its support set,
    with one warning naming it; the other tasks keep n_support."""
    tasks = [_reg_task(), _reg_task(n=3, seed=1), _reg_task(seed=2)]
    if form == "list":
        with pytest.warns(UserWarning, match=r"n_support=3 is more than 1 of 3 tasks can give "
                          r"while keeping at least one query row; it uses .*task 1 has 3 rows, so "
                          r"it uses 2"):
            _regressor(n_support=3).fit(tasks)
    else:
        X, y, groups = _flat(tasks, ["a", "b", "c"])
        with pytest.warns(UserWarning, match=r"group 'b' has 3 rows, so it uses 2"):
            _regressor(n_support=3).fit(X, y, groups=groups)


def test_task_too_small_for_any_episode():
    tasks = [_reg_task(), _reg_task(n=1, seed=1), _reg_task(n=1, seed=2)]
    with pytest.raises(ValueError, match=r"task 1 has 1 row: too few for one support row and at "
                                         r"least one query row \(2 tasks are too small\)"):
        _regressor().fit(tasks)


def test_task_too_small_for_n_query():
    with pytest.warns(UserWarning, match=r"keeping n_query=10 query rows.*task 0 has 12 rows, so "
                                         r"it uses 2"):
        _regressor(n_support=5, n_query=10).fit([_reg_task(), _reg_task(seed=1)])
    with pytest.raises(ValueError, match=r"task 0 has 12 rows: too few for one support row and "
                                         r"n_query=12 query rows.*or lower n_query"):
        _regressor(n_support=5, n_query=12).fit([_reg_task(), _reg_task(seed=1)])


def test_score_task_too_small(fitted_regressor):
    # R², the score's metric, needs two query rows; other metrics need one.
    X, y, groups = _flat([_reg_task(seed=4), _reg_task(n=3, seed=5)])
    with pytest.warns(UserWarning, match=r"keeping at least 2 query rows \(to score\).*group 1 "
                                         r"has 3 rows, so it uses 1"):
        assert np.isfinite(fitted_regressor.score(X, y, groups=groups))
    X, y, groups = _flat([_reg_task(seed=4), _reg_task(n=2, seed=5)])
    with pytest.raises(ValueError, match=r"group 1 has 2 rows: too few for one support row and "
                                         r"at least 2 query rows"):
        fitted_regressor.score(X, y, groups=groups)
    with pytest.warns(UserWarning, match=r"group 1 has 2 rows, so it uses 1"):
        score = FewShotScorer("neg_mean_squared_error")(fitted_regressor, X, y, groups=groups)
    assert np.isfinite(score)


@pytest.mark.parametrize("where", ["X", "y"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_values_list_form(where, value):
    tasks = [_reg_task(seed=s) for s in range(3)]
    X, y = tasks[2][0].copy(), tasks[2][1].copy()
    if where == "X":
        X[4, 1] = value
    else:
        y[7] = value
    tasks[2] = (X, y)
    kind = "NaN" if np.isnan(value) else "infinity"
    with pytest.raises(ValueError, match=rf"task 2: {where}: .*{kind}"):
        _regressor().fit(tasks)


def test_non_finite_values_in_query_of_fixed_task():
    Xs, ys = _reg_task(n=4)
    Xq, yq = _reg_task(n=5, seed=1)
    yq = yq.copy()
    yq[0] = np.nan
    with pytest.raises(ValueError, match=r"task 1: y_query: .*NaN"):
        _regressor().fit([_reg_task(), (Xs, ys, Xq, yq)])


@pytest.mark.parametrize("where", ["X", "y"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_values_flat_form(where, value):
    X, y, groups = _flat([_reg_task(seed=s) for s in range(3)])
    X, y = X.copy(), y.copy()
    if where == "X":
        X[5, 0] = value
    else:
        y[5] = value
    kind = "NaN" if np.isnan(value) else "infinity"
    with pytest.raises(ValueError, match=rf"{where} contains {kind}"):
        _regressor().fit(X, y, groups=groups)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_values_classifier(value):
    tasks = [_clf_task(seed=s) for s in range(3)]
    X = tasks[1][0].copy()
    X[0, 0] = value
    tasks[1] = (X, tasks[1][1])
    with pytest.raises(ValueError, match=r"task 1: X: "):
        _classifier().fit(tasks)
    y = np.array([0.0, 1.0, value, 1.0])
    with pytest.raises(ValueError):
        _classifier().fit([(np.zeros((4, 2)), y), _clf_task()])


def test_non_finite_values_adapt_predict_score(fitted_regressor):
    X, y = _reg_task(seed=9)
    X_bad = X.copy()
    X_bad[0, 0] = np.nan
    y_bad = y.copy()
    y_bad[0] = np.inf
    with pytest.raises(ValueError, match="NaN"):
        fitted_regressor.predict(X_bad)
    with pytest.raises(ValueError, match="NaN"):
        fitted_regressor.adapt(X_bad, y)
    with pytest.raises(ValueError, match="infinity"):
        fitted_regressor.adapt(X, y_bad)
    with pytest.raises(ValueError, match="NaN"):
        fitted_regressor.score(X_bad, y, groups=np.zeros(len(y)))


def test_empty_task_list():
    with pytest.raises(ValueError, match="empty"):
        _regressor().fit([])
    with pytest.raises(ValueError, match="empty"):
        _classifier().fit([])


@pytest.mark.parametrize("arity", [0, 1, 3, 5])
def test_task_tuple_of_wrong_arity(arity):
    X, y = _reg_task(seed=1)
    bad = (X, y, X, y, X)[:arity]
    with pytest.raises(ValueError, match=rf"task 1 must be a tuple .*length {arity}"):
        _regressor().fit([_reg_task(), bad])


@pytest.mark.parametrize("bad", [np.zeros((5, 2)), None, {"X": 1}], ids=["array", "None", "dict"])
def test_bare_entry_in_task_list_names_the_task(bad):
    with pytest.raises((ValueError, TypeError), match=r"task 1"):
        _regressor().fit([_reg_task(), bad, _reg_task(seed=2)])


def test_bare_array_in_task_list_is_a_clean_error():
    # Whatever the message, it is a ValueError (not an IndexError or a numba error).
    with pytest.raises(ValueError):
        _regressor().fit([_reg_task(), np.zeros((5, 2))])


def test_zero_dimensional_task_arrays_are_clean_errors():
    # Found by the random malformed-input test: a 0-d X used to raise IndexError.
    with pytest.raises(ValueError, match=r"task 0: X: Expected 2D array, got scalar array"):
        _regressor().fit([(np.array(0.0), np.array([0.0, 0.0]))])
    with pytest.raises((ValueError, TypeError), match=r"task 0: y"):
        _regressor().fit([(np.zeros((3, 1)), np.array(0.0))])


def test_task_x_and_y_lengths_differ():
    X, y = _reg_task()
    with pytest.raises(ValueError, match=r"task 1: X has 12 rows but y has 11"):
        _regressor().fit([_reg_task(seed=1), (X, y[:11])])


def test_task_targets_with_different_numbers_of_columns():
    X, y = _reg_task()
    with pytest.raises(ValueError, match="target columns"):
        _regressor().fit([(X, np.c_[y, y]), (X, np.c_[y, y, y])])


def test_not_a_task_list():
    with pytest.raises((ValueError, TypeError), match="y"):
        _regressor().fit("tasks")
    with pytest.raises((ValueError, TypeError)):
        _regressor().fit(42)


# -------------------------------------------------------------------------------------------------
# groups
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_groups", [23, 25, 0])
def test_groups_of_wrong_length(n_groups):
    X, y, _ = _flat([_reg_task(seed=s) for s in range(2)])
    with pytest.raises(ValueError, match=rf"X has 24 rows but groups has shape \({n_groups},\)"):
        _regressor().fit(X, y, groups=np.zeros(n_groups))


def test_groups_of_wrong_length_score(fitted_regressor):
    X, y, groups = _flat([_reg_task(seed=s) for s in range(2)])
    with pytest.raises(ValueError, match="groups"):
        fitted_regressor.score(X, y, groups=groups[:-3])
    with pytest.raises(ValueError, match="groups"):
        FewShotScorer(n_support=2)(fitted_regressor, X, y, groups=groups[:-3])


def test_groups_other_problems():
    X, y, groups = _flat([_reg_task(seed=s) for s in range(2)])
    with pytest.raises(ValueError, match="groups"):
        _regressor().fit(X, y, groups=np.zeros((24, 2)))
    with pytest.raises(ValueError, match="NaN"):
        _regressor().fit(X, y, groups=np.r_[np.zeros(12), np.full(12, np.nan)])
    with pytest.raises(TypeError, match="groups"):
        _regressor().fit(X, y, groups=np.array([0] * 12 + ["a"] * 12, dtype=object))
    with pytest.raises(ValueError, match="groups is only used"):
        _regressor().fit([_reg_task(), _reg_task(seed=1)], groups=[0, 1])


# -------------------------------------------------------------------------------------------------
# Classification
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["list", "flat"])
def test_classifier_task_without_n_support_rows_of_a_class(form):
    X, y = _clf_task(("cat", "dog"), per_class=6, seed=1)
    keep = np.r_[np.arange(6), [6, 7]]  # 6 cats, 2 dogs
    tasks = [_clf_task(("cat", "dog")), (X[keep], y[keep])]
    if form == "list":
        with pytest.warns(UserWarning, match=r"n_support=3 per class is more than 1 of 2.*task 1 "
                          r"has 2 rows of class 'dog', its smallest, and 8 in all, so it uses 2"):
            _classifier(n_support=3).fit(tasks)
    else:
        Xf, yf, groups = _flat(tasks, ["site-a", "site-b"])
        with pytest.warns(UserWarning, match=r"group 'site-b' has 2 rows of class 'dog'"):
            _classifier(n_support=3).fit(Xf, yf, groups=groups)


def test_classifier_task_with_no_query_row_left():
    """Two rows of each class and n_support=2: one shot per class keeps a query set."""
    tasks = [_clf_task(per_class=3), _clf_task(per_class=2, seed=1)]
    with pytest.warns(UserWarning, match=r"task 1 has 2 rows of class 0.*so it uses 1"):
        _classifier(n_support=2).fit(tasks)
    tasks = [_clf_task(per_class=3), _clf_task(labels=(0, 1), per_class=1, seed=1)]
    with pytest.raises(ValueError, match=r"task 1 has 1 row of class 0, its smallest, and 2 in "
                                         r"all: too few for one support row per class"):
        _classifier(n_support=2).fit(tasks)


def test_per_task_fixed_split_query_classes_must_be_in_support():
    """A 4-tuple task's outputs are assigned to the classes of its rows, and adaptation sees its
    support only: a query class missing from the support is an error naming task and classes."""
    X, y = _clf_task((0, 1, 2), per_class=4)
    support, query = np.r_[0:4, 4:8], np.r_[2:4, 6:8, 8:12]  # class 2 only in the query
    good = (X[:6], np.r_[0, 0, 1, 1, 2, 2], X[6:9], np.r_[0, 1, 2])
    bad = (X[support], y[support], X[query], y[query])
    clf = _classifier(task_labels="per_task", n_support=1)
    with pytest.raises(ValueError, match=r"task 1: y_query has classes \[2\] that y_support does "
                                         r"not"):
        clf.fit([good, bad])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit([good, good])


def test_classifier_single_class():
    with pytest.raises(ValueError, match="at least 2 classes"):
        _classifier().fit([_clf_task(labels=(1,)), _clf_task(labels=(1,), seed=1)])


def test_classifier_continuous_labels():
    X, _ = _reg_task()
    with pytest.raises(ValueError, match="continuous"):
        _classifier().fit([(X, np.linspace(0, 1, 12)), _clf_task()])


def test_per_task_tasks_with_different_numbers_of_classes():
    tasks = [_clf_task((0, 1, 2)), _clf_task((3, 4, 5), seed=1), _clf_task((6, 7), seed=2)]
    with pytest.raises(ValueError, match=r"task 2 has 2 classes, expected 3"):
        _classifier(task_labels="per_task").fit(tasks)


def test_per_task_score_with_different_numbers_of_classes(fitted_per_task):
    X, y, groups = _flat([_clf_task((7, 8, 9), seed=5), _clf_task((7, 8), seed=6)])
    with pytest.raises(ValueError, match=r"group 1 has 2 classes, expected 3"):
        fitted_per_task.score(X, y, groups=groups)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_per_task_adapt_with_wrong_number_of_classes(fitted_per_task, n_classes):
    X, y = _clf_task(tuple(range(10, 10 + n_classes)), per_class=3)
    with pytest.raises(ValueError, match=rf"adapt got {n_classes} classes.*3-way"):
        fitted_per_task.adapt(X, y)


def test_per_task_score_too_few_rows_names_the_right_class(fitted_per_task):
    # Trained on labels 0..6; scored tasks use their own labels. Group 1 has 2 'seven' rows,
    # fewer than n_support=3, so it scores with 2 shots per class and says so.
    X_ok, y_ok = _clf_task(("seven", "eight", "nine"), per_class=4, seed=6)
    X_short = np.random.RandomState(5).normal(size=(10, 2))
    y_short = np.array(["eight"] * 4 + ["nine"] * 4 + ["seven"] * 2)
    groups = np.repeat([0, 1], [12, 10])
    with pytest.warns(UserWarning, match=r"group 1 has 2 rows of class 'seven', its smallest"):
        fitted_per_task.score(np.vstack([X_ok, X_short]), np.r_[y_ok, y_short], groups=groups)


@pytest.mark.parametrize("unseen", ["emu", "fox"])
def test_shared_labels_unseen_at_adapt(fitted_classifier, unseen):
    X, y = _clf_task(("cat", unseen), per_class=3, seed=3)
    with pytest.raises(ValueError, match=rf"{unseen}.*never saw"):
        fitted_classifier.adapt(X, y)


def test_shared_labels_unseen_at_score(fitted_classifier):
    X, y, groups = _flat([_clf_task(("cat", "dog"), seed=3), _clf_task(("cat", "emu"), seed=4)])
    with pytest.raises(ValueError, match="emu"):
        fitted_classifier.score(X, y, groups=groups)


def test_classifier_2d_labels(fitted_classifier):
    X, _ = _clf_task()
    with pytest.raises(ValueError, match="1-D y"):
        fitted_classifier.adapt(X, np.zeros((12, 2), dtype=int))


# -------------------------------------------------------------------------------------------------
# Regression targets
# -------------------------------------------------------------------------------------------------


def test_regressor_string_targets_list_form():
    X, _ = _reg_task()
    with pytest.raises(ValueError, match=r"task 1: y: .*strings"):
        _regressor().fit([_reg_task(), (X, np.array(["a", "b"] * 6))])


def test_regressor_string_targets_flat_form():
    X, _, groups = _flat([_reg_task(), _reg_task(seed=1)])
    with pytest.raises(ValueError, match="string"):
        _regressor().fit(X, np.array(["a", "b"] * 12), groups=groups)
    with pytest.raises(ValueError, match="string"):
        _regressor().fit(X, np.array(["a", "b"] * 12, dtype=object), groups=groups)


def test_regressor_string_targets_adapt(fitted_regressor):
    X, _ = _reg_task()
    with pytest.raises(ValueError, match="string"):
        fitted_regressor.adapt(X, np.array(["a", "b"] * 6))


def test_regressor_wrong_number_of_targets(fitted_regressor):
    X, y = _reg_task()
    with pytest.raises(ValueError, match=r"2 target columns.*fitted with 1"):
        fitted_regressor.adapt(X, np.c_[y, y])
    with pytest.raises(ValueError, match=r"2 target columns.*fitted with 1"):
        fitted_regressor.score(X, np.c_[y, y], groups=np.zeros(12))


# -------------------------------------------------------------------------------------------------
# Wrong number of features after fit
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["regressor", "classifier"])
def test_wrong_number_of_features_after_fit(which, fitted_regressor, fitted_classifier):
    est = fitted_regressor if which == "regressor" else fitted_classifier
    X = np.zeros((6, 3))
    y = np.zeros(6) if which == "regressor" else np.array(["cat", "dog"] * 3)
    match = r"X has 3 features, but .* is expecting 2 features"
    with pytest.raises(ValueError, match=match):
        est.predict(X)
    with pytest.raises(ValueError, match=match):
        est.adapt(X, y)
    with pytest.raises(ValueError, match=match):
        est.score(X, y, groups=np.zeros(6))
    if which == "classifier":
        with pytest.raises(ValueError, match=match):
            est.predict_proba(X)


def test_adapt_empty_and_1d(fitted_regressor):
    with pytest.raises(ValueError, match="0 sample"):
        fitted_regressor.adapt(np.zeros((0, 2)), np.zeros(0))
    with pytest.raises(ValueError, match="2D"):
        fitted_regressor.adapt(np.zeros(2), np.zeros(1))
    with pytest.raises(ValueError, match="0 sample"):
        fitted_regressor.predict(np.zeros((0, 2)))


def test_adapt_bad_n_inner_steps(fitted_regressor):
    X, y = _reg_task()
    for bad in (-1, 1.5, "2"):
        with pytest.raises(ValueError, match="n_inner_steps"):
            fitted_regressor.adapt(X, y, n_inner_steps=bad)


def test_not_fitted():
    from sklearn.exceptions import NotFittedError
    X, y = _reg_task()
    for method in ("predict",):
        with pytest.raises(NotFittedError):
            getattr(_regressor(), method)(X)
    with pytest.raises(NotFittedError):
        _regressor().adapt(X, y)
    with pytest.raises(NotFittedError):
        _classifier().score(X, y, groups=np.zeros(12))


def test_score_sample_weight_problems(fitted_regressor):
    X, y, groups = _flat([_reg_task(seed=s) for s in range(2)])
    with pytest.raises(ValueError, match="sample_weight has 3 entries but X has 24 rows"):
        fitted_regressor.score(X, y, groups=groups, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        fitted_regressor.score(X, y, groups=groups, sample_weight=np.full(24, np.nan))


# -------------------------------------------------------------------------------------------------
# Parameters
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("params, name", [
    (dict(inner_lr=-0.1), "inner_lr"),
    (dict(n_support=0), "n_support"),
    (dict(activation="softplus"), "activation"),
    (dict(meta_lr=0.0), "meta_lr"),
    (dict(meta_batch_size=0), "meta_batch_size"),
    (dict(n_inner_steps=-1), "n_inner_steps"),
    (dict(max_iter=0), "max_iter"),
    (dict(meta_optimizer="rmsprop"), "meta_optimizer"),
    (dict(validation_fraction=1.0), "validation_fraction"),
    (dict(n_query=0), "n_query"),
    (dict(first_order="yes"), "first_order"),
])
@pytest.mark.parametrize("Estimator", [MAMLRegressor, MAMLClassifier])
def test_invalid_parameters(Estimator, params, name):
    tasks = [_clf_task(seed=s) for s in range(2)]
    with pytest.raises(InvalidParameterError, match=rf"'{name}' parameter of {Estimator.__name__}"):
        Estimator(**params).fit(tasks)


def test_invalid_task_labels():
    with pytest.raises(InvalidParameterError, match="task_labels"):
        MAMLClassifier(task_labels="per_class").fit([_clf_task()])


@pytest.mark.parametrize("hidden", [(0,), (-3,), (4, 0), (2.5,), ("a",), (True,)])
def test_invalid_hidden_layer_sizes(hidden):
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        _regressor(hidden_layer_sizes=hidden).fit([_reg_task(), _reg_task(seed=1)])


def test_invalid_fewshotscorer_parameters():
    for params in (dict(n_support=0), dict(n_support=-2), dict(n_support=1.5),
                   dict(n_inner_steps=-1)):
        with pytest.raises(ValueError, match=next(iter(params))):
            FewShotScorer(**params)
    with pytest.raises(TypeError, match="MAMLRegressor, MAMLClassifier or MAMLMixture"):
        FewShotScorer()(object(), np.zeros((4, 2)), np.zeros(4))


# -------------------------------------------------------------------------------------------------
# Property-based: random malformed input
# -------------------------------------------------------------------------------------------------

# Messages that betray an internal failure rather than a validated, named problem.
_INTERNAL_MESSAGES = ("numba", "nopython", "negative dimensions", "zero-size array",
                      "division by zero", "out of bounds", "index", "unhashable")


def _check_clean_error(exc):
    """A ValueError/TypeError raised by validation, not leaked from numba or numpy internals."""
    assert isinstance(exc, (ValueError, TypeError)), repr(exc)
    assert type(exc).__module__.split(".")[0] != "numba", repr(exc)
    message = str(exc)
    assert message.strip(), f"empty message: {exc!r}"
    lowered = message.lower()
    for bad in _INTERNAL_MESSAGES:
        assert bad not in lowered, f"internal error leaked: {exc!r}"
    frames = traceback.extract_tb(exc.__traceback__)
    assert frames, repr(exc)
    innermost = frames[-1].filename
    assert "/numba/" not in innermost and "_kernels" not in innermost, (
        f"raised from {innermost}: {exc!r}")


def _call(fn, *args, **kwargs):
    """fn(*args, **kwargs), or None after a clean ValueError/TypeError. Anything else fails."""
    try:
        return fn(*args, **kwargs), True
    except (ValueError, TypeError) as exc:
        _check_clean_error(exc)
        return None, False


_FINITE = st.floats(-20, 20, allow_nan=False, allow_infinity=False)
_MALFORMED_DTYPES = ["float64", "float32", "int64", "bool", "complex128", "U3", "object"]


@st.composite
def _malformed_array(draw, n_rows=None):
    """Any shape (0-3 dims, empty sides), any dtype including strings/objects/complex, with
    NaN/inf."""
    dtype = draw(st.sampled_from(_MALFORMED_DTYPES))
    if n_rows is not None and draw(st.booleans()):
        shape = (n_rows,) + draw(hnp.array_shapes(min_dims=0, max_dims=1, min_side=0,
                                                  max_side=3))
    else:
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
    if dtype == "object":
        elements = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                             st.text(max_size=2), st.integers(-5, 5), st.none())
        return draw(hnp.arrays(object, shape, elements=elements))
    if dtype == "U3":
        return draw(hnp.arrays(dtype, shape, elements=st.text(
            alphabet="abc01.", max_size=3)))
    if dtype in ("float64", "float32", "complex128"):
        return draw(hnp.arrays(dtype, shape, elements=st.one_of(
            _FINITE, st.sampled_from([np.nan, np.inf, -np.inf, 1e30]))))
    return draw(hnp.arrays(dtype, shape))


def _corrupt_array(draw, a):
    """Put a NaN / inf / huge value into a float copy of ``a``."""
    a = np.array(a, dtype=float, copy=True)
    if a.size:
        flat = a.reshape(-1)
        flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf,
                                                                       1e300]))
    return a


@st.composite
def _tasks(draw, kind, n_features, n_support, n_query):
    """A well-formed task list, big enough for ``n_support``/``n_query`` (corrupted later)."""
    n_tasks = draw(st.integers(1, 5))
    labels_pool = draw(st.sampled_from([np.arange(4), np.array(["a", "b", "c", "d"])]))
    n_way = draw(st.integers(2, 3))
    n_query = n_query or 1
    tasks = []
    for _ in range(n_tasks):
        if kind == "reg":
            n = n_support + n_query + draw(st.integers(0, 4))
            y = draw(hnp.arrays(np.float64, (n,), elements=_FINITE))
            support = np.arange(n) < n_support
        else:
            per_class = n_support + n_query + draw(st.integers(0, 2))
            chosen = np.asarray(draw(st.permutations(list(labels_pool))))[:n_way]
            y = np.repeat(chosen, per_class)
            n = y.shape[0]
            support = np.tile(np.arange(per_class) < n_support, n_way)
        X = draw(hnp.arrays(np.float64, (n, n_features), elements=_FINITE))
        if draw(st.booleans()):  # fixed support / query split
            tasks.append((X[support], y[support], X[~support], y[~support]))
        else:
            tasks.append((X, y))
    return tasks


_TASK_CORRUPTIONS = ["none"] * 6 + [
    "no_tasks", "small", "empty", "one_class", "nan", "features", "array_X", "array_y", "arity",
    "bare", "ragged", "length", "dtype32", "labels_2d"]


@st.composite
def _fit_input(draw, kind, n_support, n_query):
    """(args, kwargs) for fit: a task list or the flat form, possibly corrupted."""
    n_features = draw(st.integers(1, 3))
    tasks = draw(_tasks(kind, n_features, n_support, n_query))
    corruption = draw(st.sampled_from(_TASK_CORRUPTIONS))
    event(f"corruption: {corruption}")
    if corruption == "no_tasks":
        tasks = []
    elif corruption != "none":
        t = draw(st.integers(0, len(tasks) - 1))
        task = list(tasks[t])
        j = 2 * draw(st.integers(0, len(task) // 2 - 1))  # which (X, y) pair
        if corruption == "small":
            keep = draw(st.integers(0, max(0, len(task[j]) - 1)))
            task[j], task[j + 1] = task[j][:keep], task[j + 1][:keep]
        elif corruption == "empty":
            task[j], task[j + 1] = task[j][:0], task[j + 1][:0]
        elif corruption == "one_class":
            task[j + 1] = np.full_like(task[j + 1], task[j + 1][0]) if kind != "reg" else \
                task[j + 1][:, None]
        elif corruption == "labels_2d":
            task[j + 1] = np.c_[task[j + 1], task[j + 1]]
        elif corruption == "nan":
            which = j + draw(st.integers(0, 1))
            if kind == "reg" or which == j:
                task[which] = _corrupt_array(draw, task[which])
        elif corruption == "features":
            task[j] = np.zeros((task[j].shape[0], n_features + draw(st.sampled_from([-1, 1]))))
        elif corruption == "array_X":
            task[j] = draw(_malformed_array(n_rows=task[j].shape[0]))
        elif corruption == "array_y":
            task[j + 1] = draw(_malformed_array(n_rows=task[j].shape[0]))
        elif corruption == "arity":
            task = task[:draw(st.integers(0, 4))] + [task[0]] * draw(st.integers(0, 2))
        elif corruption == "bare":
            task = draw(st.sampled_from([task[0], None, "task", 3.0]))
        elif corruption == "ragged":
            task[j] = [list(row) for row in task[j]] + [[1.0] * (n_features + 1)]
        elif corruption == "length":
            task[j + 1] = task[j + 1][:-1] if len(task[j + 1]) else np.zeros(1)
        elif corruption == "dtype32":
            task[j] = np.asarray(task[j], dtype=np.float32)
        tasks[t] = tuple(task) if isinstance(task, list) else task
    if not draw(st.booleans()):
        return (tasks,), {}
    # Flat form (only from well-formed tasks; then corrupt X, y or groups).
    try:
        X = np.concatenate([np.asarray(p) for task in tasks for p in task[0::2]])
        y = np.concatenate([np.asarray(p) for task in tasks for p in task[1::2]])
        groups = np.repeat(np.arange(len(tasks)),
                           [sum(np.shape(p)[0] for p in task[0::2]) for task in tasks])
    except Exception:
        return (tasks,), {}
    flat_corruption = draw(st.sampled_from(["none"] * 6 + [
        "groups_len", "groups_none", "groups_str", "groups_2d", "groups_nan", "X", "y"]))
    if flat_corruption == "groups_len":
        groups = groups[:-1] if groups.size else np.zeros(2)
    elif flat_corruption == "groups_none":
        groups = None
    elif flat_corruption == "groups_str":
        groups = np.array([f"task-{g}" for g in groups])
    elif flat_corruption == "groups_2d":
        groups = np.c_[groups, groups]
    elif flat_corruption == "groups_nan":
        groups = groups.astype(float)
        if groups.size:
            groups[0] = np.nan
    elif flat_corruption == "X":
        X = draw(st.one_of(st.just(_corrupt_array(draw, X)),
                           _malformed_array(n_rows=X.shape[0])))
    elif flat_corruption == "y":
        y = draw(st.one_of(st.just(_corrupt_array(draw, y) if kind == "reg" else y[:-1]),
                           _malformed_array(n_rows=y.shape[0])))
    return (X, y), {"groups": groups}


@st.composite
def _estimator(draw, kind):
    params = dict(
        hidden_layer_sizes=draw(st.sampled_from([(), (3,), (2, 2)])),
        activation=draw(st.sampled_from(["relu", "tanh", "logistic", "identity"])),
        n_inner_steps=draw(st.integers(0, 2)),
        first_order=draw(st.booleans()),
        meta_batch_size=draw(st.integers(1, 3)),
        n_support=draw(st.integers(1, 3)),
        n_query=draw(st.sampled_from([None, 1, 2])),
        max_iter=draw(st.integers(1, 3)),
        early_stopping=draw(st.booleans()),
        meta_optimizer=draw(st.sampled_from(["sgd", "adam"])),
        random_state=0,
    )
    if kind == "reg":
        return MAMLRegressor(**params)
    return MAMLClassifier(task_labels="shared" if kind == "shared" else "per_task", **params)


def _moderate(a):
    try:
        a = np.asarray(a, dtype=float)
    except (ValueError, TypeError):
        return False
    return a.size > 0 and bool(np.isfinite(a).all()) and np.abs(a).max() <= 1e3


@pytest.fixture(scope="module")
def _compiled():
    """Compile every kernel signature first, so the deadline measures work, not compilation."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for dtype in (np.float64, np.float32):
            for first_order in (False, True):
                reg = _regressor(first_order=first_order, n_inner_steps=2)
                tasks = [(X.astype(dtype), y.astype(dtype)) for X, y in
                         [_reg_task(seed=s) for s in range(3)]]
                reg.fit(tasks).adapt(*tasks[0]).predict(tasks[0][0])
                reg.score(*_flat(tasks)[:2], groups=_flat(tasks)[2])
                for labels in ("shared", "per_task"):
                    ctasks = [(X.astype(dtype), y) for X, y in
                              [_clf_task((0, 1, 2), seed=s) for s in range(3)]]
                    clf = _classifier(first_order=first_order, n_inner_steps=2,
                                      task_labels=labels).fit(ctasks)
                    clf.adapt(*ctasks[0]).predict_proba(ctasks[0][0])
                    clf.score(*_flat(ctasks)[:2], groups=_flat(ctasks)[2])


@pytest.mark.usefixtures("_compiled")
# SKMAML_FUZZ_EXAMPLES=5000 runs a longer, randomised search (default: 100 fixed examples).
@settings(max_examples=int(os.environ.get("SKMAML_FUZZ_EXAMPLES", 100)),
          derandomize="SKMAML_FUZZ_EXAMPLES" not in os.environ,
          deadline=timedelta(seconds=10), database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.filter_too_much])
@given(data=st.data(), kind=st.sampled_from(["reg", "shared", "per_task"]))
def test_random_malformed_input_gives_only_clean_errors(data, kind):
    draw = data.draw
    est = draw(_estimator("reg" if kind == "reg" else kind))
    args, kwargs = draw(_fit_input("reg" if kind == "reg" else "clf", est.n_support,
                                   est.n_query))
    # A hang in compiled code cannot be interrupted from Python: dump the stacks and abort.
    faulthandler.dump_traceback_later(120, exit=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _run_malformed_case(draw, est, kind, args, kwargs)
    finally:
        faulthandler.cancel_dump_traceback_later()


def _run_malformed_case(draw, est, kind, args, kwargs):
    _, fitted = _call(est.fit, *args, **kwargs)
    event(f"fit {'succeeded' if fitted else 'raised'}")
    if not fitted:
        # A failed fit must not leave the estimator half usable with NaN parameters.
        if hasattr(est, "coefs_"):
            assert all(np.isfinite(W).all() for W in est.coefs_ + est.intercepts_)
        return
    n_features = est.n_features_in_
    assert all(np.isfinite(W).all() for W in est.coefs_ + est.intercepts_)

    # Predictions of a successful fit are finite (on moderate, well-formed rows).
    X_clean = np.random.RandomState(0).uniform(-3, 3, size=(5, n_features))
    output = est.predict(X_clean) if kind == "reg" else est.predict_proba(X_clean)
    assert np.isfinite(output).all(), output

    # Then malformed calls of every method.
    X = draw(st.one_of(_malformed_array(), st.just(X_clean)))
    n_rows = np.shape(X)[0] if np.ndim(X) else 0
    if kind == "reg":
        y = draw(st.one_of(_malformed_array(n_rows=n_rows),
                           hnp.arrays(np.float64, (n_rows,), elements=_FINITE)))
    else:
        classes = est.classes_
        y = draw(st.one_of(_malformed_array(n_rows=n_rows),
                           st.lists(st.sampled_from(list(classes) + ["zzz"]),
                                    min_size=n_rows, max_size=n_rows).map(np.array)))
    groups = draw(st.one_of(st.none(), _malformed_array(n_rows=n_rows),
                            hnp.arrays(np.int64, (n_rows,), elements=st.integers(0, 2))))

    predicted, ok = _call(est.predict, X)
    if ok and kind == "reg" and _moderate(X):
        assert np.isfinite(predicted).all()
    if kind != "reg":
        proba, ok = _call(est.predict_proba, X)
        if ok and _moderate(X):
            assert np.isfinite(proba).all()
    model, ok = _call(est.adapt, X, y, n_inner_steps=draw(st.integers(0, 3)))
    if ok:
        assert all(np.isfinite(W).all() for W in model.coefs_ + model.intercepts_)
        _call(model.predict, X_clean)
    score, ok = _call(est.score, X, y, groups=groups)
    if ok:
        # R² is finite for every task of two query rows or more (r2_score's force_finite covers a
        # constant target; score keeps two query rows); only overflowing predictions can break it.
        if kind != "reg" or _moderate(X):
            assert math.isfinite(score)
    scorer = FewShotScorer(draw(st.sampled_from([None, "neg_mean_squared_error"])) if kind == "reg"
                           else None, n_support=draw(st.sampled_from([None, 1, 2])))
    _call(scorer, est, X, y, groups=groups)
