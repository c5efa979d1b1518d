"""Safe persistence with skops.io: fitted and adapted estimators (alone and in a Pipeline) load
with skmaml's own types trusted (:func:`skmaml.persistence.trusted_types`) and nothing else, and
then predict, adapt, score and continue a ``warm_start`` fit bit for bit as the originals do.

The pickle and joblib round trips are tested in test_sklearn_integration.py.
"""

import doctest
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sklearn
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

import skmaml
import skmaml.persistence
from helpers import classification_data, regression_data, small_classifier, small_regressor
from skmaml import FewShotScorer, MAMLClassifier, MAMLRegressor
from skmaml._optim import AdamOptimizer, SGDOptimizer
from skmaml.datasets import make_episodes
from skmaml.persistence import trusted_types

sio = pytest.importorskip("skops.io")

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

ROOT = Path(__file__).resolve().parents[1]


# -------------------------------------------------------------------------------------------------
# The cases: every kind of fitted state a file can hold
# -------------------------------------------------------------------------------------------------

def _episodes():
    """3-way episodes of six training classes, and validation episodes of three other classes."""
    rng = np.random.RandomState(0)
    y = np.repeat(np.arange(9), 12)
    X = rng.normal(size=(y.shape[0], 3)) + 0.5 * y[:, None]
    train = make_episodes(X, y, n_way=3, n_support=2, n_query=3, n_episodes=10,
                          classes=np.arange(6), flat=True, random_state=0)
    valid = make_episodes(X, y, n_way=3, n_support=2, n_query=3, n_episodes=3,
                          classes=np.arange(6, 9), flat=True, random_state=1)
    return train, valid


def _case(name):
    """``(unfitted estimator, fit keyword arguments, (X, y, groups))``; fit with ``groups``."""
    regression, classification = regression_data(), classification_data()
    (X_e, y_e, g_e), (X_v, y_v, g_v) = _episodes()
    per_task = dict(task_labels="per_task", n_support=2)
    validation = dict(X_val=X_v, y_val=y_v, groups_val=g_v)
    cases = {
        "regressor-adam": (small_regressor(), {}, regression),
        "regressor-sgd": (small_regressor(meta_optimizer="sgd"), {}, regression),
        "regressor-early-stopping": (small_regressor(early_stopping=True), {}, regression),
        "regressor-float32": (small_regressor(), {},
                              (regression[0].astype(np.float32), regression[1].astype(np.float32),
                               regression[2])),
        "classifier-shared-adam": (small_classifier(), {}, classification),
        "classifier-shared-sgd": (small_classifier(meta_optimizer="sgd"), {}, classification),
        "classifier-per-task": (small_classifier(**per_task), {}, (X_e, y_e, g_e)),
        "classifier-per-task-early-stopping": (
            small_classifier(**per_task, early_stopping=True), validation, (X_e, y_e, g_e)),
        "pipeline": (make_pipeline(StandardScaler(), small_regressor()), {}, regression),
        "regressor-meta-sgd-head": (
            small_regressor(learn_inner_lr="per_parameter", adapted_layers=1), {}, regression),
        "classifier-lslr": (small_classifier(learn_inner_lr="per_layer_step", n_inner_steps=2),
                            {}, classification),
    }
    return cases[name]


CASES = ["regressor-adam", "regressor-sgd", "regressor-early-stopping", "regressor-float32",
         "classifier-shared-adam", "classifier-shared-sgd", "classifier-per-task",
         "classifier-per-task-early-stopping", "pipeline", "regressor-meta-sgd-head",
         "classifier-lslr"]


def _fit(est, fit_params, data):
    X, y, groups = data
    # A Pipeline routes groups to its last step only with metadata routing enabled.
    with sklearn.config_context(enable_metadata_routing=True):
        return est.fit(X, y, groups=groups, **fit_params)


@pytest.fixture(scope="module")
def fitted():
    """Each case fitted once (the tests that change an estimator work on a loaded copy)."""
    out = {}
    for name in CASES:
        est, fit_params, data = _case(name)
        out[name] = (_fit(est, fit_params, data), fit_params, data)
    return out


def _round_trip(obj):
    return sio.loads(sio.dumps(obj), trusted=trusted_types())


def _final(est):
    return est[-1] if isinstance(est, Pipeline) else est


def _support(data):
    X, y, groups = data
    return X[groups == groups[0]], y[groups == groups[0]]


def _outputs(est, data):
    """Everything a loaded model must reproduce, as arrays."""
    X, y, groups = data
    X_support, y_support = _support(data)
    model = skmaml.adapt(est, X_support, y_support)
    with sklearn.config_context(enable_metadata_routing=True):
        score = est.score(X, y, groups=groups)
    out = {
        "predict": est.predict(X),
        "score": np.array(score),
        "few_shot_scorer": np.array(FewShotScorer(n_support=1)(est, X, y, groups=groups)),
        "adapt_predict": model.predict(X),
        "adapt_coef0": _final(model).coefs_[0],
    }
    if hasattr(est, "predict_proba"):
        out["predict_proba"] = est.predict_proba(X)
        out["adapt_predict_proba"] = model.predict_proba(X)
    return out


def _assert_same_outputs(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert a[key].tobytes() == b[key].tobytes(), key


def _assert_same_state(a, b, path="estimator"):
    """Same types and the same values bit for bit, through lists, dicts and objects' attributes
    (so the meta-optimiser's moments and step count too)."""
    assert type(a) is type(b), path
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        if a.dtype == object:
            assert a.tolist() == b.tolist(), path
        else:
            assert a.tobytes() == b.tobytes(), path
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (item_a, item_b) in enumerate(zip(a, b)):
            _assert_same_state(item_a, item_b, f"{path}[{i}]")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _assert_same_state(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, float):
        assert np.float64(a).tobytes() == np.float64(b).tobytes(), path
    elif hasattr(a, "__dict__") and not isinstance(a, type):
        _assert_same_state(vars(a), vars(b), path)
    else:
        assert a == b, path


# -------------------------------------------------------------------------------------------------
# Round trips
# -------------------------------------------------------------------------------------------------

@pytest.mark.bit_identity
@pytest.mark.parametrize("name", CASES)
def test_round_trip_predicts_adapts_and_scores_identically(fitted, name):
    est, _, data = fitted[name]
    expected = _outputs(est, data)
    loaded = _round_trip(est)
    assert loaded is not est
    _assert_same_state(loaded, est)
    _assert_same_outputs(_outputs(loaded, data), expected)
    # Dumping read the estimator and changed nothing in it.
    _assert_same_outputs(_outputs(est, data), expected)


@pytest.mark.bit_identity
@pytest.mark.parametrize("name", CASES)
def test_adapted_model_round_trip(fitted, name):
    est, _, data = fitted[name]
    adapted = skmaml.adapt(est, *_support(data))
    loaded = _round_trip(adapted)
    _assert_same_state(loaded, adapted)
    X = data[0]
    assert loaded.predict(X).tobytes() == adapted.predict(X).tobytes()
    if hasattr(adapted, "predict_proba"):
        assert loaded.predict_proba(X).tobytes() == adapted.predict_proba(X).tobytes()
    # An adapted model is a fitted estimator: it adapts again like the original.
    again, again_loaded = (skmaml.adapt(model, *_support(data)) for model in (adapted, loaded))
    assert again_loaded.predict(X).tobytes() == again.predict(X).tobytes()


@pytest.mark.bit_identity
@pytest.mark.parametrize("name", CASES)
def test_warm_start_continues_identically_after_loading(fitted, name):
    """The loaded estimator keeps the meta-optimiser's state (Adam's moments and step count), so
    continuing its meta-training equals continuing the original's."""
    est, fit_params, data = fitted[name]
    original, loaded = _round_trip(est), _round_trip(est)  # two copies: the fixture stays as fitted
    for model in (original, loaded):
        _final(model).set_params(warm_start=True, max_iter=5)
        _fit(model, fit_params, data)
    assert _final(loaded).n_iter_ == _final(est).n_iter_ + 5
    _assert_same_state(loaded, original)
    _assert_same_outputs(_outputs(loaded, data), _outputs(original, data))


@pytest.mark.bit_identity
def test_warm_started_fit_round_trip():
    """An estimator fitted twice with ``warm_start`` (its history spans both fits) loads and
    continues as the original does."""
    est, _, data = _case("regressor-adam")
    est.set_params(warm_start=True, max_iter=4)
    _fit(est, {}, data)
    _fit(est, {}, data)
    assert est.n_iter_ == 8 and len(est.loss_curve_) == 8
    loaded = _round_trip(est)
    _assert_same_state(loaded, est)
    _fit(est, {}, data)
    _fit(loaded, {}, data)
    _assert_same_state(loaded, est)


# -------------------------------------------------------------------------------------------------
# Trust: skmaml's types are needed, and they are all that is needed
# -------------------------------------------------------------------------------------------------

def test_trusted_types_names_skmaml_classes_only():
    names = trusted_types()
    assert names == sorted(set(names))
    assert names is not trusted_types()  # a new list each call: extending it changes nothing here
    for name in names:
        module, _, cls_name = name.rpartition(".")
        assert module.startswith("skmaml."), name
        cls = getattr(sys.modules[module], cls_name)
        assert f"{cls.__module__}.{cls.__name__}" == name
    assert set(names) == {f"{cls.__module__}.{cls.__name__}" for cls in
                          (MAMLRegressor, MAMLClassifier, AdamOptimizer, SGDOptimizer,
                           FewShotScorer)}


@pytest.mark.parametrize("name", CASES)
def test_untrusted_types_are_skmaml_types_only(fitted, name):
    """What skops does not trust by default in a file of a fitted or an adapted estimator is
    exactly the estimator's class and its meta-optimiser's: all in ``trusted_types()``. NumPy's and
    scikit-learn's types (Pipeline, StandardScaler, arrays, scalars) are trusted by default."""
    est, _, data = fitted[name]
    final = _final(est)
    optimizer = {"adam": AdamOptimizer, "sgd": SGDOptimizer}[final.meta_optimizer]
    expected = sorted(f"{cls.__module__}.{cls.__name__}" for cls in (type(final), optimizer))
    for obj in (est, skmaml.adapt(est, *_support(data))):
        untrusted = sio.get_untrusted_types(data=sio.dumps(obj))
        assert untrusted == expected
        assert set(untrusted) <= set(trusted_types())


def test_unfitted_estimator_needs_only_its_class():
    untrusted = sio.get_untrusted_types(data=sio.dumps(MAMLClassifier()))
    assert untrusted == ["skmaml._classifier.MAMLClassifier"]
    assert isinstance(sio.loads(sio.dumps(MAMLClassifier()), trusted=trusted_types()),
                      MAMLClassifier)


def test_loading_without_trust_raises(fitted):
    est = fitted["regressor-adam"][0]
    payload = sio.dumps(est)
    with pytest.raises(sio.exceptions.UntrustedTypesFoundException, match="MAMLRegressor"):
        sio.loads(payload)
    # Trusting part of what the file needs is not enough either.
    with pytest.raises(sio.exceptions.UntrustedTypesFoundException, match="AdamOptimizer"):
        sio.loads(payload, trusted=["skmaml._regressor.MAMLRegressor"])


class _NotSkmaml:
    """A type that is neither skmaml's nor trusted by skops."""


def test_trusted_types_trust_nothing_else(fitted):
    payload = sio.dumps({"model": fitted["regressor-adam"][0], "extra": _NotSkmaml()})
    with pytest.raises(sio.exceptions.UntrustedTypesFoundException, match="_NotSkmaml") as info:
        sio.loads(payload, trusted=trusted_types())
    assert "skmaml." not in str(info.value)


def test_search_needs_its_splitter_trusted_too():
    """A fitted search keeps its FewShotScorer (skmaml's, listed) and its splitter (scikit-learn's,
    not trusted by default); its best estimator needs skmaml's types only."""
    X, y, groups = regression_data()
    search = GridSearchCV(small_regressor(max_iter=3), {"inner_lr": [0.01, 0.1]}, cv=GroupKFold(2),
                          scoring=FewShotScorer(n_support=2))
    with sklearn.config_context(enable_metadata_routing=True):
        search.fit(X, y, groups=groups)
    splitter = "sklearn.model_selection._split.GroupKFold"
    payload = sio.dumps(search)
    untrusted = sio.get_untrusted_types(data=payload)
    assert "skmaml._scoring.FewShotScorer" in untrusted
    assert set(untrusted) - set(trusted_types()) == {splitter}
    with pytest.raises(sio.exceptions.UntrustedTypesFoundException, match="GroupKFold"):
        sio.loads(payload, trusted=trusted_types())
    loaded = sio.loads(payload, trusted=trusted_types() + [splitter])
    assert loaded.predict(X).tobytes() == search.predict(X).tobytes()
    best = sio.dumps(search.best_estimator_)
    assert set(sio.get_untrusted_types(data=best)) <= set(trusted_types())


def test_file_round_trip_with_the_documented_call(fitted, tmp_path):
    est, _, data = fitted["classifier-shared-adam"]
    path = tmp_path / "model.skops"
    sio.dump(est, path)
    loaded = sio.load(path, trusted=skmaml.persistence.trusted_types())
    assert loaded.predict_proba(data[0]).tobytes() == est.predict_proba(data[0]).tobytes()


def test_optimizer_state_that_does_not_fit_theta_is_refused(fitted):
    """A file's Adam moments reach a compiled kernel without bounds checks: moments that do not
    fit θ (as in an edited file) stop a warm-started fit with an error instead of being read past
    their end."""
    est, _, data = fitted["regressor-adam"]
    tampered = _round_trip(est)
    tampered._optimizer.m = tampered._optimizer.m[:3].copy()
    loaded = _round_trip(tampered)
    loaded.set_params(warm_start=True, max_iter=2)
    with pytest.raises(ValueError, match="Adam state does not fit"):
        _fit(loaded, {}, data)


# -------------------------------------------------------------------------------------------------
# skops stays optional, and the documentation's examples run
# -------------------------------------------------------------------------------------------------

def test_skmaml_does_not_import_skops():
    code = ("import sys, skmaml, skmaml.persistence\n"
            "skmaml.persistence.trusted_types()\n"
            "assert 'skops' not in sys.modules, sorted(m for m in sys.modules if 'skops' in m)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(Path(skmaml.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]))}
    completed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                               text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr


def test_docstring_example():
    result = doctest.testmod(skmaml.persistence, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_documentation_page_examples(tmp_path, monkeypatch):
    """docs/persistence.rst's ``>>>`` examples, run in a scratch directory (they write files)."""
    monkeypatch.chdir(tmp_path)
    result = doctest.testfile(str(ROOT / "docs" / "persistence.rst"), module_relative=False,
                              optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0

