"""MAML kernels: inner adaptation and the meta-gradient, per task and over a ragged meta-batch.

Vocabulary (as in the JAX MAML notebook): the loss of a task's rows is :func:`._mlp.loss_grad`
(its value and gradient), ``inner_adapt`` runs the N inner steps
``theta_k = theta_{k-1} - alpha_{k-1} * grad L_support(theta_{k-1})`` of an adaptation rule
(:mod:`._rules`: plain MAML's one step size, Meta-SGD's one per parameter, LSLR's one per layer and
step, on all layers or only the last ones) and ``task_meta_grad`` differentiates
``L_query(inner_adapt(theta))`` with respect to ``theta`` (and to the step sizes, when the rule
learns them).

Second order backpropagates through the inner steps with Hessian-vector products::

    v = grad L_query(theta_N)
    for k = N-1 .. 0:   d/d alpha_k += -grad L_support(theta_k) * v
                        v = v - H_support(theta_k) (alpha_k * v)

(with one plain step size, ``v - alpha (H v)``). The forward and backward passes of every inner
step are kept for the backward sweep, so memory grows linearly in N (``docs/compiled_core.rst``
has the exact count). First order skips the sweep: the meta-gradient is ``grad L_query(theta_N)``
and the step sizes' is ``-grad L_support(theta_k) * grad L_query(theta_N)``.

When the rule adapts only layers ``first_layer .. L`` (ANIL), the body below is the same at every
inner step: its forward pass over a task's support rows is the batched step-0 pass, copied into
each later step's buffers (never recomputed), and the inner steps' backward passes and the sweep's
forward R-passes start at ``first_layer``.

A meta-batch is ragged: task ``t`` owns support rows ``s_offsets[t]:s_offsets[t+1]`` of ``Xs``/``ys``
and query rows ``q_offsets[t]:q_offsets[t+1]`` of ``Xq``/``yq``. Before adaptation every task shares
``theta``, so the step-0 support forward and backward passes run once over all support rows of the
batch (large BLAS products) and each task then reads its own rows; second order likewise runs the
step-0 Hessian-vector products of all tasks together (only products with each task's own direction run
per task), and first order sums all query gradients with one product per layer.
"""

import numpy as np
from numba import njit

from ._blas import rows_independent
from ._borrow import borrowed, keep_alive
from ._config import JIT_OPTIONS, PER_PARAMETER
from ._mlp import (
    Pass,
    _backprop_rows,
    _block_start,
    _forward_rows,
    _hvp_blocks,
    _loss_grad_rows,
    _output_grad,
    _weight_grad_rows,
    borrowed_network,
    buffer_size,
    layer_offsets,
    loss_grad,
    n_params,
    network,
)
from ._numeric import as_dtype_of, mean_loss
from ._rules import (
    adapt_step,
    add_rate_grad,
    borrowed_rule,
    rate_groups,
    scale_direction,
    sum_rate_groups,
    sweep_step,
)


@njit(**JIT_OPTIONS)
def inner_adapt(theta, layer_sizes, activation, Xs, ys, rule, n_inner_steps):
    """Adapt ``theta`` to one task: ``n_inner_steps`` steps of the rule on its support rows.

    Parameters
    ----------
    theta : ndarray of shape (n_params,), float32 or float64
    layer_sizes : ndarray of shape (L + 1,), int64
    activation : int
        Hidden activation code.
    Xs : ndarray of shape (n_support, n_features), dtype of ``theta``, C-contiguous
    ys : ndarray of shape (n_support, n_outputs) floating, or (n_support,) integer
    rule : :class:`._rules.Rule`
        Step sizes (in ``theta``'s dtype) and adapted layers.
    n_inner_steps : int
        Number of steps N (0 returns a copy of ``theta``).

    Returns
    -------
    theta_n : ndarray of shape (n_params,)
    """
    net = network(layer_sizes, activation)
    groups = rate_groups(net, rule)
    adapted = theta.copy()
    grad = np.empty_like(theta)
    for k in range(n_inner_steps):
        loss_grad(adapted, layer_sizes, activation, Xs, ys, grad)
        adapt_step(adapted, grad, rule, groups, k, adapted)
    return adapted


@njit(**JIT_OPTIONS)
def _borrowed_batch(layer_sizes, activation, rule, theta, Xs, ys, Xq, yq, s_offsets, q_offsets):
    """What the batch kernels run on (._borrow): the network and the rule's step-size groups,
    made here and returned as owners for the caller's keep_alive, then borrowed views of them, of
    the rule and of the batch's arrays (the caller's arguments)."""
    net_owner = network(layer_sizes, activation)
    groups_owner = rate_groups(net_owner, rule)
    return (net_owner, groups_owner, borrowed_network(net_owner), borrowed(groups_owner),
            borrowed_rule(rule), borrowed(theta), borrowed(Xs), borrowed(ys), borrowed(Xq),
            borrowed(yq), borrowed(s_offsets), borrowed(q_offsets))


# Support rows per chunk of adaptation_losses' batched step 0: its pass buffers (4 x 81 entries
# a row for hidden (40, 40)) stay within a core's L2 cache.
_STEP0_ROWS = 256


@njit(**JIT_OPTIONS)
def adaptation_losses(theta, layer_sizes, activation, Xs, ys, s_offsets, Xq, yq, q_offsets, rule,
                      n_inner_steps, support_losses, query_losses):
    """Adapt ``theta`` to every task of a ragged batch and record its losses; no meta-gradient.

    Task ``t`` is adapted by :func:`inner_adapt` to its support rows; ``support_losses[t, k]`` is
    its support loss at inner step ``k`` (before the ``k``-th update, ``k < n_inner_steps``, the
    loss each step computes anyway) and ``query_losses[t]`` the loss of its query rows after the
    ``n_inner_steps`` steps (rows as in :func:`meta_batch_grad`). The same operations in the same
    order as :func:`inner_adapt` then :func:`._mlp.loss` per task, so the same bits; one
    call for a batch where those would cost a Python call per task, with no allocation per task
    or step, and (when :func:`._blas.rows_independent` holds, so the bits stay those of each
    task's own pass) the step-0 forward and backward passes over the support rows of many tasks
    at once.

    Parameters
    ----------
    theta, layer_sizes, activation, rule, n_inner_steps
        As in :func:`inner_adapt`.
    Xs, ys, s_offsets, Xq, yq, q_offsets
        The batch, as in :func:`meta_batch_grad`.
    support_losses : ndarray of shape (n_tasks, n_inner_steps), float64
    query_losses : ndarray of shape (n_tasks,), float64
        Receive the losses.
    """
    # Borrowed views (._borrow), as in meta_batch_grad: of the arguments, and of the arrays made
    # here, which keep_alive holds to the end.
    (net_owner, groups_owner, net, groups, rule, theta, Xs, ys, Xq, yq, s_offsets,
     q_offsets) = _borrowed_batch(layer_sizes, activation, rule, theta, Xs, ys, Xq, yq, s_offsets,
                                  q_offsets)
    support_losses, query_losses = borrowed(support_losses), borrowed(query_losses)
    first = rule.first_layer
    n_layers = layer_sizes.shape[0] - 1
    n_out = layer_sizes[n_layers]
    n_tasks = s_offsets.shape[0] - 1
    adapted_owner, grad_owner = np.empty_like(theta), np.empty_like(theta)
    adapted, grad = borrowed(adapted_owner), borrowed(grad_owner)
    # One set of pass buffers for every task and step, laid out for each task's own row count
    # (what ``loss_grad`` and ``loss`` would allocate at every call); only the adapted layers'
    # gradient is computed, the rest of ``grad`` is not read by ``adapt_step``.
    n_s_max, n_q_max = _max_task_rows(s_offsets, q_offsets)
    work_owner = np.empty((4, buffer_size(layer_sizes, max(n_s_max, n_q_max))), dtype=theta.dtype)
    work = borrowed(work_owner)
    # Step 0 starts every task from theta: when the products give each row the same bits
    # whatever the rows beside it, its forward and backward passes run over the support rows of
    # a chunk of tasks at once (chunks of about _STEP0_ROWS rows, cache-sized), as in
    # meta_batch_grad; with BLAS products, task by task.
    batched = n_inner_steps > 0 and rows_independent(layer_sizes)
    chunk_rows = max(_STEP0_ROWS, n_s_max) if batched else 0
    step0_owner = np.empty((4, buffer_size(layer_sizes, chunk_rows)), dtype=theta.dtype)
    step0 = borrowed(step0_owner)
    c0 = 0  # first task of the chunk whose step-0 passes pass0 holds
    c1 = 0  # one past its last task
    pass0 = Pass(step0[0], step0[1], step0[2], step0[3], 0)
    for t in range(n_tasks):
        s0 = s_offsets[t]
        n_s = s_offsets[t + 1] - s0
        q0 = q_offsets[t]
        n_q = q_offsets[t + 1] - q0
        adapted[:] = theta
        step = Pass(work[0], work[1], work[2], work[3], n_s)
        out = _block_start(n_s, net.woffsets, n_layers, 0)
        k0 = 0
        if batched:
            if t == c1:
                c0 = t
                c1 = t + 1
                while c1 < n_tasks and s_offsets[c1 + 1] - s_offsets[c0] <= chunk_rows:
                    c1 += 1
                n_chunk = s_offsets[c1] - s_offsets[c0]
                pass0 = Pass(step0[0], step0[1], step0[2], step0[3], n_chunk)
                _forward_rows(theta, net, Xs, s_offsets[c0], pass0, 0, n_chunk, 1)
                for u in range(c0, c1):  # each task's own mean loss at the output
                    at = _block_start(n_chunk, net.woffsets, n_layers, s_offsets[u] - s_offsets[c0])
                    support_losses[u, 0] = _output_grad(pass0.Z, at, s_offsets[u + 1] - s_offsets[u],
                                                        n_out, ys, s_offsets[u], pass0.DZ, at)
                _backprop_rows(theta, net, pass0, 0, n_chunk, first)
            _weight_grad_rows(net, Xs, s0, pass0, s0 - s_offsets[c0], n_s, grad, False, first)
            adapt_step(theta, grad, rule, groups, 0, adapted)
            k0 = 1
        for k in range(k0, n_inner_steps):
            _forward_rows(adapted, net, Xs, s0, step, 0, n_s, 1)
            support_losses[t, k] = _output_grad(step.Z, out, n_s, n_out, ys, s0, step.DZ, out)
            _backprop_rows(adapted, net, step, 0, n_s, first)
            _weight_grad_rows(net, Xs, s0, step, 0, n_s, grad, False, first)
            adapt_step(adapted, grad, rule, groups, k, adapted)
        query = Pass(work[0], work[1], work[2], work[3], n_q)
        _forward_rows(adapted, net, Xq, q0, query, 0, n_q, 1)
        out = _block_start(n_q, net.woffsets, n_layers, 0)
        # The output gradient goes to DZ, which the loss does not read.
        query_losses[t] = _output_grad(query.Z, out, n_q, n_out, yq, q0, query.DZ, out)
    keep_alive(net_owner, groups_owner, adapted_owner, grad_owner, work_owner, step0_owner)


@njit(**JIT_OPTIONS)
def _max_task_rows(s_offsets, q_offsets):
    n_s_max = 0
    n_q_max = 0
    for t in range(s_offsets.shape[0] - 1):
        n_s_max = max(n_s_max, s_offsets[t + 1] - s_offsets[t])
        n_q_max = max(n_q_max, q_offsets[t + 1] - q_offsets[t])
    return n_s_max, n_q_max


@njit(**JIT_OPTIONS)
def workspace_layout(layer_sizes, s_offsets, q_offsets, n_inner_steps, first_order, rule):
    """The regions :func:`meta_batch_grad` carves from its workspace, in order: the one layout
    that :func:`workspace_size`, the carving and ``docs/compiled_core.rst`` describe.

    With P parameters, ``buffer_size(n)`` entries for one pass over n rows, S the batch's
    support rows, s and q the most support and query rows of a task, Q all query rows:

    0. step-0 passes (Z, A, DZ, DA) over all support rows: ``4 buffer_size(S)`` (0 if N = 0);
    1. passes of inner steps 1..N-1 of the task in flight, kept for the backward sweep (one step
       in first order): ``4 max(N - 1, 1) buffer_size(s)`` (``4 buffer_size(s)`` first order);
    2. θ_0 .. θ_N of the task in flight: ``(N + 1) P``;
    3. query passes: ``4 buffer_size(q)``, or ``4 buffer_size(Q)`` in first order (all tasks'
       query gradients are then summed with one product per layer, unless the rule learns its
       step sizes, which need each task's query gradient);
    4. second order: sweep scratch of one task, ``3 buffer_size(s)``;
    5. second order: sweep scratch of the batched step 0, ``3 buffer_size(S)``;
    6. second order: each task's direction after the sweep down to step 1, ``n_tasks P``;
    7. a gradient and a direction: ``2 P``;
    8. a rule with several step sizes, second order: the scaled direction, ``P``;
    9. a rule that learns its step sizes: the support gradients of the task in flight, ``N P``;
    10. a rule that learns fewer step sizes than adapted parameters: their gradient per adapted
        parameter, summed over tasks, ``n_rate_steps A`` (A adapted parameters).

    Returns
    -------
    regions : ndarray of shape (11,), int64
        Entries of each region.
    step0_size, step_size, query_size : int
        ``buffer_size`` of one step-0, inner-step and query pass buffer.
    n_kept : int
        Inner-step pass sets in region 1.
    """
    n_tasks = s_offsets.shape[0] - 1
    n_par = n_params(layer_sizes)
    n_s_max, n_q_max = _max_task_rows(s_offsets, q_offsets)
    second_order = not first_order and n_inner_steps > 0
    step0_size = buffer_size(layer_sizes, s_offsets[n_tasks] - s_offsets[0]) if n_inner_steps > 0 else 0
    step_size = buffer_size(layer_sizes, n_s_max)
    query_size = buffer_size(layer_sizes,
                             q_offsets[n_tasks] - q_offsets[0] if first_order else n_q_max)
    n_kept = 1 if first_order else max(n_inner_steps - 1, 1)
    regions = np.zeros(11, dtype=np.int64)
    regions[0] = 4 * step0_size
    regions[1] = n_kept * 4 * step_size
    regions[2] = (n_inner_steps + 1) * n_par
    regions[3] = 4 * query_size
    if second_order:
        regions[4] = 3 * step_size
        regions[5] = 3 * step0_size
        regions[6] = n_tasks * n_par
        if rule.sharing != 0:
            regions[8] = n_par
    regions[7] = 2 * n_par
    if rule.learn:
        regions[9] = n_inner_steps * n_par
        if rule.sharing != PER_PARAMETER:
            regions[10] = rule.n_rate_steps * (n_par - layer_offsets(layer_sizes)[rule.first_layer - 1])
    return regions, step0_size, step_size, query_size, n_kept


@njit(**JIT_OPTIONS)
def workspace_size(layer_sizes, s_offsets, q_offsets, n_inner_steps, first_order, rule):
    """Entries of scratch memory :func:`meta_batch_grad` needs for this batch
    (:func:`workspace_layout`)."""
    return workspace_layout(layer_sizes, s_offsets, q_offsets, n_inner_steps, first_order,
                            rule)[0].sum()


@njit(**JIT_OPTIONS)
def _copy_body(src, s_r0, dst, d_r0, n, woffsets, first_layer):
    """Copy the ``Z`` and ``A`` blocks of layers ``1 .. first_layer - 1`` of rows
    ``s_r0 : s_r0 + n`` of pass ``src`` into rows ``d_r0 :`` of pass ``dst``: the body's forward
    pass, the same at every inner step of head-only adaptation."""
    for l in range(1, first_layer):
        size = n * (woffsets[l] - woffsets[l - 1])
        s = _block_start(src.n_rows, woffsets, l, s_r0)
        d = _block_start(dst.n_rows, woffsets, l, d_r0)
        dst.Z[d:d + size] = src.Z[s:s + size]
        dst.A[d:d + size] = src.A[s:s + size]


@njit(**JIT_OPTIONS)
def meta_batch_grad(theta, layer_sizes, activation, Xs, ys, s_offsets, Xq, yq, q_offsets,
                    rule, n_inner_steps, first_order, grad_out, task_losses, workspace=None):
    """Mean query loss and mean meta-gradient over a ragged meta-batch of tasks.

    Parameters
    ----------
    theta : ndarray of shape (n_params,), float32 or float64
        Initial parameters (the meta-learned state).
    layer_sizes : ndarray of shape (L + 1,), int64
    activation : int
        Hidden activation code.
    Xs : ndarray of shape (n_support_rows, n_features), dtype of ``theta``, C-contiguous
        Support rows of all tasks, task after task.
    ys : ndarray of shape (n_support_rows, n_outputs) floating, or (n_support_rows,) integer
    s_offsets : ndarray of shape (n_tasks + 1,), int64
        Task ``t``'s support rows are ``s_offsets[t]:s_offsets[t + 1]`` (each non-empty if
        ``n_inner_steps > 0``).
    Xq, yq, q_offsets
        Query rows, likewise (each task has at least one query row).
    rule : :class:`._rules.Rule`
        The adaptation rule: step sizes (in ``theta``'s dtype) and adapted layers.
    n_inner_steps : int
        Inner steps N >= 0.
    first_order : bool
        Drop the second-order terms (first-order MAML).
    grad_out : ndarray of shape (n_params,), or (n_params + rule.rates.shape[0],) if ``rule.learn``
        Receives the mean meta-gradient over tasks, with respect to ``theta`` and then, if the
        rule learns them, to its step sizes.
    task_losses : ndarray of shape (n_tasks,)
        Receives each task's query loss after adaptation.
    workspace : ndarray of shape (n,), dtype of ``theta``, default=None
        Scratch memory, reused across calls by the caller (see :func:`workspace_size`): fresh
        allocations of large buffers at every meta-iteration cost page faults that, past ~1000 rows
        per batch, took longer than the arithmetic. None, or one too small, allocates here.

    Returns
    -------
    mean_loss : float
        Mean of ``task_losses``.
    """
    n_tasks = s_offsets.shape[0] - 1
    n_layers = layer_sizes.shape[0] - 1
    # From here on every array is a borrowed view (._borrow), counted by no reference: the
    # arguments, which the caller holds, and the network, groups and workspace made here, which
    # keep_alive holds to the end.
    (net_owner, groups_owner, net, groups, rule, theta, Xs, ys, Xq, yq, s_offsets,
     q_offsets) = _borrowed_batch(layer_sizes, activation, rule, theta, Xs, ys, Xq, yq, s_offsets,
                                  q_offsets)
    grad_out, task_losses = borrowed(grad_out), borrowed(task_losses)
    n_par = n_params(layer_sizes)
    dtype = theta.dtype
    first = rule.first_layer
    learn = rule.learn
    n_s_all = Xs.shape[0]
    n_q_all = Xq.shape[0]
    second_order = not first_order and n_inner_steps > 0
    # Query passes of all tasks share one buffer in first order: every task's query gradient is
    # then summed with one product per layer over all query rows.
    n_q_buf = n_q_all if first_order else _max_task_rows(s_offsets, q_offsets)[1]
    regions, step0_size, step_size, query_size, n_kept = workspace_layout(
        layer_sizes, s_offsets, q_offsets, n_inner_steps, first_order, rule)
    size = regions.sum()
    if workspace is None or workspace.shape[0] < size:
        work_owner = np.empty(size, dtype=dtype)
    else:
        work_owner = workspace
    work = borrowed(work_owner)
    # Carve every region of workspace_layout from the workspace, in its order.
    start = np.zeros(12, dtype=np.int64)
    for r in range(11):
        start[r + 1] = start[r] + regions[r]
    step0 = work[start[0]:start[1]].reshape((4, step0_size))
    steps = work[start[1]:start[2]].reshape((n_kept * 4, step_size))
    thetas = work[start[2]:start[3]].reshape((n_inner_steps + 1, n_par))
    query = work[start[3]:start[4]].reshape((4, query_size))
    sweep = work[start[4]:start[5]].reshape((3, regions[4] // 3))
    batch_sweep = work[start[5]:start[6]].reshape((3, regions[5] // 3))
    directions = work[start[6]:start[7]]
    grad = work[start[7]:start[7] + n_par]
    v = work[start[7] + n_par:start[8]]
    scaled = work[start[8]:start[9]]
    support_grads = work[start[9]:start[10]].reshape((n_inner_steps if learn else 0, n_par))
    # The step sizes' gradient, one entry per adapted parameter (and set): that of Meta-SGD's
    # step sizes themselves, or summed over groups at the end.
    per_parameter = rule.sharing == PER_PARAMETER
    rate_acc = grad_out[n_par:] if per_parameter else work[start[10]:start[11]]
    rate_acc[:] = 0.0

    # Step 0 for all tasks at once: every task starts from the shared theta, so the support
    # forward and backward passes are single large products over all support rows.
    pass0 = Pass(step0[0], step0[1], step0[2], step0[3], n_s_all)
    if n_inner_steps > 0:
        _forward_rows(theta, net, Xs, 0, pass0, 0, n_s_all, 1)
        for t in range(n_tasks):  # each task's own mean loss at the output
            s0 = s_offsets[t]
            out = _block_start(n_s_all, net.woffsets, n_layers, s0)
            _output_grad(pass0.Z, out, s_offsets[t + 1] - s0, layer_sizes[n_layers], ys, s0,
                         pass0.DZ, out)
        _backprop_rows(theta, net, pass0, 0, n_s_all, first)
    query_pass = Pass(query[0], query[1], query[2], query[3], n_q_buf)
    task_sweep = (sweep[0], sweep[1], sweep[2])
    block_owner = np.zeros(2, dtype=np.int64)
    single_block = borrowed(block_owner)

    grad_out[:] = 0.0
    for t in range(n_tasks):
        s0 = s_offsets[t]
        n_s = s_offsets[t + 1] - s0
        q0 = q_offsets[t]
        n_q = q_offsets[t + 1] - q0
        for k in range(n_inner_steps):
            g_k = support_grads[k] if learn else grad
            if k == 0:
                _weight_grad_rows(net, Xs, s0, pass0, s0, n_s, g_k, False, first)
            else:
                j = 0 if first_order else 4 * (k - 1)
                step = Pass(steps[j], steps[j + 1], steps[j + 2], steps[j + 3], n_s)
                if first > 1:  # the body's forward pass is the step-0 one
                    _copy_body(pass0, s0, step, 0, n_s, net.woffsets, first)
                _loss_grad_rows(thetas[k], net, Xs, s0, ys, s0, step, 0, n_s, first)
                _weight_grad_rows(net, Xs, s0, step, 0, n_s, g_k, False, first)
            # Step 0 adapts theta itself (thetas[0] is never written: no copy per task).
            adapt_step(theta if k == 0 else thetas[k], g_k, rule, groups, k, thetas[k + 1])
        r0 = q0 if first_order else 0
        adapted = thetas[n_inner_steps] if n_inner_steps > 0 else theta
        task_losses[t] = _loss_grad_rows(adapted, net, Xq, q0, yq, q0, query_pass, r0, n_q, 1)
        if first_order:
            if learn:  # this task's query gradient is needed for its step sizes' gradient
                _weight_grad_rows(net, Xq, q0, query_pass, q0, n_q, v, False, 1)
                for i in range(n_par):
                    grad_out[i] += v[i]
                for k in range(n_inner_steps):
                    add_rate_grad(support_grads[k], v, rule, groups, k, rate_acc)
            continue
        if second_order:
            v = directions[t * n_par:(t + 1) * n_par]
        _weight_grad_rows(net, Xq, q0, query_pass, 0, n_q, v, False, 1)
        # Back through inner steps N-1 .. 1: v <- v - H_support(theta_k) (alpha_k v).
        single_block[1] = n_s
        for k in range(n_inner_steps - 1, 0, -1):
            if learn:
                add_rate_grad(support_grads[k], v, rule, groups, k, rate_acc)
            j = 4 * (k - 1)
            step = Pass(steps[j], steps[j + 1], steps[j + 2], steps[j + 3], n_s)
            is_scaled = scale_direction(v, rule, groups, k, scaled)
            _hvp_blocks(thetas[k], net, Xs, s0, ys, step, 0, single_block,
                        scaled if is_scaled else v, task_sweep, grad, first)
            sweep_step(v, grad, rule, k, is_scaled)
        for i in range(n_par):
            grad_out[i] += v[i]
        if second_order:
            if learn:
                add_rate_grad(support_grads[0], v, rule, groups, 0, rate_acc)
            # The batched step-0 product below takes each task's direction as it needs it.
            scale_direction(v, rule, groups, 0, v)
    if first_order and not learn:
        _weight_grad_rows(net, Xq, 0, query_pass, 0, n_q_all, grad_out, False, 1)
    elif second_order:
        # Step 0 for all tasks at once (shared theta): sum_t (I - H_t diag(alpha_0)) v_t.
        _hvp_blocks(theta, net, Xs, 0, ys, pass0, 0, s_offsets, directions,
                    (batch_sweep[0], batch_sweep[1], batch_sweep[2]), grad, first)
        sweep_step(grad_out[:n_par], grad, rule, 0, rule.sharing != 0)

    if learn and not per_parameter:
        sum_rate_groups(rate_acc, rule, groups, grad_out[n_par:])

    inv_tasks = as_dtype_of(1.0 / n_tasks, theta)
    for i in range(grad_out.shape[0]):
        grad_out[i] *= inv_tasks
    keep_alive(net_owner, groups_owner, work_owner, block_owner)
    return mean_loss(task_losses[:n_tasks])


@njit(**JIT_OPTIONS)
def task_meta_grad(theta, layer_sizes, activation, Xs, ys, Xq, yq, rule, n_inner_steps,
                   first_order, grad_out):
    """Query loss after adaptation and the meta-gradient of one task.

    Test entry point: the estimator calls :func:`meta_batch_grad`, which this wraps for one task
    so that the tests can hold it against finite differences of the adapted query loss.

    Parameters are those of :func:`meta_batch_grad` for a single task (``Xs``/``ys`` its support
    rows, ``Xq``/``yq`` its query rows). Returns the query loss after ``n_inner_steps`` inner steps and
    writes ``d L_query(inner_adapt(theta)) / d theta`` (or its first-order approximation), then
    that with respect to the rule's step sizes if it learns them, into ``grad_out``.
    """
    s_offsets = np.array([0, Xs.shape[0]], dtype=np.int64)
    q_offsets = np.array([0, Xq.shape[0]], dtype=np.int64)
    task_losses = np.empty(1, dtype=theta.dtype)
    return meta_batch_grad(theta, layer_sizes, activation, Xs, ys, s_offsets, Xq, yq, q_offsets,
                           rule, n_inner_steps, first_order, grad_out, task_losses)
