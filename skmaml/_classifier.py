"""MAMLClassifier: MAML with softmax cross-entropy, in two label regimes."""

import math
import warnings

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.metrics import accuracy_score
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.multiclass import check_classification_targets

from ._base import BaseMAML, _user_stacklevel
from ._kernels._config import STRATIFIED_EPISODES, UNSTRATIFIED_EPISODES
from ._kernels._mlp import forward
from ._kernels._sampling import (
    classification_episode_rows,
    regression_episode_rows,
    task_class_summary,
)
from ._messages import counted


class MAMLClassifier(ClassifierMixin, BaseMAML):
    """Model-Agnostic Meta-Learning (MAML) for classification with a multilayer perceptron.

    The algorithm and most parameters are those of :class:`MAMLRegressor`; the loss is softmax
    cross-entropy. ``n_support`` (K) counts support rows **per class** by default (support sets are
    stratified: N-way K-shot episodes), or rows of the task with ``support_per="task"`` ("5
    labelled rows per site", whatever their class).

    Two label regimes, chosen by ``task_labels``:

    ``"shared"`` (default)
        Labels mean the same in every task (e.g. "fault" / "ok" on every machine). The network has
        one output per class of ``classes_``; a task may hold any subset of the classes.
    ``"per_task"``
        N-way episodes: each task has its own ``n_way`` classes, which may never have been seen in
        training. Each task's labels map to outputs ``0 .. n_way - 1``; at every visit in
        meta-training the assignment of a task's classes to outputs is drawn afresh, so θ learns to
        adapt instead of memorising classes. :meth:`adapt` maps the new task's sorted labels to the
        outputs and the adapted model predicts that task's own labels. Every task must have the
        same number of classes.

    Parameters
    ----------
    hidden_layer_sizes, activation, weight_init, inner_lr, n_inner_steps, learn_inner_lr, \
adapted_layers, meta_lr, meta_optimizer, first_order, meta_batch_size, max_iter, tol, \
n_iter_no_change, early_stopping, validation_fraction, warm_start, random_state, n_jobs, verbose
        As in :class:`MAMLRegressor` (α = ``inner_lr``, β = ``meta_lr``, N = ``n_inner_steps``).
    n_support : int, default=5
        K, support rows of each task and visit: **per class** (``support_per="class"``) or in
        all (``support_per="task"``).
    n_query : int, default=None
        Query rows per class (``support_per="class"``) or per task (``"task"``); ``None`` uses
        all rows not in the support.
    support_per : {"class", "task"}, default="class"
        What ``n_support`` and ``n_query`` count, in meta-training, ``score``, early stopping and
        :class:`FewShotScorer` alike.

        ``"class"``
            Rows of each class present in the task, drawn class by class (stratified), the
            few-shot convention. A task gives at most as many shots as its smallest class allows
            (a task with 30 rows of one class and 1 of the other gives 1 shot per class).
        ``"task"``
            Rows of the task, drawn uniformly whatever their class (as :class:`MAMLRegressor`
            draws them): a support set may miss a rare class, whose query rows are still scored,
            and only the task's number of rows limits it. Needs ``task_labels="shared"``: with
            ``"per_task"`` a task's outputs are assigned to the classes of its support rows
            (:meth:`adapt` needs rows of all ``n_way`` classes), so a support set missing a class
            would have no meaning; the combination is an error in ``fit`` and ``score``.

        Either way, a task too small for ``n_support`` uses the largest support set it can, with
        a warning (:func:`skmaml.datasets.small_tasks` lists such tasks beforehand); tasks given
        as ``(X_support, y_support, X_query, y_query)`` keep their split, and :meth:`adapt`
        adapts on all the rows it is given.
    task_labels : {"shared", "per_task"}, default="shared"
        The label regime (see above). With ``"per_task"``, ``early_stopping`` holds out
        **classes**: validation tasks are the tasks made only of ``validation_fraction`` of the
        classes (at least ``n_way``), training tasks those without them, so that validation sees
        θ memorising the training classes (tasks mixing both are not used; pass ``X_val`` to
        ``fit`` to train on every task).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        ``"shared"``: the class labels. ``"per_task"``: ``arange(n_way)`` for the meta-learned
        model, and the task's own labels on a model returned by :meth:`adapt`.
    coefs_, intercepts_, inner_lr_coefs_, inner_lr_intercepts_, n_iter_, stop_reason_, \
loss_curve_, best_loss_, validation_scores_, best_validation_score_, n_features_in_, \
feature_names_in_, n_layers_, n_outputs_
        As in :class:`MAMLRegressor` (scores are few-shot accuracy).

    Examples
    --------
    >>> import numpy as np
    >>> from skmaml import MAMLClassifier
    >>> rng = np.random.RandomState(0)
    >>> tasks = []
    >>> for _ in range(40):
    ...     w = rng.normal(size=3)
    ...     X = rng.normal(size=(30, 3))
    ...     tasks.append((X, (X @ w > 0).astype(int)))
    >>> clf = MAMLClassifier(hidden_layer_sizes=(16,), n_support=5, inner_lr=0.5,
    ...                      max_iter=100, random_state=0).fit(tasks)
    >>> X_new = rng.normal(size=(20, 3))
    >>> y_new = (X_new @ rng.normal(size=3) > 0).astype(int)
    >>> clf.adapt(X_new[:10], y_new[:10]).predict(X_new[10:]).shape
    (10,)
    """

    _parameter_constraints: dict = {
        **BaseMAML._parameter_constraints,
        "support_per": [StrOptions({"class", "task"})],
        "task_labels": [StrOptions({"shared", "per_task"})],
    }

    def __init__(self, hidden_layer_sizes=(40, 40), activation="relu", *,
                 weight_init="uniform_fan_in", inner_lr=0.01, n_inner_steps=1,
                 learn_inner_lr=None, adapted_layers="all", meta_lr=0.001,
                 meta_optimizer="adam", first_order=False,
                 meta_batch_size=25, n_support=5, n_query=None, support_per="class",
                 task_labels="shared", max_iter=1000, tol=1e-4, n_iter_no_change=10,
                 early_stopping=False, validation_fraction=0.1, warm_start=False,
                 random_state=None, n_jobs=None, verbose=0):
        super().__init__(
            hidden_layer_sizes, activation, weight_init=weight_init, inner_lr=inner_lr,
            n_inner_steps=n_inner_steps, learn_inner_lr=learn_inner_lr,
            adapted_layers=adapted_layers, meta_lr=meta_lr, meta_optimizer=meta_optimizer,
            first_order=first_order, meta_batch_size=meta_batch_size, n_support=n_support,
            n_query=n_query, max_iter=max_iter, tol=tol, n_iter_no_change=n_iter_no_change,
            early_stopping=early_stopping, validation_fraction=validation_fraction,
            warm_start=warm_start, random_state=random_state, n_jobs=n_jobs, verbose=verbose)
        self.support_per = support_per
        self.task_labels = task_labels

    # The mixin's score (plain R² / accuracy on all rows) would shadow the few-shot score.
    score = BaseMAML.score

    def _target_dtype(self):
        return None

    @staticmethod
    def _labels_1d(y):
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(f"MAMLClassifier takes one label per row (1-D y); got shape "
                             f"{y.shape}.")
        check_classification_targets(y)
        return y

    @staticmethod
    def _n_way_of_tasks(task_set, codes, n_labels):
        """Number of classes of each task, and rows of its smallest class (O(rows) memory)."""
        return task_class_summary(codes, task_set.offsets, n_labels)

    def _check_support_per(self):
        if self.support_per == "task" and self.task_labels == "per_task":
            raise ValueError(
                "support_per='task' draws a support set from a task's rows whatever their class, "
                "so it may miss one of the task's classes; with task_labels='per_task' a task's "
                "outputs are assigned to the classes of its support rows, so every support set "
                "needs rows of every class. Use support_per='class' (n_support rows of each "
                "class) with task_labels='per_task'.")

    def _support_unit(self):
        # What n_support counts, in the messages about small tasks.
        return " per class" if self.support_per == "class" else ""

    def _encode_fit_targets(self, task_set):
        self._check_support_per()
        labels, codes = np.unique(self._labels_1d(task_set.y), return_inverse=True)
        codes = codes.astype(np.int64)
        if self.task_labels == "shared":
            if labels.shape[0] < 2:
                raise ValueError(f"MAMLClassifier needs samples of at least 2 classes; the "
                                 f"tasks only have class {labels[0]!r}.")
            self.classes_ = labels
            return codes, labels.shape[0]
        n_way, _ = self._n_way_of_tasks(task_set, codes, labels.shape[0])
        self._check_same_n_way(task_set, n_way, n_way[0])
        self._check_fixed_query_classes(task_set, codes)
        if n_way[0] < 2:
            raise ValueError("task_labels='per_task' needs tasks with at least 2 classes; "
                             f"{task_set.names[0]} has 1.")
        self.classes_ = np.arange(n_way[0])
        return codes, int(n_way[0])

    @staticmethod
    def _check_fixed_query_classes(task_set, codes):
        """``"per_task"``: a task with a given split must have every query class in its support,
        since its outputs are assigned to the classes of its own rows and adaptation sees only the
        support."""
        for t in np.flatnonzero(task_set.fixed_support >= 0):
            start, split, end = (task_set.offsets[t], task_set.offsets[t] + task_set.fixed_support[t],
                                 task_set.offsets[t + 1])
            missing = np.setdiff1d(codes[split:end], codes[start:split])
            if missing.size:
                labels = np.unique(task_set.y)[missing]
                raise ValueError(
                    f"{task_set.names[t]}: y_query has classes {labels.tolist()} that y_support "
                    "does not: with task_labels='per_task' a task is adapted to the classes of its "
                    "support rows only.")

    @staticmethod
    def _check_same_n_way(task_set, n_way, expected):
        wrong = np.flatnonzero(n_way != expected)
        if wrong.size:
            t = wrong[0]
            raise ValueError(
                f"With task_labels='per_task' every task must have the same number of classes "
                f"(N-way): {task_set.names[t]} has {counted(n_way[t], 'class')}, expected "
                f"{expected}.")

    def _encode_score_targets(self, task_set):
        self._check_support_per()
        y = self._labels_1d(task_set.y)
        if self.task_labels == "shared":
            return self._shared_codes(y)
        labels, codes = np.unique(y, return_inverse=True)
        codes = codes.astype(np.int64)
        n_way, _ = self._n_way_of_tasks(task_set, codes, labels.shape[0])
        self._check_same_n_way(task_set, n_way, self.n_outputs_)
        self._check_fixed_query_classes(task_set, codes)
        return codes

    def _shared_codes(self, y):
        unseen = np.setdiff1d(np.unique(y), self.classes_)
        if unseen.size:
            raise ValueError(
                f"y contains labels {unseen.tolist()} that the model never saw in training "
                f"(classes_ = {self.classes_.tolist()}). For tasks with new classes use "
                "task_labels='per_task'.")
        return np.searchsorted(self.classes_, y).astype(np.int64)

    def _largest_supports(self, task_set, y_kernel, n_query, min_query):
        return _largest_supports(task_set, y_kernel, n_query, min_query, self.support_per)

    def _small_task_facts(self, task_set, y_kernel, t):
        # The codes index classes_ ("shared") or the sorted labels of the data ("per_task").
        labels = self.classes_ if self.task_labels == "shared" else np.unique(task_set.y)
        return _small_task_facts(task_set, y_kernel, labels, t, self.support_per)

    def _split_validation_tasks(self, task_set, y_kernel, rng):
        """``"per_task"``: hold out classes, not tasks. Validation on tasks that share classes
        with training cannot see θ memorising the training classes (their few-shot accuracy
        rises while accuracy on new classes falls). Of the classes, ``validation_fraction``
        (at least ``n_way``) are held out at random: validation tasks are the tasks made only of
        them, training tasks those with none of them; a task that mixes both is used for
        neither, with a warning."""
        if self.task_labels == "shared":
            return super()._split_validation_tasks(task_set, y_kernel, rng)
        n_way = self.n_outputs_
        present = np.unique(y_kernel)
        n_held = max(n_way, int(np.ceil(self.validation_fraction * present.shape[0])))
        if present.shape[0] - n_held < n_way:
            raise ValueError(
                f"early_stopping with task_labels='per_task' holds out classes: {n_held} of the "
                f"{present.shape[0]} classes would leave fewer than n_way={n_way} for training. "
                "Pass validation tasks of other classes as X_val.")
        held = np.zeros(int(present.max()) + 1, dtype=bool)
        held[rng.choice(present, size=n_held, replace=False)] = True
        starts = task_set.offsets[:-1]
        n_held_rows = np.add.reduceat(held[y_kernel].astype(np.int64), starts)
        sizes = task_set.sizes()
        valid_idx = np.flatnonzero(n_held_rows == sizes)
        train_idx = np.flatnonzero(n_held_rows == 0)
        labels = np.unique(task_set.y)
        if valid_idx.size == 0 or train_idx.size == 0:
            raise ValueError(
                f"early_stopping with task_labels='per_task' held out classes "
                f"{labels[held].tolist()}, but no task is made "
                f"{'only of them' if valid_idx.size == 0 else 'without them'}. Pass "
                "validation tasks of classes the training tasks do not use as X_val.")
        n_mixed = task_set.n_tasks - valid_idx.size - train_idx.size
        if n_mixed:
            warnings.warn(
                f"early_stopping holds out classes {labels[held].tolist()}: "
                f"{counted(valid_idx.size, 'task')} made only of them validate, "
                f"{train_idx.size} without them train, and {n_mixed} that mix both "
                f"{'is' if n_mixed == 1 else 'are'} not used. To train on every task, "
                "pass validation tasks of other classes as X_val.", UserWarning,
                stacklevel=_user_stacklevel())
        return train_idx, valid_idx

    def _sampler_spec(self, y_kernel):
        if self.support_per == "task":
            return UNSTRATIFIED_EPISODES, 0, False
        n_labels = int(y_kernel.max()) + 1 if y_kernel.size else 0
        return STRATIFIED_EPISODES, n_labels, self.task_labels == "per_task"

    def _episode_rows(self, y_kernel):
        sampler, n_labels, relabel = self._sampler_spec(y_kernel)
        if sampler == UNSTRATIFIED_EPISODES:
            def rows(offsets, fixed_support, batch, seeds, support_sizes, n_query):
                # The draws of sample_unstratified_classification_episodes.
                s_rows, s_off, q_rows, q_off = regression_episode_rows(
                    offsets, fixed_support, batch, seeds, support_sizes, n_query)
                return s_rows, y_kernel[s_rows], s_off, q_rows, y_kernel[q_rows], q_off

            return rows

        def rows(offsets, fixed_support, batch, seeds, support_sizes, n_query):
            return classification_episode_rows(y_kernel, offsets, fixed_support, batch, seeds,
                                               support_sizes, n_query, n_labels, relabel)

        return rows

    def _encode_adapt_targets(self, y):
        y = self._labels_1d(y)
        if self.task_labels == "shared":
            return self._shared_codes(y), {}
        labels, codes = np.unique(y, return_inverse=True)
        if labels.shape[0] != self.n_outputs_:
            raise ValueError(
                f"adapt got {counted(labels.shape[0], 'class')} but the model was meta-trained on "
                f"{self.n_outputs_}-way tasks (task_labels='per_task'): give rows of exactly "
                f"{self.n_outputs_} classes.")
        return codes.astype(np.int64), {"classes_": labels}

    def _decode_targets(self, y_kernel):
        # per_task: kernel targets are the episode's outputs 0..n_way-1, which adapt() accepts as
        # the task's labels (so the adapted model speaks the same outputs).
        return self.classes_[y_kernel] if self.task_labels == "shared" else y_kernel

    def _null_loss(self, y_kernel):
        # Cross-entropy of uniform class probabilities.
        return math.log(self.n_outputs_)

    def _task_score(self, theta, layer_sizes, activation, X_query, y_query, sample_weight):
        logits = forward(theta, layer_sizes, activation, X_query)
        return accuracy_score(y_query, logits.argmax(axis=1), sample_weight=sample_weight)

    def predict_proba(self, X):
        """Class probabilities with the current (meta-learned or adapted) parameters.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns follow ``classes_``.
        """
        return np.exp(self.predict_log_proba(X))

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba` (a stable log-softmax of the outputs)."""
        logits = self._raw_output(X).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    def predict(self, X):
        """Predict class labels (of ``classes_``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,)
        """
        # The forward pass first: it checks the model is fitted before classes_ is read.
        codes = self._raw_output(X).argmax(axis=1)
        return self.classes_[codes]


def _largest_supports(task_set, codes, n_query, min_query, support_per):
    """Per task, the largest ``n_support`` (in the unit of ``support_per``) it can give while
    keeping its query rows (``n_query``, or at least ``min_query`` for ``ALL_OTHER_ROWS``); < 1
    where it cannot give one. The one statement of the rule: :class:`MAMLClassifier` applies it
    and :func:`skmaml.datasets.small_tasks` reports it.

    ``codes`` are the class codes of the rows (any encoding whose codes are ``0 .. n - 1``);
    unused with ``support_per="task"``.
    """
    if support_per == "task":
        # As MAMLRegressor: support and query rows are drawn from the task's rows, whatever
        # their class.
        return task_set.sizes() - (n_query if n_query > 0 else min_query)
    n_labels = int(codes.max()) + 1 if codes.size else 0
    # Per-task summaries, not a tasks x classes table: the "per_task" regime may span
    # thousands of classes and tasks.
    n_way, smallest = task_class_summary(codes, task_set.offsets, n_labels)
    shots = smallest - max(n_query, 0)
    if n_query < 0:
        # All of a task's rows outside the support are its query: keep at least one.
        shots = np.where(task_set.sizes() - n_way * shots >= min_query, shots, shots - 1)
    return shots


def _small_task_facts(task_set, codes, labels, t, support_per):
    """What limits task ``t``'s support set, for messages: "group 'a' has 4 rows" (``"task"``),
    "group 'a' has 1 row of class 'x', its smallest, and 30 in all" (``"class"``; ``codes``
    index ``labels``)."""
    start, end = task_set.offsets[t], task_set.offsets[t + 1]
    if support_per == "task":
        return f"{task_set.names[t]} has {counted(end - start, 'row')}"
    counts = np.bincount(codes[start:end])
    c = np.flatnonzero(counts == counts[counts > 0].min())[0]
    return (f"{task_set.names[t]} has {counted(counts[c], 'row')} of class "
            f"{_python_value(labels[c])!r}, its smallest, and {end - start} in all")


def _python_value(label):
    """A label as Python shows it (1, 'dog'), from a NumPy scalar or the object of an object
    array (a pandas column of strings)."""
    return label.item() if isinstance(label, np.generic) else label
