"""Tests of skmaml.plotting (matplotlib on the Agg backend; skipped where matplotlib is missing)."""

import doctest
import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import skmaml.plotting
from skmaml import FewShotScorer, MAMLClassifier, MAMLRegressor, adapt
from skmaml.datasets import _flatten, make_episodes, make_sinusoid_tasks, split_classes
from skmaml.plotting import (
    AdaptationCurveDisplay,
    MetaTrainingCurveDisplay,
    RegressionFitDisplay,
    StepSizeDisplay,
)


@pytest.fixture
def pyplot():
    """matplotlib.pyplot on the Agg backend; figures closed after the test."""
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def _fit(est, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(*args, **kwargs)


@pytest.fixture(scope="module")
def sinusoid_tasks():
    return make_sinusoid_tasks(n_tasks=60, n_samples=20, random_state=0)


@pytest.fixture(scope="module")
def new_tasks():
    return make_sinusoid_tasks(n_tasks=8, n_samples=25, random_state=1)


@pytest.fixture(scope="module")
def maml(sinusoid_tasks):
    return _fit(MAMLRegressor(hidden_layer_sizes=(10,), n_support=5, meta_batch_size=10,
                              max_iter=30, random_state=0), sinusoid_tasks)


@pytest.fixture(scope="module")
def pooled(sinusoid_tasks):
    return _fit(MAMLRegressor(hidden_layer_sizes=(10,), n_support=5, meta_batch_size=10,
                              n_inner_steps=0, max_iter=30, random_state=0), sinusoid_tasks)


def test_doctests(pyplot):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the examples fit for a few steps
        result = doctest.testmod(skmaml.plotting, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


# -------------------------------------------------------------------------------------------------
# matplotlib is optional
# -------------------------------------------------------------------------------------------------


def _block_matplotlib(monkeypatch):
    # A None entry in sys.modules makes ``import matplotlib.pyplot`` raise ImportError.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)


@pytest.mark.parametrize("make_display", [
    lambda est, tasks: MetaTrainingCurveDisplay.from_estimator(est),
    lambda est, tasks: AdaptationCurveDisplay.from_estimator(est, tasks, max_steps=1),
    lambda est, tasks: RegressionFitDisplay.from_estimator(est, *tasks[0]),
    lambda est, tasks: MetaTrainingCurveDisplay(loss_curve=[1.0, 0.5]).plot(),
    lambda est, tasks: AdaptationCurveDisplay(steps=[0], losses={"a": [[1.0]]}).plot(),
    lambda est, tasks: StepSizeDisplay(coef_step_sizes=[[0.1]], intercept_step_sizes=[[0.1]],
                                       per_step=True).plot(),
], ids=["training", "adaptation", "fit", "training.plot", "adaptation.plot", "step_sizes.plot"])
def test_missing_matplotlib_message(monkeypatch, maml, new_tasks, make_display):
    _block_matplotlib(monkeypatch)
    with pytest.raises(ImportError, match="requires matplotlib: pip install matplotlib"):
        make_display(maml, new_tasks)


def test_import_does_not_need_matplotlib():
    code = ("import sys; sys.modules['matplotlib'] = None; sys.modules['matplotlib.pyplot'] = None;"
            "import skmaml.plotting; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# -------------------------------------------------------------------------------------------------
# MetaTrainingCurveDisplay
# -------------------------------------------------------------------------------------------------


def test_meta_training_curve(pyplot, maml):
    display = MetaTrainingCurveDisplay.from_estimator(maml)
    np.testing.assert_array_equal(display.line_.get_ydata(), maml.loss_curve_)
    np.testing.assert_array_equal(display.line_.get_xdata(), np.arange(1, 31))
    assert display.raw_line_ is None and display.validation_line_ is None
    assert display.ax_.get_xlabel() == "Meta-iteration"
    assert display.figure_ is display.ax_.figure
    assert display.line_.get_label() == "MAMLRegressor"


def test_meta_training_curve_smoothing(pyplot, maml):
    _, ax = pyplot.subplots()
    display = MetaTrainingCurveDisplay.from_estimator(maml, smoothing=5, ax=ax, name="MAML")
    assert display.ax_ is ax
    loss = np.asarray(maml.loss_curve_)
    expected = np.convolve(loss, np.ones(5) / 5, mode="valid")
    np.testing.assert_allclose(display.line_.get_ydata(), expected)
    np.testing.assert_array_equal(display.line_.get_xdata(), np.arange(5, 31))
    np.testing.assert_array_equal(display.raw_line_.get_ydata(), loss)
    assert "MAML (moving average of 5)" == display.line_.get_label()
    # A window longer than the curve becomes the whole curve: one point, the mean.
    display = MetaTrainingCurveDisplay.from_estimator(maml, smoothing=1000)
    np.testing.assert_allclose(display.line_.get_ydata(), [loss.mean()])
    with pytest.raises(ValueError, match="smoothing must be a positive int"):
        MetaTrainingCurveDisplay.from_estimator(maml, smoothing=0)


def test_meta_training_curve_validation_scores(pyplot, sinusoid_tasks):
    est = _fit(MAMLRegressor(hidden_layer_sizes=(10,), n_support=5, meta_batch_size=9,
                             early_stopping=True, n_iter_no_change=50, max_iter=24,
                             random_state=0), sinusoid_tasks)
    display = MetaTrainingCurveDisplay.from_estimator(est)
    scores = display.validation_line_.get_ydata()
    np.testing.assert_array_equal(scores, est.validation_scores_)
    x = display.validation_line_.get_xdata()
    assert x[-1] == len(est.loss_curve_) and np.all(np.diff(x) > 0)
    assert display.ax_validation_ is not None and display.ax_validation_ is not display.ax_


def test_meta_training_curve_pipeline_and_errors(pyplot, sinusoid_tasks):
    X, y, groups = _flatten(sinusoid_tasks)
    pipe = _fit(make_pipeline(StandardScaler(), MAMLRegressor(
        hidden_layer_sizes=(5,), n_support=5, max_iter=5, random_state=0)), X, y,
        mamlregressor__groups=groups)
    display = MetaTrainingCurveDisplay.from_estimator(pipe)
    assert len(display.line_.get_ydata()) == 5
    with pytest.raises(NotFittedError):
        MetaTrainingCurveDisplay.from_estimator(MAMLRegressor())
    with pytest.raises(ValueError, match="loss_curve is empty"):
        MetaTrainingCurveDisplay(loss_curve=[]).plot()


# -------------------------------------------------------------------------------------------------
# AdaptationCurveDisplay
# -------------------------------------------------------------------------------------------------


def test_adaptation_curve_matches_direct_adaptation(pyplot, maml, pooled, new_tasks):
    max_steps = 4
    display = AdaptationCurveDisplay.from_estimator({"MAML": maml, "pretrained": pooled},
                                                    new_tasks, n_support=5, max_steps=max_steps,
                                                    random_state=0)
    assert set(display.losses) == {"MAML", "pretrained"}
    np.testing.assert_array_equal(display.steps, np.arange(max_steps + 1))
    # The display draws its support rows with the estimator's sampler and FewShotScorer's seeds:
    # its curve at k steps is FewShotScorer's score of the same tasks with n_inner_steps=k.
    X, y, groups = _flatten(new_tasks)
    for name, est in (("MAML", maml), ("pretrained", pooled)):
        expected = [-FewShotScorer("neg_mean_squared_error", n_support=5, n_inner_steps=k,
                                   random_state=0)(est, X, y, groups=groups)
                    for k in range(max_steps + 1)]
        np.testing.assert_allclose(display.losses[name].mean(axis=0), expected, rtol=1e-10)
        np.testing.assert_allclose(display.lines_[name].get_ydata(), expected, rtol=1e-10)
        assert display.lines_[name].get_label() == name
        assert name in display.fill_between_
    # Another seed draws other support rows.
    other = AdaptationCurveDisplay.from_estimator(maml, new_tasks, n_support=5, max_steps=1,
                                                  random_state=1)
    assert not np.allclose(other.losses["MAMLRegressor"][:, 1], display.losses["MAML"][:, 1])
    assert "95% confidence band" in display.ax_.get_ylabel()
    assert display.ax_.get_xlabel().startswith("Inner gradient steps")


def test_adaptation_curve_band_is_the_t_interval(pyplot):
    from scipy.stats import t

    losses = np.array([[1.0, 0.5], [3.0, 0.7], [2.0, 0.9]])
    display = AdaptationCurveDisplay(steps=[0, 1], losses={"a": losses}).plot(
        confidence_level=0.9)
    half = t.ppf(0.95, 2) * losses.std(axis=0, ddof=1) / np.sqrt(3)
    band = display.fill_between_["a"].get_paths()[0].vertices[:, 1]
    mean = losses.mean(axis=0)
    np.testing.assert_allclose(band.min(), (mean - half).min())
    np.testing.assert_allclose(band.max(), (mean + half).max())
    display = AdaptationCurveDisplay(steps=[0, 1], losses={"a": losses}).plot(
        confidence_level=None)
    assert display.fill_between_ == {}


def test_adaptation_curve_same_rows_for_every_estimator(pyplot, maml, new_tasks):
    display = AdaptationCurveDisplay.from_estimator({"a": maml, "b": maml}, new_tasks,
                                                    n_support=5, max_steps=2)
    np.testing.assert_array_equal(display.losses["a"], display.losses["b"])


def test_adaptation_curve_single_estimator_fixed_splits_and_metrics(pyplot, maml, new_tasks):
    fixed = [(X[:5], y[:5], X[5:], y[5:]) for X, y in new_tasks]
    display = AdaptationCurveDisplay.from_estimator(maml, fixed, max_steps=3, metric="mae")
    assert list(display.lines_) == ["MAMLRegressor"]
    expected_0 = [np.mean(np.abs(maml.predict(Xq) - yq)) for _, _, Xq, yq in fixed]
    np.testing.assert_allclose(display.losses["MAMLRegressor"][:, 0], expected_0)
    assert "MAE" in display.ax_.get_ylabel()

    def max_error(y_true, y_pred):
        return np.max(np.abs(y_true - y_pred))

    display = AdaptationCurveDisplay.from_estimator(maml, fixed, max_steps=1, metric=max_error)
    assert "max_error" in display.ax_.get_ylabel()
    with pytest.raises(ValueError, match="metric must be one of"):
        AdaptationCurveDisplay.from_estimator(maml, fixed, metric="r2")
    with pytest.warns(UserWarning, match="task 0 has 25 rows, so it uses 24"):
        AdaptationCurveDisplay.from_estimator(maml, new_tasks, n_support=25, max_steps=1)
    one_row = (new_tasks[1][0][:1], new_tasks[1][1][:1])
    with pytest.raises(ValueError, match="task 1 has 1 row: too few"):
        AdaptationCurveDisplay.from_estimator(maml, [new_tasks[0], one_row])
    with pytest.raises(ValueError, match="max_steps"):
        AdaptationCurveDisplay.from_estimator(maml, new_tasks, max_steps=-1)


def test_adaptation_curve_pipeline(pyplot, sinusoid_tasks, new_tasks):
    X, y, groups = _flatten(sinusoid_tasks)
    pipe = _fit(make_pipeline(StandardScaler(), MAMLRegressor(
        hidden_layer_sizes=(5,), n_support=5, max_iter=5, random_state=0)), X, y,
        mamlregressor__groups=groups)
    display = AdaptationCurveDisplay.from_estimator(pipe, new_tasks, n_support=5, max_steps=2)
    Xs, ys = new_tasks[0][0][:5], new_tasks[0][1][:5]
    assert display.losses["MAMLRegressor"].shape == (len(new_tasks), 3)
    # Step 2 through the pipeline is adapt(pipe, ..., 2).
    fixed = [(X_t[:5], y_t[:5], X_t[5:], y_t[5:]) for X_t, y_t in new_tasks]
    display = AdaptationCurveDisplay.from_estimator(pipe, fixed, max_steps=2)
    direct = np.mean((adapt(pipe, Xs, ys, n_inner_steps=2).predict(fixed[0][2])
                      - fixed[0][3]) ** 2)
    np.testing.assert_allclose(display.losses["MAMLRegressor"][0, 2], direct, rtol=1e-10)


def test_adaptation_curve_classifier_on_held_out_classes(pyplot):
    rng = np.random.RandomState(0)
    y = np.repeat(np.arange(8), 12)
    X = rng.normal(size=(96, 2)) + np.c_[np.cos(y), np.sin(y)] * 2
    train, test = split_classes(y, test_size=3, random_state=0)
    episodes = make_episodes(X, y, n_way=2, n_support=2, n_query=4, n_episodes=20, classes=train,
                             random_state=0)
    clf = _fit(MAMLClassifier(hidden_layer_sizes=(6,), n_support=2, task_labels="per_task",
                              inner_lr=0.3, meta_batch_size=10, max_iter=10, random_state=0),
               episodes)
    test_tasks = make_episodes(X, y, n_way=2, n_support=3, n_query=5, n_episodes=6, classes=test,
                               split=False, random_state=1)
    display = AdaptationCurveDisplay.from_estimator(clf, test_tasks, n_support=3, max_steps=3,
                                                    metric="accuracy")
    acc = display.losses["MAMLClassifier"]
    assert acc.shape == (6, 4) and acc.min() >= 0 and acc.max() <= 1
    display = AdaptationCurveDisplay.from_estimator(clf, test_tasks, n_support=3, max_steps=1,
                                                    metric="log_loss")
    assert np.isfinite(display.losses["MAMLClassifier"]).all()
    with pytest.warns(UserWarning, match="task 0 has 8 rows of class .*so it uses 7"):
        AdaptationCurveDisplay.from_estimator(clf, test_tasks, n_support=9, max_steps=1)


# -------------------------------------------------------------------------------------------------
# RegressionFitDisplay
# -------------------------------------------------------------------------------------------------


def test_regression_fit(pyplot, maml):
    [(X, y)], [(amplitude, phase)] = make_sinusoid_tasks(n_tasks=1, n_samples=30,
                                                          return_params=True, random_state=2)

    def true_function(x):
        return amplitude * np.sin(x[:, 0] - phase)

    display = RegressionFitDisplay.from_estimator(
        maml, X[:5], y[:5], n_inner_steps=[10, 1], true_function=true_function,
        X_query=X[5:], y_query=y[5:], x_range=(-5, 5), n_points=50, name="MAML")
    grid = np.linspace(-5, 5, 50).reshape(-1, 1)
    np.testing.assert_allclose(display.true_line_.get_ydata(), true_function(grid))
    np.testing.assert_allclose(display.before_line_.get_ydata(), maml.predict(grid))
    assert sorted(display.after_lines_) == [1, 10]
    for steps, line in display.after_lines_.items():
        np.testing.assert_allclose(line.get_ydata(),
                                   maml.adapt(X[:5], y[:5], n_inner_steps=steps).predict(grid),
                                   rtol=1e-10, atol=1e-12)
    assert display.line_ is display.after_lines_[10]
    assert display.support_points_.get_offsets().shape == (5, 2)
    assert display.query_points_.get_offsets().shape == (25, 2)
    assert display.ax_.get_title() == "MAML"
    labels = [t.get_text() for t in display.ax_.get_legend().get_texts()]
    assert "support rows (K=5)" in labels and "after 1 step" in labels


def test_regression_fit_defaults_and_errors(pyplot, maml):
    X, y = make_sinusoid_tasks(n_tasks=1, n_samples=6, random_state=3)[0]
    display = RegressionFitDisplay.from_estimator(maml, X, y)
    assert list(display.after_lines_) == [maml.n_inner_steps]
    assert display.true_line_ is None and display.query_points_ is None
    x = display.line_.get_xdata()
    assert x.min() == X.min() and x.max() == X.max()
    with pytest.raises(ValueError, match="one input feature"):
        RegressionFitDisplay.from_estimator(maml, np.c_[X, X], y)
    with pytest.raises(ValueError, match="n_inner_steps"):
        RegressionFitDisplay.from_estimator(maml, X, y, n_inner_steps=-1)
    labels = np.arange(6) % 2
    clf = _fit(MAMLClassifier(hidden_layer_sizes=(3,), n_support=2, meta_batch_size=3, max_iter=2,
                              random_state=0),
               [(X, labels)] * 3)
    with pytest.raises(TypeError, match="got a classifier"):
        RegressionFitDisplay.from_estimator(clf, X, labels)


# -------------------------------------------------------------------------------------------------
# Learned step sizes
# -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lslr(sinusoid_tasks):
    return _fit(MAMLRegressor(hidden_layer_sizes=(10,), n_support=5, meta_batch_size=10,
                              n_inner_steps=3, learn_inner_lr="per_layer_step", max_iter=30,
                              random_state=0), sinusoid_tasks)


def test_step_size_display_per_step(pyplot, lslr):
    display = StepSizeDisplay.from_estimator(lslr)
    assert display.per_step and len(display.artists_) == 4
    np.testing.assert_array_equal(display.artists_[0].get_ydata(), lslr.inner_lr_coefs_[0])
    np.testing.assert_array_equal(display.artists_[3].get_ydata(),
                                  lslr.inner_lr_intercepts_[1])
    np.testing.assert_array_equal(display.artists_[0].get_xdata(), [1, 2, 3])
    assert "per_layer_step" in display.ax_.get_title()


def test_step_size_display_per_parameter_and_errors(pyplot, sinusoid_tasks, maml):
    est = _fit(MAMLRegressor(hidden_layer_sizes=(10,), n_support=5, meta_batch_size=10,
                             learn_inner_lr="per_parameter", adapted_layers=1, max_iter=30,
                             random_state=0), sinusoid_tasks)
    display = StepSizeDisplay.from_estimator(est, name="Meta-SGD")
    assert not display.per_step and len(display.artists_) == 4  # W1, b1, W2, b2
    labels = [t.get_text() for t in display.ax_.get_xticklabels()]
    assert labels == ["W1", "b1", "W2", "b2"]
    assert display.ax_.get_title() == "Meta-SGD"
    with pytest.raises(ValueError, match="no learned step sizes"):
        StepSizeDisplay.from_estimator(maml)
    with pytest.raises(NotFittedError):
        StepSizeDisplay.from_estimator(MAMLRegressor(learn_inner_lr="per_parameter"))


def test_adaptation_curve_is_exact_for_per_step_sizes(pyplot, lslr, new_tasks):
    """The display adapts one step at a time; with step sizes learned per step, each further
    step continues the schedule, so the curve at k steps is adapt(..., n_inner_steps=k)'s."""
    display = AdaptationCurveDisplay.from_estimator(lslr, new_tasks, n_support=5, max_steps=5,
                                                    random_state=0)
    X, y, groups = _flatten(new_tasks)
    expected = [-FewShotScorer("neg_mean_squared_error", n_support=5, n_inner_steps=k,
                               random_state=0)(lslr, X, y, groups=groups) for k in range(6)]
    np.testing.assert_allclose(display.losses["MAMLRegressor"].mean(axis=0), expected,
                               rtol=1e-10)
