"""BaseMAML: parameters, validation, task handling, the meta-training loop, adaptation and scoring.

The estimator turns options into integer codes and seeds, validates everything, and calls compiled
kernels that see only arrays and scalars (:mod:`skmaml._kernels`). One meta-iteration is three calls:
episode sampling, the batch meta-gradient and the optimiser update; no per-row work happens in Python.
"""

import copy
import math
import os
import sys
import warnings
from abc import ABCMeta, abstractmethod
from numbers import Integral, Real

import joblib
import numpy as np
import sklearn
from sklearn.base import BaseEstimator, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from ._adaptation import LEARN_INNER_LR, Layout
from ._kernels._config import ACTIVATION_CODES, ALL_OTHER_ROWS
from ._kernels._maml import adaptation_losses, inner_adapt
from ._kernels._mlp import forward
from ._kernels._numeric import all_finite
from ._kernels._train import (
    RUN_BAD_LOSS,
    RUN_BAD_UPDATE,
    RUN_CHUNKED,
    RUN_DONE,
    meta_train_run,
    sample_episodes,
)
from ._messages import counted, counted_are
from ._optim import OPTIMIZER_NAMES, make_optimizer
from ._parallel import MAX_ONE_CHUNK_FLOPS, MetaGradient
from ._params import WEIGHT_INITS, check_shapes, init_theta, layer_sizes_array, pack, unpack
from ._progress import Progress
from ._tasks import tasks_from_groups, tasks_from_list

_SEED_HIGH = np.iinfo(np.int64).max

# A query loss this many times that of a constant guess is a run-away meta-training
# (BaseMAML._exploded_loss).
EXPLOSION_FACTOR = 1e8

# The training loss is checked for a plateau once per pass over the tasks, or once per several
# passes when one pass is fewer meta-iterations than this (BaseMAML._end_of_epoch).
CHECK_MIN_ITERATIONS = 50

# Meta-iterations per compiled run (``_MetaStep.run``): the training loop returns to Python (for
# progress, KeyboardInterrupt, the checks) at least this often.
_RUN_LENGTH = 64
# False: every meta-iteration from Python (the same bits; for tests that instrument the kernel
# calls from Python, which the compiled runs do not make).
_COMPILED_LOOP = True

# ``n_jobs`` as joblib counts it: None, -1, -2, ... or a positive count (also MAMLMixture's).
N_JOBS_CONSTRAINT = [Interval(Integral, None, -1, closed="right"),
                     Interval(Integral, 1, None, closed="left"), None]

_OWN_PACKAGES = tuple(os.path.dirname(os.path.abspath(module.__file__)) + os.sep
                      for module in (sys.modules[__package__], sklearn, joblib))


def _user_stacklevel():
    """The ``stacklevel`` that makes a warning point at the first caller outside skmaml,
    scikit-learn and joblib: the user's ``fit`` line, also through a Pipeline, a search or
    ``cross_validate`` (whose frames are scikit-learn's and joblib's), rather than a fixed
    depth."""
    frame, level = sys._getframe(1), 1  # the frame calling warnings.warn is level 1
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(
            _OWN_PACKAGES):
        frame, level = frame.f_back, level + 1
    return level


class BaseMAML(BaseEstimator, metaclass=ABCMeta):
    """Base class of MAML estimators. Use :class:`MAMLRegressor` or :class:`MAMLClassifier`."""

    _parameter_constraints: dict = {
        # As MLPRegressor: a tuple of widths, or one int for one hidden layer.
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(ACTIVATION_CODES))],
        "weight_init": [StrOptions(set(WEIGHT_INITS))],
        "inner_lr": [Interval(Real, 0, None, closed="left")],
        "n_inner_steps": [Interval(Integral, 0, None, closed="left")],
        "learn_inner_lr": [StrOptions(set(LEARN_INNER_LR)), None],
        "adapted_layers": [StrOptions({"all"}), Interval(Integral, 1, None, closed="left")],
        "meta_lr": [Interval(Real, 0, None, closed="neither")],
        "meta_optimizer": [StrOptions(set(OPTIMIZER_NAMES))],
        "first_order": ["boolean"],
        "meta_batch_size": [Interval(Integral, 1, None, closed="left")],
        "n_support": [Interval(Integral, 1, None, closed="left")],
        "n_query": [Interval(Integral, 1, None, closed="left"), None],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "warm_start": ["boolean"],
        "random_state": ["random_state"],
        "n_jobs": N_JOBS_CONSTRAINT,
        "verbose": ["verbose"],
    }

    # Task ids travel with X and y through Pipeline, GridSearchCV and cross_validate when metadata
    # routing is enabled, with no set_fit_request / set_score_request call.
    __metadata_request__fit = {"groups": True}
    __metadata_request__score = {"groups": True}

    @abstractmethod
    def __init__(self, hidden_layer_sizes, activation, *, weight_init, inner_lr, n_inner_steps,
                 learn_inner_lr, adapted_layers, meta_lr, meta_optimizer, first_order,
                 meta_batch_size, n_support, n_query, max_iter, tol, n_iter_no_change,
                 early_stopping, validation_fraction, warm_start, random_state, n_jobs, verbose):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.weight_init = weight_init
        self.inner_lr = inner_lr
        self.n_inner_steps = n_inner_steps
        self.learn_inner_lr = learn_inner_lr
        self.adapted_layers = adapted_layers
        self.meta_lr = meta_lr
        self.meta_optimizer = meta_optimizer
        self.first_order = first_order
        self.meta_batch_size = meta_batch_size
        self.n_support = n_support
        self.n_query = n_query
        self.max_iter = max_iter
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.warm_start = warm_start
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.verbose = verbose

    # ---------------------------------------------------------------------------------------------
    # What each estimator supplies
    # ---------------------------------------------------------------------------------------------

    @abstractmethod
    def _target_dtype(self):
        """``check_array`` dtype for targets of the list-of-tasks form."""

    @abstractmethod
    def _encode_fit_targets(self, task_set):
        """Set target-related fitted attributes; return (kernel targets, n_outputs)."""

    @abstractmethod
    def _largest_supports(self, task_set, y_kernel, n_query, min_query):
        """Per task, the most support rows (per class for a classifier) it can give while keeping
        its query rows (``n_query``, or at least ``min_query`` for ``ALL_OTHER_ROWS``); < 1 where
        it cannot."""

    # Query rows a task needs for the estimator's own score metric (R² needs two).
    _min_query_rows_to_score = 1

    @abstractmethod
    def _small_task_facts(self, task_set, y_kernel, t):
        """What limits task ``t``'s support set, for messages: e.g. "group 'a' has 4 rows"."""

    def _support_unit(self):
        """What ``n_support`` counts beyond rows of a task, for messages (" per class")."""
        return " per class" if self._target_dtype() != "numeric" else ""

    @abstractmethod
    def _null_loss(self, y_kernel):
        """The loss of a constant guess (zero outputs) on kernel targets ``y_kernel``."""

    @abstractmethod
    def _sampler_spec(self, y_kernel):
        """Which compiled episode sampler draws training episodes from tasks with kernel targets
        ``y_kernel``: ``(sampler code, n_classes, relabel)``, the arguments of
        ``_kernels._train.sample_episodes`` (the last two unused for regression)."""

    def _episode_sampler(self, y_kernel):
        """A function ``(X, y_kernel, offsets, fixed_support, batch, seeds, support_sizes,
        n_query)`` making one compiled sampler call -> (Xs, ys, s_offsets, Xq, yq, q_offsets):
        the draws of :meth:`_sampler_spec`'s sampler, which the compiled training loop makes
        itself. Built once per fit, so nothing about the labels is recomputed per
        meta-iteration."""
        sampler, n_classes, relabel = self._sampler_spec(y_kernel)

        def sample(X, y, offsets, fixed_support, batch, seeds, support_sizes, n_query):
            return sample_episodes(sampler, X, y, offsets, fixed_support, batch, seeds,
                                   support_sizes, n_query, n_classes, relabel)

        return sample

    @abstractmethod
    def _episode_rows(self, y_kernel):
        """A function ``(offsets, fixed_support, batch, seeds, support_sizes, n_query)`` giving the
        rows the sampler of :meth:`_episode_sampler` takes, as indices, with their kernel targets:
        ``(s_rows, ys, s_offsets, q_rows, yq, q_offsets)``. Scoring uses it, so that any per-row
        array (sample weights, the rows of a DataFrame) follows the same draws."""

    @abstractmethod
    def _encode_adapt_targets(self, y):
        """Kernel targets for ``adapt``, and fitted attributes that change on the adapted copy."""

    @abstractmethod
    def _encode_score_targets(self, task_set):
        """Kernel targets of a TaskSet to score (with the fitted encoding)."""

    @abstractmethod
    def _decode_targets(self, y_kernel):
        """Kernel targets back to what ``adapt``/``predict`` speak (labels, 1-D values)."""

    @abstractmethod
    def _task_score(self, theta, layer_sizes, activation, X_query, y_query, sample_weight):
        """Metric of ``score`` on one task's query rows (kernel targets), from adapted θ."""

    # ---------------------------------------------------------------------------------------------
    # Fitting
    # ---------------------------------------------------------------------------------------------

    def _validate_hidden_layer_sizes(self):
        hidden = self.hidden_layer_sizes
        if not hasattr(hidden, "__iter__"):
            hidden = [hidden]
        hidden = list(hidden)
        if any(not isinstance(h, Integral) or isinstance(h, bool) or h <= 0 for h in hidden):
            raise ValueError(
                f"hidden_layer_sizes must be positive integers, got {self.hidden_layer_sizes!r}."
            )
        return [int(h) for h in hidden]

    def _validate_fit_input(self, X, y, groups):
        """Both fit forms -> TaskSet; sets n_features_in_ / feature_names_in_."""
        if y is None:
            if not _is_task_list(X):
                raise ValueError(
                    f"{type(self).__name__} requires y to be passed, but the target y is None. "
                    "Pass fit(X, y, groups=task_ids), or a list of tasks: "
                    "fit([(X_1, y_1), (X_2, y_2), ...])."
                )
            if groups is not None:
                raise ValueError("groups is only used with fit(X, y, groups); a list of tasks "
                                 "already says which rows belong together.")
            task_set, first_X = tasks_from_list(X, self._target_dtype())
            validate_data(self, first_X, reset=True, skip_check_array=True)
            self.n_features_in_ = task_set.X.shape[1]
            self._check_task_feature_names(X, task_set.names)
            return task_set
        # Two rows at least: even one task needs a support row and a query row.
        X, y = validate_data(self, X, y, reset=True, dtype=[np.float64, np.float32],
                             multi_output=True, y_numeric=self._target_dtype() == "numeric",
                             ensure_min_samples=2)
        if y.ndim == 2 and y.shape[1] == 1:
            # As MLPRegressor: a column vector is taken as 1-D, with a DataConversionWarning.
            y = column_or_1d(y, warn=True)
        if groups is None:
            self._warn_one_task("fit", "treated")
        return tasks_from_groups(X, y, groups)

    def _warn_one_task(self, method, done):
        """``fit``/``score`` got rows without ``groups``: all of them make one task. Said each
        time, since a search without metadata routing would otherwise score every validation
        fold as one task, silently."""
        warnings.warn(
            f"{type(self).__name__}.{method} got X and y without groups, so all rows are {done} "
            f"as ONE task. Pass the task of each row: {method}(X, y, groups=task_ids). In "
            "GridSearchCV or a Pipeline, first call "
            f"sklearn.set_config(enable_metadata_routing=True) so that groups reach {method} "
            "(cross_validate then takes them as params={'groups': task_ids}).",
            UserWarning, stacklevel=_user_stacklevel())

    def _check_task_feature_names(self, tasks, names, first_set_them=True):
        """Every task's X must have the fitted columns (``feature_names_in_``, set from the first
        task's X when ``first_set_them``), as ``predict``'s X must.

        The tasks are concatenated as arrays, so a data frame with its columns in another order
        would otherwise be trained on silently misaligned features.
        """
        first = tasks[0][0] if first_set_them else None
        for name, task in zip(names, tasks):
            parts = ([("X", task[0])] if len(task) == 2 else
                     [("X_support", task[0]), ("X_query", task[2])])
            for what, X_part in parts:
                if X_part is first or (isinstance(X_part, np.ndarray) and
                                       not hasattr(self, "feature_names_in_")):
                    continue  # nothing to compare: no names on either side
                try:
                    validate_data(self, X_part, reset=False, skip_check_array=True)
                except ValueError as exc:
                    raise ValueError(f"{name}: {what}: {exc}") from exc

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, groups=None, *, X_val=None, y_val=None, groups_val=None):
        """Meta-train the initial parameters θ over many tasks.

        Parameters
        ----------
        X : list of tuples, or array-like of shape (n_samples, n_features)
            Either the tasks, each ``(X_i, y_i)`` (support and query rows drawn afresh at every
            visit) or ``(X_support_i, y_support_i, X_query_i, y_query_i)`` (a fixed split), with
            ``y=None``; or all rows of all tasks, with ``y`` and ``groups``.
        y : array-like of shape (n_samples,) or (n_samples, n_targets), default=None
            Targets, with array ``X``.
        groups : array-like of shape (n_samples,), default=None
            Task id of each row, with array ``X``. Tasks are taken in sorted id order, rows in their
            given order, so ``fit(X, y, groups)`` gives the same model as the equivalent task list.
            ``None`` makes all rows one task (with a warning).
        X_val, y_val, groups_val : default=None
            Validation tasks for ``early_stopping``, in either form (a list of tasks as
            ``X_val``, or rows with ``y_val`` and ``groups_val``), as ``X_val``/``y_val`` of
            :class:`~sklearn.ensemble.HistGradientBoostingRegressor`. Then no training task is
            held out. Give tasks the model must adapt to but never trains on, e.g. episodes of
            classes no training task uses, so that early stopping sees memorisation of the
            training classes (see the user guide).

        Returns
        -------
        self : object
            The fitted estimator.
        """
        hidden, task_set, n_outputs, n_query = self._prepare_fit(X, y, groups)
        valid = None
        if X_val is not None or y_val is not None or groups_val is not None:
            if not self.early_stopping:
                raise ValueError("X_val is given, but early_stopping=False: validation tasks are "
                                 "used for early stopping only; set early_stopping=True.")
            valid = self._validation_input(X_val, y_val, groups_val)
        self._meta_train(task_set, hidden, n_outputs, n_query, valid)
        return self

    def _prepare_fit(self, X, y, groups):
        """What ``fit`` does before meta-training (also for :class:`MAMLMixture`, which
        meta-trains its components on subsets of the tasks): validate the tasks, encode their
        targets (setting ``n_outputs_`` and the target encoding), and size their support sets.
        Returns ``(hidden_layer_sizes, task_set, n_outputs, n_query)``."""
        hidden = self._validate_hidden_layer_sizes()
        task_set = self._validate_fit_input(X, y, groups)
        task_set.targets, n_outputs = self._encode_fit_targets(task_set)
        self.n_outputs_ = n_outputs
        n_query = ALL_OTHER_ROWS if self.n_query is None else self.n_query
        task_set.support_sizes = self._support_sizes(task_set, task_set.targets, self.n_support,
                                                     n_query)
        return hidden, task_set, n_outputs, n_query

    def _validation_input(self, X_val, y_val, groups_val):
        """User-given validation tasks as a TaskSet with its kernel targets."""
        if X_val is None:
            raise ValueError("y_val or groups_val is given without X_val.")
        if y_val is None:
            if not _is_task_list(X_val):
                raise ValueError("X_val must be a list of tasks, or rows with y_val and "
                                 "groups_val.")
            if groups_val is not None:
                raise ValueError("groups_val is only used with rows X_val, y_val.")
            task_set, _ = tasks_from_list(X_val, self._target_dtype())
            if task_set.X.shape[1] != self.n_features_in_:
                raise ValueError(f"X_val has {task_set.X.shape[1]} features, but the training "
                                 f"tasks have {self.n_features_in_}.")
            self._check_task_feature_names(X_val, [f"X_val {n}" for n in task_set.names],
                                           first_set_them=False)
            task_set.names = [f"validation {n}" for n in task_set.names]
        else:
            if groups_val is None:
                raise ValueError("X_val and y_val need groups_val: the task of each row.")
            X_val, y_val = validate_data(self, X_val, y_val, reset=False,
                                         dtype=[np.float64, np.float32], multi_output=True,
                                         y_numeric=self._target_dtype() == "numeric")
            if y_val.ndim == 2 and y_val.shape[1] == 1:
                y_val = y_val[:, 0]
            task_set = tasks_from_groups(X_val, y_val, groups_val)
            task_set.names = [f"validation {n}" for n in task_set.names]
        task_set.targets = self._encode_score_targets(task_set)
        return task_set

    def _support_sizes(self, task_set, y_kernel, n_support, n_query, min_query=1, warn=True):
        """Support rows (per class for a classifier) of each task: ``n_support``, or for a task too
        small for it the most it can give while keeping its query rows, with one warning.

        As ``MLPRegressor`` clips a ``batch_size`` larger than the data: a user with a few small
        tasks (or sklearn's checks, fitting one task of ten rows) gets a model, and is told. A task
        that cannot give one support row (per class) and its query rows is an error. Tasks with a
        given split (4-tuples) keep it.
        """
        largest = self._largest_supports(task_set, y_kernel, n_query, min_query)
        random_split = task_set.fixed_support < 0
        per_class = self._support_unit()
        query = (f"n_query={n_query} query rows{per_class}" if n_query > 0 else
                 "at least one query row" if min_query == 1 else
                 f"at least {min_query} query rows (to score)")
        impossible = np.flatnonzero(random_split & (largest < 1))
        if impossible.size:
            t = impossible[0]
            raise ValueError(
                f"{self._small_task_facts(task_set, y_kernel, t)}: too few for one support row"
                f"{per_class} and {query} ({counted_are(impossible.size, 'task')} too small). Drop "
                "or merge small tasks (skmaml.datasets.small_tasks lists them)"
                + (", or lower n_query." if n_query > 0 else "."))
        shrunk = np.flatnonzero(random_split & (largest < n_support))
        if shrunk.size and warn:
            t = shrunk[0]
            warnings.warn(
                f"n_support={n_support}{per_class} is more than {shrunk.size} of "
                f"{counted(task_set.n_tasks, 'task')} can give while "
                f"keeping {query}; {'it uses' if shrunk.size == 1 else 'each of them uses'} "
                f"the largest support set it can ({self._small_task_facts(task_set, y_kernel, t)}"
                f", so it uses {largest[t]}). Lower n_support, or drop or merge small tasks "
                "(skmaml.datasets.small_tasks lists them), to silence this warning.", UserWarning,
                stacklevel=_user_stacklevel())
        return np.where(random_split, np.minimum(largest, n_support), n_support).astype(np.int64)

    def _meta_train(self, task_set, hidden, n_outputs, n_query, valid=None):
        """The meta-training loop, in the steps of ``BaseMultilayerPerceptron._fit``.

        ``task_set`` carries its kernel targets and support sizes; ``valid`` is a user-given
        validation TaskSet (``X_val``), likewise prepared, or None.
        """
        rng = check_random_state(self.random_state)
        self._n_adapted_steps = 0  # meta-learned θ: no inner step taken (see adapt)
        layer_sizes = layer_sizes_array(task_set.X.shape[1], hidden, n_outputs)
        activation = ACTIVATION_CODES[self.activation]
        layout = self._layout(layer_sizes)
        # theta: the parameter vector meta-training moves, θ then any learned step sizes.
        theta = self._initialize(layer_sizes, task_set.X.dtype, rng, layout)
        self.n_layers_ = len(hidden) + 2
        train, valid = self._training_and_validation_tasks(task_set, valid, rng)
        batch_size = self.meta_batch_size
        if batch_size > train.n_tasks:
            warnings.warn(f"meta_batch_size={batch_size} is larger than the number of training "
                          f"tasks ({train.n_tasks}); using {train.n_tasks}.", UserWarning,
                          stacklevel=_user_stacklevel())
            batch_size = train.n_tasks
        meta_gradient = MetaGradient(layer_sizes, activation,
                                     layout.kernel_rule(theta, self.inner_lr)[1],
                                     self.n_inner_steps, self.first_order, self.n_jobs)
        step = _MetaStep(self, train, n_query, meta_gradient, self._optimizer, theta,
                         batch_size, layer_sizes)
        best_theta = theta.copy() if valid is not None else None
        epoch_losses = []  # since the last check
        pass_start = 0  # where the current pass's losses start in epoch_losses
        progress = Progress(self.max_iter, self.verbose)
        n_done = 0
        self.stop_reason_ = "max_iter"
        with meta_gradient:  # owns the thread pool; BLAS single-threaded inside
            try:
                for order, seeds, n_batches, whole in _meta_epochs(train.n_tasks, batch_size,
                                                                   self.max_iter, rng):
                    done_in_epoch = 0
                    while done_in_epoch < n_batches:
                        # A run of meta-iterations in one compiled call where it can (small
                        # batches), else one from Python: the same bits either way.
                        losses, failure = step.run(order, seeds, done_in_epoch,
                                                   n_batches - done_in_epoch)
                        self.loss_curve_.extend(losses)
                        epoch_losses.extend(losses)
                        self.n_iter_ += len(losses)
                        n_done += len(losses)
                        done_in_epoch += len(losses)
                        if losses:
                            progress.tick(n_done, losses[-1], self.validation_scores_,
                                          len(losses))
                        if failure is not None:
                            self._diverged(step.theta_prev, layer_sizes, failure,
                                           step.loss_limit)
                        if step.interrupted:
                            raise KeyboardInterrupt
                    # A check after a pass over the training tasks: every pass with validation
                    # tasks; of the training loss, once it averages CHECK_MIN_ITERATIONS.
                    if not whole:
                        continue
                    if valid is None:
                        self.best_loss_ = min(self.best_loss_,
                                              float(np.mean(epoch_losses[pass_start:])))
                        pass_start = len(epoch_losses)
                    if valid is not None or len(epoch_losses) >= CHECK_MIN_ITERATIONS:
                        is_best, stop = self._end_of_epoch(epoch_losses, theta, valid,
                                                           layer_sizes, activation)
                        if is_best:
                            best_theta = theta.copy()
                        epoch_losses, pass_start = [], 0
                        if stop:
                            self.stop_reason_ = stop
                            break
            except KeyboardInterrupt:
                self.stop_reason_ = "interrupted"
                warnings.warn("Meta-training interrupted by user.")
            if valid is None:
                # The last update was never evaluated: a finite but overflowing theta (e.g. from
                # a huge meta_lr) must not be returned as a model.
                step.check_last_update()
        if epoch_losses and valid is not None:
            # The final, partial pass: its theta may still be the best one.
            if self._end_of_epoch(epoch_losses, theta, valid, layer_sizes, activation)[0]:
                best_theta = theta.copy()
        progress.close(n_done, self.loss_curve_[-1] if self.loss_curve_ else float("nan"),
                       self._last_validation_score())
        if self.verbose:
            print(f"Stopped after {n_done} meta-iterations: {self._stop_sentence()}.",
                  flush=True)
        if valid is not None:
            theta = best_theta
            self.best_loss_ = None
        if self.stop_reason_ == "max_iter":
            warnings.warn(
                f"Maximum meta-iterations ({self.max_iter}) reached and the meta-optimisation "
                "hasn't converged yet.", ConvergenceWarning, stacklevel=_user_stacklevel())
        self._set_theta(theta, layer_sizes)

    def _stop_sentence(self):
        """Why the last fit stopped, in words (``verbose``)."""
        n = self.n_iter_no_change
        return {
            "max_iter": f"max_iter={self.max_iter} reached",
            "loss_plateau": (f"the mean query loss of the last {n} checks (each a pass over the "
                             f"tasks of at least {CHECK_MIN_ITERATIONS} meta-iterations) was not "
                             f"lower than that of the {n} checks before by tol={self.tol}"),
            "validation_plateau": (f"the validation score did not improve by tol={self.tol} in "
                                   f"{n} passes over the tasks; the best θ (score "
                                   f"{self.best_validation_score_:.6g}) is kept"
                                   if self.early_stopping else ""),
            "interrupted": "interrupted by the user (KeyboardInterrupt)",
        }[self.stop_reason_]

    def _layout(self, layer_sizes):
        """Where the adaptation rule of the current options puts step sizes
        (:class:`._adaptation.Layout`); raises a ValueError for options the network cannot
        take."""
        return Layout(self.learn_inner_lr, self.adapted_layers, self.n_inner_steps, layer_sizes)

    def _initialize(self, layer_sizes, dtype, rng, layout):
        """The parameter vector (θ, then the learned step sizes, if any) and the meta-optimiser,
        fresh or restored (``warm_start``), and the fitted history (continued by ``warm_start``,
        started afresh otherwise or when there is none, e.g. ``coefs_`` set by hand on an
        unfitted estimator). Learned step sizes carry over when the adaptation rule is the one
        they were learned for, and start again at ``inner_lr`` otherwise."""
        warm = self.warm_start and hasattr(self, "coefs_")
        rates = layout.initial_rates(self.inner_lr, dtype)
        if warm:
            check_shapes(self.coefs_, self.intercepts_, layer_sizes)
            theta = pack(self.coefs_, self.intercepts_, dtype)
            if (layout.learn and getattr(self, "inner_lr_coefs_", None) is not None
                    and getattr(self, "_rate_signature", None) == layout.signature()):
                rates = layout.from_attributes(self.inner_lr_coefs_, self.inner_lr_intercepts_,
                                               dtype, "")
            theta = np.concatenate([theta, rates])
            optimizer = getattr(self, "_optimizer", None)
            if (optimizer is None or optimizer.name != self.meta_optimizer
                    or optimizer.learning_rate != float(self.meta_lr)
                    or getattr(self, "_rate_signature", None) != layout.signature()):
                optimizer = make_optimizer(self.meta_optimizer, self.meta_lr, theta.shape[0],
                                           dtype)
            elif getattr(optimizer, "m", None) is not None and optimizer.m.dtype != dtype:
                optimizer.reset(theta.shape[0], dtype)
        else:
            theta = np.concatenate([init_theta(layer_sizes, self.activation, rng, dtype,
                                               self.weight_init), rates])
            optimizer = make_optimizer(self.meta_optimizer, self.meta_lr, theta.shape[0], dtype)
        self._optimizer = optimizer
        self._rate_signature = layout.signature()
        if not warm or not hasattr(self, "loss_curve_"):
            self.loss_curve_ = []
            self.n_iter_ = 0
            self.best_loss_ = np.inf
        if not warm or getattr(self, "validation_scores_", None) is None:
            self.validation_scores_ = [] if self.early_stopping else None
            self.best_validation_score_ = -np.inf if self.early_stopping else None
        if self.best_loss_ is None:
            self.best_loss_ = np.inf
        self._no_improvement_count = 0
        self._check_losses = []
        return theta

    def _training_and_validation_tasks(self, task_set, valid, rng):
        """The tasks meta-training walks, and the validation tasks of ``early_stopping`` (the
        given ones, or held out of ``task_set``; None without early stopping), with the support
        sizes their scoring uses."""
        if not self.early_stopping:
            return task_set, None
        if valid is None:
            train_idx, valid_idx = self._split_validation_tasks(task_set, task_set.targets, rng)
            train, valid = task_set.subset(train_idx), task_set.subset(valid_idx)
            warn_small = False  # the warning about small tasks was given for all tasks already
        else:
            train, warn_small = task_set, True
        # Scored with the estimator's metric, which may need more query rows than training.
        valid.support_sizes = self._support_sizes(valid, valid.targets, self.n_support,
                                                  ALL_OTHER_ROWS,
                                                  self._min_query_rows_to_score,
                                                  warn=warn_small)
        return train, valid

    def _split_validation_tasks(self, task_set, y_kernel, rng):
        """Training and validation task indices for ``early_stopping`` without ``X_val``: a
        ``validation_fraction`` of the tasks, at random (the classifier's ``"per_task"`` regime
        holds out classes instead, :meth:`MAMLClassifier._split_validation_tasks`)."""
        if task_set.n_tasks < 2:
            raise ValueError("early_stopping=True holds out tasks for validation, so it needs at "
                             f"least 2 tasks; got {task_set.n_tasks} (or pass X_val).")
        n_valid = min(max(1, int(round(self.validation_fraction * task_set.n_tasks))),
                      task_set.n_tasks - 1)
        order = rng.permutation(task_set.n_tasks)
        return np.sort(order[n_valid:]), np.sort(order[:n_valid])

    def _mean_query_loss(self, params, layer_sizes, activation, episodes, n_inner_steps=None):
        """The mean query loss of a batch's tasks after adapting from ``params`` (θ and any
        learned step sizes) with ``n_inner_steps`` (default the estimator's) steps: adaptation
        and the loss only, no meta-gradient, no second-order sweep."""
        return float(np.mean(self._query_losses(params, layer_sizes, activation, episodes,
                                                n_inner_steps)))

    def _query_losses(self, params, layer_sizes, activation, episodes, n_inner_steps=None):
        """Each task's query loss (kernel units) of :meth:`_mean_query_loss`."""
        if n_inner_steps is None:
            n_inner_steps = self.n_inner_steps
        theta, rule = self._layout(layer_sizes).kernel_rule(params, self.inner_lr)
        Xs, ys, s_off, Xq, yq, q_off = episodes
        losses = np.empty(s_off.shape[0] - 1)
        adaptation_losses(theta, layer_sizes, activation, Xs, ys, s_off, Xq, yq, q_off, rule,
                          int(n_inner_steps), np.empty((losses.shape[0], int(n_inner_steps))),
                          losses)
        return losses

    def _exploded_loss(self, y_kernel, unadapted_loss):
        """A query loss above which meta-training has run away although numbers are finite:
        ``EXPLOSION_FACTOR`` times the largest of the loss of a constant guess
        (:meth:`_null_loss`), the first batch's query loss *without* adaptation (the θ training
        starts from), and 1.

        No model that training should return is a hundred million times worse than predicting zero (or
        uniform class probabilities) and than where it started; a run whose inner steps
        overshoot is, within a few meta-iterations (e.g. 1e10 at the first one, then 1e175,
        while every number stays finite). The unadapted loss keeps a start far from the data
        (e.g. unscaled X, as in scikit-learn's common checks) from counting as a run-away.
        """
        reference = max(self._null_loss(y_kernel), 1.0)
        if math.isfinite(unadapted_loss):
            reference = max(reference, unadapted_loss)
        return EXPLOSION_FACTOR * reference

    def _diverged(self, last_good_theta, layer_sizes, loss, limit):
        """Keep the last parameters whose query loss was finite and not exploded, and stop with a
        clear error."""
        self._set_theta(last_good_theta, layer_sizes)
        self.stop_reason_ = "diverged"
        what = ("the query loss after adaptation, its gradient or the updated parameters are not "
                "finite" if not math.isfinite(loss) or loss <= limit else
                f"the mean query loss after adaptation is {loss:.3g}, more than "
                f"{EXPLOSION_FACTOR:.0e} times that of a constant prediction and of the starting "
                f"θ without adaptation (limit {limit:.3g})")
        kept = ("The initial parameters are kept in coefs_/intercepts_" if self.n_iter_ == 0 else
                "The last parameters whose query loss was finite and below the limit (those "
                f"meta-iteration {self.n_iter_} started from) are kept in coefs_/intercepts_")
        start = " (the learned step sizes' starting value)" if self.learn_inner_lr else ""
        raise ValueError(
            f"Meta-training diverged at meta-iteration {self.n_iter_ + 1}: {what}. {kept}. "
            "Lower inner_lr "
            f"(now {self.inner_lr}{start}), n_inner_steps (now {self.n_inner_steps}) or meta_lr (now "
            f"{self.meta_lr}), and check that X is standardised (e.g. a StandardScaler in a "
            "Pipeline).")

    def _end_of_epoch(self, epoch_losses, theta, valid, layer_sizes, activation):
        """Convergence bookkeeping at a check: ``(is_best, stop)``, whether θ is the best so far
        on the validation tasks and the ``stop_reason_`` to stop for (or None).

        Without validation tasks a check comes after a pass over the tasks, or after as many
        passes as make ``CHECK_MIN_ITERATIONS`` meta-iterations; its loss is the mean query
        loss since the last check, and the mean of the last ``n_iter_no_change`` checks' losses is
        compared with that of the ``n_iter_no_change`` checks before them. The query loss is
        noisy (fresh support/query draws at every visit). On few tasks a pass is a few
        meta-iterations, so its mean would be as noisy as a handful of batches and a window of
        passes too short to see a slow decrease; comparing a check with the best check so far,
        the lowest of many noisy values, would stop a still-falling loss by chance. Checks of at
        least ``CHECK_MIN_ITERATIONS`` meta-iterations in two adjacent windows of equal length
        have neither problem. With validation tasks (deterministic scores), as
        ``MLPRegressor``: after every pass, stop after ``n_iter_no_change`` passes without a
        score ``tol`` above the best.
        """
        if valid is None:
            checks, n = self._check_losses, self.n_iter_no_change
            checks.append(float(np.mean(epoch_losses)))
            if len(checks) >= 2 * n and (np.mean(checks[-n:]) >
                                         np.mean(checks[-2 * n:-n]) - self.tol):
                return False, "loss_plateau"
            return False, None
        score = self._few_shot_score_theta(theta, layer_sizes, activation, valid, 0, None)
        self.validation_scores_.append(score)
        if score < self.best_validation_score_ + self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        stop = "validation_plateau" if self._no_improvement_count > self.n_iter_no_change else None
        if score > self.best_validation_score_:
            self.best_validation_score_ = score
            return True, stop
        return False, stop

    def _last_validation_score(self):
        return self.validation_scores_[-1] if self.validation_scores_ else None

    def _set_theta(self, params, layer_sizes):
        """The fitted attributes of a parameter vector: θ (``coefs_``, ``intercepts_``) and the
        learned step sizes (``inner_lr_coefs_``, ``inner_lr_intercepts_``; None if not
        learned)."""
        layout = self._layout(layer_sizes)
        self.coefs_, self.intercepts_ = unpack(params[:layout.n_theta], layer_sizes)
        self.inner_lr_coefs_, self.inner_lr_intercepts_ = layout.to_attributes(
            params[layout.n_theta:])

    # ---------------------------------------------------------------------------------------------
    # Using the meta-learned parameters
    # ---------------------------------------------------------------------------------------------

    def _theta(self):
        """The fitted parameter vector (θ, then any learned step sizes, in the dtype of the
        fitted parameters) and the kernels' layer sizes."""
        dtype = self.coefs_[0].dtype
        layer_sizes = np.array([self.coefs_[0].shape[0]] + [W.shape[1] for W in self.coefs_],
                               dtype=np.int64)
        # The kernels index θ by these sizes with no bounds check: parameters that do not chain
        # (set by hand, or edited in a saved file) are refused here rather than read past.
        remedy = "They were changed after fitting: refit the model."
        check_shapes(self.coefs_, self.intercepts_, layer_sizes, remedy=remedy)
        rates = self._layout(layer_sizes).from_attributes(
            getattr(self, "inner_lr_coefs_", None), getattr(self, "inner_lr_intercepts_", None),
            dtype, "The model and learn_inner_lr, adapted_layers or n_inner_steps were changed "
            "after fitting: refit the model.")
        return np.concatenate([pack(self.coefs_, self.intercepts_, dtype), rates]), layer_sizes

    def _raw_output(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        theta, layer_sizes = self._theta()
        X = np.ascontiguousarray(X, dtype=theta.dtype)
        return forward(theta, layer_sizes, ACTIVATION_CODES[self.activation], X)

    def adapt(self, X, y, n_inner_steps=None):
        """Adapt the meta-learned θ to one task and return the adapted model.

        Runs ``n_inner_steps`` gradient steps on the loss of all the given rows (the task's support
        set), starting from θ, with the estimator's adaptation rule: step size ``inner_lr``, or
        the learned step sizes (``learn_inner_lr``), on the layers ``adapted_layers`` names. The
        estimator itself is unchanged. On a model returned by ``adapt``, the steps continue its
        schedule: with step sizes learned per step, ``adapt(...)`` with 2 steps then 1 more is
        ``adapt(...)`` with 3.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The task's labelled rows.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Their targets.
        n_inner_steps : int, default=None
            Number of steps N; ``None`` uses the estimator's ``n_inner_steps``.

        Returns
        -------
        model : estimator
            A fitted copy whose ``coefs_``/``intercepts_`` are the adapted parameters; its
            ``predict`` serves the new task.
        """
        adapted, params, layer_sizes, adapted_attributes, n_inner_steps = (
            self._adapt_theta(X, y, n_inner_steps))
        steps_done = getattr(self, "_n_adapted_steps", 0)
        model = copy.copy(self)
        # Fresh copies of everything mutable, so the adapted model and the estimator never share
        # state; the long training history is copied as lists (cheap), not deep-copied.
        for name, value in vars(self).items():
            if isinstance(value, list):
                setattr(model, name, list(value))
            elif name.startswith("_") and hasattr(value, "__dict__"):
                setattr(model, name, copy.deepcopy(value))
        model._set_theta(np.concatenate([adapted, params[adapted.shape[0]:]]), layer_sizes)
        model._n_adapted_steps = steps_done + int(n_inner_steps)
        for name, value in adapted_attributes.items():
            setattr(model, name, value)
        return model

    def _adapt_theta(self, X, y, n_inner_steps):
        """Validate one task's rows and adapt θ to them: ``(adapted θ, params, layer_sizes,
        fitted attributes of the adapted copy, n_inner_steps)``."""
        check_is_fitted(self)
        if n_inner_steps is None:
            n_inner_steps = self.n_inner_steps
        if not isinstance(n_inner_steps, Integral) or n_inner_steps < 0:
            raise ValueError(f"n_inner_steps must be a non-negative int, got {n_inner_steps!r}.")
        X, y_kernel, adapted_attributes = self._adapt_input(X, y)
        params, layer_sizes = self._theta()
        # A model adapted already continues its schedule of per-step sizes.
        steps_done = getattr(self, "_n_adapted_steps", 0)
        theta, rule = self._layout(layer_sizes).kernel_rule(params, self.inner_lr, steps_done)
        adapted = inner_adapt(theta, layer_sizes, ACTIVATION_CODES[self.activation], X,
                              y_kernel, rule, int(n_inner_steps))
        if not np.isfinite(adapted).all():
            raise ValueError(
                "Adaptation diverged: the adapted parameters are not finite. Lower inner_lr "
                f"(now {self.inner_lr}) or n_inner_steps, or standardise X and y.")
        return adapted, params, layer_sizes, adapted_attributes, int(n_inner_steps)

    def _adapt_input(self, X, y):
        """One task's rows validated for adaptation: ``(X in θ's dtype, kernel targets, fitted
        attributes of an adapted copy)``."""
        check_is_fitted(self)
        X, y = validate_data(self, X, y, reset=False, dtype=[np.float64, np.float32],
                             multi_output=True, y_numeric=self._target_dtype() == "numeric")
        X = np.ascontiguousarray(X, dtype=self.coefs_[0].dtype)
        y_kernel, adapted_attributes = self._encode_adapt_targets(y)
        return X, y_kernel, adapted_attributes

    # ---------------------------------------------------------------------------------------------
    # Few-shot scoring
    # ---------------------------------------------------------------------------------------------

    def _score_tasks(self, X, y, groups, n_support, min_query):
        """Validate score input into a TaskSet with its kernel targets and support sizes."""
        check_is_fitted(self)
        X, y = validate_data(self, X, y, reset=False, dtype=[np.float64, np.float32],
                             multi_output=True, y_numeric=self._target_dtype() == "numeric")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if groups is None:
            self._warn_one_task("score", "scored")
        theta, _ = self._theta()
        task_set = tasks_from_groups(np.ascontiguousarray(X, dtype=theta.dtype), y, groups)
        task_set.targets = self._encode_score_targets(task_set)
        task_set.support_sizes = self._support_sizes(task_set, task_set.targets, n_support,
                                                     ALL_OTHER_ROWS,
                                                     min_query)
        return task_set

    def _few_shot_score_theta(self, theta, layer_sizes, activation, task_set, random_state,
                              sample_weight, n_inner_steps=None, scorer=None, n_repeats=1):
        """Mean over tasks of the metric on query rows after adapting on
        ``task_set.support_sizes[t]`` rows (per class for a classifier) of each task ``t``; with
        ``n_repeats``, the mean over that many draws of every task's support set.

        Episodes come from the same compiled sampler as training, seeded by ``random_state``, so a
        fixed seed gives the same support rows for every candidate of a search.
        """
        rng = check_random_state(random_state)
        scores = []
        for _ in range(n_repeats):
            scores.extend(self._few_shot_task_scores(theta, layer_sizes, activation, task_set,
                                                     rng, sample_weight, n_inner_steps, scorer))
        return float(np.mean(scores))

    def _few_shot_task_scores(self, theta, layer_sizes, activation, task_set, rng,
                              sample_weight, n_inner_steps, scorer):
        """Each task's score for one draw of the support sets (from ``rng``)."""
        if n_inner_steps is None:
            n_inner_steps = self.n_inner_steps
        X = task_set.X
        theta, rule = self._layout(layer_sizes).kernel_rule(theta, self.inner_lr)
        s_rows, ys, s_off, q_rows, yq, q_off = self._few_shot_episodes(task_set, rng)
        scores = []
        for t in range(task_set.n_tasks):
            support, query = s_rows[s_off[t]:s_off[t + 1]], q_rows[q_off[t]:q_off[t + 1]]
            Xs_t, Xq_t = X[support], X[query]
            w_t = None if sample_weight is None else sample_weight[query]
            ys_t, yq_t = ys[s_off[t]:s_off[t + 1]], yq[q_off[t]:q_off[t + 1]]
            if scorer is not None:
                model = self.adapt(Xs_t, self._decode_targets(ys_t), n_inner_steps=n_inner_steps)
                kwargs = {} if w_t is None else {"sample_weight": w_t}
                scores.append(scorer(model, Xq_t, self._decode_targets(yq_t), **kwargs))
                continue
            adapted = inner_adapt(theta, layer_sizes, activation, Xs_t, ys_t, rule,
                                  int(n_inner_steps))
            scores.append(self._task_score(adapted, layer_sizes, activation, Xq_t, yq_t, w_t))
        return scores

    def _few_shot_episodes(self, task_set, random_state):
        """The support and query rows (indices into ``task_set``) and kernel targets of every task,
        drawn by the compiled sampler with seeds from ``random_state``: the episodes of
        ``score``, :class:`FewShotScorer`, early stopping and the plotting displays."""
        rng = check_random_state(random_state)
        seeds = rng.randint(0, _SEED_HIGH, size=task_set.n_tasks, dtype=np.int64)
        batch = np.arange(task_set.n_tasks, dtype=np.int64)
        return self._episode_rows(task_set.targets)(
            task_set.offsets, task_set.fixed_support, batch, seeds, task_set.support_sizes,
            ALL_OTHER_ROWS)

    def _few_shot_score(self, X, y, groups, sample_weight, *, n_support, n_inner_steps=None,
                        random_state=0, scorer=None, n_repeats=1):
        """Validate, then :meth:`_few_shot_score_theta` (shared by ``score`` and FewShotScorer)."""
        min_query = self._min_query_rows_to_score if scorer is None else 1
        task_set = self._score_tasks(X, y, groups, n_support, min_query)
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
            if sample_weight.shape[0] != task_set.X.shape[0]:
                raise ValueError(f"sample_weight has {sample_weight.shape[0]} entries but X has "
                                 f"{task_set.X.shape[0]} rows.")
            sample_weight = sample_weight[task_set.order]
        theta, layer_sizes = self._theta()
        return self._few_shot_score_theta(theta, layer_sizes, ACTIVATION_CODES[self.activation],
                                          task_set, random_state, sample_weight, n_inner_steps,
                                          scorer, n_repeats)

    def score(self, X, y, groups=None, sample_weight=None):
        """Few-shot score: per task, adapt on ``n_support`` rows and score the rest; mean over tasks.

        The metric is R² for regression and accuracy for classification, computed per task on its
        query rows and averaged over tasks. Support rows are drawn with a fixed seed (0), so the
        score is deterministic. For another protocol (other ``n_support``, seed or metric) see
        :class:`FewShotScorer`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
        groups : array-like of shape (n_samples,), default=None
            Task id of each row; ``None`` makes all rows one task.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the scored (query) rows within each task.

        Returns
        -------
        score : float
        """
        return self._few_shot_score(X, y, groups, sample_weight, n_support=self.n_support)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags


def _is_task_list(X):
    """Whether ``fit(X)`` without y got the list-of-tasks form.

    A list of rows (``[[1., 2.], [3., 4.]]``, an X given without y) is not: a task is a tuple whose
    first entry is an array-like. One such tuple is enough, so that a malformed entry among tasks
    gets an error naming it rather than "y is None".
    """
    if not isinstance(X, (list, tuple)):
        return False
    return len(X) == 0 or any(isinstance(t, (list, tuple)) and len(t) > 0 and
                              not np.isscalar(t[0]) for t in X)


class _MetaStep:
    """Meta-iterations: sample each batch's episodes, compute the mean meta-gradient, check it
    and take the optimiser step on θ (in place). Keeps the θ before each step: when a step
    diverges, that is the last θ whose query loss was finite, and the estimator keeps it.

    :meth:`run` does a run of them: in one compiled call (``_kernels._train``) while the
    batches are small enough to be one kernel call each, else one at a time from Python, with
    the meta-gradient's chunks on threads. Both do the same operations on the same arrays."""

    def __init__(self, estimator, train, n_query, meta_gradient, optimizer, theta, batch_size,
                 layer_sizes):
        self.estimator = estimator
        self.train = train
        self.n_query = n_query
        self.sampler = estimator._sampler_spec(train.targets)
        self.sample = estimator._episode_sampler(train.targets)
        self.meta_gradient = meta_gradient
        self.optimizer = optimizer
        self.theta = theta
        self.theta_prev = theta.copy()
        self.grad = np.empty_like(theta)
        self.task_losses = np.empty(batch_size, dtype=theta.dtype)
        self.batch_size = batch_size
        self.layer_sizes = layer_sizes
        self.loss_limit = None  # set from the first batch
        self.last_batch = None  # (tasks, seeds) of the last batch run
        self.compiled = _COMPILED_LOOP  # until a batch needs chunks
        self._losses = np.empty(_RUN_LENGTH)
        self._outcome = np.zeros(2, dtype=np.int64)
        self.interrupted = False  # a Ctrl-C arrived during a compiled run

    def _sample(self, batch, batch_seeds):
        train = self.train
        return self.sample(train.X, train.targets, train.offsets, train.fixed_support, batch,
                           batch_seeds, train.support_sizes, self.n_query)

    def run(self, order, seeds, first, n_batches):
        """Meta-iterations on batches ``first, first + 1, ...`` (at most ``n_batches``) of an
        epoch's ``order`` and ``seeds``: ``(losses, failure)``, the losses of the iterations
        done, and None or the loss (NaN for a non-finite update) of the one that diverged (not
        done; ``theta_prev`` holds the θ to keep)."""
        if self.loss_limit is None or not self.compiled:
            return self._one(order, seeds, first)
        mg, train = self.meta_gradient, self.train
        outcome = self._outcome
        outcome[:] = (0, RUN_DONE)
        try:
            meta_train_run(
                self.theta, self.theta_prev, self.grad, self.task_losses, mg.n_theta,
                self.layer_sizes, mg.activation, mg.rule, mg.n_inner_steps, mg.first_order,
                train.X, train.targets, train.offsets, train.fixed_support, train.support_sizes,
                self.n_query, *self.sampler, order, seeds, first, self.batch_size,
                min(n_batches, _RUN_LENGTH), *self.optimizer.kernel_args(self.theta),
                self.loss_limit, mg.support_flops, mg.query_flops, MAX_ONE_CHUNK_FLOPS,
                self._losses, outcome)
        except KeyboardInterrupt:
            # Ctrl-C during the run: Python raises it as the run returns, after the run's
            # updates. Account for them (and any divergence) first; the loop then stops.
            self.interrupted = True
        n_done, status = int(outcome[0]), int(outcome[1])
        self.optimizer.advance(n_done)
        # A batch whose update failed passed its checks but is not recorded (as from Python).
        recorded = n_done - (status == RUN_BAD_UPDATE)
        losses = self._losses[:recorded].tolist()
        if n_done:
            last = first + n_done - 1
            self.last_batch = (order[last * self.batch_size:(last + 1) * self.batch_size],
                               seeds[last * self.batch_size:(last + 1) * self.batch_size])
        if status == RUN_BAD_LOSS:
            return losses, float(self._losses[n_done])
        if status == RUN_BAD_UPDATE:
            return losses, math.nan
        if status == RUN_CHUNKED:
            # Batches this big run through Python (its overhead is small beside them).
            self.compiled = False
        return losses, None

    def _one(self, order, seeds, j):
        """Batch ``j`` of the epoch from Python: ``run``'s result for one iteration."""
        lo, hi = j * self.batch_size, (j + 1) * self.batch_size
        batch, batch_seeds = order[lo:hi], seeds[lo:hi]
        episodes = self._sample(batch, batch_seeds)
        self.last_batch = (batch, batch_seeds)
        if self.loss_limit is None:
            unadapted = self.estimator._mean_query_loss(
                self.theta, self.layer_sizes, ACTIVATION_CODES[self.estimator.activation],
                episodes, n_inner_steps=0)
            self.loss_limit = self.estimator._exploded_loss(self.train.targets, unadapted)
        loss = self.meta_gradient(self.theta, *episodes, self.grad,
                                  self.task_losses[:batch.shape[0]])
        # ``loss <= limit`` is False for NaN too.
        if not (loss <= self.loss_limit and all_finite(self.grad)):
            return [], loss
        np.copyto(self.theta_prev, self.theta)
        self.optimizer.update(self.theta, self.grad)
        if not all_finite(self.theta):
            return [], math.nan
        return [loss], None

    def check_last_update(self):
        """Raise the divergence error if θ after the last step gives a non-finite or exploded
        query loss on the last batch (nothing else evaluates the last update)."""
        if self.last_batch is None:
            return
        loss = self.estimator._mean_query_loss(
            self.theta, self.layer_sizes, ACTIVATION_CODES[self.estimator.activation],
            self._sample(*self.last_batch))
        if not loss <= self.loss_limit:
            self.estimator._diverged(self.theta_prev, self.layer_sizes, loss, self.loss_limit)


def _meta_epochs(n_tasks, batch_size, n_iterations, rng):
    """The meta-batches of ``n_iterations`` meta-iterations, an epoch at a time:
    ``(order, seeds, n_batches, whole)``; batch ``j`` of an epoch is the tasks
    ``order[j * batch_size : (j + 1) * batch_size]`` with their episode seeds, and ``whole``
    says the epoch is complete (the last may be cut at ``n_iterations``).

    Shuffled epochs without replacement (as minibatches in MLP), a seed per task visit drawn up
    front from ``rng`` for each epoch, the last batch of an epoch possibly smaller.
    """
    per_epoch = -(-n_tasks // batch_size)
    done = 0
    while done < n_iterations:
        order = _epoch_order(rng.permutation(n_tasks), batch_size)
        seeds = rng.randint(0, _SEED_HIGH, size=n_tasks, dtype=np.int64)
        n_batches = min(per_epoch, n_iterations - done)
        yield order, seeds, n_batches, n_batches == per_epoch
        done += n_batches


def _epoch_order(permutation, batch_size):
    """The shuffled task order of one epoch with each meta-batch's tasks in increasing index.

    Which tasks share a meta-batch stays random; the order they reach the kernel in does not. The
    batch's mean meta-gradient is a floating-point sum over its tasks' rows (inside BLAS products
    over all support rows), so its last bits depend on that order: with it fixed, a meta-iteration
    depends on which tasks it holds only, e.g. a fit of 3 and a warm-started fit of 2 more full
    batches of fixed tasks equal one fit of 5, on any BLAS kernel.
    """
    order = permutation.copy()
    full = order.shape[0] - order.shape[0] % batch_size
    # Each batch sorted in place (a view of rows of batch_size): a lexsort of (task, batch) gives
    # the same order in 8 times the time (84 against 10 us for 1,000 tasks: one timing, Zen 1).
    order[:full].reshape(-1, batch_size).sort(axis=1)
    order[full:].sort()
    return order
