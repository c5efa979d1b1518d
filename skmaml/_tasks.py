"""Tasks: the list-of-tasks and flat ``(X, y, groups)`` forms, validated into one concatenated layout.

Both public forms become a :class:`TaskSet`: every task's rows concatenated in task order
(``X`` of shape ``(n_rows, n_features)``), ``offsets`` such that task ``t`` owns rows
``offsets[t]:offsets[t + 1]``, and ``fixed_support[t]``: ``RANDOM_SPLIT`` (-1) for a task whose
support/query split is drawn afresh at each visit (a 2-tuple), or the number of given support rows
at the front of the task (a 4-tuple). The compiled episode samplers work on exactly this layout.

Task order: the list order, or for ``groups`` the sorted unique group labels (``np.unique``), rows
of a task in their original order. The two forms describing the same tasks therefore give the same
layout, and so the same model.
"""

from dataclasses import dataclass

import numpy as np
from sklearn.utils import check_array
from sklearn.utils.validation import _num_samples, column_or_1d

from ._kernels._config import RANDOM_SPLIT


@dataclass
class TaskSet:
    """Validated tasks in the concatenated layout of the episode samplers.

    Attributes
    ----------
    X : ndarray of shape (n_rows, n_features), float32 or float64, C-contiguous
    y : ndarray of shape (n_rows,) or (n_rows, n_targets)
        Targets as given (validated by the estimator, not encoded here).
    offsets : ndarray of shape (n_tasks + 1,), int64
    fixed_support : ndarray of shape (n_tasks,), int64
    names : list of str
        How each task is named in error messages (``"task 3"`` or ``"group 'site-7'"``).
    order : ndarray of shape (n_rows,), int64, or None
        For the flat form, the row of the given ``X`` at each position of the layout (so per-row
        extras such as ``sample_weight`` can follow the rows); None for a task list.
    targets : ndarray of shape (n_rows,) or (n_rows, n_outputs), or None
        The targets encoded for the kernels (set by the estimator once it has encoded them).
    support_sizes : ndarray of shape (n_tasks,), int64, or None
        Support rows (per class for a classifier) of each random-split task, set by the estimator.
    """

    X: np.ndarray
    y: np.ndarray
    offsets: np.ndarray
    fixed_support: np.ndarray
    names: list
    order: np.ndarray = None
    targets: np.ndarray = None
    support_sizes: np.ndarray = None

    @property
    def n_tasks(self):
        return self.offsets.shape[0] - 1

    def sizes(self):
        return np.diff(self.offsets)

    def subset(self, task_indices):
        """The tasks ``task_indices`` (in that order) as a new TaskSet, with their targets and
        support sizes when set."""
        task_indices = np.asarray(task_indices, dtype=np.int64)
        rows, offsets = ragged_take(self.offsets, task_indices)
        return TaskSet(
            X=np.ascontiguousarray(self.X[rows]),
            y=np.ascontiguousarray(self.y[rows]),
            offsets=offsets,
            fixed_support=self.fixed_support[task_indices].copy(),
            names=[self.names[t] for t in task_indices],
            targets=None if self.targets is None else np.ascontiguousarray(self.targets[rows]),
            support_sizes=(None if self.support_sizes is None
                           else self.support_sizes[task_indices].copy()),
        )


def ragged_take(offsets, indices):
    """Rows and offsets of the parts ``indices`` (in that order) of a ragged array whose part
    ``t`` is rows ``offsets[t]:offsets[t + 1]``: ``(rows, new_offsets)``, int64."""
    indices = np.asarray(indices, dtype=np.int64)
    sizes = offsets[indices + 1] - offsets[indices]
    new_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    rows = np.arange(new_offsets[-1], dtype=np.int64) + np.repeat(
        offsets[indices] - new_offsets[:-1], sizes)
    return rows, new_offsets


def _is_ready(array, ensure_2d, dtype):
    """Whether ``check_array`` would return ``array`` unchanged but for its finiteness check.

    Validating tens of thousands of small tasks one ``check_array`` call each takes longer than
    meta-training on them; arrays already in a usable form skip it, and
    their finiteness is checked once over all tasks (:func:`_check_finite`).
    """
    if (not isinstance(array, np.ndarray) or array.ndim == 0 or array.shape[0] < 1
            or not array.flags.c_contiguous):
        return False
    if ensure_2d:
        return array.ndim == 2 and array.shape[1] >= 1 and array.dtype in (np.float32,
                                                                             np.float64)
    if array.ndim not in (1, 2):
        return False
    if dtype == "numeric":
        return array.dtype.kind in "fiu"
    return array.dtype.kind in "iuUSb"  # labels that cannot hold NaN


def _check_finite(values, offsets, fixed_support, names, what):
    """Raise naming the first task (and part) whose ``what`` holds NaN or infinity."""
    if values.dtype.kind != "f":
        return
    finite = np.isfinite(values)
    if finite.all():
        return
    row = int(np.flatnonzero(~finite.reshape(finite.shape[0], -1).all(axis=1))[0])
    t = int(np.searchsorted(offsets, row, side="right") - 1)
    part = what if fixed_support[t] < 0 else (
        f"{what}_support" if row - offsets[t] < fixed_support[t] else f"{what}_query")
    raise ValueError(f"{names[t]}: {part}: Input {part} contains NaN or infinity.")


def _check_task_part(array, what, name, ensure_2d, dtype, ensure_min_samples=1):
    """``check_array`` whose errors say which task (and which part of it) is wrong."""
    if _is_ready(array, ensure_2d, dtype):
        return array
    try:
        return check_array(array, ensure_2d=ensure_2d, dtype=dtype,
                           ensure_min_samples=ensure_min_samples, input_name=what)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{name}: {what}: {exc}") from exc


def tasks_from_list(tasks, y_dtype):
    """Validate a list of ``(X, y)`` or ``(X_support, y_support, X_query, y_query)`` tuples.

    Parameters
    ----------
    tasks : sequence of tuples
    y_dtype : dtype, "numeric" or None
        Passed to ``check_array`` for targets (``"numeric"`` for regression, ``None`` keeps labels).

    Returns
    -------
    task_set : TaskSet
        ``X`` is float64 unless every task's ``X`` is float32.
    first_X : object
        The first task's ``X`` as given (for ``feature_names_in_``).
    """
    if isinstance(tasks, (str, bytes)) or not hasattr(tasks, "__len__"):
        raise TypeError(
            "tasks must be a list of (X, y) or (X_support, y_support, X_query, y_query) "
            f"tuples; got {type(tasks).__name__}."
        )
    if len(tasks) == 0:
        raise ValueError("tasks is empty: meta-training needs at least one task.")
    X_parts, y_parts, sizes, fixed = [], [], [], []
    n_features = None
    all_float32 = True
    names = [f"task {i}" for i in range(len(tasks))]
    for i, task in enumerate(tasks):
        name = names[i]
        if not isinstance(task, (tuple, list)) or len(task) not in (2, 4):
            got = (f"a {type(task).__name__} of length {len(task)}"
                   if isinstance(task, (tuple, list)) else f"a {type(task).__name__}")
            raise ValueError(
                f"{name} must be a tuple (X, y) or (X_support, y_support, X_query, y_query); "
                f"got {got}."
            )
        parts = []
        for j in range(0, len(task), 2):
            what = ("X", "y") if len(task) == 2 else (
                ("X_support", "y_support") if j == 0 else ("X_query", "y_query"))
            X_i = _check_task_part(task[j], what[0], name, True, [np.float64, np.float32])
            y_i = _check_task_part(task[j + 1], what[1], name, False, y_dtype)
            if y_i.ndim == 2 and y_i.shape[1] == 1:
                # As fit(X, y, groups): a column vector is 1-D, with a DataConversionWarning.
                y_i = column_or_1d(y_i, warn=True)
            if _num_samples(X_i) != _num_samples(y_i):
                raise ValueError(
                    f"{name}: {what[0]} has {X_i.shape[0]} rows but {what[1]} has "
                    f"{_num_samples(y_i)}."
                )
            if n_features is None:
                n_features = X_i.shape[1]
            elif X_i.shape[1] != n_features:
                raise ValueError(
                    f"{name}: {what[0]} has {X_i.shape[1]} features, but task 0 has "
                    f"{n_features}: every task must have the same columns."
                )
            all_float32 &= X_i.dtype == np.float32
            parts.append((X_i, y_i))
        if len(task) == 4:
            fixed.append(parts[0][0].shape[0])
        else:
            fixed.append(RANDOM_SPLIT)
        for X_i, y_i in parts:
            X_parts.append(X_i)
            y_parts.append(y_i)
        sizes.append(sum(p[0].shape[0] for p in parts))
    y_ndims = {y_i.ndim for y_i in y_parts}
    if len(y_ndims) > 1 or (2 in y_ndims and len({y_i.shape[1] for y_i in y_parts}) > 1):
        raise ValueError("Every task's y must have the same number of target columns.")
    dtype = np.float32 if all_float32 else np.float64
    X = np.ascontiguousarray(np.concatenate(X_parts).astype(dtype, copy=False))
    y = np.concatenate(y_parts)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    fixed = np.asarray(fixed, dtype=np.int64)
    _check_finite(X, offsets, fixed, names, "X")
    _check_finite(y, offsets, fixed, names, "y")
    return TaskSet(X=X, y=y, offsets=offsets, fixed_support=fixed, names=names), tasks[0][0]


def group_layout(groups):
    """The task layout of ``fit(X, y, groups)``, the one place it is decided: tasks in sorted
    order of the unique labels (``np.unique``), each task's rows in their given order.

    ``skmaml.datasets.tasks_from_groups`` uses it too, which is what makes
    ``fit(tasks_from_groups(X, y, groups))`` and ``fit(X, y, groups=groups)`` the same model.

    Returns
    -------
    labels : ndarray of shape (n_tasks,)
        Sorted unique labels.
    codes : ndarray of shape (n_rows,), int
        Task of each row (index into ``labels``).
    order : ndarray of shape (n_rows,), int64
        The rows task after task.
    sizes : ndarray of shape (n_tasks,), int64
    """
    try:
        labels, codes = np.unique(groups, return_inverse=True)
    except TypeError as exc:
        raise TypeError(f"groups must be sortable task ids (e.g. ints or strings): {exc}") from exc
    codes = codes.reshape(-1)
    order = np.argsort(codes, kind="stable").astype(np.int64)
    sizes = np.bincount(codes, minlength=labels.shape[0]).astype(np.int64)
    return labels, codes, order, sizes


def tasks_from_groups(X, y, groups):
    """Split already validated ``X``, ``y`` by ``groups`` (sorted unique labels, rows in order).

    ``groups=None`` makes all rows one task.
    """
    n_rows = X.shape[0]
    if groups is None:
        order = np.arange(n_rows)
        sizes = np.array([n_rows])
        names = ["the single task (groups=None)"]
    else:
        groups = np.asarray(groups)
        if groups.ndim != 1:
            groups = groups.reshape(-1) if groups.ndim == 2 and 1 in groups.shape else groups
        if groups.ndim != 1 or groups.shape[0] != n_rows:
            raise ValueError(
                f"groups must hold one task id per row of X: X has {n_rows} rows but groups "
                f"has shape {np.shape(groups)}."
            )
        labels, _, order, sizes = group_layout(groups)
        if any(isinstance(g, float) and np.isnan(g)
               for g in labels[:1].tolist() + labels[-1:].tolist()):
            raise ValueError("groups contains NaN: every row needs a task id.")
        names = [f"group {label!r}" for label in labels.tolist()]
    return TaskSet(
        X=np.ascontiguousarray(X[order]),
        y=np.ascontiguousarray(y[order]),
        offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        fixed_support=np.full(len(sizes), RANDOM_SPLIT, dtype=np.int64),
        names=names,
        order=order.astype(np.int64),
    )

