"""Plots of meta-training and adaptation, in the style of scikit-learn's ``Display`` objects.

matplotlib is an optional dependency (``pip install matplotlib`` or ``pip install "skmaml[plot]"``);
it is imported only when something is drawn, so importing this module never needs it.

Each display stores what it draws, has a ``plot(ax=None, ...)`` method returning itself with the
axes in ``ax_``, the figure in ``figure_`` and the drawn artists in attributes ending in ``_``, and
a ``from_estimator`` class method that computes the data from fitted estimators and plots it:

- :class:`MetaTrainingCurveDisplay`: the meta-training loss (``loss_curve_``), optionally smoothed,
  and the validation scores of early stopping;
- :class:`AdaptationCurveDisplay`: mean query loss on new tasks against the number of inner
  gradient steps, with confidence bands, for several estimators side by side (the MAML paper's
  Figure 2, right);
- :class:`RegressionFitDisplay`: one 1-D regression task, its support rows and the model before and
  after adaptation (the MAML paper's Figure 2, left);
- :class:`StepSizeDisplay`: the learned inner step sizes (``learn_inner_lr``) per layer, and per
  step for ``"per_layer_step"``.
"""

from numbers import Integral, Real

import numpy as np
from sklearn.base import is_classifier
from sklearn.metrics import accuracy_score, log_loss, mean_absolute_error, mean_squared_error
from sklearn.utils import _safe_indexing
from sklearn.utils.validation import _num_samples, check_is_fitted

from ._kernels._config import ALL_OTHER_ROWS, RANDOM_SPLIT
from ._messages import counted
from ._scoring import _final_maml_step, adapt
from ._stats import mean_confidence_interval
from ._tasks import TaskSet

__all__ = ["MetaTrainingCurveDisplay", "AdaptationCurveDisplay", "RegressionFitDisplay",
           "StepSizeDisplay"]


def _import_pyplot(caller):
    """``matplotlib.pyplot``, or an ImportError that says how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(f"{caller} requires matplotlib: pip install matplotlib "
                          "(or pip install \"skmaml[plot]\").") from exc
    return plt


def _get_ax(plt, ax):
    if ax is None:
        _, ax = plt.subplots()
    return ax


def _default_name(estimator):
    return type(_final_maml_step(estimator)[0]).__name__


# -------------------------------------------------------------------------------------------------
# Meta-training curve
# -------------------------------------------------------------------------------------------------


def _moving_average(values, window):
    """Mean of each run of ``window`` consecutive values (``len(values) - window + 1`` of them)."""
    cumulative = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    return (cumulative[window:] - cumulative[:-window]) / window


class MetaTrainingCurveDisplay:
    """Meta-training curve: the mean query loss after adaptation at each meta-iteration.

    Each point of ``loss_curve_`` is the loss of one meta-batch, so the raw curve is noisy; a
    moving average (``smoothing``) shows the trend. With early stopping, the few-shot validation
    scores of the held-out tasks are drawn on a second y-axis.

    Build it with :meth:`from_estimator`; the constructor only stores data.

    Parameters
    ----------
    loss_curve : array-like of shape (n_iter,)
        Loss at each meta-iteration.
    validation_scores : array-like of shape (n_passes,), default=None
        Validation score after each pass over the training tasks, or None.
    estimator_name : str, default=None
        Name in the legend.

    Attributes
    ----------
    line_ : matplotlib Line2D
        The loss curve (smoothed if ``smoothing`` was given).
    raw_line_ : matplotlib Line2D or None
        The unsmoothed loss curve, drawn faintly under a smoothed one.
    validation_line_ : matplotlib Line2D or None
        The validation scores.
    ax_validation_ : matplotlib Axes or None
        The second y-axis of the validation scores.
    ax_ : matplotlib Axes
    figure_ : matplotlib Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skmaml import MAMLRegressor
    >>> from skmaml.datasets import make_sinusoid_tasks
    >>> from skmaml.plotting import MetaTrainingCurveDisplay
    >>> tasks = make_sinusoid_tasks(n_tasks=100, random_state=0)
    >>> est = MAMLRegressor(hidden_layer_sizes=(20,), max_iter=50, random_state=0).fit(tasks)
    >>> display = MetaTrainingCurveDisplay.from_estimator(est, smoothing=10)
    >>> display.line_.get_xdata().shape
    (41,)
    """

    def __init__(self, *, loss_curve, validation_scores=None, estimator_name=None):
        self.loss_curve = loss_curve
        self.validation_scores = validation_scores
        self.estimator_name = estimator_name

    def plot(self, ax=None, *, smoothing=None, name=None, line_kw=None, validation_kw=None):
        """Draw the curve.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; a new figure if None.
        smoothing : int, default=None
            Window (in meta-iterations) of a moving average of the loss; the raw curve is drawn
            faintly beneath. None or 1 draws the raw curve only. A window longer than the curve is
            shortened to its length.
        name : str, default=None
            Legend name; ``estimator_name`` if None.
        line_kw : dict, default=None
            Keyword arguments of ``ax.plot`` for the loss curve.
        validation_kw : dict, default=None
            Keyword arguments of ``ax.plot`` for the validation scores.

        Returns
        -------
        display : MetaTrainingCurveDisplay
        """
        plt = _import_pyplot("MetaTrainingCurveDisplay")
        if smoothing is not None and (not isinstance(smoothing, Integral) or smoothing < 1):
            raise ValueError(f"smoothing must be a positive int or None, got {smoothing!r}.")
        loss = np.asarray(self.loss_curve, dtype=np.float64).reshape(-1)
        if loss.size == 0:
            raise ValueError("loss_curve is empty: nothing to plot.")
        name = self.estimator_name if name is None else name
        ax = _get_ax(plt, ax)
        iterations = np.arange(1, loss.size + 1)
        window = 1 if smoothing is None else min(int(smoothing), loss.size)
        line_kw = {"label": name or "loss", **(line_kw or {})}
        self.raw_line_ = None
        if window > 1:
            (self.raw_line_,) = ax.plot(iterations, loss, alpha=0.3, linewidth=0.8)
            line_kw["color"] = line_kw.get("color", self.raw_line_.get_color())
            line_kw["label"] = f"{line_kw['label']} (moving average of {window})"
            (self.line_,) = ax.plot(iterations[window - 1:], _moving_average(loss, window),
                                    **line_kw)
        else:
            (self.line_,) = ax.plot(iterations, loss, **line_kw)
        ax.set_xlabel("Meta-iteration")
        ax.set_ylabel("Mean query loss after adaptation")
        handles = [self.line_]

        self.validation_line_ = self.ax_validation_ = None
        scores = self.validation_scores
        if scores is not None and len(scores):
            scores = np.asarray(scores, dtype=np.float64).reshape(-1)
            # A score is recorded after each pass over the training tasks; spread them evenly,
            # the last at the last meta-iteration (exact when every pass has the same length).
            at = np.arange(1, scores.size + 1) * loss.size / scores.size
            self.ax_validation_ = ax.twinx()
            validation_kw = {"label": "validation score", "color": "tab:orange", "marker": "o",
                             "markersize": 3, **(validation_kw or {})}
            (self.validation_line_,) = self.ax_validation_.plot(at, scores, **validation_kw)
            self.ax_validation_.set_ylabel("Few-shot validation score")
            handles.append(self.validation_line_)
        ax.legend(handles=handles, loc="best")
        self.ax_ = ax
        self.figure_ = ax.figure
        return self

    @classmethod
    def from_estimator(cls, estimator, *, smoothing=None, ax=None, name=None, line_kw=None,
                       validation_kw=None):
        """Plot the meta-training curve of a fitted MAML estimator (or a Pipeline ending in one).

        Parameters
        ----------
        estimator : MAMLRegressor, MAMLClassifier or Pipeline
            Fitted; its ``loss_curve_`` and ``validation_scores_`` are drawn.
        smoothing : int, default=None
            Moving-average window, see :meth:`plot`.
        ax : matplotlib Axes, default=None
        name : str, default=None
            Legend name; the estimator's class name if None.
        line_kw, validation_kw : dict, default=None
            See :meth:`plot`.

        Returns
        -------
        display : MetaTrainingCurveDisplay
        """
        _import_pyplot("MetaTrainingCurveDisplay")
        final = _final_maml_step(estimator)[0]
        check_is_fitted(final)
        if not hasattr(final, "loss_curve_"):
            raise TypeError(f"{type(final).__name__} has no loss_curve_; expected a fitted "
                            "MAMLRegressor or MAMLClassifier.")
        display = cls(loss_curve=final.loss_curve_,
                      validation_scores=getattr(final, "validation_scores_", None),
                      estimator_name=_default_name(estimator) if name is None else name)
        return display.plot(ax=ax, smoothing=smoothing, line_kw=line_kw,
                            validation_kw=validation_kw)


# -------------------------------------------------------------------------------------------------
# Adaptation curve
# -------------------------------------------------------------------------------------------------

# name -> (metric(y_true, prediction, model), prediction method, axis label)
_METRICS = {
    "mse": (lambda y, p, model: mean_squared_error(y, p), "predict", "MSE"),
    "mae": (lambda y, p, model: mean_absolute_error(y, p), "predict", "MAE"),
    "accuracy": (lambda y, p, model: accuracy_score(y, p), "predict", "accuracy"),
    "log_loss": (lambda y, p, model: log_loss(y, p, labels=model.classes_), "predict_proba",
                 "log-loss"),
}


def _resolve_metric(metric):
    if callable(metric):
        return ((lambda y, p, model: metric(y, p)), "predict",
                getattr(metric, "__name__", "metric"))
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {sorted(_METRICS)} or a callable "
                         f"metric(y_true, y_pred); got {metric!r}.")
    return _METRICS[metric]


def _support_query_splits(final, tasks, n_support, random_state):
    """``(X_support, y_support, X_query, y_query)`` of each task (a 2- or 4-tuple), drawn by
    ``final``'s own episode sampler with the seeds of ``FewShotScorer(random_state=...)``: the
    support rows of ``tasks`` are those ``FewShotScorer(n_support=..., random_state=...)`` uses on
    the same tasks given as rows with ``groups`` the task index. 4-tuples are used as given; a
    task too small for ``n_support`` is handled as in ``score``."""
    sizes, fixed, y_parts = [], [], []
    for index, task in enumerate(tasks):
        if not isinstance(task, (tuple, list)) or len(task) not in (2, 4):
            raise ValueError(f"task {index} must be (X, y) or (X_support, y_support, X_query, "
                             "y_query).")
        parts = [np.asarray(task[1])] if len(task) == 2 else [np.asarray(task[1]),
                                                               np.asarray(task[3])]
        for X_part, y_part in zip(task[0::2], parts):
            if _num_samples(X_part) != y_part.shape[0]:
                raise ValueError(f"task {index}: X has {_num_samples(X_part)} rows but y has "
                                 f"{y_part.shape[0]}.")
        y_parts.extend(parts)
        sizes.append(sum(p.shape[0] for p in parts))
        fixed.append(RANDOM_SPLIT if len(task) == 2 else parts[0].shape[0])
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    # Only the targets take part in the draw: X stays as given (a Pipeline transforms it later).
    task_set = TaskSet(X=np.empty((offsets[-1], 0), dtype=final.coefs_[0].dtype),
                       y=np.concatenate(y_parts), offsets=offsets,
                       fixed_support=np.asarray(fixed, dtype=np.int64),
                       names=[f"task {i}" for i in range(len(tasks))])
    task_set.targets = final._encode_score_targets(task_set)
    task_set.support_sizes = final._support_sizes(task_set, task_set.targets, n_support,
                                                  ALL_OTHER_ROWS)
    s_rows, _, s_off, q_rows, _, q_off = final._few_shot_episodes(task_set, random_state)
    splits = []
    for t, task in enumerate(tasks):
        if len(task) == 4:
            splits.append(tuple(task))
            continue
        X, y = task[0], np.asarray(task[1])
        support = s_rows[s_off[t]:s_off[t + 1]] - offsets[t]
        query = q_rows[q_off[t]:q_off[t + 1]] - offsets[t]
        splits.append((_safe_indexing(X, support), y[support], _safe_indexing(X, query),
                       y[query]))
    return splits


class AdaptationCurveDisplay:
    """Query loss on new tasks against the number of inner gradient steps.

    For every task, each estimator adapts on the task's support rows with 0, 1, ...,
    ``max_steps`` plain gradient steps (its own ``inner_lr``) and is scored on the task's query
    rows; the display draws the mean over tasks with a confidence band, one line per estimator
    (MAML beside a baseline, as in Figure 2 of Finn et al. 2017). A good meta-learned
    initialisation is not necessarily good before adaptation (step 0) but improves fast, and keeps
    improving past the number of steps it was meta-trained with.

    Build it with :meth:`from_estimator`; the constructor only stores data.

    Parameters
    ----------
    steps : array-like of shape (n_steps,)
        Numbers of inner steps.
    losses : dict of str to array-like of shape (n_tasks, n_steps)
        Per estimator name, the metric on each task after each number of steps.
    metric_name : str, default="MSE"
        Name of the metric on the y-axis.

    Attributes
    ----------
    lines_ : dict of str to matplotlib Line2D
        The mean curve of each estimator.
    fill_between_ : dict of str to matplotlib PolyCollection
        The confidence band of each estimator (empty without bands).
    ax_ : matplotlib Axes
    figure_ : matplotlib Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skmaml import MAMLRegressor
    >>> from skmaml.datasets import make_sinusoid_tasks
    >>> from skmaml.plotting import AdaptationCurveDisplay
    >>> tasks = make_sinusoid_tasks(n_tasks=100, random_state=0)
    >>> common = dict(hidden_layer_sizes=(20,), max_iter=50, random_state=0)
    >>> maml = MAMLRegressor(n_inner_steps=1, **common).fit(tasks)
    >>> pooled = MAMLRegressor(n_inner_steps=0, **common).fit(tasks)  # pretrained baseline
    >>> new_tasks = make_sinusoid_tasks(n_tasks=10, n_samples=30, random_state=1)
    >>> display = AdaptationCurveDisplay.from_estimator(
    ...     {"MAML": maml, "pretrained": pooled}, new_tasks, n_support=10, max_steps=5)
    >>> display.losses["MAML"].shape
    (10, 6)
    """

    def __init__(self, *, steps, losses, metric_name="MSE"):
        self.steps = steps
        self.losses = losses
        self.metric_name = metric_name

    def plot(self, ax=None, *, confidence_level=0.95, line_kw=None, fill_between_kw=None):
        """Draw the curves.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; a new figure if None.
        confidence_level : float, default=0.95
            Level of the confidence band of the mean over tasks (Student's t interval); None
            draws no band.
        line_kw : dict, default=None
            Keyword arguments of ``ax.plot``, for every line.
        fill_between_kw : dict, default=None
            Keyword arguments of ``ax.fill_between``, for every band.

        Returns
        -------
        display : AdaptationCurveDisplay
        """
        plt = _import_pyplot("AdaptationCurveDisplay")
        if confidence_level is not None and not (isinstance(confidence_level, Real)
                                                 and 0 < confidence_level < 1):
            raise ValueError(f"confidence_level must be in (0, 1) or None, got "
                             f"{confidence_level!r}.")
        ax = _get_ax(plt, ax)
        steps = np.asarray(self.steps)
        self.lines_, self.fill_between_ = {}, {}
        for name, losses in self.losses.items():
            losses = np.asarray(losses, dtype=np.float64)
            mean = losses.mean(axis=0)
            (line,) = ax.plot(steps, mean, **{"marker": "o", "label": name, **(line_kw or {})})
            self.lines_[name] = line
            if confidence_level is not None and losses.shape[0] > 1:
                _, half_width = mean_confidence_interval(losses, confidence_level)
                self.fill_between_[name] = ax.fill_between(
                    steps, mean - half_width, mean + half_width,
                    **{"alpha": 0.2, "color": line.get_color(), **(fill_between_kw or {})})
        ax.set_xlabel("Inner gradient steps on the support rows")
        band = ("" if confidence_level is None else
                f" ({100 * confidence_level:g}% confidence band)")
        ax.set_ylabel(f"Mean query {self.metric_name}{band}")
        if steps.size and np.all(np.equal(np.mod(steps, 1), 0)) and steps.size <= 20:
            ax.set_xticks(steps)
        ax.legend(loc="best")
        self.ax_ = ax
        self.figure_ = ax.figure
        return self

    @classmethod
    def from_estimator(cls, estimator, tasks, *, n_support=10, max_steps=10, metric="mse",
                       random_state=0, ax=None, confidence_level=0.95, line_kw=None,
                       fill_between_kw=None):
        """Adapt fitted estimators to new tasks step by step and plot the mean query metric.

        Every estimator sees the same support and query rows of each task. Adaptation runs one
        step at a time (the model after ``k`` steps adapts one more step), which gives exactly
        the model of ``adapt(..., n_inner_steps=k)`` for every ``k`` in ``O(max_steps)`` steps per
        task instead of ``O(max_steps ** 2)``.

        Parameters
        ----------
        estimator : estimator or dict of str to estimator
            A fitted MAMLRegressor or MAMLClassifier (or a Pipeline ending in one), or several
            keyed by legend name, e.g. ``{"MAML": maml, "pretrained": baseline}``.
        tasks : list of tuples
            New tasks: ``(X, y)``, whose support rows are drawn by the (first) estimator's own
            sampler with ``random_state`` (``n_support`` rows, or ``n_support`` per class for a
            classifier with ``support_per="class"``; fewer for a task too small, as in
            ``score``) and query rows are the rest, or ``(X_support, y_support, X_query,
            y_query)``, used as given. The draws are those of
            ``FewShotScorer(n_support=n_support, random_state=random_state)`` on the same tasks
            given as rows with ``groups`` the task index, so a curve's value at ``k`` steps can
            be reproduced with it.
        n_support : int, default=10
            Support rows per ``(X, y)`` task (per class for a classifier with
            ``support_per="class"``).
        max_steps : int, default=10
            Curves run from 0 to ``max_steps`` inner steps.
        metric : {"mse", "mae", "accuracy", "log_loss"} or callable, default="mse"
            Metric on the query rows; a callable is ``metric(y_true, y_pred)`` on ``predict``.
        random_state : int, RandomState instance or None, default=0
            Seeds the support draws.
        ax : matplotlib Axes, default=None
        confidence_level, line_kw, fill_between_kw
            See :meth:`plot`.

        Returns
        -------
        display : AdaptationCurveDisplay
        """
        _import_pyplot("AdaptationCurveDisplay")
        estimators = dict(estimator) if isinstance(estimator, dict) else {
            _default_name(estimator): estimator}
        if not estimators:
            raise ValueError("estimator is an empty dict: give at least one estimator.")
        for est in estimators.values():
            check_is_fitted(_final_maml_step(est)[0])
        if not isinstance(max_steps, Integral) or max_steps < 0:
            raise ValueError(f"max_steps must be a non-negative int, got {max_steps!r}.")
        if not isinstance(n_support, Integral) or n_support < 1:
            raise ValueError(f"n_support must be a positive int, got {n_support!r}.")
        if len(tasks) == 0:
            raise ValueError("tasks is empty.")
        score, method, metric_name = _resolve_metric(metric)
        # One split per task, shared by every estimator so they are compared on the same rows.
        splits = _support_query_splits(_final_maml_step(next(iter(estimators.values())))[0],
                                       tasks, n_support, random_state)
        losses = {}
        for name, est in estimators.items():
            curve = np.empty((len(splits), max_steps + 1))
            for t, (X_support, y_support, X_query, y_query) in enumerate(splits):
                model = adapt(est, X_support, y_support, n_inner_steps=0)
                for step in range(max_steps + 1):
                    if step:
                        model = adapt(model, X_support, y_support, n_inner_steps=1)
                    prediction = getattr(model, method)(X_query)
                    curve[t, step] = score(y_query, prediction, model)
            losses[name] = curve
        display = cls(steps=np.arange(max_steps + 1), losses=losses, metric_name=metric_name)
        return display.plot(ax=ax, confidence_level=confidence_level, line_kw=line_kw,
                            fill_between_kw=fill_between_kw)


# -------------------------------------------------------------------------------------------------
# Regression fit of one task
# -------------------------------------------------------------------------------------------------


class RegressionFitDisplay:
    """One 1-D regression task: true function, support rows, model before and after adaptation.

    Build it with :meth:`from_estimator`; the constructor only stores data.

    Parameters
    ----------
    x : array-like of shape (n_points,)
        Inputs of the curves.
    y_pred_before : array-like of shape (n_points,)
        Prediction of the meta-learned model (no adaptation).
    y_pred_after : dict of int to array-like of shape (n_points,)
        Prediction after each number of inner steps.
    X_support : array-like of shape (n_support, 1)
    y_support : array-like of shape (n_support,)
    y_true : array-like of shape (n_points,), default=None
        The task's true function at ``x``.
    X_query : array-like of shape (n_query, 1), default=None
    y_query : array-like of shape (n_query,), default=None
        Held-out rows of the task, drawn as small points if given.
    estimator_name : str, default=None

    Attributes
    ----------
    line_ : matplotlib Line2D
        The prediction after the largest number of steps.
    before_line_ : matplotlib Line2D
    after_lines_ : dict of int to matplotlib Line2D
    true_line_ : matplotlib Line2D or None
    support_points_ : matplotlib PathCollection
    query_points_ : matplotlib PathCollection or None
    ax_ : matplotlib Axes
    figure_ : matplotlib Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from skmaml import MAMLRegressor
    >>> from skmaml.datasets import make_sinusoid_tasks
    >>> from skmaml.plotting import RegressionFitDisplay
    >>> tasks = make_sinusoid_tasks(n_tasks=100, random_state=0)
    >>> est = MAMLRegressor(hidden_layer_sizes=(20,), max_iter=50, random_state=0).fit(tasks)
    >>> [(X, y)], [(amplitude, phase)] = make_sinusoid_tasks(
    ...     n_tasks=1, n_samples=10, return_params=True, random_state=1)
    >>> display = RegressionFitDisplay.from_estimator(
    ...     est, X, y, n_inner_steps=(1, 10), x_range=(-5, 5),
    ...     true_function=lambda x: amplitude * np.sin(x[:, 0] - phase))
    >>> sorted(display.after_lines_)
    [1, 10]
    """

    def __init__(self, *, x, y_pred_before, y_pred_after, X_support, y_support, y_true=None,
                 X_query=None, y_query=None, estimator_name=None):
        self.x = x
        self.y_pred_before = y_pred_before
        self.y_pred_after = y_pred_after
        self.X_support = X_support
        self.y_support = y_support
        self.y_true = y_true
        self.X_query = X_query
        self.y_query = y_query
        self.estimator_name = estimator_name

    def plot(self, ax=None, *, name=None):
        """Draw the task.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; a new figure if None.
        name : str, default=None
            Title; ``estimator_name`` if None.

        Returns
        -------
        display : RegressionFitDisplay
        """
        plt = _import_pyplot("RegressionFitDisplay")
        ax = _get_ax(plt, ax)
        x = np.asarray(self.x).reshape(-1)
        self.true_line_ = None
        if self.y_true is not None:
            (self.true_line_,) = ax.plot(x, np.asarray(self.y_true).reshape(-1), color="black",
                                         linewidth=1.5, label="true function")
        self.query_points_ = None
        if self.X_query is not None and self.y_query is not None:
            self.query_points_ = ax.scatter(np.asarray(self.X_query).reshape(-1),
                                            np.asarray(self.y_query).reshape(-1), s=8,
                                            color="0.6", label="query rows")
        (self.before_line_,) = ax.plot(x, np.asarray(self.y_pred_before).reshape(-1),
                                       linestyle="--", color="tab:gray",
                                       label="before adaptation (meta-learned)")
        self.after_lines_ = {}
        for steps in sorted(self.y_pred_after):
            (self.after_lines_[steps],) = ax.plot(
                x, np.asarray(self.y_pred_after[steps]).reshape(-1),
                label=f"after {counted(steps, 'step')}")
        self.line_ = self.after_lines_[max(self.after_lines_)] if self.after_lines_ else None
        n_support = np.asarray(self.y_support).reshape(-1).shape[0]
        self.support_points_ = ax.scatter(
            np.asarray(self.X_support).reshape(-1), np.asarray(self.y_support).reshape(-1),
            marker="^", s=40, color="tab:red", zorder=3, label=f"support rows (K={n_support})")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        title = self.estimator_name if name is None else name
        if title:
            ax.set_title(title)
        ax.legend(loc="best")
        self.ax_ = ax
        self.figure_ = ax.figure
        return self

    @classmethod
    def from_estimator(cls, estimator, X_support, y_support, *, n_inner_steps=None,
                       true_function=None, X_query=None, y_query=None, x_range=None,
                       n_points=200, ax=None, name=None):
        """Adapt a fitted regressor to one task of a single input feature and plot the fits.

        Parameters
        ----------
        estimator : MAMLRegressor or Pipeline ending in one
            Fitted on tasks of one input feature and one target.
        X_support : array-like of shape (n_support, 1)
        y_support : array-like of shape (n_support,)
            The rows to adapt on.
        n_inner_steps : int or sequence of int, default=None
            Steps of adaptation; several give one curve each (e.g. ``(1, 10)`` as in the MAML
            paper). None uses the estimator's ``n_inner_steps``.
        true_function : callable, default=None
            The task's true function, ``true_function(X)`` with ``X`` of shape (n_points, 1)
            returning shape (n_points,), drawn if given.
        X_query : array-like of shape (n_query, 1), default=None
        y_query : array-like of shape (n_query,), default=None
            Held-out rows of the task, drawn as small points if given.
        x_range : tuple of two floats, default=None
            Span of the curves; the span of the given rows if None.
        n_points : int, default=200
            Points of each curve.
        ax : matplotlib Axes, default=None
        name : str, default=None
            Title.

        Returns
        -------
        display : RegressionFitDisplay
        """
        _import_pyplot("RegressionFitDisplay")
        final = _final_maml_step(estimator)[0]
        check_is_fitted(final)
        if is_classifier(final):
            raise TypeError("RegressionFitDisplay draws regression fits; got a classifier.")
        if n_inner_steps is None:
            n_inner_steps = final.n_inner_steps
        step_list = ([n_inner_steps] if isinstance(n_inner_steps, Integral)
                     else list(n_inner_steps))
        if not step_list or any(not isinstance(s, Integral) or s < 0 for s in step_list):
            raise ValueError(f"n_inner_steps must be a non-negative int or a sequence of them, "
                             f"got {n_inner_steps!r}.")
        X_all = [np.asarray(X_support)] + ([np.asarray(X_query)] if X_query is not None else [])
        for X in X_all:
            if X.ndim != 2 or X.shape[1] != 1:
                raise ValueError("RegressionFitDisplay draws tasks of one input feature: X must "
                                 f"have shape (n_samples, 1); got {X.shape}.")
        if x_range is None:
            x_range = (min(X.min() for X in X_all), max(X.max() for X in X_all))
        grid = np.linspace(x_range[0], x_range[1], n_points).reshape(-1, 1)
        grid_input = grid
        if hasattr(X_support, "columns"):
            # Same column name as the training rows, so the estimator sees the features it knows.
            grid_input = type(X_support)(grid, columns=X_support.columns)

        def predict_1d(model):
            prediction = np.asarray(model.predict(grid_input))
            if prediction.ndim == 2 and prediction.shape[1] != 1:
                raise ValueError("RegressionFitDisplay draws one target; the model predicts "
                                 f"{prediction.shape[1]}.")
            return prediction.reshape(-1)

        # adapt with 0 steps: the meta-learned model, through a Pipeline's transformers too.
        model, done = adapt(estimator, X_support, y_support, n_inner_steps=0), 0
        y_pred_before = predict_1d(model)
        y_pred_after = {}
        for steps in sorted(set(int(s) for s in step_list)):
            # One step at a time from the previous count: the same model as n_inner_steps=steps.
            model = adapt(model, X_support, y_support, n_inner_steps=steps - done)
            done = steps
            y_pred_after[steps] = predict_1d(model)
        y_true = None
        if true_function is not None:
            y_true = np.asarray(true_function(grid), dtype=np.float64).reshape(-1)
            if y_true.shape[0] != n_points:
                raise ValueError(f"true_function returned {y_true.shape[0]} values for "
                                 f"{n_points} points.")
        display = cls(x=grid[:, 0], y_pred_before=y_pred_before, y_pred_after=y_pred_after,
                      X_support=X_support, y_support=y_support, y_true=y_true, X_query=X_query,
                      y_query=y_query,
                      estimator_name=_default_name(estimator) if name is None else name)
        return display.plot(ax=ax)


# -------------------------------------------------------------------------------------------------
# Learned step sizes
# -------------------------------------------------------------------------------------------------


class StepSizeDisplay:
    """The learned inner step sizes of each layer: what the adaptation rule learned to move.

    ``learn_inner_lr="per_parameter"`` (Meta-SGD): one box per weight matrix and per bias
    vector, over its step sizes. ``"per_layer_step"`` (LSLR): each weight matrix's and bias
    vector's step size against the inner step. A dashed line marks ``inner_lr``, where every step
    size started; layers that are not adapted (``adapted_layers``) have step size 0.

    Build it with :meth:`from_estimator`; the constructor only stores data.

    Parameters
    ----------
    coef_step_sizes, intercept_step_sizes : list of ndarray
        ``inner_lr_coefs_`` and ``inner_lr_intercepts_`` of a fitted estimator.
    per_step : bool
        Whether the arrays hold one step size per inner step (``"per_layer_step"``).
    inner_lr : float, default=None
        The starting step size, drawn as a reference line.
    estimator_name : str, default=None

    Attributes
    ----------
    artists_ : list
        The boxes' (per parameter) or lines' (per step) artists.
    ax_ : matplotlib Axes
    figure_ : matplotlib Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skmaml import MAMLRegressor
    >>> from skmaml.datasets import make_sinusoid_tasks
    >>> from skmaml.plotting import StepSizeDisplay
    >>> tasks = make_sinusoid_tasks(n_tasks=100, random_state=0)
    >>> est = MAMLRegressor(hidden_layer_sizes=(20,), learn_inner_lr="per_layer_step",
    ...                     n_inner_steps=3, max_iter=50, random_state=0).fit(tasks)
    >>> display = StepSizeDisplay.from_estimator(est)
    >>> len(display.artists_)  # a weight line and a bias line for each of the 2 layers
    4
    """

    def __init__(self, *, coef_step_sizes, intercept_step_sizes, per_step, inner_lr=None,
                 estimator_name=None):
        self.coef_step_sizes = coef_step_sizes
        self.intercept_step_sizes = intercept_step_sizes
        self.per_step = per_step
        self.inner_lr = inner_lr
        self.estimator_name = estimator_name

    def plot(self, ax=None, *, name=None):
        """Draw the step sizes.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; a new figure if None.
        name : str, default=None
            Title; ``estimator_name`` if None.

        Returns
        -------
        display : StepSizeDisplay
        """
        plt = _import_pyplot("StepSizeDisplay")
        ax = _get_ax(plt, ax)
        self.artists_ = []
        if self.per_step:
            for i, (w, b) in enumerate(zip(self.coef_step_sizes, self.intercept_step_sizes)):
                steps = np.arange(1, np.asarray(w).shape[0] + 1)
                (line,) = ax.plot(steps, w, marker="o", label=f"layer {i + 1} weights")
                self.artists_.append(line)
                (line,) = ax.plot(steps, b, marker="s", linestyle="--", color=line.get_color(),
                                  label=f"layer {i + 1} biases")
                self.artists_.append(line)
            ax.set_xlabel("Inner step")
            ax.set_xticks(steps)
            ax.legend(loc="best", fontsize="small", ncol=2)
        else:
            values, labels = [], []
            for i, (w, b) in enumerate(zip(self.coef_step_sizes, self.intercept_step_sizes)):
                values += [np.ravel(w), np.ravel(b)]
                labels += [f"W{i + 1}", f"b{i + 1}"]
            boxes = ax.boxplot(values, showfliers=True)
            ax.set_xticks(np.arange(1, len(labels) + 1), labels)
            self.artists_ = boxes["boxes"]
            ax.set_xlabel("Weight matrix (W) or bias vector (b) of each layer")
        if self.inner_lr is not None:
            ax.axhline(self.inner_lr, color="gray", linestyle=":", linewidth=1,
                       label="inner_lr (start)")
        ax.set_ylabel("Learned inner step size")
        title = self.estimator_name if name is None else name
        if title:
            ax.set_title(title)
        self.ax_ = ax
        self.figure_ = ax.figure
        return self

    @classmethod
    def from_estimator(cls, estimator, *, ax=None, name=None):
        """Plot the learned step sizes of a fitted MAML estimator (or a Pipeline ending in one).

        Parameters
        ----------
        estimator : MAMLRegressor, MAMLClassifier or Pipeline
            Fitted with ``learn_inner_lr`` set.
        ax : matplotlib Axes, default=None
        name : str, default=None
            Title; the estimator's class name and rule if None.

        Returns
        -------
        display : StepSizeDisplay
        """
        _import_pyplot("StepSizeDisplay")
        final = _final_maml_step(estimator)[0]
        check_is_fitted(final)
        coefs = getattr(final, "inner_lr_coefs_", None)
        if coefs is None:
            raise ValueError(f"{type(final).__name__} has no learned step sizes "
                             "(inner_lr_coefs_ is None): fit it with learn_inner_lr="
                             "'per_parameter' or 'per_layer_step'.")
        per_step = final.learn_inner_lr == "per_layer_step"
        display = cls(coef_step_sizes=coefs, intercept_step_sizes=final.inner_lr_intercepts_,
                      per_step=per_step, inner_lr=float(final.inner_lr),
                      estimator_name=(f"{_default_name(estimator)}, learn_inner_lr="
                                      f"{final.learn_inner_lr!r}" if name is None else name))
        return display.plot(ax=ax)
