"""scikit-learn integration: common estimator checks, metadata routing, cloning, persistence,
equivalence of the two fit forms, and feature names.

Metadata routing is switched on only inside ``config_context`` blocks, never globally.
"""

import inspect
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
from numba import config as numba_config
from numpy.testing import assert_array_equal
from sklearn import config_context
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, GroupKFold, cross_validate
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import check_is_fitted

import skmaml
from helpers import classification_data, regression_data, small_classifier, small_regressor
from skmaml import FewShotScorer, MAMLClassifier, MAMLRegressor, adapt

# The tiny max_iter used throughout stops every fit early; that warning is noise here.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

ONE_TASK_WARNING = "without groups"  # fit(X, y) with groups=None: all rows are one task


# -------------------------------------------------------------------------------------------------
# Data and small estimators
# -------------------------------------------------------------------------------------------------

def data_for(estimator):
    final = estimator[-1] if isinstance(estimator, Pipeline) else estimator
    return classification_data() if isinstance(final, MAMLClassifier) else regression_data()


def one_task_warnings(records):
    return [r for r in records if ONE_TASK_WARNING in str(r.message)]


# -------------------------------------------------------------------------------------------------
# 1. sklearn common checks
# -------------------------------------------------------------------------------------------------

# Checks that fail by a genuine property of few-shot meta-learning, with the reason. Empty: every
# common check passes.
EXPECTED_FAILED_CHECKS = {"MAMLRegressor": {}, "MAMLClassifier": {}}


def _common_check_instances():
    # Default-constructed estimators, as a user's check_estimator(MAMLRegressor()) runs them: the
    # checks' one task of ten rows is smaller than n_support + a query set, and fit uses a
    # smaller support set for it, with a warning (the checks pass with warnings).
    # Small instances besides: the common checks fit one task (no groups), and
    # check_regressors_train / check_classifiers_train then want a good fit of it (R² > 0.5 with
    # the few-shot score, accuracy > 0.83 with the unadapted predict), which 100 meta-iterations
    # at meta_lr=0.01 give with a wide margin (R² ~0.85, accuracy >= 0.92 for random_state 0, 1,
    # 2). meta_batch_size=1: one task.
    # task_labels="per_task" is not run here: its meta-learned model predicts output positions
    # 0..n_way-1, not the training labels (a property of N-way episodes); it is covered by the
    # behaviour tests.
    common = dict(hidden_layer_sizes=(8,), n_support=2, meta_batch_size=1, max_iter=100,
                  meta_lr=0.01, random_state=0)
    # And the learned adaptation rules: Meta-SGD on the head only, and LSLR on all layers.
    return [MAMLRegressor(), MAMLClassifier(), MAMLRegressor(**common), MAMLClassifier(**common),
            MAMLRegressor(**common, learn_inner_lr="per_parameter", adapted_layers=1),
            MAMLClassifier(**common, learn_inner_lr="per_layer_step", n_inner_steps=2)]


# Each common check fits without groups, so fit says all rows are one task, by design. The checks
# that look at warnings assert on their own (e.g. DataConversionWarning) and still see them.
@pytest.mark.filterwarnings(f"ignore:.*{ONE_TASK_WARNING}:UserWarning")
@pytest.mark.filterwarnings("ignore:n_support=.* is more than:UserWarning")
@parametrize_with_checks(
    _common_check_instances(),
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS[type(est).__name__],
)
def test_sklearn_common_checks(estimator, check):
    check(estimator)


def test_common_check_fixes():
    """Conventions the common checks found: unfitted predict, column-vector y, one row."""
    X, y, g = classification_data()
    with pytest.raises(NotFittedError):
        small_classifier().predict(X)
    for est, (X, y, g) in ((small_classifier(), (X, y, g)), (small_regressor(), regression_data())):
        with pytest.warns(Warning) as records:
            est.fit(X, y[:, None], groups=g)
        assert any(r.category.__name__ == "DataConversionWarning" for r in records)
        assert est.predict(X).shape == y.shape
        with pytest.raises(ValueError, match="1 sample"):
            clone(est).fit(X[:1], y[:1], groups=g[:1])


# -------------------------------------------------------------------------------------------------
# 2. Metadata routing: groups reach fit and score with no set_*_request call
# -------------------------------------------------------------------------------------------------

ROUTING_CASES = {
    "regressor": (small_regressor(),
                  {"inner_lr": [0.01, 0.1], "meta_lr": [0.003, 0.01], "n_inner_steps": [1, 2]}),
    "regressor-pipeline": (make_pipeline(StandardScaler(), small_regressor()),
                           {"mamlregressor__inner_lr": [0.01, 0.1],
                            "mamlregressor__meta_lr": [0.003, 0.01],
                            "mamlregressor__n_inner_steps": [1, 2]}),
    "classifier": (small_classifier(),
                   {"inner_lr": [0.1, 0.5], "meta_lr": [0.003, 0.01], "n_inner_steps": [1, 2]}),
    "classifier-pipeline": (make_pipeline(StandardScaler(), small_classifier()),
                            {"mamlclassifier__inner_lr": [0.1, 0.5],
                             "mamlclassifier__n_inner_steps": [1, 2]}),
}


def _split_scores(estimator, params, X, y, g, scorer=None):
    """Reference scores: fit on each GroupKFold(3) training split with its groups, score the test
    split with its groups."""
    scores = []
    for train, test in GroupKFold(3).split(X, y, g):
        est = clone(estimator).set_params(**params).fit(X[train], y[train], groups=g[train])
        if scorer is None:
            scores.append(est.score(X[test], y[test], groups=g[test]))
        else:
            scores.append(scorer(est, X[test], y[test], groups=g[test]))
    return scores


@pytest.mark.bit_identity
@pytest.mark.parametrize("case", list(ROUTING_CASES))
def test_grid_search_routes_groups_to_fit_and_score(case):
    estimator, grid = ROUTING_CASES[case]
    X, y, g = data_for(estimator)
    test_tasks = np.isin(g, [0, 1, 2])  # held out from the search entirely
    X_train, y_train, g_train = X[~test_tasks], y[~test_tasks], g[~test_tasks]
    X_test, y_test, g_test = X[test_tasks], y[test_tasks], g[test_tasks]
    with config_context(enable_metadata_routing=True):
        search = GridSearchCV(estimator, grid, cv=GroupKFold(3), error_score="raise")
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always")
            search.fit(X_train, y_train, groups=g_train)
        assert one_task_warnings(records) == []

        # Every candidate's split scores are those of fit(groups) + score(groups) by hand.
        results = search.cv_results_
        for i, params in enumerate(results["params"]):
            expected = _split_scores(estimator, params, X_train, y_train, g_train)
            got = [results[f"split{k}_test_score"][i] for k in range(3)]
            assert got == expected, params

        # The refit model is fit(groups) on all training tasks with the best parameters ...
        refit = clone(estimator).set_params(**search.best_params_).fit(
            X_train, y_train, groups=g_train)
        final_search, final_refit = search.best_estimator_, refit
        if isinstance(refit, Pipeline):
            final_search, final_refit = final_search[-1], final_refit[-1]
        for a, b in zip(final_search.coefs_ + final_search.intercepts_,
                        final_refit.coefs_ + final_refit.intercepts_):
            assert_array_equal(a, b)
        # ... and search.score routes groups to its score.
        test_score = search.score(X_test, y_test, groups=g_test)
        assert test_score == refit.score(X_test, y_test, groups=g_test)
        assert test_score != refit.score(X_test, y_test)  # groups changed the answer


def test_without_routing_fit_sees_no_groups_and_warns():
    """The contrast: with routing off, GridSearchCV gives groups to the splitter only."""
    X, y, g = regression_data()
    search = GridSearchCV(small_regressor(meta_batch_size=1), {"inner_lr": [0.01]},
                          cv=GroupKFold(3), error_score="raise")
    with config_context(enable_metadata_routing=False):
        with pytest.warns(UserWarning, match=ONE_TASK_WARNING):
            search.fit(X, y, groups=g)


@pytest.mark.bit_identity
@pytest.mark.parametrize("make_estimator", [small_regressor, small_classifier])
def test_cross_validate_routes_groups(make_estimator):
    estimator = make_estimator()
    X, y, g = data_for(estimator)
    with config_context(enable_metadata_routing=True):
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always")
            result = cross_validate(estimator, X, y, cv=GroupKFold(3), params={"groups": g},
                                    error_score="raise")
        assert one_task_warnings(records) == []
        assert list(result["test_score"]) == _split_scores(estimator, {}, X, y, g)


@pytest.mark.bit_identity
@pytest.mark.parametrize("metric", [None, "neg_mean_squared_error"])
@pytest.mark.parametrize("pipeline", [False, True], ids=["estimator", "pipeline"])
def test_few_shot_scorer_as_scoring_receives_groups(metric, pipeline):
    estimator = small_regressor()
    if pipeline:
        estimator = make_pipeline(StandardScaler(), estimator)
    X, y, g = regression_data()
    scorer = FewShotScorer(metric, n_support=3, random_state=1)
    step = "mamlregressor__" if pipeline else ""
    grid = {f"{step}inner_lr": [0.01, 0.1], f"{step}n_support": [1, 2]}
    with config_context(enable_metadata_routing=True):
        search = GridSearchCV(estimator, grid, cv=GroupKFold(3), scoring=scorer,
                              error_score="raise")
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always")
            search.fit(X, y, groups=g)
        assert one_task_warnings(records) == []
        for i, params in enumerate(search.cv_results_["params"]):
            expected = _split_scores(estimator, params, X, y, g, scorer=scorer)
            got = [search.cv_results_[f"split{k}_test_score"][i] for k in range(3)]
            assert got == expected, params
        # The protocol is the scorer's (n_support=3), not the candidate's own.
        best = search.best_estimator_
        assert scorer(best, X, y, groups=g) != best.score(X, y, groups=g)

        result = cross_validate(estimator, X, y, cv=GroupKFold(3), params={"groups": g},
                                scoring=scorer, error_score="raise")
        assert list(result["test_score"]) == _split_scores(estimator, {}, X, y, g, scorer)


def test_few_shot_scorer_classifier_in_grid_search():
    X, y, g = classification_data()
    scorer = FewShotScorer("accuracy", n_support=2)
    with config_context(enable_metadata_routing=True):
        search = GridSearchCV(small_classifier(), {"inner_lr": [0.1, 0.5]}, cv=GroupKFold(3),
                              scoring=scorer, error_score="raise").fit(X, y, groups=g)
        for i, params in enumerate(search.cv_results_["params"]):
            expected = _split_scores(small_classifier(), params, X, y, g, scorer=scorer)
            got = [search.cv_results_[f"split{k}_test_score"][i] for k in range(3)]
            assert got == expected


@pytest.mark.bit_identity
@pytest.mark.parametrize("make_estimator", [small_regressor, small_classifier])
def test_adapt_pipeline_goes_through_fitted_scaler(make_estimator):
    X, y, g = data_for(make_estimator())
    new_task = g == 0
    X_fit, y_fit, g_fit = X[~new_task], y[~new_task], g[~new_task]
    # Shift and stretch the features so that scaling matters.
    X_fit, X_new, y_new = 3.0 * X_fit + 5.0, 3.0 * X[new_task] + 5.0, y[new_task]
    X_support, y_support = X_new[::2], y_new[::2]
    X_query = X_new[1::2]
    with config_context(enable_metadata_routing=True):
        pipe = make_pipeline(StandardScaler(), make_estimator()).fit(X_fit, y_fit, groups=g_fit)
    scaler, final = pipe[0], pipe[-1]
    coefs_before = [W.copy() for W in final.coefs_]
    prediction_before = pipe.predict(X_query)

    adapted = adapt(pipe, X_support, y_support)

    assert isinstance(adapted, Pipeline) and adapted is not pipe
    assert adapted[0] is scaler  # the fitted transformer is reused, not refitted
    assert adapted[-1] is not final
    expected = final.adapt(scaler.transform(X_support), y_support)
    assert_array_equal(adapted.predict(X_query), expected.predict(scaler.transform(X_query)))
    for a, b in zip(adapted[-1].coefs_, expected.coefs_):
        assert_array_equal(a, b)
    # The original pipeline is unchanged.
    assert pipe[-1] is final and len(pipe.steps) == 2
    for a, b in zip(final.coefs_, coefs_before):
        assert_array_equal(a, b)
    assert_array_equal(pipe.predict(X_query), prediction_before)
    assert not np.array_equal(adapted[-1].coefs_[0], final.coefs_[0])


# -------------------------------------------------------------------------------------------------
# 3. clone, get_params / set_params, pickle and joblib
# -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make_estimator", [small_regressor, small_classifier])
def test_clone_get_params_set_params(make_estimator):
    est = make_estimator(inner_lr=0.2, n_query=3, hidden_layer_sizes=(5, 4))
    params = est.get_params()
    assert set(params) == set(inspect.signature(type(est)).parameters)
    cloned = clone(est)
    assert cloned is not est and cloned.get_params() == params
    assert est.set_params(inner_lr=0.3, n_inner_steps=2) is est
    assert est.inner_lr == 0.3 and est.n_inner_steps == 2
    with pytest.raises(ValueError, match="Invalid parameter"):
        est.set_params(not_a_parameter=1)

    X, y, g = data_for(est)
    est.fit(X, y, groups=g)
    cloned = clone(est)
    assert cloned.get_params() == est.get_params()
    with pytest.raises(NotFittedError):
        check_is_fitted(cloned)

    pipe = make_pipeline(StandardScaler(), make_estimator())
    step = pipe.steps[-1][0]
    pipe.set_params(**{f"{step}__meta_lr": 0.05})
    assert pipe[-1].meta_lr == 0.05
    assert clone(pipe).get_params()[f"{step}__meta_lr"] == 0.05


def _fitted_pair():
    X_r, y_r, g_r = regression_data()
    X_c, y_c, g_c = classification_data()
    return [(small_regressor().fit(X_r, y_r, groups=g_r), (X_r, y_r, g_r)),
            (small_classifier().fit(X_c, y_c, groups=g_c), (X_c, y_c, g_c))]


def _outputs(est, X, y, g):
    """Everything a round trip must preserve, as arrays and floats."""
    support, query = g == 0, g == 1
    model = est.adapt(X[support], y[support])
    out = {
        "predict": est.predict(X),
        "adapt_coef0": model.coefs_[0],
        "adapt_predict": model.predict(X[query]),
        "score": np.array(est.score(X, y, groups=g)),
        "few_shot_scorer": np.array(FewShotScorer(n_support=1)(est, X, y, groups=g)),
    }
    if hasattr(est, "predict_proba"):
        out["predict_proba"] = est.predict_proba(X)
    return out


def _assert_same_outputs(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].tobytes() == b[key].tobytes(), key


@pytest.mark.bit_identity
def test_pickle_and_joblib_round_trips(tmp_path):
    for est, data in _fitted_pair():
        expected = _outputs(est, *data)
        payload = pickle.dumps(est)
        # Only plain Python and NumPy state: nothing compiled by numba is stored.
        for marker in (b"numba", b"CPUDispatcher", b"Dispatcher", b"_kernels"):
            assert marker not in payload, marker
        _assert_same_outputs(_outputs(pickle.loads(payload), *data), expected)

        path = tmp_path / f"{type(est).__name__}.joblib"
        joblib.dump(est, path)
        _assert_same_outputs(_outputs(joblib.load(path), *data), expected)

        # An adapted model pickles too, and so does a warm-startable estimator's optimiser.
        adapted = est.adapt(data[0][data[2] == 0], data[1][data[2] == 0])
        assert b"numba" not in pickle.dumps(adapted)
        assert_array_equal(pickle.loads(pickle.dumps(adapted)).predict(data[0]),
                           adapted.predict(data[0]))
        # The estimator still works after being pickled (nothing was detached from it).
        _assert_same_outputs(_outputs(est, *data), expected)


_SUBPROCESS_SCRIPT = """
import pickle, sys
import numpy as np
from skmaml import FewShotScorer  # noqa: F401  (the pickles name skmaml classes)
with open(sys.argv[1], "rb") as f:
    estimators, datasets = pickle.load(f)
out = {}
for i, (est, (X, y, g)) in enumerate(zip(estimators, datasets)):
    support, query = g == 0, g == 1
    model = est.adapt(X[support], y[support])
    out[f"{i}_predict"] = est.predict(X)
    out[f"{i}_adapt_predict"] = model.predict(X[query])
    out[f"{i}_score"] = np.array(est.score(X, y, groups=g))
np.savez(sys.argv[2], **out)
"""


@pytest.mark.bit_identity
def test_pickle_loads_and_predicts_in_fresh_interpreter(tmp_path):
    pairs = _fitted_pair()
    estimators = [est for est, _ in pairs]
    datasets = [data for _, data in pairs]
    pickled = tmp_path / "estimators.pkl"
    with open(pickled, "wb") as f:
        pickle.dump((estimators, datasets), f)
    script = tmp_path / "load.py"
    script.write_text(_SUBPROCESS_SCRIPT)
    result_path = tmp_path / "result.npz"

    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_DISABLE_JIT")}
    repo_root = str(Path(skmaml.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo_root, env.get("PYTHONPATH")]))
    completed = subprocess.run([sys.executable, str(script), str(pickled), str(result_path)],
                               env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr

    def assert_same(child, parent):
        if numba_config.DISABLE_JIT:  # e.g. a coverage run: Python here, compiled in the child
            np.testing.assert_allclose(child, parent, rtol=1e-10, atol=1e-12)
        else:
            assert np.asarray(child).tobytes() == np.asarray(parent).tobytes()

    with np.load(result_path) as result:
        for i, (est, (X, y, g)) in enumerate(pairs):
            support, query = g == 0, g == 1
            model = est.adapt(X[support], y[support])
            assert_same(result[f"{i}_predict"], est.predict(X))
            assert_same(result[f"{i}_adapt_predict"], model.predict(X[query]))
            assert_same(result[f"{i}_score"], np.array(est.score(X, y, groups=g)))


# -------------------------------------------------------------------------------------------------
# 4. fit(tasks) and fit(X, y, groups) give the same model, bit for bit
# -------------------------------------------------------------------------------------------------

def _shuffled_string_groups(X, y, g, random_state=0):
    """Rows interleaved across tasks, task ids as unsorted strings."""
    rng = np.random.RandomState(random_state)
    names = np.array([f"site-{c}" for c in "qwertyuiopasdfgh"])[: np.unique(g).shape[0]]
    rows = rng.permutation(X.shape[0])
    return X[rows], y[rows], names[g[rows]]


def _tasks_in_sorted_group_order(X, y, groups):
    return [(X[groups == name], y[groups == name]) for name in np.unique(groups)]


def _assert_same_model(a, b):
    assert len(a.coefs_) == len(b.coefs_)
    for W_a, W_b in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        assert W_a.dtype == W_b.dtype and W_a.tobytes() == W_b.tobytes()
    assert a.loss_curve_ == b.loss_curve_
    assert a.n_iter_ == b.n_iter_


@pytest.mark.parametrize("make_estimator, kwargs", [
    (small_regressor, {}),
    (small_regressor, {"first_order": True, "meta_optimizer": "sgd", "n_inner_steps": 2}),
    (small_classifier, {}),
    (small_classifier, {"task_labels": "per_task"}),
], ids=["regressor", "regressor-fo-sgd", "classifier-shared", "classifier-per-task"])
@pytest.mark.bit_identity
def test_fit_tasks_equals_fit_groups(make_estimator, kwargs):
    est = make_estimator(max_iter=12, **kwargs)
    X, y, g = _shuffled_string_groups(*data_for(est))
    if kwargs.get("task_labels") == "per_task":
        # Each task gets its own pair of labels, so the tasks' classes differ.
        y = np.array([f"{name}/{label}" for name, label in zip(g, y)])
    assert list(g[:5]) != sorted(g[:5])  # really unsorted

    from_groups = clone(est).fit(X, y, groups=g)
    from_tasks = clone(est).fit(_tasks_in_sorted_group_order(X, y, g))
    _assert_same_model(from_groups, from_tasks)
    if hasattr(est, "classes_"):
        assert_array_equal(from_groups.classes_, from_tasks.classes_)

    # float32 stays float32 and the equivalence holds there too.
    X32 = X.astype(np.float32)
    _assert_same_model(clone(est).fit(X32, y, groups=g),
                       clone(est).fit(_tasks_in_sorted_group_order(X32, y, g)))
    assert clone(est).fit(X32, y, groups=g).coefs_[0].dtype == np.float32


# -------------------------------------------------------------------------------------------------
# 5. feature_names_in_ (pandas only)
# -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make_estimator", [small_regressor, small_classifier])
def test_feature_names_in_from_dataframes(make_estimator):
    pd = pytest.importorskip("pandas")
    est = make_estimator()
    X, y, g = data_for(est)
    columns = [f"feature_{j}" for j in range(X.shape[1])]
    df = pd.DataFrame(X, columns=columns)

    # Flat form.
    flat = clone(est).fit(df, y, groups=g)
    assert_array_equal(flat.feature_names_in_, columns)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "feature names" warning for the same columns
        flat.predict(df)
        flat.adapt(df[g == 0], y[g == 0]).predict(df)
        flat.score(df, y, groups=g)
    if len(columns) > 1:
        with pytest.raises(ValueError, match="feature names"):
            flat.predict(df[columns[::-1]])
    with pytest.warns(UserWarning, match="feature names"):
        flat.predict(X)

    # List-of-tasks form, 2-tuples and 4-tuples of data frames.
    tasks = [(df[g == t], y[g == t]) for t in np.unique(g)]
    from_tasks = clone(est).fit(tasks)
    assert_array_equal(from_tasks.feature_names_in_, columns)
    _assert_same_model(from_tasks, flat)
    four = [(X_t.iloc[:6], y_t[:6], X_t.iloc[6:], y_t[6:]) for X_t, y_t in tasks]
    assert_array_equal(clone(est).fit(four).feature_names_in_, columns)

    # A later task whose columns are in another order is an error, not silent misalignment.
    if len(columns) > 1:
        bad = list(tasks)
        bad[2] = (tasks[2][0][columns[::-1]], tasks[2][1])
        with pytest.raises(ValueError, match="task 2: X: .*feature names"):
            clone(est).fit(bad)
        bad_query = list(four)
        bad_query[1] = four[1][:2] + (four[1][2][columns[::-1]], four[1][3])
        with pytest.raises(ValueError, match="task 1: X_query: .*feature names"):
            clone(est).fit(bad_query)

    # Refitting on arrays forgets the names.
    refit = clone(est).fit(X, y, groups=g)
    assert not hasattr(refit, "feature_names_in_")
