"""Support/query episode sampling for a meta-batch, in compiled code.

Data model
----------
All tasks' rows are concatenated: ``X`` of shape ``(n_rows, n_features)`` (float32 or float64,
C-contiguous) and the targets ``Y`` (regression, float of shape ``(n_rows, n_outputs)``) or ``y``
(classification, int64 of shape ``(n_rows,)`` holding global class codes ``0 .. n_classes-1``).
Task ``t`` owns rows ``task_offsets[t]:task_offsets[t + 1]``.

``fixed_support[t]`` says how task ``t`` is split into support and query rows:

- ``-1``: the task was given as ``(X_i, y_i)``; each visit draws a fresh random split from its own seed.
- ``s >= 1``: the task was given as ``(Xs_i, ys_i, Xq_i, yq_i)``; its first ``s`` rows are the support
  rows and the rest the query rows, copied as they are (no randomness, order kept).

A meta-batch is ``batch_tasks`` (task indices, in order; a task may appear more than once) and ``seeds``
(one seed per entry, drawn up front by the estimator from ``random_state``). Entry ``b`` uses only
``seeds[b]``, through its own generator (:mod:`._random`), so an episode depends on its seed and its
task only: not on the other entries, on chunking or on threads.

Outputs are ragged, in the layout the meta-gradient kernels take: the support rows of all entries
concatenated in batch order with ``s_offsets`` (entry ``b`` owns rows ``s_offsets[b]:s_offsets[b+1]``),
and the same for the query rows with ``q_offsets``.

Classification has two samplers, one per meaning of ``n_support`` (``MAMLClassifier(support_per=...)``):
:func:`sample_classification_episodes` draws support rows per class (stratified), and
:func:`sample_unstratified_classification_episodes` draws them from the task's rows whatever their class,
with exactly the draws of the regression sampler.

Kernels trust their inputs; the estimator validates them (the preconditions are listed per function).
:func:`task_class_summary` lets it check feasibility once, before training, and give a clear
error.
"""

import numpy as np
from numba import njit

from ._config import JIT_OPTIONS
from ._random import partial_shuffle, rng_seed, shuffle_inplace

# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


@njit(**JIT_OPTIONS)
def gather_rows(source, rows):
    """``source[rows]`` for a 2-D array (whole rows), as a new C-contiguous array."""
    # Explicit column loop rather than ``dest[k, :] = source[r, :]``: the slice assignment builds two
    # views per row, which dominated the cost for the narrow rows of few-shot regression.
    n_columns = source.shape[1]
    dest = np.empty((rows.shape[0], n_columns), dtype=source.dtype)
    if n_columns == 1:
        # One feature or one target (the sinusoid's): no inner loop of one trip per row. 250 rows
        # of float32 took 0.15 us against 0.36 (one core of a Zen 5, one run: the fastest of 7
        # blocks of 100,000 calls from compiled code), and a meta-iteration gathers four such arrays.
        for i in range(rows.shape[0]):
            dest[i, 0] = source[rows[i], 0]
        return dest
    for i in range(rows.shape[0]):
        r = rows[i]
        for j in range(n_columns):
            dest[i, j] = source[r, j]
    return dest


@njit(**JIT_OPTIONS)
def _task_classes(y, first_row, n_rows, class_count, classes):
    """Count the classes of one task's rows and list the distinct ones, sorted.

    Parameters
    ----------
    y : ndarray of shape (n_total_rows,), int64
    first_row, n_rows : int
        The task's rows are ``y[first_row:first_row + n_rows]``.
    class_count : ndarray of shape (n_classes,), int64
        All zero on entry; on return ``class_count[c]`` is the number of the task's rows of class ``c``.
        The caller must zero it again with :func:`_clear_class_count` (cost ``O(n_way)``, not
        ``O(n_classes)``: tasks usually hold a few of many classes).
    classes : ndarray of shape (>= n_rows,), int64
        On return ``classes[:n_way]`` holds the task's distinct classes in increasing order.

    Returns
    -------
    n_way : int
        Number of distinct classes in the task.
    """
    n_way = 0
    for i in range(n_rows):
        c = y[first_row + i]
        if class_count[c] == 0:
            classes[n_way] = c
            n_way += 1
        class_count[c] += 1
    # Sorted so that the class -> output assignment and the order of per-class draws depend on the
    # classes only, not on the order in which rows happen to be stored.
    classes[:n_way].sort()
    return n_way


@njit(**JIT_OPTIONS)
def _clear_class_count(class_count, classes, n_way):
    """Zero the entries of ``class_count`` that :func:`_task_classes` set."""
    for k in range(n_way):
        class_count[classes[k]] = 0


@njit(**JIT_OPTIONS)
def _n_distinct_classes(y, first_row, n_rows, class_count, classes):
    """Number of distinct classes in one task; leaves ``class_count`` all zero."""
    n_way = _task_classes(y, first_row, n_rows, class_count, classes)
    _clear_class_count(class_count, classes, n_way)
    return n_way


# --------------------------------------------------------------------------------------------------
# Regression
# --------------------------------------------------------------------------------------------------


@njit(**JIT_OPTIONS)
def sample_regression_episodes(X, Y, task_offsets, fixed_support, batch_tasks, seeds, support_sizes,
                               n_query):
    """Support and query rows of every entry of a meta-batch of regression tasks.

    For a random-split task (``fixed_support[t] == -1``) the support set is a uniformly random subset of
    ``support_sizes[t]`` of the task's rows and the query set a uniformly random subset of ``n_query`` of the
    remaining rows (all of them when ``n_query == -1``); both come in uniformly random row order. All of
    it is one ordered sample (a partial Fisher-Yates shuffle) drawn from ``seeds[b]``. A fixed task
    (``fixed_support[t] = s``) gives its first ``s`` rows as support and the others as query, in order.

    Parameters
    ----------
    X : ndarray of shape (n_rows, n_features), float32 or float64, C-contiguous
    Y : ndarray of shape (n_rows, n_outputs), float32 or float64, C-contiguous
    task_offsets : ndarray of shape (n_tasks + 1,), int64
        Task ``t`` owns rows ``task_offsets[t]:task_offsets[t + 1]``; non-decreasing, starts at 0.
    fixed_support : ndarray of shape (n_tasks,), int64
        ``-1`` for a random split; ``s`` with ``1 <= s <= n_rows_t`` for a given split.
    batch_tasks : ndarray of shape (n_batch,), int64
        Task index of each meta-batch entry, ``0 <= t < n_tasks``.
    seeds : ndarray of shape (n_batch,), int64 or uint64
        Seed of each entry's random split (unused for fixed tasks). Non-negative.
    support_sizes : ndarray of shape (n_tasks,), int64
        Support rows of each random-split task, ``>= 1`` (unused for fixed tasks). The estimator
        gives every task ``n_support``, or fewer to a task too small for it.
    n_query : int
        Query rows per random-split task, ``>= 0``; ``-1`` for all rows not in the support.
        Precondition for every random-split task in the batch:
        ``n_rows_t >= support_sizes[t] + n_query`` (``>= support_sizes[t]`` when ``n_query == -1``).

    Returns
    -------
    Xs : ndarray of shape (n_support_rows, n_features), dtype of X
    Ys : ndarray of shape (n_support_rows, n_outputs), dtype of Y
    s_offsets : ndarray of shape (n_batch + 1,), int64
        Entry ``b``'s support rows are ``Xs[s_offsets[b]:s_offsets[b + 1]]``.
    Xq : ndarray of shape (n_query_rows, n_features), dtype of X
    Yq : ndarray of shape (n_query_rows, n_outputs), dtype of Y
    q_offsets : ndarray of shape (n_batch + 1,), int64
    """
    s_rows, s_offsets, q_rows, q_offsets = regression_episode_rows(
        task_offsets, fixed_support, batch_tasks, seeds, support_sizes, n_query)
    return (gather_rows(X, s_rows), gather_rows(Y, s_rows), s_offsets, gather_rows(X, q_rows),
            gather_rows(Y, q_rows), q_offsets)


@njit(**JIT_OPTIONS)
def regression_episode_rows(task_offsets, fixed_support, batch_tasks, seeds, support_sizes, n_query):
    """The rows :func:`sample_regression_episodes` takes, as indices into the concatenated tasks.

    Parameters are those of :func:`sample_regression_episodes` without ``X`` and ``Y``; the draws
    are the same. Any per-row array (inputs as given, sample weights) can then follow the rows.
    The draws take no account of classes, and are also those of
    :func:`sample_unstratified_classification_episodes`.

    Returns
    -------
    s_rows : ndarray of shape (n_support_rows,), int64
    s_offsets : ndarray of shape (n_batch + 1,), int64
    q_rows : ndarray of shape (n_query_rows,), int64
    q_offsets : ndarray of shape (n_batch + 1,), int64
    """
    n_batch = batch_tasks.shape[0]

    # Pass 1: sizes, so every output is allocated once at its final size.
    s_offsets = np.zeros(n_batch + 1, dtype=np.int64)
    q_offsets = np.zeros(n_batch + 1, dtype=np.int64)
    max_task_rows = 0
    for b in range(n_batch):
        t = batch_tasks[b]
        n_rows = task_offsets[t + 1] - task_offsets[t]
        max_task_rows = max(max_task_rows, n_rows)
        if fixed_support[t] >= 0:
            n_s = fixed_support[t]
            n_q = n_rows - n_s
        else:
            n_s = support_sizes[t]
            n_q = n_query if n_query >= 0 else n_rows - n_s
        s_offsets[b + 1] = s_offsets[b] + n_s
        q_offsets[b + 1] = q_offsets[b] + n_q
    s_rows = np.empty(s_offsets[n_batch], dtype=np.int64)
    q_rows = np.empty(q_offsets[n_batch], dtype=np.int64)

    # Pass 2: choose rows (positions within the task).
    row_order = np.empty(max_task_rows, dtype=np.int64)
    state = np.empty(4, dtype=np.uint64)
    for b in range(n_batch):
        t = batch_tasks[b]
        first_row = task_offsets[t]
        n_rows = task_offsets[t + 1] - first_row
        n_s = s_offsets[b + 1] - s_offsets[b]
        n_q = q_offsets[b + 1] - q_offsets[b]
        order = row_order[:n_rows]
        for i in range(n_rows):
            order[i] = i
        if fixed_support[t] < 0:
            rng_seed(state, seeds[b])
            # One ordered uniform sample of n_s + n_q rows: its first n_s are the support, the next
            # n_q the query. With n_query == -1 this is a full shuffle.
            partial_shuffle(state, order, n_s + n_q)
        for i in range(n_s):
            s_rows[s_offsets[b] + i] = first_row + order[i]
        for i in range(n_q):
            q_rows[q_offsets[b] + i] = first_row + order[n_s + i]
    return s_rows, s_offsets, q_rows, q_offsets


# --------------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------------


@njit(**JIT_OPTIONS)
def sample_classification_episodes(
    X, y, task_offsets, fixed_support, batch_tasks, seeds, support_sizes, n_query, n_classes, relabel
):
    """Stratified support and query rows of every entry of a meta-batch of classification tasks.

    Random-split task (``fixed_support[t] == -1``) with ``n_way`` distinct classes: for each class, in
    increasing class order, a uniformly random ``support_sizes[t]`` of its rows go to the support set and a
    uniformly random ``n_query`` of its remaining rows to the query set (with ``n_query == -1``: all the
    task's rows not in the support). The task's support rows are then put in uniformly random order,
    and so are its query rows. So the support holds exactly ``n_way * support_sizes[t]`` rows
    (``support_sizes[t]`` shots per class, the few-shot convention) and the query
    ``n_way * n_query`` (or the rest).

    Fixed task (``fixed_support[t] = s``): its first ``s`` rows are the support, the others the query,
    copied in order.

    Labels: with ``relabel=False`` (the ``"shared"`` regime) they are returned unchanged. With
    ``relabel=True`` (the ``"per_task"`` regime) each entry draws a uniformly random bijection from the
    task's classes to the outputs ``0 .. n_way-1`` and returns the outputs: the same bijection for the
    support and the query of that entry, a fresh one for every entry (fixed tasks included), so that
    the meta-learned θ cannot tie an output to a class identity and must learn to adapt. The
    bijection is drawn after the split, so for a given seed ``relabel`` changes the labels only, never
    which rows are chosen.

    Parameters
    ----------
    X : ndarray of shape (n_rows, n_features), float32 or float64, C-contiguous
    y : ndarray of shape (n_rows,), int64
        Global class codes, ``0 <= y < n_classes``.
    task_offsets : ndarray of shape (n_tasks + 1,), int64
        Task ``t`` owns rows ``task_offsets[t]:task_offsets[t + 1]``; non-decreasing, starts at 0.
    fixed_support : ndarray of shape (n_tasks,), int64
        ``-1`` for a random split; ``s`` with ``1 <= s <= n_rows_t`` for a given split.
    batch_tasks : ndarray of shape (n_batch,), int64
        Task index of each meta-batch entry.
    seeds : ndarray of shape (n_batch,), int64 or uint64
        Seed of each entry (split and relabelling). Non-negative.
    support_sizes : ndarray of shape (n_tasks,), int64
        Support rows per class (shots) of each random-split task, ``>= 1`` (unused for fixed tasks).
    n_query : int
        Query rows per class of a random-split task, ``>= 0``; ``-1`` for all rows not in the support.
        Precondition: in every random-split task ``t`` of the batch, every class present has at least
        ``support_sizes[t] + n_query`` rows (``support_sizes[t]`` when ``n_query == -1``).
    n_classes : int
        Number of global classes; sizes two scratch arrays (allocated once per call).
    relabel : bool
        Map each entry's classes to ``0 .. n_way-1`` by a random bijection (see above). For a fixed task
        the classes are those of all its rows; the estimator checks that its query classes appear in
        its support (``MAMLClassifier._check_fixed_query_classes``).

    Returns
    -------
    Xs : ndarray of shape (n_support_rows, n_features), dtype of X
    ys : ndarray of shape (n_support_rows,), int64
    s_offsets : ndarray of shape (n_batch + 1,), int64
        Entry ``b``'s support rows are ``Xs[s_offsets[b]:s_offsets[b + 1]]``.
    Xq : ndarray of shape (n_query_rows, n_features), dtype of X
    yq : ndarray of shape (n_query_rows,), int64
    q_offsets : ndarray of shape (n_batch + 1,), int64
    """
    s_rows, ys, s_offsets, q_rows, yq, q_offsets = classification_episode_rows(
        y, task_offsets, fixed_support, batch_tasks, seeds, support_sizes, n_query, n_classes,
        relabel)
    return gather_rows(X, s_rows), ys, s_offsets, gather_rows(X, q_rows), yq, q_offsets


@njit(**JIT_OPTIONS)
def classification_episode_rows(y, task_offsets, fixed_support, batch_tasks, seeds, support_sizes,
                                n_query, n_classes, relabel):
    """The rows :func:`sample_classification_episodes` takes, as indices into the concatenated
    tasks, with their (possibly relabelled) labels.

    Parameters are those of :func:`sample_classification_episodes` without ``X``; the draws are the
    same.

    Returns
    -------
    s_rows : ndarray of shape (n_support_rows,), int64
    ys : ndarray of shape (n_support_rows,), int64
    s_offsets : ndarray of shape (n_batch + 1,), int64
    q_rows : ndarray of shape (n_query_rows,), int64
    yq : ndarray of shape (n_query_rows,), int64
    q_offsets : ndarray of shape (n_batch + 1,), int64
    """
    n_batch = batch_tasks.shape[0]
    # class_count is kept all zero between tasks (see _task_classes), so it is zeroed once per call.
    class_count = np.zeros(n_classes, dtype=np.int64)
    local_class = np.empty(n_classes, dtype=np.int64)  # global class -> 0 .. n_way-1 of the current task

    max_task_rows = 0
    for b in range(n_batch):
        t = batch_tasks[b]
        max_task_rows = max(max_task_rows, task_offsets[t + 1] - task_offsets[t])
    classes = np.empty(max_task_rows, dtype=np.int64)

    # Pass 1: sizes, so every output is allocated once at its final size.
    s_offsets = np.zeros(n_batch + 1, dtype=np.int64)
    q_offsets = np.zeros(n_batch + 1, dtype=np.int64)
    for b in range(n_batch):
        t = batch_tasks[b]
        first_row = task_offsets[t]
        n_rows = task_offsets[t + 1] - first_row
        if fixed_support[t] >= 0:
            n_s = fixed_support[t]
            n_q = n_rows - n_s
        else:
            n_way = _n_distinct_classes(y, first_row, n_rows, class_count, classes)
            n_s = n_way * support_sizes[t]
            n_q = n_way * n_query if n_query >= 0 else n_rows - n_s
        s_offsets[b + 1] = s_offsets[b] + n_s
        q_offsets[b + 1] = q_offsets[b] + n_q

    s_rows = np.empty(s_offsets[n_batch], dtype=np.int64)
    ys = np.empty(s_offsets[n_batch], dtype=np.int64)
    q_rows = np.empty(q_offsets[n_batch], dtype=np.int64)
    yq = np.empty(q_offsets[n_batch], dtype=np.int64)

    # Per-task scratch, sized for the largest task of the batch.
    rows_by_class = np.empty(max_task_rows, dtype=np.int64)  # task rows grouped by class
    class_start = np.empty(max_task_rows + 1, dtype=np.int64)  # group k is [class_start[k], class_start[k+1])
    class_fill = np.empty(max_task_rows, dtype=np.int64)
    support_buf = np.empty(max_task_rows, dtype=np.int64)
    query_buf = np.empty(max_task_rows, dtype=np.int64)
    output_of_class = np.empty(max_task_rows, dtype=np.int64)  # local class k -> output label
    state = np.empty(4, dtype=np.uint64)

    # Pass 2: choose rows (positions within the task), write their indices and labels.
    for b in range(n_batch):
        t = batch_tasks[b]
        first_row = task_offsets[t]
        n_rows = task_offsets[t + 1] - first_row
        n_s = s_offsets[b + 1] - s_offsets[b]
        n_q = q_offsets[b + 1] - q_offsets[b]
        random_split = fixed_support[t] < 0
        rng_seed(state, seeds[b])

        n_way = 0
        if random_split or relabel:
            n_way = _task_classes(y, first_row, n_rows, class_count, classes)
            for k in range(n_way):
                local_class[classes[k]] = k

        support_rows = support_buf[:n_s]
        query_rows = query_buf[:n_q]
        if random_split:
            # Group the task's rows by class (counting sort, stable) ...
            class_start[0] = 0
            for k in range(n_way):
                class_start[k + 1] = class_start[k] + class_count[classes[k]]
                class_fill[k] = class_start[k]
            for i in range(n_rows):
                k = local_class[y[first_row + i]]
                rows_by_class[class_fill[k]] = i
                class_fill[k] += 1
            # ... then draw each class's shots, in class order.
            n_sup = support_sizes[t]
            n_drawn = n_sup + n_query if n_query >= 0 else n_sup
            n_s_done = 0
            n_q_done = 0
            for k in range(n_way):
                group = rows_by_class[class_start[k]:class_start[k + 1]]
                partial_shuffle(state, group, n_drawn)
                support_rows[n_s_done:n_s_done + n_sup] = group[:n_sup]
                n_s_done += n_sup
                rest = group[n_sup:n_drawn] if n_query >= 0 else group[n_sup:]
                query_rows[n_q_done:n_q_done + rest.shape[0]] = rest
                n_q_done += rest.shape[0]
            # Without these shuffles the rows would come grouped by class, in class order.
            shuffle_inplace(state, support_rows)
            shuffle_inplace(state, query_rows)
        else:
            for i in range(n_s):
                support_rows[i] = i
            for i in range(n_q):
                query_rows[i] = n_s + i

        if relabel:
            # Drawn after the split: see the docstring.
            output = output_of_class[:n_way]
            for k in range(n_way):
                output[k] = k
            shuffle_inplace(state, output)

        s0 = s_offsets[b]
        for i in range(n_s):
            s_rows[s0 + i] = first_row + support_rows[i]
            c = y[s_rows[s0 + i]]
            ys[s0 + i] = output_of_class[local_class[c]] if relabel else c
        q0 = q_offsets[b]
        for i in range(n_q):
            q_rows[q0 + i] = first_row + query_rows[i]
            c = y[q_rows[q0 + i]]
            yq[q0 + i] = output_of_class[local_class[c]] if relabel else c

        if n_way > 0:
            _clear_class_count(class_count, classes, n_way)
    return s_rows, ys, s_offsets, q_rows, yq, q_offsets


@njit(**JIT_OPTIONS)
def sample_unstratified_classification_episodes(X, y, task_offsets, fixed_support, batch_tasks, seeds,
                                                support_sizes, n_query):
    """Support and query rows of every entry of a meta-batch of classification tasks, drawn from each
    task's rows whatever their class (``MAMLClassifier(support_per="task")``).

    The rows are exactly those of :func:`regression_episode_rows` for the same arguments: a
    random-split task gives a uniformly random ``support_sizes[t]`` of its rows as support and a
    uniformly random ``n_query`` of the others (all of them with ``n_query == -1``) as query, so a
    support set may miss a class of its task; a fixed task gives its first ``fixed_support[t]`` rows
    as support and the others as query, in order (as :func:`sample_classification_episodes` does).
    Labels are returned unchanged (no relabelling: the ``"per_task"`` regime needs every class in
    every support set, which only the stratified sampler guarantees).

    Parameters
    ----------
    X : ndarray of shape (n_rows, n_features), float32 or float64, C-contiguous
    y : ndarray of shape (n_rows,), int64
        Class codes.
    task_offsets, fixed_support, batch_tasks, seeds : ndarray
        As in :func:`sample_regression_episodes`.
    support_sizes : ndarray of shape (n_tasks,), int64
        Support rows (in all, not per class) of each random-split task, ``>= 1``.
    n_query : int
        Query rows per random-split task, ``>= 0``; ``-1`` for all rows not in the support.
        Precondition for every random-split task in the batch:
        ``n_rows_t >= support_sizes[t] + n_query`` (``>= support_sizes[t]`` when ``n_query == -1``).

    Returns
    -------
    Xs : ndarray of shape (n_support_rows, n_features), dtype of X
    ys : ndarray of shape (n_support_rows,), int64
    s_offsets : ndarray of shape (n_batch + 1,), int64
        Entry ``b``'s support rows are ``Xs[s_offsets[b]:s_offsets[b + 1]]``.
    Xq : ndarray of shape (n_query_rows, n_features), dtype of X
    yq : ndarray of shape (n_query_rows,), int64
    q_offsets : ndarray of shape (n_batch + 1,), int64
    """
    s_rows, s_offsets, q_rows, q_offsets = regression_episode_rows(
        task_offsets, fixed_support, batch_tasks, seeds, support_sizes, n_query)
    return (gather_rows(X, s_rows), y[s_rows], s_offsets, gather_rows(X, q_rows), y[q_rows],
            q_offsets)


# --------------------------------------------------------------------------------------------------
# Feasibility checks for the estimator
# --------------------------------------------------------------------------------------------------


@njit(**JIT_OPTIONS)
def task_class_summary(y, task_offsets, n_classes):
    """Number of distinct classes and size of the smallest class of each task, in ``O(n_rows)``.

    What the estimator needs to validate stratified sampling: a random-split task is feasible when
    ``min_class_rows[t] >= n_support + n_query`` (``>= n_support`` with ``n_query == -1``), and in the
    ``"per_task"`` regime ``n_way[t]`` must not exceed the number of outputs.

    Parameters
    ----------
    y : ndarray of shape (n_rows,), int64
        Class codes, ``0 <= y < n_classes``.
    task_offsets : ndarray of shape (n_tasks + 1,), int64
    n_classes : int

    Returns
    -------
    n_way : ndarray of shape (n_tasks,), int64
        Number of distinct classes of each task (0 for an empty task).
    min_class_rows : ndarray of shape (n_tasks,), int64
        Rows of the task's least frequent class present (0 for an empty task).
    """
    n_tasks = task_offsets.shape[0] - 1
    n_way = np.zeros(n_tasks, dtype=np.int64)
    min_class_rows = np.zeros(n_tasks, dtype=np.int64)
    class_count = np.zeros(n_classes, dtype=np.int64)
    max_task_rows = 0
    for t in range(n_tasks):
        max_task_rows = max(max_task_rows, task_offsets[t + 1] - task_offsets[t])
    classes = np.empty(max_task_rows, dtype=np.int64)
    for t in range(n_tasks):
        first_row = task_offsets[t]
        n = _task_classes(y, first_row, task_offsets[t + 1] - first_row, class_count, classes)
        n_way[t] = n
        if n > 0:
            smallest = class_count[classes[0]]
            for k in range(1, n):
                smallest = min(smallest, class_count[classes[k]])
            min_class_rows[t] = smallest
        _clear_class_count(class_count, classes, n)
    return n_way, min_class_rows
