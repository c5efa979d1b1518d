"""MAML kernels: inner adaptation and the meta-gradient, per task and over a ragged meta-batch.

Vocabulary (as in the JAX MAML notebook): ``task_loss`` is the loss of a task's rows, ``inner_adapt``
runs the N inner SGD steps ``theta_k = theta_{k-1} - alpha * grad L_support(theta_{k-1})`` and
``task_meta_grad`` differentiates ``L_query(inner_adapt(theta))`` with respect to ``theta``.

Second order backpropagates through the inner steps with Hessian-vector products::

    g = grad L_query(theta_N)
    for k = N-1 .. 0:   g = g - alpha * H_support(theta_k) @ g

The forward and backward passes of every inner step are kept for the backward sweep, so memory grows
linearly in N: ``N * (n_params + 4 * n_support * sum(hidden widths + n_outputs))`` numbers per task
in flight. First order skips the sweep and returns ``grad L_query(theta_N)``.

A meta-batch is ragged: task ``t`` owns support rows ``s_offsets[t]:s_offsets[t+1]`` of ``Xs``/``ys``
and query rows ``q_offsets[t]:q_offsets[t+1]`` of ``Xq``/``yq``. Before adaptation every task shares
``theta``, so the step-0 support forward and backward passes run once over all support rows of the
batch (large BLAS products) and each task then reads its own rows.
"""

import numpy as np
from numba import njit

from ._config import JIT_OPTIONS
from ._mlp import (_backprop_rows, _block, _forward_rows, _hvp_rows, _output_grad,
                   _weight_grad_rows, buffer_size, layer_offsets, loss_grad, n_params,
                   scratch_size, width_offsets)


@njit(**JIT_OPTIONS)
def _sgd_step(theta, grad, inner_lr, out):
    """``out = theta - inner_lr * grad``."""
    for i in range(theta.shape[0]):
        out[i] = theta[i] - inner_lr * grad[i]


@njit(**JIT_OPTIONS)
def inner_adapt(theta, layer_sizes, activation, Xs, ys, inner_lr, n_steps):
    """Adapt ``theta`` to one task: ``n_steps`` plain gradient steps on its support rows.

    Parameters
    ----------
    theta : ndarray of shape (n_params,), float32 or float64
    layer_sizes : ndarray of shape (L + 1,), int64
    activation : int
        Hidden activation code.
    Xs : ndarray of shape (n_support, n_features), dtype of ``theta``
    ys : ndarray of shape (n_support, n_outputs) floating, or (n_support,) integer
    inner_lr : float
        Step size alpha.
    n_steps : int
        Number of steps N (0 returns a copy of ``theta``).

    Returns
    -------
    theta_n : ndarray of shape (n_params,)
    """
    adapted = theta.copy()
    grad = np.empty_like(theta)
    for _ in range(n_steps):
        loss_grad(adapted, layer_sizes, activation, Xs, ys, grad)
        _sgd_step(adapted, grad, inner_lr, adapted)
    return adapted


@njit(**JIT_OPTIONS)
def meta_batch_grad(theta, layer_sizes, activation, Xs, ys, s_offsets, Xq, yq, q_offsets,
                    inner_lr, n_steps, first_order, grad_out, task_losses):
    """Mean query loss and mean meta-gradient over a ragged meta-batch of tasks.

    Parameters
    ----------
    theta : ndarray of shape (n_params,), float32 or float64
        Initial parameters (the meta-learned state).
    layer_sizes : ndarray of shape (L + 1,), int64
    activation : int
        Hidden activation code.
    Xs : ndarray of shape (n_support_rows, n_features), dtype of ``theta``
        Support rows of all tasks, task after task.
    ys : ndarray of shape (n_support_rows, n_outputs) floating, or (n_support_rows,) integer
    s_offsets : ndarray of shape (n_tasks + 1,), int64
        Task ``t``'s support rows are ``s_offsets[t]:s_offsets[t + 1]`` (each non-empty if
        ``n_steps > 0``).
    Xq, yq, q_offsets
        Query rows, likewise (each task has at least one query row).
    inner_lr : float
        Inner step size alpha.
    n_steps : int
        Inner steps N >= 0.
    first_order : bool
        Drop the second-order terms (first-order MAML).
    grad_out : ndarray of shape (n_params,)
        Receives the mean meta-gradient over tasks.
    task_losses : ndarray of shape (n_tasks,), float64
        Receives each task's query loss after adaptation.

    Returns
    -------
    mean_loss : float
        Mean of ``task_losses``.
    """
    n_tasks = s_offsets.shape[0] - 1
    n_layers = layer_sizes.shape[0] - 1
    offsets = layer_offsets(layer_sizes)
    woffsets = width_offsets(layer_sizes)
    n_par = n_params(layer_sizes)
    dtype = theta.dtype
    n_s_all = Xs.shape[0]
    n_s_max = 0
    n_q_max = 0
    for t in range(n_tasks):
        n_s_max = max(n_s_max, s_offsets[t + 1] - s_offsets[t])
        n_q_max = max(n_q_max, q_offsets[t + 1] - q_offsets[t])

    # thetas[k] = theta_k of the current task; per-step buffers of steps 1..N-1 of the current task
    # (step 0 lives in the batch buffers). Kept whole only for the second-order sweep.
    thetas = np.empty((n_steps + 1, n_par), dtype=dtype)
    n_kept = 1 if first_order else max(n_steps - 1, 1)
    step_size = buffer_size(layer_sizes, n_s_max)
    Zk = np.empty((n_kept, step_size), dtype=dtype)
    Ak = np.empty_like(Zk)
    DZk = np.empty_like(Zk)
    DAk = np.empty_like(Zk)
    grad = np.empty(n_par, dtype=dtype)
    v = np.empty(n_par, dtype=dtype)
    hv = np.empty(n_par, dtype=dtype)
    q_size = buffer_size(layer_sizes, n_q_max)
    Zq = np.empty(q_size, dtype=dtype)
    Aq = np.empty(q_size, dtype=dtype)
    DZq = np.empty(q_size, dtype=dtype)
    DAq = np.empty(q_size, dtype=dtype)
    if not first_order and n_steps > 0:
        RZ = np.empty(step_size, dtype=dtype)
        RA = np.empty(step_size, dtype=dtype)
        RD = np.empty(step_size, dtype=dtype)
        tmp_w = np.empty(scratch_size(layer_sizes, n_s_max), dtype=dtype)
    else:
        RZ = np.empty(0, dtype=dtype)
        RA = RZ
        RD = RZ
        tmp_w = RZ

    # Step 0, all tasks at once: forward and backward of every support row at the shared theta.
    batch_size = buffer_size(layer_sizes, n_s_all) if n_steps > 0 else 0
    Z0 = np.empty(batch_size, dtype=dtype)
    A0 = np.empty(batch_size, dtype=dtype)
    DZ0 = np.empty(batch_size, dtype=dtype)
    DA0 = np.empty(batch_size, dtype=dtype)
    if n_steps > 0:
        _forward_rows(theta, layer_sizes, offsets, woffsets, activation, Xs, Z0, A0,
                      n_s_all, 0, n_s_all)
        for t in range(n_tasks):
            r0 = s_offsets[t]
            r1 = s_offsets[t + 1]
            _output_grad(_block(Z0, n_s_all, woffsets, n_layers, r0, r1), ys[r0:r1],
                         _block(DZ0, n_s_all, woffsets, n_layers, r0, r1))
        _backprop_rows(theta, layer_sizes, offsets, woffsets, activation, Z0, A0, DZ0, DA0,
                       n_s_all, 0, n_s_all)

    grad_out[:] = 0.0
    for t in range(n_tasks):
        s0 = s_offsets[t]
        s1 = s_offsets[t + 1]
        n_s = s1 - s0
        q0 = q_offsets[t]
        q1 = q_offsets[t + 1]
        n_q = q1 - q0
        X_sup = Xs[s0:s1]
        y_sup = ys[s0:s1]
        thetas[0, :] = theta
        # Inner loop.
        for k in range(n_steps):
            if k == 0:
                _weight_grad_rows(layer_sizes, offsets, woffsets, X_sup, A0, DZ0, n_s_all,
                                  s0, s1, grad)
            else:
                j = k - 1 if not first_order else 0
                Z = Zk[j]
                A = Ak[j]
                DZ = DZk[j]
                DA = DAk[j]
                _forward_rows(thetas[k], layer_sizes, offsets, woffsets, activation, X_sup,
                              Z, A, n_s, 0, n_s)
                _output_grad(_block(Z, n_s, woffsets, n_layers, 0, n_s), y_sup,
                             _block(DZ, n_s, woffsets, n_layers, 0, n_s))
                _backprop_rows(thetas[k], layer_sizes, offsets, woffsets, activation, Z, A, DZ,
                               DA, n_s, 0, n_s)
                _weight_grad_rows(layer_sizes, offsets, woffsets, X_sup, A, DZ, n_s, 0, n_s,
                                  grad)
            _sgd_step(thetas[k], grad, inner_lr, thetas[k + 1])
        # Query loss and its gradient at the adapted parameters.
        X_q = Xq[q0:q1]
        theta_n = thetas[n_steps]
        _forward_rows(theta_n, layer_sizes, offsets, woffsets, activation, X_q, Zq, Aq,
                      n_q, 0, n_q)
        task_losses[t] = _output_grad(_block(Zq, n_q, woffsets, n_layers, 0, n_q), yq[q0:q1],
                                      _block(DZq, n_q, woffsets, n_layers, 0, n_q))
        _backprop_rows(theta_n, layer_sizes, offsets, woffsets, activation, Zq, Aq, DZq, DAq,
                       n_q, 0, n_q)
        _weight_grad_rows(layer_sizes, offsets, woffsets, X_q, Aq, DZq, n_q, 0, n_q, v)
        # Second order: back through the inner steps, v <- (I - alpha H_k) v.
        if not first_order:
            for k in range(n_steps - 1, -1, -1):
                if k == 0:
                    _hvp_rows(theta, layer_sizes, offsets, woffsets, activation, X_sup, y_sup,
                              Z0, A0, DZ0, DA0, n_s_all, s0, s1, v, RZ, RA, RD, tmp_w, hv)
                else:
                    _hvp_rows(thetas[k], layer_sizes, offsets, woffsets, activation, X_sup,
                              y_sup, Zk[k - 1], Ak[k - 1], DZk[k - 1], DAk[k - 1], n_s, 0, n_s,
                              v, RZ, RA, RD, tmp_w, hv)
                _sgd_step(v, hv, inner_lr, v)
        for i in range(n_par):
            grad_out[i] += v[i]

    mean_loss = 0.0
    for t in range(n_tasks):
        mean_loss += task_losses[t]
    for i in range(n_par):
        grad_out[i] /= n_tasks
    return mean_loss / n_tasks


@njit(**JIT_OPTIONS)
def task_meta_grad(theta, layer_sizes, activation, Xs, ys, Xq, yq, inner_lr, n_steps, first_order,
                   grad_out):
    """Query loss after adaptation and the meta-gradient of one task.

    Parameters are those of :func:`meta_batch_grad` for a single task (``Xs``/``ys`` its support
    rows, ``Xq``/``yq`` its query rows). Returns the query loss after ``n_steps`` inner steps and
    writes ``d L_query(inner_adapt(theta)) / d theta`` (or its first-order approximation) into
    ``grad_out``.
    """
    s_offsets = np.array([0, Xs.shape[0]], dtype=np.int64)
    q_offsets = np.array([0, Xq.shape[0]], dtype=np.int64)
    task_losses = np.empty(1, dtype=np.float64)
    return meta_batch_grad(theta, layer_sizes, activation, Xs, ys, s_offsets, Xq, yq, q_offsets,
                           inner_lr, n_steps, first_order, grad_out, task_losses)
