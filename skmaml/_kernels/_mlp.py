"""Multilayer perceptron on one flat parameter vector: forward, loss gradient, Hessian-vector product.

Parameter layout
----------------
``layer_sizes`` is an int64 array ``[n_features, h_1, ..., h_k, n_outputs]`` (``k >= 0`` hidden layers,
so ``L = len(layer_sizes) - 1`` weight layers). The flat vector ``theta`` holds, for ``l = 0 .. L-1``,
the weight matrix ``W_l`` of shape ``(layer_sizes[l], layer_sizes[l+1])`` in C order immediately followed
by its bias ``b_l`` of shape ``(layer_sizes[l+1],)``.

Network: ``a_0 = X``, ``z_l = a_{l-1} W_l + b_l``, ``a_l = f(z_l)`` on hidden layers, output ``z_L``.

Losses (chosen by the type of ``y``)
------------------------------------
- floating 2-D ``y`` of shape ``(n, n_outputs)``: squared error, the mean over all ``n * n_outputs``
  entries of ``(z_L - y) ** 2`` (the MAML paper's MSE; no factor 1/2).
- integer 1-D ``y`` of shape ``(n,)`` with values in ``0 .. n_outputs-1``: softmax cross-entropy,
  the mean over rows of ``-log softmax(z_L)[y]``.

Kernels trust their inputs (shapes, label range, finiteness): the estimator validates them.

Work buffers
------------
Per-row intermediate values live in flat buffers with one block per layer ``l = 1 .. L``: the block of
layer ``l`` is a C-ordered ``(n_buf, layer_sizes[l])`` matrix. ``Z`` holds ``z_l``, ``A`` holds
``a_l`` (``A``'s output block is unused), ``DZ`` holds ``dLoss/dz_l`` and ``DA`` holds ``dLoss/da_l``
(hidden layers only). A computation on rows ``r0:r1`` of such buffers lets one buffer serve a whole
batch of tasks at once (all tasks share ``theta`` before adaptation) and each task read its own rows.
All matrix products go through BLAS (``np.dot`` with ``out``), which is faster than loops here even at
10 x 40 x 40 (measured).
"""

import numpy as np
from numba import njit
from numba.core import types
from numba.extending import overload

from ._config import IDENTITY, JIT_OPTIONS, LOGISTIC, RELU, TANH

# --------------------------------------------------------------------------------------------------
# Layout helpers
# --------------------------------------------------------------------------------------------------


@njit(**JIT_OPTIONS)
def layer_offsets(layer_sizes):
    """Start of each layer's weights in the flat vector.

    Parameters
    ----------
    layer_sizes : ndarray of shape (L + 1,), int64

    Returns
    -------
    offsets : ndarray of shape (L + 1,), int64
        ``W_l`` starts at ``offsets[l]``, ``b_l`` at ``offsets[l] + n_in * n_out``;
        ``offsets[L]`` is the number of parameters.
    """
    n_layers = layer_sizes.shape[0] - 1
    offsets = np.zeros(n_layers + 1, dtype=np.int64)
    for l in range(n_layers):
        offsets[l + 1] = offsets[l] + (layer_sizes[l] + 1) * layer_sizes[l + 1]
    return offsets


@njit(**JIT_OPTIONS)
def n_params(layer_sizes):
    """Number of parameters of the MLP with these layer sizes."""
    return layer_offsets(layer_sizes)[-1]


@njit(**JIT_OPTIONS)
def width_offsets(layer_sizes):
    """Column offsets of the per-layer blocks of a work buffer (per row), shape (L + 1,)."""
    n_layers = layer_sizes.shape[0] - 1
    offsets = np.zeros(n_layers + 1, dtype=np.int64)
    for l in range(n_layers):
        offsets[l + 1] = offsets[l] + layer_sizes[l + 1]
    return offsets


@njit(**JIT_OPTIONS)
def _weights(theta, layer_sizes, offsets, l):
    """``W_l`` (0-based weight layer ``l``) as a ``(n_in, n_out)`` view of ``theta``."""
    n_in = layer_sizes[l]
    n_out = layer_sizes[l + 1]
    start = offsets[l]
    return theta[start:start + n_in * n_out].reshape((n_in, n_out))


@njit(**JIT_OPTIONS)
def _bias(theta, layer_sizes, offsets, l):
    """``b_l`` (0-based weight layer ``l``) as a view of ``theta``."""
    n_in = layer_sizes[l]
    n_out = layer_sizes[l + 1]
    start = offsets[l] + n_in * n_out
    return theta[start:start + n_out]


@njit(**JIT_OPTIONS)
def _block(buf, n_buf, woffsets, l, r0, r1):
    """Rows ``r0:r1`` of layer ``l``'s block (1-based, ``1 <= l <= L``) of a work buffer."""
    start = n_buf * woffsets[l - 1]
    width = woffsets[l] - woffsets[l - 1]
    return buf[start:start + n_buf * width].reshape((n_buf, width))[r0:r1]


# --------------------------------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------------------------------


@njit(**JIT_OPTIONS)
def _activate(activation, Z, A):
    """``A = f(Z)`` elementwise."""
    n, m = Z.shape
    if activation == RELU:
        for i in range(n):
            for j in range(m):
                A[i, j] = Z[i, j] if Z[i, j] > 0 else 0.0
    elif activation == TANH:
        for i in range(n):
            for j in range(m):
                A[i, j] = np.tanh(Z[i, j])
    elif activation == LOGISTIC:
        for i in range(n):
            for j in range(m):
                # Written to stay finite for large |z| in either direction.
                z = Z[i, j]
                if z >= 0:
                    A[i, j] = 1.0 / (1.0 + np.exp(-z))
                else:
                    e = np.exp(z)
                    A[i, j] = e / (1.0 + e)
    else:
        A[:, :] = Z


@njit(**JIT_OPTIONS)
def _times_derivative(activation, Z, A, G, out):
    """``out = f'(Z) * G`` elementwise (``f'`` from ``Z`` or ``A = f(Z)``); ``out`` may be ``G``."""
    n, m = Z.shape
    if activation == RELU:
        for i in range(n):
            for j in range(m):
                out[i, j] = G[i, j] if Z[i, j] > 0 else 0.0
    elif activation == TANH:
        for i in range(n):
            for j in range(m):
                out[i, j] = G[i, j] * (1.0 - A[i, j] * A[i, j])
    elif activation == LOGISTIC:
        for i in range(n):
            for j in range(m):
                out[i, j] = G[i, j] * (A[i, j] * (1.0 - A[i, j]))
    elif out is not G:
        out[:, :] = G


@njit(**JIT_OPTIONS)
def _add_times_second_derivative(activation, A, RZ, DA, out):
    """``out += f''(Z) * RZ * DA`` elementwise; ``f''`` is zero for relu and identity."""
    n, m = A.shape
    if activation == TANH:
        for i in range(n):
            for j in range(m):
                a = A[i, j]
                out[i, j] += -2.0 * a * (1.0 - a * a) * RZ[i, j] * DA[i, j]
    elif activation == LOGISTIC:
        for i in range(n):
            for j in range(m):
                a = A[i, j]
                out[i, j] += a * (1.0 - a) * (1.0 - 2.0 * a) * RZ[i, j] * DA[i, j]


# --------------------------------------------------------------------------------------------------
# Losses, chosen by the type of the targets
# --------------------------------------------------------------------------------------------------


def _output_grad(out, y, dout):
    """Loss of outputs ``out`` against ``y``; writes ``dLoss/dout`` into ``dout``. Jit-only."""
    raise NotImplementedError


def _output_hess_dot(out, y, r, rout):
    """Writes ``d2Loss/dout2 @ r`` (row by row) into ``rout``. Jit-only."""
    raise NotImplementedError


def _is_class_labels(y):
    return isinstance(y, types.Array) and y.ndim == 1 and isinstance(y.dtype, types.Integer)


def _is_real_targets(y):
    return isinstance(y, types.Array) and y.ndim == 2 and isinstance(y.dtype, types.Float)


@overload(_output_grad, jit_options=JIT_OPTIONS)
def _output_grad_impl(out, y, dout):
    if _is_real_targets(y):

        def squared_error(out, y, dout):
            n, m = out.shape
            scale = 1.0 / (n * m)
            loss = 0.0
            for i in range(n):
                for j in range(m):
                    r = out[i, j] - y[i, j]
                    loss += r * r
                    dout[i, j] = 2.0 * scale * r
            return loss * scale

        return squared_error
    if _is_class_labels(y):

        def softmax_cross_entropy(out, y, dout):
            n, m = out.shape
            loss = 0.0
            for i in range(n):
                top = out[i, 0]
                for j in range(1, m):
                    top = max(top, out[i, j])
                total = 0.0
                for j in range(m):
                    total += np.exp(out[i, j] - top)
                log_total = np.log(total)
                loss += top + log_total - out[i, y[i]]
                for j in range(m):
                    dout[i, j] = np.exp(out[i, j] - top - log_total) / n
                dout[i, y[i]] -= 1.0 / n
            return loss / n

        return softmax_cross_entropy
    return None


@overload(_output_hess_dot, jit_options=JIT_OPTIONS)
def _output_hess_dot_impl(out, y, r, rout):
    if _is_real_targets(y):

        def squared_error(out, y, r, rout):
            n, m = out.shape
            scale = 2.0 / (n * m)
            for i in range(n):
                for j in range(m):
                    rout[i, j] = scale * r[i, j]

        return squared_error
    if _is_class_labels(y):

        def softmax_cross_entropy(out, y, r, rout):
            # Hessian of log-sum-exp: (diag(p) - p p^T) / n per row.
            n, m = out.shape
            for i in range(n):
                top = out[i, 0]
                for j in range(1, m):
                    top = max(top, out[i, j])
                total = 0.0
                for j in range(m):
                    total += np.exp(out[i, j] - top)
                p_dot_r = 0.0
                for j in range(m):
                    p = np.exp(out[i, j] - top) / total
                    rout[i, j] = p
                    p_dot_r += p * r[i, j]
                for j in range(m):
                    rout[i, j] = rout[i, j] * (r[i, j] - p_dot_r) / n

        return softmax_cross_entropy
    return None


# --------------------------------------------------------------------------------------------------
# Forward, backward and R-operator passes over rows r0:r1 of work buffers
# --------------------------------------------------------------------------------------------------


@njit(**JIT_OPTIONS)
def _forward_rows(theta, layer_sizes, offsets, woffsets, activation, X, Z, A, n_buf, r0, r1):
    """Fill ``Z`` and ``A`` for the rows ``X`` (which are rows ``r0:r1`` of the buffers)."""
    n_layers = layer_sizes.shape[0] - 1
    for l in range(1, n_layers + 1):
        Zl = _block(Z, n_buf, woffsets, l, r0, r1)
        W = _weights(theta, layer_sizes, offsets, l - 1)
        b = _bias(theta, layer_sizes, offsets, l - 1)
        if l == 1:
            np.dot(X, W, Zl)
        else:
            np.dot(_block(A, n_buf, woffsets, l - 1, r0, r1), W, Zl)
        Zl += b
        if l < n_layers:
            _activate(activation, Zl, _block(A, n_buf, woffsets, l, r0, r1))


@njit(**JIT_OPTIONS)
def _backprop_rows(theta, layer_sizes, offsets, woffsets, activation, Z, A, DZ, DA, n_buf, r0, r1):
    """Given the output block of ``DZ``, fill the hidden blocks of ``DA`` and ``DZ``."""
    n_layers = layer_sizes.shape[0] - 1
    for l in range(n_layers, 1, -1):
        W = _weights(theta, layer_sizes, offsets, l - 1)
        DAp = _block(DA, n_buf, woffsets, l - 1, r0, r1)
        np.dot(_block(DZ, n_buf, woffsets, l, r0, r1), W.T, DAp)
        _times_derivative(activation, _block(Z, n_buf, woffsets, l - 1, r0, r1),
                          _block(A, n_buf, woffsets, l - 1, r0, r1), DAp,
                          _block(DZ, n_buf, woffsets, l - 1, r0, r1))


@njit(**JIT_OPTIONS)
def _weight_grad_rows(layer_sizes, offsets, woffsets, X, A, DZ, n_buf, r0, r1, grad):
    """``grad = dLoss/dtheta`` from the inputs and the ``A``/``DZ`` blocks of rows ``r0:r1``."""
    n_layers = layer_sizes.shape[0] - 1
    for l in range(1, n_layers + 1):
        DZl = _block(DZ, n_buf, woffsets, l, r0, r1)
        gW = _weights(grad, layer_sizes, offsets, l - 1)
        if l == 1:
            np.dot(X.T, DZl, gW)
        else:
            np.dot(_block(A, n_buf, woffsets, l - 1, r0, r1).T, DZl, gW)
        _column_sums(DZl, _bias(grad, layer_sizes, offsets, l - 1))


@njit(**JIT_OPTIONS)
def _column_sums(M, out):
    out[:] = 0.0
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            out[j] += M[i, j]


@njit(**JIT_OPTIONS)
def _hvp_rows(theta, layer_sizes, offsets, woffsets, activation, X, y, Z, A, DZ, DA,
              n_buf, r0, r1, v, RZ, RA, RD, tmp_w, hv):
    """Pearlmutter's R-operator: ``hv = H(theta) v`` for the loss on rows ``r0:r1``.

    ``Z``, ``A``, ``DZ``, ``DA`` must hold the forward and backward pass at ``theta`` for those rows.
    ``RZ``, ``RA`` and ``RD`` are scratch buffers shaped like them with ``n_rows = r1 - r0`` rows;
    ``tmp_w`` is scratch of at least ``max_l n_in * n_out`` entries. Costs about two gradients.
    """
    n_layers = layer_sizes.shape[0] - 1
    n = r1 - r0
    # Forward R-pass: RZ_l = RA_{l-1} W_l + A_{l-1} V_l + c_l, RA_l = f'(Z_l) RZ_l.
    for l in range(1, n_layers + 1):
        W = _weights(theta, layer_sizes, offsets, l - 1)
        V = _weights(v, layer_sizes, offsets, l - 1)
        c = _bias(v, layer_sizes, offsets, l - 1)
        RZl = _block(RZ, n, woffsets, l, 0, n)
        if l == 1:
            np.dot(X, V, RZl)
        else:
            np.dot(_block(A, n_buf, woffsets, l - 1, r0, r1), V, RZl)
            tmp = tmp_w[:n * layer_sizes[l]].reshape((n, layer_sizes[l]))
            np.dot(_block(RA, n, woffsets, l - 1, 0, n), W, tmp)
            RZl += tmp
        RZl += c
        if l < n_layers:
            _times_derivative(activation, _block(Z, n_buf, woffsets, l, r0, r1),
                              _block(A, n_buf, woffsets, l, r0, r1), RZl,
                              _block(RA, n, woffsets, l, 0, n))
    # Backward R-pass: RD_L = loss''(z_L) RZ_L, then back through the layers.
    RDl = _block(RD, n, woffsets, n_layers, 0, n)
    _output_hess_dot(_block(Z, n_buf, woffsets, n_layers, r0, r1), y,
                     _block(RZ, n, woffsets, n_layers, 0, n), RDl)
    for l in range(n_layers, 0, -1):
        RDl = _block(RD, n, woffsets, l, 0, n)
        DZl = _block(DZ, n_buf, woffsets, l, r0, r1)
        hW = _weights(hv, layer_sizes, offsets, l - 1)
        n_in = layer_sizes[l - 1]
        n_out = layer_sizes[l]
        # hW = A_{l-1}^T RD_l + RA_{l-1}^T DZ_l
        if l == 1:
            np.dot(X.T, RDl, hW)
        else:
            np.dot(_block(A, n_buf, woffsets, l - 1, r0, r1).T, RDl, hW)
            tmp = tmp_w[:n_in * n_out].reshape((n_in, n_out))
            np.dot(_block(RA, n, woffsets, l - 1, 0, n).T, DZl, tmp)
            hW += tmp
        _column_sums(RDl, _bias(hv, layer_sizes, offsets, l - 1))
        if l > 1:
            # R(DA_{l-1}) = RD_l W_l^T + DZ_l V_l^T, kept in RA's block (no longer needed there).
            W = _weights(theta, layer_sizes, offsets, l - 1)
            V = _weights(v, layer_sizes, offsets, l - 1)
            RDA = _block(RA, n, woffsets, l - 1, 0, n)
            np.dot(RDl, W.T, RDA)
            tmp = tmp_w[:n * n_in].reshape((n, n_in))
            np.dot(DZl, V.T, tmp)
            RDA += tmp
            RDp = _block(RD, n, woffsets, l - 1, 0, n)
            _times_derivative(activation, _block(Z, n_buf, woffsets, l - 1, r0, r1),
                              _block(A, n_buf, woffsets, l - 1, r0, r1), RDA, RDp)
            _add_times_second_derivative(activation, _block(A, n_buf, woffsets, l - 1, r0, r1),
                                         _block(RZ, n, woffsets, l - 1, 0, n),
                                         _block(DA, n_buf, woffsets, l - 1, r0, r1), RDp)


# --------------------------------------------------------------------------------------------------
# Allocating entry points (one row block, one theta)
# --------------------------------------------------------------------------------------------------


@njit(**JIT_OPTIONS)
def buffer_size(layer_sizes, n_rows):
    """Entries of one work buffer for ``n_rows`` rows."""
    return n_rows * width_offsets(layer_sizes)[-1]


@njit(**JIT_OPTIONS)
def scratch_size(layer_sizes, n_rows):
    """Entries of the ``tmp_w`` scratch of :func:`_hvp_rows` for ``n_rows`` rows."""
    size = 0
    for l in range(layer_sizes.shape[0] - 1):
        size = max(size, layer_sizes[l] * layer_sizes[l + 1])
        size = max(size, n_rows * max(layer_sizes[l], layer_sizes[l + 1]))
    return size


@njit(**JIT_OPTIONS)
def forward(theta, layer_sizes, activation, X):
    """Network output.

    Parameters
    ----------
    theta : ndarray of shape (n_params,), float32 or float64
    layer_sizes : ndarray of shape (L + 1,), int64
    activation : int
        Hidden activation code (``_config.ACTIVATION_CODES``).
    X : ndarray of shape (n_rows, n_features), dtype of ``theta``, C-contiguous

    Returns
    -------
    out : ndarray of shape (n_rows, n_outputs)
        Linear output ``z_L`` (regression values or class logits).
    """
    n = X.shape[0]
    offsets = layer_offsets(layer_sizes)
    woffsets = width_offsets(layer_sizes)
    size = buffer_size(layer_sizes, n)
    Z = np.empty(size, dtype=theta.dtype)
    A = np.empty(size, dtype=theta.dtype)
    _forward_rows(theta, layer_sizes, offsets, woffsets, activation, X, Z, A, n, 0, n)
    return _block(Z, n, woffsets, layer_sizes.shape[0] - 1, 0, n).copy()


@njit(**JIT_OPTIONS)
def loss_grad(theta, layer_sizes, activation, X, y, grad_out):
    """Loss and its gradient with respect to ``theta``.

    Parameters
    ----------
    theta, layer_sizes, activation, X
        As in :func:`forward`.
    y : ndarray of shape (n_rows, n_outputs) floating, or (n_rows,) integer
        Regression targets (squared error) or class indices (softmax cross-entropy).
    grad_out : ndarray of shape (n_params,)
        Receives the gradient.

    Returns
    -------
    loss : float
    """
    n = X.shape[0]
    offsets = layer_offsets(layer_sizes)
    woffsets = width_offsets(layer_sizes)
    n_layers = layer_sizes.shape[0] - 1
    size = buffer_size(layer_sizes, n)
    Z = np.empty(size, dtype=theta.dtype)
    A = np.empty(size, dtype=theta.dtype)
    DZ = np.empty(size, dtype=theta.dtype)
    DA = np.empty(size, dtype=theta.dtype)
    _forward_rows(theta, layer_sizes, offsets, woffsets, activation, X, Z, A, n, 0, n)
    loss = _output_grad(_block(Z, n, woffsets, n_layers, 0, n), y,
                        _block(DZ, n, woffsets, n_layers, 0, n))
    _backprop_rows(theta, layer_sizes, offsets, woffsets, activation, Z, A, DZ, DA, n, 0, n)
    _weight_grad_rows(layer_sizes, offsets, woffsets, X, A, DZ, n, 0, n, grad_out)
    return loss


@njit(**JIT_OPTIONS)
def hvp(theta, layer_sizes, activation, X, y, v, out):
    """Hessian-vector product of the loss: ``out = d2Loss/dtheta2 @ v``.

    Parameters
    ----------
    theta, layer_sizes, activation, X, y
        As in :func:`loss_grad`.
    v : ndarray of shape (n_params,)
        Direction.
    out : ndarray of shape (n_params,)
        Receives the product.
    """
    n = X.shape[0]
    offsets = layer_offsets(layer_sizes)
    woffsets = width_offsets(layer_sizes)
    n_layers = layer_sizes.shape[0] - 1
    size = buffer_size(layer_sizes, n)
    Z = np.empty(size, dtype=theta.dtype)
    A = np.empty(size, dtype=theta.dtype)
    DZ = np.empty(size, dtype=theta.dtype)
    DA = np.empty(size, dtype=theta.dtype)
    _forward_rows(theta, layer_sizes, offsets, woffsets, activation, X, Z, A, n, 0, n)
    _output_grad(_block(Z, n, woffsets, n_layers, 0, n), y, _block(DZ, n, woffsets, n_layers, 0, n))
    _backprop_rows(theta, layer_sizes, offsets, woffsets, activation, Z, A, DZ, DA, n, 0, n)
    RZ = np.empty(size, dtype=theta.dtype)
    RA = np.empty(size, dtype=theta.dtype)
    RD = np.empty(size, dtype=theta.dtype)
    tmp_w = np.empty(scratch_size(layer_sizes, n), dtype=theta.dtype)
    _hvp_rows(theta, layer_sizes, offsets, woffsets, activation, X, y, Z, A, DZ, DA,
              n, 0, n, v, RZ, RA, RD, tmp_w, out)
