"""Few-shot evaluation for model selection, and adaptation through a Pipeline."""

import copy
import inspect
from numbers import Integral

from sklearn.compose import TransformedTargetRegressor
from sklearn.metrics import get_scorer
from sklearn.pipeline import Pipeline
from sklearn.utils import check_array
from sklearn.utils.metadata_routing import MetadataRequest
from sklearn.utils.validation import check_is_fitted

from ._base import BaseMAML


def _is_maml(estimator):
    """A MAML estimator, or a MAMLMixture, which scores and adapts as its components do (it is
    not a BaseMAML; importing it here would be circular)."""
    return isinstance(estimator, BaseMAML) or hasattr(estimator, "support_losses")


def _final_maml_step(estimator, X=None):
    """The MAML estimator at the end of ``estimator`` and ``X`` transformed to reach it (None when
    not given)."""
    if isinstance(estimator, Pipeline):
        if len(estimator.steps) > 1 and X is not None:
            X = estimator[:-1].transform(X)
        estimator = estimator.steps[-1][1]
    if not _is_maml(estimator):
        hint = ("; only skmaml.adapt goes through a TransformedTargetRegressor. MAMLRegressor "
                "standardises y itself (normalize_y=True), so one is needed only for another "
                "target transform" if isinstance(estimator, TransformedTargetRegressor) else "")
        raise TypeError("expected a MAMLRegressor, MAMLClassifier or MAMLMixture, or a Pipeline "
                        f"ending in one; got {type(estimator).__name__}{hint}.")
    return estimator, X


def adapt(estimator, X, y, n_inner_steps=None):
    """Adapt a fitted MAML estimator, or a Pipeline or TransformedTargetRegressor around one, to a
    new task.

    For a Pipeline, ``X`` goes through the fitted transformers (their meta-training state is kept,
    e.g. a scaler fitted on all tasks) and the final step adapts; the result is a new Pipeline
    sharing the transformers and holding the adapted final step. For a
    :class:`~sklearn.compose.TransformedTargetRegressor`, ``y`` goes through its fitted
    transformer (or ``func``) and the inner regressor adapts; the result is a new
    TransformedTargetRegressor whose ``predict`` returns the original units. The two nest either
    way. The input is unchanged.

    Parameters
    ----------
    estimator : MAMLRegressor, MAMLClassifier, Pipeline or TransformedTargetRegressor
    X : array-like of shape (n_samples, n_features)
        The new task's labelled rows.
    y : array-like of shape (n_samples,) or (n_samples, n_targets)
    n_inner_steps : int, default=None
        Overrides the estimator's ``n_inner_steps``.

    Returns
    -------
    adapted : estimator, Pipeline or TransformedTargetRegressor
    """
    if isinstance(estimator, Pipeline):
        if len(estimator.steps) > 1:
            X = estimator[:-1].transform(X)
        adapted = copy.copy(estimator)
        adapted.steps = list(estimator.steps[:-1]) + [
            (estimator.steps[-1][0], adapt(estimator.steps[-1][1], X, y, n_inner_steps))]
        return adapted
    if isinstance(estimator, TransformedTargetRegressor):
        check_is_fitted(estimator)
        adapted = copy.copy(estimator)
        adapted.regressor_ = adapt(estimator.regressor_, X, _transformed_target(estimator, y),
                                   n_inner_steps)
        return adapted
    if not _is_maml(estimator):
        raise TypeError("expected a MAMLRegressor, MAMLClassifier or MAMLMixture, or a Pipeline or "
                        f"TransformedTargetRegressor around one; got {type(estimator).__name__}.")
    return estimator.adapt(X, y, n_inner_steps=n_inner_steps)


def _transformed_target(regressor, y):
    """``y`` as a fitted TransformedTargetRegressor's inner regressor sees it (as in its fit)."""
    y = check_array(y, input_name="y", ensure_2d=False, dtype="numeric", allow_nd=True)
    y_trans = regressor.transformer_.transform(y.reshape(-1, 1) if y.ndim == 1 else y)
    if y_trans.ndim == 2 and y_trans.shape[1] == 1:
        y_trans = y_trans.squeeze(axis=1)
    return y_trans


class FewShotScorer:
    """A fixed few-shot evaluation protocol, usable as ``scoring=`` in searches.

    For each task of the scored data: draw ``n_support`` support rows (per class for a classifier
    with ``support_per="class"``) with a seed fixed by ``random_state``, adapt the meta-learned
    model on them, score the task's other rows, and average over tasks (and over ``n_repeats``
    draws). Unlike ``estimator.score``, the protocol does not depend on
    the candidate's own ``n_support``/``n_inner_steps``, so a search that tunes them compares every
    candidate on the same footing.

    Parameters
    ----------
    metric : str, callable or None, default=None
        ``None``: the estimator's own metric (R² or accuracy). A string names an sklearn scorer
        (e.g. ``"neg_mean_squared_error"``); a callable is a scorer ``(estimator, X, y)``, e.g. from
        :func:`sklearn.metrics.make_scorer`. The adapted model of each task is what gets scored.
        A metric that takes ``labels`` (e.g. ``"neg_log_loss"``, ``"f1_macro"``) gets the
        model's ``classes_``, so a task whose query rows show one class only, which the
        ``"shared"`` label regime allows, is scored against every class the model predicts.
    n_support : int, default=None
        Support rows per task (per class for a classifier with ``support_per="class"``); ``None``
        uses the estimator's.
    n_inner_steps : int, default=None
        Adaptation steps; ``None`` uses the estimator's.
    random_state : int, default=0
        Seeds the support draws.
    n_repeats : int, default=1
        Support sets drawn per task, each adapted to and scored; the score is the mean over all
        draws of all tasks. With few tasks (say a dozen validation groups) one draw per task lets
        candidates tie or swap by the luck of the draw; a few draws average it out. Still
        deterministic for a given ``random_state``.

    Examples
    --------
    >>> from skmaml import FewShotScorer
    >>> scorer = FewShotScorer("neg_mean_squared_error", n_support=5, n_repeats=3)
    >>> scorer  # doctest: +NORMALIZE_WHITESPACE
    FewShotScorer(metric='neg_mean_squared_error', n_support=5, n_inner_steps=None,
                  random_state=0, n_repeats=3)
    """

    def __init__(self, metric=None, *, n_support=None, n_inner_steps=None, random_state=0,
                 n_repeats=1):
        for name, value, least, kind in (("n_support", n_support, 1, "a positive"),
                                         ("n_inner_steps", n_inner_steps, 0, "a non-negative")):
            if value is not None and (not isinstance(value, Integral) or isinstance(value, bool)
                                      or value < least):
                raise ValueError(f"{name} must be {kind} int or None, got {value!r}.")
        if not isinstance(n_repeats, Integral) or isinstance(n_repeats, bool) or n_repeats < 1:
            raise ValueError(f"n_repeats must be a positive int, got {n_repeats!r}.")
        self.metric = metric
        self.n_support = n_support
        self.n_inner_steps = n_inner_steps
        self.random_state = random_state
        self.n_repeats = n_repeats

    def __repr__(self):
        return (f"FewShotScorer(metric={self.metric!r}, n_support={self.n_support!r}, "
                f"n_inner_steps={self.n_inner_steps!r}, random_state={self.random_state!r}, "
                f"n_repeats={self.n_repeats!r})")

    def get_metadata_routing(self):
        """Request ``groups`` and ``sample_weight`` for scoring (metadata routing)."""
        request = MetadataRequest(owner=self)
        request.score.add_request(param="groups", alias=True)
        request.score.add_request(param="sample_weight", alias=True)
        return request

    def __call__(self, estimator, X, y, groups=None, sample_weight=None):
        """Few-shot score of a fitted estimator (or Pipeline) on the tasks of ``X``, ``y``."""
        final, X = _final_maml_step(estimator, X)
        n_support = final.n_support if self.n_support is None else self.n_support
        scorer = None
        if self.metric is not None:
            scorer = _with_model_labels(get_scorer(self.metric) if isinstance(self.metric, str)
                                        else self.metric)
        return final._few_shot_score(X, y, groups, sample_weight, n_support=n_support,
                                     n_inner_steps=self.n_inner_steps,
                                     random_state=self.random_state, scorer=scorer,
                                     n_repeats=self.n_repeats)


def _with_model_labels(scorer):
    """``scorer``, passing each scored model's ``classes_`` as ``labels`` when its metric takes
    them and they are not set already (scikit-learn scorers keep the metric and its keyword
    arguments as ``_score_func`` and ``_kwargs``)."""
    func, kwargs = getattr(scorer, "_score_func", None), getattr(scorer, "_kwargs", None)
    if (func is None or kwargs is None or "labels" in kwargs
            or "labels" not in inspect.signature(func).parameters):
        return scorer

    def score(model, X, y, **params):
        if not hasattr(model, "classes_"):
            return scorer(model, X, y, **params)
        labelled = copy.copy(scorer)
        labelled._kwargs = {**kwargs, "labels": model.classes_}
        return labelled(model, X, y, **params)

    return score
