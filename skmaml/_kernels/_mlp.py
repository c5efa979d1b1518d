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

Kernels trust their inputs (shapes, C order, label range, finiteness): the estimator validates them.

What travels together
---------------------
The pass kernels take the network as one :class:`Network` (layer sizes, parameter and buffer
offsets, activation: built once per call by :func:`network`) and a pass's work buffers as one
:class:`Pass` (``Z``, ``A``, ``DZ``, ``DA`` and their row count), so each call names only what it
is about: parameters, rows, buffers. Both are named tuples, which numba passes by value and
unpacks at no cost.

Work buffers
------------
Per-row intermediate values live in flat buffers with one block per layer ``l = 1 .. L``: for a buffer
of ``n_buf`` rows, layer ``l``'s block is a C-ordered ``(n_buf, layer_sizes[l])`` matrix starting at
``n_buf * width_offsets[l-1]`` (:func:`_block_start`). ``Z`` holds ``z_l``, ``A`` holds ``a_l`` (its
output block is unused), ``DZ`` holds ``dLoss/dz_l`` and ``DA`` holds ``dLoss/da_l`` (hidden layers).
A pass over rows ``r0 : r0 + n`` of such buffers lets one buffer serve a whole batch of tasks at once
(all tasks share ``theta`` before adaptation) and each task then read its own rows. Every matrix
product is one call on offsets into these buffers (:func:`._blas.gemm`: SIMD loops for small layers,
BLAS for large ones), with ``beta = 1`` where products accumulate, so no views are built on the hot
path and nothing is allocated; bias adds and column sums are loops.
"""

from collections import namedtuple

import numpy as np
from numba import njit
from numba.core import types
from numba.extending import overload

from ._blas import gemm, small_affine, small_backprop_relu
from ._borrow import borrowed
from ._config import JIT_OPTIONS, LOGISTIC, RELU, TANH

# --------------------------------------------------------------------------------------------------
# Layout
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
    """Per-row column offsets of the layer blocks of a work buffer, shape (L + 1,)."""
    n_layers = layer_sizes.shape[0] - 1
    offsets = np.zeros(n_layers + 1, dtype=np.int64)
    for l in range(n_layers):
        offsets[l + 1] = offsets[l] + layer_sizes[l + 1]
    return offsets


@njit(**JIT_OPTIONS)
def buffer_size(layer_sizes, n_rows):
    """Entries of one work buffer for ``n_rows`` rows."""
    return n_rows * width_offsets(layer_sizes)[-1]


Network = namedtuple("Network", ["layer_sizes", "offsets", "woffsets", "activation"])
Network.__doc__ = """An MLP's layout: ``layer_sizes``, :func:`layer_offsets`, :func:`width_offsets`
and the hidden activation code."""

Pass = namedtuple("Pass", ["Z", "A", "DZ", "DA", "n_rows"])
Pass.__doc__ = """One pass's work buffers (see "Work buffers"), each of ``n_rows`` rows; a pass
that needs only ``Z`` and ``A`` may hold any arrays as ``DZ`` and ``DA``."""


@njit(**JIT_OPTIONS)
def network(layer_sizes, activation):
    """The :class:`Network` of these layer sizes and hidden activation."""
    return Network(layer_sizes, layer_offsets(layer_sizes), width_offsets(layer_sizes), activation)


@njit(**JIT_OPTIONS)
def borrowed_network(net):
    """``net`` with its arrays :func:`._borrow.borrowed` (valid while ``net`` is)."""
    return Network(borrowed(net.layer_sizes), borrowed(net.offsets), borrowed(net.woffsets),
                   net.activation)


@njit(**JIT_OPTIONS)
def _block_start(n_buf, woffsets, l, r0):
    """Offset of row ``r0`` of layer ``l``'s block (1-based) in a buffer of ``n_buf`` rows."""
    return n_buf * woffsets[l - 1] + r0 * (woffsets[l] - woffsets[l - 1])


# --------------------------------------------------------------------------------------------------
# Elementwise pieces. Each loop runs from 0 over 1-D slices: with an index that might be negative
# numba must check for wraparound on every access, which stops LLVM from vectorising the loop.
# The bias add, column sums and activation derivative are inlined into their callers (numba's
# inline="always"): a call of a compiled function increments and decrements the reference count
# of every array it is passed (an atomic add each), and these run several times per task and inner
# step on a few dozen entries. Inlining them made an N = 5 second-order meta-iteration 5-6% faster
# (first order 1-2%) for about 2 s more on a cold first fit (40 -> 42 s); inlining the activation
# too added 10 s (benchmarks/perf_attribution.py profiles the reference counts).
# --------------------------------------------------------------------------------------------------


@njit(**JIT_OPTIONS)
def _activate(activation, Z, A):
    """``A = f(Z)`` elementwise (1-D slices of equal size)."""
    if activation == RELU:
        for i in range(Z.shape[0]):
            A[i] = Z[i] if Z[i] > 0 else 0.0
    elif activation == TANH:
        for i in range(Z.shape[0]):
            A[i] = np.tanh(Z[i])
    elif activation == LOGISTIC:
        for i in range(Z.shape[0]):
            # Written to stay finite for large |z| in either direction.
            z = Z[i]
            if z >= 0:
                A[i] = 1.0 / (1.0 + np.exp(-z))
            else:
                e = np.exp(z)
                A[i] = e / (1.0 + e)
    else:
        A[:] = Z


@njit(inline="always", **JIT_OPTIONS)
def _times_derivative(activation, Z, A, G, out):
    """``out = f'(Z) * G`` with ``f'`` taken from ``Z`` or ``A = f(Z)`` (1-D slices)."""
    if activation == RELU:
        for i in range(Z.shape[0]):
            out[i] = G[i] if Z[i] > 0 else 0.0
    elif activation == TANH:
        for i in range(Z.shape[0]):
            out[i] = G[i] * (1.0 - A[i] * A[i])
    elif activation == LOGISTIC:
        for i in range(Z.shape[0]):
            out[i] = G[i] * (A[i] * (1.0 - A[i]))
    else:
        out[:] = G


@njit(**JIT_OPTIONS)
def _add_times_second_derivative(activation, A, RZ, DA, out):
    """``out += f''(Z) * RZ * DA`` (1-D slices); ``f''`` is zero for relu and identity."""
    if activation == TANH:
        for i in range(A.shape[0]):
            a = A[i]
            out[i] += -2.0 * a * (1.0 - a * a) * RZ[i] * DA[i]
    elif activation == LOGISTIC:
        for i in range(A.shape[0]):
            a = A[i]
            out[i] += a * (1.0 - a) * (1.0 - 2.0 * a) * RZ[i] * DA[i]


@njit(inline="always", **JIT_OPTIONS)
def _add_bias(M, m_off, n, width, b, b_off):
    """Add ``b[b_off : b_off + width]`` to each of the ``n`` rows of the block ``M[m_off]``.

    A loop over 1-D slices indexed from zero (no negative-index checks, so LLVM vectorises it):
    cheaper than the rank-one BLAS product ``ones(n) b^T`` it replaces, whose call overhead is
    most of its cost for these few flops, and the same sums (``M + b``, exactly rounded).
    """
    bias = b[b_off:b_off + width]
    for i in range(n):
        row = M[m_off + i * width:m_off + (i + 1) * width]
        for j in range(width):
            row[j] += bias[j]


@njit(inline="always", **JIT_OPTIONS)
def _column_sums(M, m_off, n, width, out, o_off, accumulate):
    """``out[o_off : o_off + width] (+)=`` column sums of the ``(n, width)`` block ``M[m_off]``
    (a vectorised loop, as :func:`_add_bias`), four rows at a time."""
    sums = out[o_off:o_off + width]
    if not accumulate:
        for j in range(width):
            sums[j] = 0.0
    # Four rows per pass over ``sums`` (a quarter of its loads and stores): ((r0 + r1) + (r2 + r3)).
    n4 = n - n % 4
    for i in range(0, n4, 4):
        r0 = M[m_off + i * width:m_off + (i + 1) * width]
        r1 = M[m_off + (i + 1) * width:m_off + (i + 2) * width]
        r2 = M[m_off + (i + 2) * width:m_off + (i + 3) * width]
        r3 = M[m_off + (i + 3) * width:m_off + (i + 4) * width]
        for j in range(width):
            sums[j] += (r0[j] + r1[j]) + (r2[j] + r3[j])
    for i in range(n4, n):
        row = M[m_off + i * width:m_off + (i + 1) * width]
        for j in range(width):
            sums[j] += row[j]


# --------------------------------------------------------------------------------------------------
# Losses, chosen by the type of the targets
# --------------------------------------------------------------------------------------------------


def _squared_error_grad(Z, z_off, n, m, y, y0, D, d_off):
    scale = 1.0 / (n * m)
    loss = 0.0
    for i in range(n):
        for j in range(m):
            r = Z[z_off + i * m + j] - y[y0 + i, j]
            loss += r * r
            D[d_off + i * m + j] = 2.0 * scale * r
    return loss * scale


@njit(**JIT_OPTIONS)
def _log_sum_exp(Z, row, m):
    """``log(sum(exp(Z[row : row + m])))`` computed stably."""
    top = Z[row]
    for j in range(1, m):
        top = max(top, Z[row + j])
    total = 0.0
    for j in range(m):
        total += np.exp(Z[row + j] - top)
    return top + np.log(total)


def _softmax_cross_entropy_grad(Z, z_off, n, m, y, y0, D, d_off):
    loss = 0.0
    for i in range(n):
        row = z_off + i * m
        log_total = _log_sum_exp(Z, row, m)
        label = y[y0 + i]
        loss += log_total - Z[row + label]
        for j in range(m):
            D[d_off + i * m + j] = np.exp(Z[row + j] - log_total) / n
        D[d_off + i * m + label] -= 1.0 / n
    return loss / n


def _squared_error_hess_dot(Z, z_off, n, m, y, y0, R, r_off, out, o_off):
    scale = 2.0 / (n * m)
    for i in range(n * m):
        out[o_off + i] = scale * R[r_off + i]


def _softmax_cross_entropy_hess_dot(Z, z_off, n, m, y, y0, R, r_off, out, o_off):
    # Hessian of log-sum-exp, row by row: (diag(p) - p p^T) / n.
    for i in range(n):
        row = z_off + i * m
        log_total = _log_sum_exp(Z, row, m)
        p_dot_r = 0.0
        for j in range(m):
            p = np.exp(Z[row + j] - log_total)
            out[o_off + i * m + j] = p
            p_dot_r += p * R[r_off + i * m + j]
        for j in range(m):
            k = o_off + i * m + j
            out[k] = out[k] * (R[r_off + i * m + j] - p_dot_r) / n


def _output_grad(Z, z_off, n, m, y, y0, D, d_off):
    """Loss of the ``(n, m)`` output block at ``Z[z_off]`` against rows ``y0:y0+n`` of ``y``;
    writes ``dLoss/dout`` into ``D[d_off]``. In compiled code the overload below picks the loss
    from ``y``'s type at compile time; this body does the same when the JIT is disabled."""
    impl = _softmax_cross_entropy_grad if y.ndim == 1 else _squared_error_grad
    return impl(Z, z_off, n, m, y, y0, D, d_off)


def _output_hess_dot(Z, z_off, n, m, y, y0, R, r_off, out, o_off):
    """Writes ``d2Loss/dout2 @ R`` (row by row) into ``out[o_off]``; dispatch as ``_output_grad``."""
    impl = _softmax_cross_entropy_hess_dot if y.ndim == 1 else _squared_error_hess_dot
    impl(Z, z_off, n, m, y, y0, R, r_off, out, o_off)


def _is_class_labels(y):
    return isinstance(y, types.Array) and y.ndim == 1 and isinstance(y.dtype, types.Integer)


def _is_real_targets(y):
    return isinstance(y, types.Array) and y.ndim == 2 and isinstance(y.dtype, types.Float)


@overload(_output_grad, jit_options=JIT_OPTIONS)
def _output_grad_impl(Z, z_off, n, m, y, y0, D, d_off):
    if _is_real_targets(y):
        return _squared_error_grad
    if _is_class_labels(y):
        return _softmax_cross_entropy_grad
    return None


@overload(_output_hess_dot, jit_options=JIT_OPTIONS)
def _output_hess_dot_impl(Z, z_off, n, m, y, y0, R, r_off, out, o_off):
    if _is_real_targets(y):
        return _squared_error_hess_dot
    if _is_class_labels(y):
        return _softmax_cross_entropy_hess_dot
    return None


# --------------------------------------------------------------------------------------------------
# Forward, backward and R-operator passes over rows r0 : r0 + n of work buffers
# --------------------------------------------------------------------------------------------------


@njit(**JIT_OPTIONS)
def _forward_rows(theta, net, X, x0, buf, r0, n, first_layer):
    """Fill ``buf.Z`` and ``buf.A`` for rows ``x0 : x0 + n`` of ``X`` (rows ``r0 : r0 + n`` of the
    buffers), layers ``first_layer .. L``: with ``first_layer > 1`` the block of ``A`` below it
    must hold the layer's input already (a body computed once, see :mod:`._maml`)."""
    layer_sizes, offsets, woffsets, activation = net
    Z, A, n_buf = buf.Z, buf.A, buf.n_rows
    n_layers = layer_sizes.shape[0] - 1
    for l in range(first_layer, n_layers + 1):
        n_in = layer_sizes[l - 1]
        width = layer_sizes[l]
        out = _block_start(n_buf, woffsets, l, r0)
        bias = offsets[l - 1] + n_in * width
        relu = l < n_layers and activation == RELU
        # A small layer's product, bias and relu in one pass (the same bits as the three below).
        if l == 1:
            fused = small_affine(n, width, n_in, X, x0 * n_in, n_in, theta, offsets[0], width,
                                 bias, Z, out, width, A, out, relu)
        else:
            fused = small_affine(n, width, n_in, A, _block_start(n_buf, woffsets, l - 1, r0),
                                 n_in, theta, offsets[l - 1], width, bias, Z, out, width, A, out,
                                 relu)
        if not fused:
            if l == 1:
                gemm(False, False, n, width, n_in, 1.0, X, x0 * n_in, n_in, theta, offsets[0],
                     width, 0.0, Z, out, width)
            else:
                gemm(False, False, n, width, n_in, 1.0, A,
                     _block_start(n_buf, woffsets, l - 1, r0), n_in, theta, offsets[l - 1],
                     width, 0.0, Z, out, width)
            _add_bias(Z, out, n, width, theta, bias)
        if l < n_layers and not (fused and relu):
            _activate(activation, Z[out:out + n * width], A[out:out + n * width])


@njit(**JIT_OPTIONS)
def _backprop_rows(theta, net, buf, r0, n, first_layer):
    """Given the output block of ``buf.DZ``, fill the blocks of ``buf.DA`` and ``buf.DZ`` of the
    hidden layers ``first_layer .. L - 1`` (the gradient of layers ``first_layer .. L`` needs no
    more)."""
    layer_sizes, offsets, woffsets, activation = net
    Z, A, DZ, DA, n_buf = buf
    n_layers = layer_sizes.shape[0] - 1
    for l in range(n_layers, first_layer, -1):
        n_in = layer_sizes[l - 1]
        width = layer_sizes[l]
        below = _block_start(n_buf, woffsets, l - 1, r0)
        dz = _block_start(n_buf, woffsets, l, r0)
        # A small relu layer's product and derivative in one pass (the same bits as the two).
        if activation == RELU and small_backprop_relu(n, n_in, width, DZ, dz, width, theta,
                                                      offsets[l - 1], width, DA, below, n_in, Z,
                                                      below, DZ, below):
            continue
        gemm(False, True, n, n_in, width, 1.0, DZ, dz, width, theta, offsets[l - 1], width, 0.0,
             DA, below, n_in)
        end = below + n * n_in
        _times_derivative(activation, Z[below:end], A[below:end], DA[below:end], DZ[below:end])


@njit(**JIT_OPTIONS)
def _weight_grad_rows(net, X, x0, buf, r0, n, grad, accumulate, first_layer):
    """``grad (+)= dLoss/dtheta`` from inputs ``X[x0 : x0 + n]`` and the ``buf.A``/``buf.DZ``
    rows, for the parameters of layers ``first_layer .. L`` (the others are not written)."""
    layer_sizes, offsets, woffsets = net.layer_sizes, net.offsets, net.woffsets
    A, DZ, n_buf = buf.A, buf.DZ, buf.n_rows
    n_layers = layer_sizes.shape[0] - 1
    beta = 1.0 if accumulate else 0.0
    for l in range(first_layer, n_layers + 1):
        n_in = layer_sizes[l - 1]
        width = layer_sizes[l]
        dz = _block_start(n_buf, woffsets, l, r0)
        if l == 1:
            gemm(True, False, n_in, width, n, 1.0, X, x0 * n_in, n_in, DZ, dz, width, beta,
                 grad, offsets[0], width)
        else:
            gemm(True, False, n_in, width, n, 1.0, A, _block_start(n_buf, woffsets, l - 1, r0),
                 n_in, DZ, dz, width, beta, grad, offsets[l - 1], width)
        _column_sums(DZ, dz, n, width, grad, offsets[l - 1] + n_in * width, accumulate)


@njit(**JIT_OPTIONS)
def _loss_grad_rows(theta, net, X, x0, y, y0, buf, r0, n, first_layer):
    """Forward pass, loss and backward pass of one row range, over layers ``first_layer .. L``
    (:func:`_forward_rows`, :func:`_backprop_rows`)."""
    layer_sizes = net.layer_sizes
    n_layers = layer_sizes.shape[0] - 1
    _forward_rows(theta, net, X, x0, buf, r0, n, first_layer)
    out = _block_start(buf.n_rows, net.woffsets, n_layers, r0)
    loss = _output_grad(buf.Z, out, n, layer_sizes[n_layers], y, y0, buf.DZ, out)
    _backprop_rows(theta, net, buf, r0, n, first_layer)
    return loss


@njit(**JIT_OPTIONS)
def _hvp_blocks(theta, net, X, x0, y, buf, r0, block_offsets, V, sweep, hv, first_layer):
    """Pearlmutter's R-operator over row blocks: ``hv = sum_b H_b(theta) V_b``.

    Block ``b`` is rows ``block_offsets[b] : block_offsets[b+1]`` counted from row ``x0`` of ``X`` /
    ``y`` and from row ``r0`` of the pass ``buf`` (which must hold the forward and backward pass
    at ``theta``, with each block's own loss normalisation). ``H_b`` is the Hessian
    of block ``b``'s loss and ``V_b = V[b * n_params : (b + 1) * n_params]`` its direction. One block is
    one task's Hessian-vector product; several blocks are the tasks of a batch at a shared ``theta``,
    where every product with ``theta``'s weights and every weight-gradient sum runs once over all rows
    and only the products with each block's own direction run per block.

    The directions are taken as zero on the layers below ``first_layer`` (their entries of ``V``
    are not read): the product of the Hessian's columns of the adapted layers, for head-only
    adaptation. All of ``hv`` is written. Then the R-pass starts at ``first_layer``, and below it
    needs only ``buf``'s ``Z`` and ``A`` (not ``DZ``/``DA``).

    ``sweep`` is ``(RZ, RA, RD)``, scratch buffers of ``block_offsets[-1]`` rows. Costs about two
    gradients.
    """
    layer_sizes, offsets, woffsets, activation = net
    Z, A, DZ, DA, n_buf = buf
    RZ, RA, RD = sweep
    n_layers = layer_sizes.shape[0] - 1
    n_blocks = block_offsets.shape[0] - 1
    n = block_offsets[n_blocks]
    n_par = offsets[n_layers]
    # Forward R-pass: RZ_l = A_{l-1} V_l + c_l (per block) + RA_{l-1} W_l (all rows),
    # RA_l = f'(Z_l) RZ_l; both zero below first_layer.
    for l in range(first_layer, n_layers + 1):
        n_in = layer_sizes[l - 1]
        width = layer_sizes[l]
        for b in range(n_blocks):
            start = block_offsets[b]
            rows = block_offsets[b + 1] - start
            rz = _block_start(n, woffsets, l, start)
            v_off = b * n_par + offsets[l - 1]
            if l == 1:
                gemm(False, False, rows, width, n_in, 1.0, X, (x0 + start) * n_in, n_in, V, v_off,
                     width, 0.0, RZ, rz, width)
            else:
                gemm(False, False, rows, width, n_in, 1.0, A,
                     _block_start(n_buf, woffsets, l - 1, r0 + start), n_in, V, v_off, width, 0.0,
                     RZ, rz, width)
            _add_bias(RZ, rz, rows, width, V, v_off + n_in * width)
        rz = _block_start(n, woffsets, l, 0)
        if l > first_layer:
            gemm(False, False, n, width, n_in, 1.0, RA, _block_start(n, woffsets, l - 1, 0), n_in,
                 theta, offsets[l - 1], width, 1.0, RZ, rz, width)
        if l < n_layers:
            z = _block_start(n_buf, woffsets, l, r0)
            size = n * width
            _times_derivative(activation, Z[z:z + size], A[z:z + size], RZ[rz:rz + size],
                              RA[rz:rz + size])
    # Backward R-pass: RD_L = loss''(z_L) RZ_L per block (its own normalisation), then down.
    n_out = layer_sizes[n_layers]
    for b in range(n_blocks):
        start = block_offsets[b]
        out = _block_start(n, woffsets, n_layers, start)
        _output_hess_dot(Z, _block_start(n_buf, woffsets, n_layers, r0 + start),
                         block_offsets[b + 1] - start, n_out, y, x0 + start, RZ, out, RD, out)
    for l in range(n_layers, 0, -1):
        n_in = layer_sizes[l - 1]
        width = layer_sizes[l]
        rd = _block_start(n, woffsets, l, 0)
        dz = _block_start(n_buf, woffsets, l, r0)
        # hW_l = A_{l-1}^T RD_l + RA_{l-1}^T DZ_l and hb_l = sum of RD_l rows, over all blocks.
        if l == 1:
            gemm(True, False, n_in, width, n, 1.0, X, x0 * n_in, n_in, RD, rd, width, 0.0, hv,
                 offsets[0], width)
        else:
            gemm(True, False, n_in, width, n, 1.0, A, _block_start(n_buf, woffsets, l - 1, r0),
                 n_in, RD, rd, width, 0.0, hv, offsets[l - 1], width)
            if l > first_layer:
                gemm(True, False, n_in, width, n, 1.0, RA, _block_start(n, woffsets, l - 1, 0),
                     n_in, DZ, dz, width, 1.0, hv, offsets[l - 1], width)
        _column_sums(RD, rd, n, width, hv, offsets[l - 1] + n_in * width, False)
        if l > 1:
            # R(DA_{l-1}) = RD_l W_l^T + DZ_l V_l^T goes into RA's block l-1, which is spent.
            below = _block_start(n, woffsets, l - 1, 0)
            below_buf = _block_start(n_buf, woffsets, l - 1, r0)
            gemm(False, True, n, n_in, width, 1.0, RD, rd, width, theta, offsets[l - 1], width,
                 0.0, RA, below, n_in)
            if l >= first_layer:
                for b in range(n_blocks):
                    start = block_offsets[b]
                    gemm(False, True, block_offsets[b + 1] - start, n_in, width, 1.0, DZ,
                         _block_start(n_buf, woffsets, l, r0 + start), width, V,
                         b * n_par + offsets[l - 1], width, 1.0, RA,
                         _block_start(n, woffsets, l - 1, start), n_in)
            size = n * n_in
            _times_derivative(activation, Z[below_buf:below_buf + size],
                              A[below_buf:below_buf + size], RA[below:below + size],
                              RD[below:below + size])
            if l - 1 >= first_layer:
                _add_times_second_derivative(activation, A[below_buf:below_buf + size],
                                             RZ[below:below + size],
                                             DA[below_buf:below_buf + size],
                                             RD[below:below + size])


# --------------------------------------------------------------------------------------------------
# Allocating entry points (one row block, one theta)
# --------------------------------------------------------------------------------------------------


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
    net = network(layer_sizes, activation)
    size = buffer_size(layer_sizes, n)
    Z = np.empty(size, dtype=theta.dtype)
    A = np.empty(size, dtype=theta.dtype)
    _forward_rows(theta, net, X, 0, Pass(Z, A, Z, A, n), 0, n, 1)
    n_layers = layer_sizes.shape[0] - 1
    start = _block_start(n, net.woffsets, n_layers, 0)
    return Z[start:start + n * layer_sizes[n_layers]].copy().reshape((n, layer_sizes[n_layers]))


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
    net = network(layer_sizes, activation)
    work = np.empty((4, buffer_size(layer_sizes, n)), dtype=theta.dtype)
    buf = Pass(work[0], work[1], work[2], work[3], n)
    loss = _loss_grad_rows(theta, net, X, 0, y, 0, buf, 0, n, 1)
    _weight_grad_rows(net, X, 0, buf, 0, n, grad_out, False, 1)
    return loss


@njit(**JIT_OPTIONS)
def loss(theta, layer_sizes, activation, X, y):
    """The loss of :func:`loss_grad` (the same bits) without its gradient: a forward pass and
    the loss, no backward pass (arguments as there)."""
    n = X.shape[0]
    net = network(layer_sizes, activation)
    work = np.empty((2, buffer_size(layer_sizes, n)), dtype=theta.dtype)
    _forward_rows(theta, net, X, 0, Pass(work[0], work[1], work[0], work[1], n), 0, n, 1)
    n_layers = layer_sizes.shape[0] - 1
    out = _block_start(n, net.woffsets, n_layers, 0)
    # The output gradient goes to the output block of A, which the loss does not read.
    return _output_grad(work[0], out, n, layer_sizes[n_layers], y, 0, work[1], out)


@njit(**JIT_OPTIONS)
def hvp(theta, layer_sizes, activation, X, y, v, out):
    """Hessian-vector product of the loss: ``out = d2Loss/dtheta2 @ v``.

    Test entry point: the meta-gradient kernels call the blocked products directly
    (:func:`_hvp_blocks`); this whole-θ form is what the tests compare with the NumPy reference.

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
    net = network(layer_sizes, activation)
    work = np.empty((7, buffer_size(layer_sizes, n)), dtype=theta.dtype)
    buf = Pass(work[0], work[1], work[2], work[3], n)
    _loss_grad_rows(theta, net, X, 0, y, 0, buf, 0, n, 1)
    _hvp_blocks(theta, net, X, 0, y, buf, 0, np.array([0, n], dtype=np.int64), v,
                (work[4], work[5], work[6]), out, 1)
