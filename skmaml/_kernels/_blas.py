"""Matrix products on offsets into flat arrays, callable from nogil numba kernels: BLAS ``gemm``,
or for small layers the SIMD loops of :mod:`._small`.

``np.dot`` in numba builds each operand as an array object; the MAML kernels need dozens of small
products per task on sub-blocks of work buffers, where building those views (one array object per
operand and product) and the temporaries needed to accumulate products cost as much as the
arithmetic. This calls the same C helper numba's ``np.dot`` uses (``numba_xxgemm``, SciPy's
BLAS) with explicit leading dimensions and ``alpha``/``beta``. The symbol is resolved by name, so
callers stay cacheable.
"""

import numpy as np
from llvmlite import ir
from numba import config, njit, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.linalg import ensure_blas

from ._config import JIT_OPTIONS
from ._small import SMALL_WEIGHTS, small_layer, small_product, small_relu_backprop

ensure_blas()  # fails early, with numba's message, if SciPy's BLAS is missing

_NO_TRANS = ord("n")
_TRANS = ord("t")


@intrinsic
def _gemm_colmajor(typingctx, transa, transb, m, n, k, alpha, a, a_off, lda, b, b_off, ldb, beta,
                   c, c_off, ldc):
    """Fortran-order ``c = alpha op(a) op(b) + beta c`` on ``array.data + offset`` pointers."""
    dtype = c.dtype
    if dtype not in (types.float32, types.float64) or a.dtype != dtype or b.dtype != dtype:
        return None
    sig = types.intc(transa, transb, m, n, k, alpha, a, a_off, lda, b, b_off, ldb, beta, c,
                     c_off, ldc)

    def codegen(context, builder, signature, args):
        arg_types = signature.args
        char_t = ir.IntType(8)
        intp_t = context.get_value_type(types.intp)
        void_p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.IntType(32), [char_t, char_t, char_t, intp_t, intp_t, intp_t,
                                                void_p, void_p, intp_t, void_p, intp_t, void_p,
                                                void_p, intp_t])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "numba_xxgemm")

        def integer(i):
            return context.cast(builder, args[i], arg_types[i], types.intp)

        def flag(i):
            return builder.trunc(integer(i), char_t)

        def pointer(i_array, i_offset):
            ary = context.make_array(arg_types[i_array])(context, builder, args[i_array])
            return builder.bitcast(builder.gep(ary.data, [integer(i_offset)]), void_p)

        def scalar_slot(i):
            value = context.cast(builder, args[i], arg_types[i], dtype)
            return builder.bitcast(cgutils.alloca_once_value(builder, value), void_p)

        kind = ir.Constant(char_t, ord("s" if dtype == types.float32 else "d"))
        return builder.call(fn, [kind, flag(0), flag(1), integer(2), integer(3), integer(4),
                                 scalar_slot(5), pointer(6, 7), integer(8), pointer(9, 10),
                                 integer(11), scalar_slot(12), pointer(13, 14), integer(15)])

    return sig, codegen


@njit(**JIT_OPTIONS)
def _small_weights(trans_a, m, n, k):
    """Whether a product's weight matrix (``op(B)``, or ``C`` for ``A^T B``) has at most
    ``SMALL_WEIGHTS`` entries: what sends it to the loops of :mod:`._small` (the one rule,
    for :func:`gemm` and the fused layers below)."""
    return (m if trans_a else k) * n <= SMALL_WEIGHTS


@njit(**JIT_OPTIONS)
def rows_independent(layer_sizes):
    """Whether every product of a pass over this network (forward, backward, weight gradient)
    runs as the loops of :mod:`._small` (:func:`_small_weights`), whose every entry is the same
    whatever the number of rows of the product: then passes over a batch of tasks' rows give each
    task the bits of a pass over its own rows (BLAS does not promise that)."""
    for l in range(1, layer_sizes.shape[0]):
        if not _small_weights(False, 1, layer_sizes[l], layer_sizes[l - 1]):
            return False
    return True


@njit(**JIT_OPTIONS)
def gemm(trans_a, trans_b, m, n, k, alpha, A, a_off, lda, B, b_off, ldb, beta, C, c_off, ldc):
    """Row-major ``C = alpha op(A) op(B) + beta C`` on strided blocks of arrays.

    Parameters
    ----------
    trans_a, trans_b : bool
        Use the transpose of the stored block of ``A`` (``B``).
    m, n, k : int
        ``op(A)`` is ``(m, k)``, ``op(B)`` is ``(k, n)``, ``C`` is ``(m, n)``; ``k = 0`` gives
        ``C = beta C``.
    alpha, beta : float
    A, B, C : C-contiguous ndarray, float32 or float64 (all the same dtype)
        Any number of dimensions: only the data pointer is used.
    a_off, b_off, c_off : int
        Element offset of the block's first entry from the array's first entry.
    lda, ldb, ldc : int
        Row stride (in elements) of the stored blocks, at least 1.

    Notes
    -----
    The caller keeps the arrays alive and in bounds; nothing is checked here. A product with
    ``k > 0``, ``alpha = 1``, ``beta`` 0 or 1, not both operands transposed and a weight matrix
    (``op(B)``, or ``C`` for ``A^T B``) of at most ``SMALL_WEIGHTS`` entries runs as the loops of
    :mod:`._small`; any other through BLAS.
    """
    if m == 0 or n == 0:
        return
    if k > 0 and alpha == 1.0 and (beta == 0.0 or beta == 1.0) and not (trans_a and trans_b) and (
            _small_weights(trans_a, m, n, k)):
        small_product(trans_a, trans_b, m, n, k, A, a_off, lda, B, b_off, ldb, beta != 0.0, C,
                      c_off, ldc)
        return
    # A row-major (m, n) block is the column-major (n, m) block of its transpose, so
    # C^T = op(B)^T op(A)^T runs as one column-major gemm with the operands swapped.
    _gemm_colmajor(_TRANS if trans_b else _NO_TRANS, _TRANS if trans_a else _NO_TRANS,
                   n, m, k, alpha, B, b_off, ldb, A, a_off, lda, beta, C, c_off, ldc)


@njit(**JIT_OPTIONS)
def small_affine(m, n, k, A, a_off, lda, W, w_off, ldw, b_off, Z, z_off, ldz, R, r_off, relu):
    """A layer in one pass, when its product runs as the loops of :mod:`._small`: ``Z = A W + b``
    (``A`` the ``(m, k)`` block at ``a_off``, ``W`` the ``(k, n)`` block at ``w_off``, ``b`` the
    ``n`` entries of ``W``'s array at ``b_off``) and, with ``relu``, ``R = relu(Z)`` (the block
    of ``R`` at ``r_off``, row stride ``ldz``). Returns False, having written nothing, when the
    product would not run as those loops (or as their dot products, ``n = 1``): the caller then
    runs :func:`gemm`, the bias add and the activation, which give the same bits."""
    if m == 0 or k == 0 or n < 2 or not _small_weights(False, m, n, k):
        return False
    small_layer(m, n, k, A, a_off, lda, W, w_off, ldw, b_off, Z, z_off, ldz, R, r_off, relu)
    return True


@njit(**JIT_OPTIONS)
def small_backprop_relu(m, n, k, A, a_off, lda, W, w_off, ldw, C, c_off, ldc, Z, z_off, G, g_off):
    """Backpropagation through a relu layer in one pass, when its product runs as the loops of
    :mod:`._small`: ``C = A W^T`` (``W`` the ``(n, k)`` block at ``w_off``) and
    ``G = C if Z > 0 else 0`` (blocks of ``C``, ``Z`` and ``G`` with row stride ``ldc``).
    Returns False, having written nothing, when :func:`gemm` would run the product otherwise
    (as dot products of rows, ``n = 1``, or through BLAS): the caller then runs it and relu's
    derivative, which give the same bits."""
    if m == 0 or k == 0 or n < 2 or not _small_weights(False, m, n, k):
        return False
    small_relu_backprop(m, n, k, A, a_off, lda, W, w_off, ldw, C, c_off, ldc, Z, z_off, G, g_off)
    return True


if config.DISABLE_JIT:
    # With NUMBA_DISABLE_JIT=1 (coverage runs of the kernel bodies) the intrinsic above cannot run;
    # the same product through NumPy on strided views keeps every kernel executable as Python.
    def gemm(trans_a, trans_b, m, n, k, alpha, A, a_off, lda, B, b_off, ldb, beta, C, c_off,
             ldc):  # noqa: D103 - same contract as the compiled gemm
        if m == 0 or n == 0:
            return

        def block(array, offset, rows, cols, ld):
            flat = array.reshape(-1)
            return np.lib.stride_tricks.as_strided(
                flat[offset:], shape=(rows, cols),
                strides=(ld * flat.itemsize, flat.itemsize), writeable=True)

        op_a = block(A, a_off, k, m, lda).T if trans_a else block(A, a_off, m, k, lda)
        op_b = block(B, b_off, n, k, ldb).T if trans_b else block(B, b_off, k, n, ldb)
        out = block(C, c_off, m, n, ldc)
        product = alpha * (op_a @ op_b) if k else np.zeros((m, n), dtype=C.dtype)
        # BLAS semantics: beta == 0 overwrites C without reading it (NaN in C must not leak).
        out[...] = product if beta == 0 else product + beta * out

    def small_affine(m, n, k, A, a_off, lda, W, w_off, ldw, b_off, Z, z_off, ldz, R, r_off,
                     relu):  # noqa: D103 - the callers' separate passes run instead
        return False

    def small_backprop_relu(m, n, k, A, a_off, lda, W, w_off, ldw, C, c_off, ldc, Z, z_off, G,
                            g_off):  # noqa: D103 - the callers' separate passes run instead
        return False
