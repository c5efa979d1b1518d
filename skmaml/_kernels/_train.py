"""The meta-training loop in compiled code: a run of meta-batches with no Python in between.

One meta-iteration is: draw the batch's episodes (:mod:`._sampling`), the mean meta-gradient
(:func:`._maml.meta_batch_grad`), the divergence checks, the optimiser step (:mod:`._update`). A
small network's iteration takes a fraction of a millisecond, so doing those four steps from
Python (a dispatch of each compiled call, the loop, the bookkeeping) costs a measurable share
of it; :func:`meta_train_run` does a run of them in one call and the estimator's loop runs only
between runs (progress, convergence checks, validation). It calls the very functions the Python
loop calls, in the same order on the same arrays, so a run gives the bits of as many Python
iterations.

It runs a whole batch as one kernel call, so the estimator uses it only when every batch is a
single chunk of work (:mod:`skmaml._parallel`): batches big enough to be cut into chunks for
threads run through the Python loop, whose cost is then small beside theirs.
"""

import numpy as np
from numba import njit
from numba.extending import overload

from ._config import ADAM, JIT_OPTIONS, STRATIFIED_EPISODES
from ._maml import meta_batch_grad, workspace_size
from ._mlp import _is_class_labels, _is_real_targets
from ._numeric import all_finite
from ._rules import Rule
from ._sampling import (
    sample_classification_episodes,
    sample_regression_episodes,
    sample_unstratified_classification_episodes,
)
from ._update import adam_update, sgd_update

# Statuses of a run: every batch done; stopped at a batch whose loss or meta-gradient is not
# finite or above the limit (before its update); stopped after a batch whose update made the
# parameters non-finite; stopped before a batch too big for one kernel call (left undone).
RUN_DONE = 0
RUN_BAD_LOSS = 1
RUN_BAD_UPDATE = 2
RUN_CHUNKED = 3


@njit(**JIT_OPTIONS)
def is_one_chunk(n_tasks, n_support_rows, n_query_rows, support_flops, query_flops,
                 max_flops):
    """Whether a batch runs as one kernel call, without planning chunks: fewer than two tasks,
    or less estimated work than ``max_flops`` (``skmaml._parallel``'s rule, kept here so that
    it and this loop apply the same one)."""
    return n_tasks < 2 or (support_flops * n_support_rows
                           + query_flops * n_query_rows) < max_flops


def sample_episodes(sampler, X, Y, offsets, fixed_support, batch, seeds, support_sizes, n_query,
                    n_classes, relabel):
    """The episodes of a batch by the sampler ``sampler`` (a code of :mod:`._config`); regression
    targets always take the regression sampler. Pure-Python version (without the JIT)."""
    if Y.ndim == 2:
        return sample_regression_episodes(X, Y, offsets, fixed_support, batch, seeds,
                                          support_sizes, n_query)
    if sampler == STRATIFIED_EPISODES:
        return sample_classification_episodes(X, Y, offsets, fixed_support, batch, seeds,
                                              support_sizes, n_query, n_classes, relabel)
    return sample_unstratified_classification_episodes(X, Y, offsets, fixed_support, batch,
                                                       seeds, support_sizes, n_query)


@overload(sample_episodes, jit_options=JIT_OPTIONS)
def _sample_impl(sampler, X, Y, offsets, fixed_support, batch, seeds, support_sizes, n_query,
                 n_classes, relabel):
    # Chosen by the type of the targets, as the losses are: float targets cannot reach a
    # classification sampler (which would not type).
    if _is_real_targets(Y):
        def regression(sampler, X, Y, offsets, fixed_support, batch, seeds, support_sizes,
                       n_query, n_classes, relabel):
            return sample_regression_episodes(X, Y, offsets, fixed_support, batch, seeds,
                                              support_sizes, n_query)
        return regression
    if _is_class_labels(Y):
        def classification(sampler, X, Y, offsets, fixed_support, batch, seeds, support_sizes,
                           n_query, n_classes, relabel):
            if sampler == STRATIFIED_EPISODES:
                return sample_classification_episodes(X, Y, offsets, fixed_support, batch,
                                                      seeds, support_sizes, n_query, n_classes,
                                                      relabel)
            return sample_unstratified_classification_episodes(
                X, Y, offsets, fixed_support, batch, seeds, support_sizes, n_query)
        return classification
    return None


@njit(**JIT_OPTIONS)
def _outcome(outcome, n_done, status):
    outcome[0] = n_done
    outcome[1] = status
    return n_done, status


@njit(**JIT_OPTIONS)
def meta_train_run(params, params_prev, grad, task_losses, n_theta, layer_sizes, activation,
                   rule, n_inner_steps, first_order, X, Y, task_offsets, fixed_support,
                   support_sizes, n_query, sampler, n_classes, relabel, order, seeds, first,
                   batch_size, n_batches, optimizer, m, v, t, learning_rate, beta_1, beta_2,
                   epsilon, loss_limit, support_flops, query_flops, max_flops, losses, outcome):
    """Meta-iterations ``first .. first + n_batches - 1`` of an epoch, in place.

    Batch ``j`` holds tasks ``order[j * batch_size : (j + 1) * batch_size]`` (fewer for the last
    of the epoch) with their episode seeds ``seeds[...]``, as the estimator's loop cuts them.

    Parameters
    ----------
    params : ndarray of shape (n_params,)
        θ, then the rule's step sizes when it learns them; moved in place.
    params_prev : ndarray of shape (n_params,)
        Receives the parameters each update started from (the last ones whose loss passed the
        checks).
    grad, task_losses
        Scratch for the mean meta-gradient (``n_params``) and the task losses (``batch_size``).
    n_theta : int
        Entries of θ in ``params``.
    layer_sizes, activation, rule, n_inner_steps, first_order
        As in :func:`._maml.meta_batch_grad` (``rule.rates`` are replaced by the tail of
        ``params`` when ``rule.learn``).
    X, Y, task_offsets, fixed_support, support_sizes, n_query
        The training tasks, as the samplers take them.
    sampler, n_classes, relabel : int, int, bool
        The classification sampler (a code of :mod:`._config`) and its arguments; unused for
        regression targets.
    order, seeds : ndarray of shape (n_tasks,), int64
        The epoch's task order and episode seeds.
    first, batch_size, n_batches : int
    optimizer : int
        :data:`._config.SGD` or :data:`._config.ADAM`.
    m, v : ndarray
        Adam's moments (unused by SGD), updated in place.
    t : int
        Adam steps taken before this run.
    learning_rate, beta_1, beta_2, epsilon : float
    loss_limit : float
        A batch loss above it (or not finite) stops the run.
    support_flops, query_flops, max_flops : float
        A batch that :func:`is_one_chunk` says is not one chunk stops the run, undone.
    losses : ndarray of shape (>= n_batches,), float64
        Receives each batch's mean query loss.
    outcome : ndarray of shape (2,), int64
        Receives ``(n_done, status)`` too, the return value: a KeyboardInterrupt that arrives
        during the run is raised by Python as the call returns, and the caller's ``except``
        still finds what the run did here.

    Returns
    -------
    n_done : int
        Batches whose loss passed the checks and whose update was applied (the failing batch's
        loss is in ``losses[n_done]`` for :data:`RUN_BAD_LOSS`).
    status : int
        :data:`RUN_DONE`, :data:`RUN_BAD_LOSS`, :data:`RUN_BAD_UPDATE` (then ``n_done``
        counts the batch whose update failed) or :data:`RUN_CHUNKED`.
    """
    n_tasks = order.shape[0]
    workspace = np.empty(0, dtype=params.dtype)
    theta = params[:n_theta]
    if rule.learn:
        rule = Rule(params[n_theta:], rule.n_rate_steps, rule.sharing, rule.first_layer,
                    rule.learn)
    for j in range(n_batches):
        lo = (first + j) * batch_size
        hi = min(lo + batch_size, n_tasks)
        Xs, ys, s_off, Xq, yq, q_off = sample_episodes(
            sampler, X, Y, task_offsets, fixed_support, order[lo:hi], seeds[lo:hi],
            support_sizes, n_query, n_classes, relabel)
        if not is_one_chunk(hi - lo, s_off[-1], q_off[-1], support_flops, query_flops,
                            max_flops):
            return _outcome(outcome, j, RUN_CHUNKED)
        needed = workspace_size(layer_sizes, s_off, q_off, n_inner_steps, first_order, rule)
        if workspace.shape[0] < needed:
            workspace = np.empty(needed + needed // 4, dtype=params.dtype)
        loss = meta_batch_grad(theta, layer_sizes, activation, Xs, ys, s_off, Xq, yq, q_off,
                               rule, n_inner_steps, first_order, grad, task_losses[:hi - lo],
                               workspace)
        losses[j] = loss
        # ``loss <= limit`` is False for NaN too.
        if not (loss <= loss_limit and all_finite(grad)):
            return _outcome(outcome, j, RUN_BAD_LOSS)
        params_prev[:] = params
        if optimizer == ADAM:
            adam_update(params, grad, m, v, t + j + 1, learning_rate, beta_1, beta_2, epsilon)
        else:
            sgd_update(params, grad, learning_rate)
        if not all_finite(params):
            return _outcome(outcome, j + 1, RUN_BAD_UPDATE)
    return _outcome(outcome, n_batches, RUN_DONE)
