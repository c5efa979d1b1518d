"""The matrix products of the kernels (``_kernels._blas.gemm``): the SIMD loops of small layers
and BLAS for large ones, against NumPy, on strided blocks of flat buffers."""

import itertools

import numpy as np
import pytest
from numba import njit

from skmaml._kernels._blas import SMALL_WEIGHTS, gemm, small_affine, small_backprop_relu


@njit
def _gemm(trans_a, trans_b, m, n, k, alpha, A, a_off, lda, B, b_off, ldb, beta, C, c_off, ldc):
    gemm(trans_a, trans_b, m, n, k, alpha, A, a_off, lda, B, b_off, ldb, beta, C, c_off, ldc)


def _block(flat, offset, rows, cols, ld):
    return np.lib.stride_tricks.as_strided(flat[offset:], shape=(rows, cols),
                                           strides=(ld * flat.itemsize, flat.itemsize))


def _product(trans_a, trans_b, m, n, k, dtype, beta, rng, pad=3):
    """gemm on random operands stored as blocks (an offset, a row stride past the width) of flat
    buffers. Returns C's buffer after it, the mask of the block in it, NumPy's float64 result
    for the block and the size of each entry's terms (``|op(A)| |op(B)| + |beta C|``)."""
    a_rows, a_cols = (k, m) if trans_a else (m, k)
    b_rows, b_cols = (n, k) if trans_b else (k, n)
    lda, ldb, ldc = a_cols + pad, b_cols + pad, n + pad
    A = rng.standard_normal(pad + a_rows * lda).astype(dtype)
    B = rng.standard_normal(pad + b_rows * ldb).astype(dtype)
    C = rng.standard_normal(pad + m * ldc + pad).astype(dtype)
    op_a = _block(A, pad, a_rows, a_cols, lda).astype(np.float64)
    op_b = _block(B, pad, b_rows, b_cols, ldb).astype(np.float64)
    op_a, op_b = (op_a.T if trans_a else op_a), (op_b.T if trans_b else op_b)
    c_block = _block(C, pad, m, n, ldc).astype(np.float64)
    expected = op_a @ op_b + beta * c_block
    scale = np.abs(op_a) @ np.abs(op_b) + np.abs(beta * c_block)
    in_block = np.zeros(C.shape, dtype=bool)
    _block(in_block, pad, m, n, ldc)[...] = True
    _gemm(trans_a, trans_b, m, n, k, 1.0, A, pad, lda, B, pad, ldb, beta, C, pad, ldc)
    return C, in_block, expected, scale


# Layer shapes of small networks (the sinusoid's 1 -> 40 -> 40 -> 1 on 10 rows), odd sizes that
# exercise every tail (columns not a multiple of the vector width, odd rows, one column, one
# inner dimension, an empty sum) and shapes past SMALL_WEIGHTS (BLAS).
SHAPES = [(10, 40, 40), (10, 40, 1), (10, 1, 40), (40, 40, 10), (1, 40, 10), (40, 1, 10),
          (7, 29, 13), (1, 1, 1), (3, 9, 2), (2, 5, 17), (5, 3, 8), (9, 6, 37), (3, 5, 0),
          (11, 16, 16), (5, 64, 32), (4, 32, 64), (1000, 40, 40), (40, 40, 1000), (10, 100, 100),
          (3, 80, 30)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_products_against_numpy(m, n, k, trans_a, trans_b, dtype):
    rng = np.random.default_rng(m * 10000 + n * 100 + k)
    eps = np.finfo(dtype).eps
    for beta in (0.0, 1.0):
        C, in_block, expected, scale = _product(trans_a, trans_b, m, n, k, dtype, beta, rng)
        block = C[in_block].reshape(m, n) if m * n else np.zeros((m, n))
        # Each entry within its rounding error: k + 2 roundings of terms of size `scale`.
        assert np.all(np.abs(block - expected) <= (k + 2) * eps * scale + 1e-300)


def test_products_leave_the_rest_of_c_alone():
    """Only the (m, n) block of C's buffer is written (the masked tails write nothing past it)."""
    rng = np.random.default_rng(3)
    for (m, n, k), (trans_a, trans_b) in itertools.product(
            SHAPES, [(False, False), (True, False), (False, True)]):
        a_rows, a_cols = (k, m) if trans_a else (m, k)
        b_rows, b_cols = (n, k) if trans_b else (k, n)
        A = rng.standard_normal(a_rows * a_cols).astype(np.float32)
        B = rng.standard_normal(b_rows * b_cols).astype(np.float32)
        C = rng.standard_normal(2 + m * (n + 5) + 5).astype(np.float32)
        original = C.copy()
        _gemm(trans_a, trans_b, m, n, k, 1.0, A, 0, a_cols, B, 0, b_cols, 1.0, C, 2, n + 5)
        in_block = np.zeros(C.shape, dtype=bool)
        _block(in_block, 2, m, n, n + 5)[...] = True
        np.testing.assert_array_equal(C[~in_block], original[~in_block])


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True)])
def test_small_products_do_not_depend_on_the_rows_computed_with(trans_a, trans_b):
    """An entry of C is the same bits whether the product covers one row of it, every row, or
    (A B, A B^T) every row in one call; so batching the rows of tasks never changes results."""
    rng = np.random.default_rng(1)
    dtype = np.float32
    for m, n, k in [(10, 40, 40), (9, 29, 13), (7, 1, 40), (5, 40, 1)]:
        if trans_a:  # A^T B: rows of C are weight rows; columns computed separately instead
            A = rng.standard_normal((k, m)).astype(dtype)
        else:
            A = rng.standard_normal((m, k)).astype(dtype)
        B = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
        whole = np.zeros((m, n), dtype)
        _gemm(trans_a, trans_b, m, n, k, 1.0, A, 0, A.shape[1], B, 0, B.shape[1], 0.0, whole, 0, n)
        pieces = np.zeros((m, n), dtype)
        for i in range(m):
            if trans_a:  # row i of A^T B is column i of A
                _gemm(True, False, 1, n, k, 1.0, A, i, m, B, 0, n, 0.0, pieces, i * n, n)
            else:
                _gemm(False, trans_b, 1, n, k, 1.0, A, i * k, k, B, 0, B.shape[1], 0.0, pieces,
                      i * n, n)
        np.testing.assert_array_equal(whole, pieces)


def test_beta_zero_ignores_nan_in_c_and_masked_lanes_read_nothing_past_the_block():
    """beta = 0 overwrites C without reading NaN from it (BLAS semantics); a NaN just past a
    block's last column (where the masked tail of a vector would read) does not leak in."""
    rng = np.random.default_rng(2)
    for trans_a, trans_b in [(False, False), (True, False), (False, True)]:
        m, n, k = 3, 11, 13
        A = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
        B = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
        lda, ldb = A.shape[1] + 1, B.shape[1] + 1
        A_pad = np.full((A.shape[0], lda), np.nan, np.float32)
        A_pad[:, :-1] = A
        B_pad = np.full((B.shape[0], ldb), np.nan, np.float32)
        B_pad[:, :-1] = B
        C = np.full((m, n + 1), np.nan, np.float32)
        _gemm(trans_a, trans_b, m, n, k, 1.0, A_pad, 0, lda, B_pad, 0, ldb, 0.0, C, 0, n + 1)
        expected = (A.T if trans_a else A).astype(np.float64) @ (
            B.T if trans_b else B).astype(np.float64)
        np.testing.assert_allclose(C[:, :-1], expected, rtol=1e-5, atol=1e-5)
        assert np.isnan(C[:, -1]).all()  # past the block: untouched


def test_nan_and_inf_in_the_operands_propagate():
    """No fast-math: a NaN or inf in an operand reaches the result (divergence is seen)."""
    for trans_a, trans_b, value in itertools.product([False, True], [False, True], [np.nan, np.inf]):
        if trans_a and trans_b:
            continue
        A = np.ones((10, 10), np.float32)
        A[3, 4] = value
        B = np.ones((10, 10), np.float32)
        C = np.zeros((10, 10), np.float32)
        _gemm(trans_a, trans_b, 10, 10, 10, 1.0, A, 0, 10, B, 0, 10, 0.0, C, 0, 10)
        assert not np.isfinite(C).all()


def test_shapes_cover_both_paths():
    """A guard on the tests above: their shapes reach both the loops and BLAS (it fails when
    SMALL_WEIGHTS or SHAPES change so that one path goes untested)."""
    sizes = [(m if ta else k) * n for (m, n, k) in SHAPES for ta in (False, True)]
    assert min(sizes) <= SMALL_WEIGHTS < max(sizes)


@njit
def _separate_passes(m, n, k, A, a_off, lda, W, w_off, ldw, b_off, Z, z_off, ldz, R, r_off,
                     relu):
    gemm(False, False, m, n, k, 1.0, A, a_off, lda, W, w_off, ldw, 0.0, Z, z_off, ldz)
    for i in range(m):
        for j in range(n):
            Z[z_off + i * ldz + j] += W[b_off + j]
            if relu:
                z = Z[z_off + i * ldz + j]
                R[r_off + i * ldz + j] = z if z > 0 else 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("m,n,k", [s for s in SHAPES if s[0] > 0] + [(0, 40, 40), (6, 2, 40)])
def test_a_fused_layer_has_the_bits_of_its_separate_passes(m, n, k, relu, dtype):
    """small_affine (Z = A W + b, R = relu(Z) in the product's pass) gives exactly the bits of
    the product, then the bias add, then relu, writes nothing outside its blocks (R not at all
    without relu), keeps NaN in Z and maps it to 0 in R as relu does; and declines, writing
    nothing, the layers whose product is not one of its loops (one output, large weights)."""
    rng = np.random.default_rng(m * 10000 + n * 100 + k + relu)
    pad = 3
    A = rng.standard_normal(pad + m * (k + pad)).astype(dtype)
    W = rng.standard_normal(pad + k * (n + pad) + n).astype(dtype)
    b_off = pad + k * (n + pad)
    if m:
        A[pad] = np.nan  # row 0 of Z is NaN, and relu of it 0
    Z, R = (rng.standard_normal(pad + m * (n + pad) + pad).astype(dtype) for _ in range(2))
    Z_ref, R_ref = Z.copy(), R.copy()
    args = (m, n, k, A, pad, k + pad, W, pad, n + pad, b_off)
    fused = small_affine(*args, Z, pad, n + pad, R, pad, relu)
    runs_as_loops = m > 0 and k > 0 and n > 1 and k * n <= SMALL_WEIGHTS
    assert fused == runs_as_loops
    if not fused:
        np.testing.assert_array_equal(Z, Z_ref)
        np.testing.assert_array_equal(R, R_ref)
        return
    _separate_passes(*args, Z_ref, pad, n + pad, R_ref, pad, relu)
    np.testing.assert_array_equal(Z.view(np.uint8), Z_ref.view(np.uint8))
    np.testing.assert_array_equal(R.view(np.uint8), R_ref.view(np.uint8))
    assert np.isnan(Z[pad:pad + n]).all() and (not relu or (R[pad:pad + n] == 0).all())


@njit
def _backprop_separately(m, n, k, A, a_off, lda, W, w_off, ldw, C, c_off, ldc, Z, z_off, G,
                         g_off):
    gemm(False, True, m, n, k, 1.0, A, a_off, lda, W, w_off, ldw, 0.0, C, c_off, ldc)
    for i in range(m):
        for j in range(n):
            c = C[c_off + i * ldc + j]
            G[g_off + i * ldc + j] = c if Z[z_off + i * ldc + j] > 0 else 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,n,k", [s for s in SHAPES if s[0] > 0] + [(0, 40, 40), (6, 40, 1)])
def test_a_fused_relu_backprop_has_the_bits_of_its_separate_passes(m, n, k, dtype):
    """small_backprop_relu (C = A W^T and relu's derivative G = C where Z > 0, in the product's
    pass) gives exactly the bits of the product then the derivative, in both of its layouts
    (W^T one row, k = 1; W transposed on the stack), with NaN in Z and C gated as relu does;
    writes nothing outside its blocks; and declines, writing nothing, where gemm would run
    another loop (one column: dot products) or BLAS."""
    rng = np.random.default_rng(m * 10000 + n * 100 + k + 7)
    pad = 3
    ldw = k  # W stored (n, k), as theta holds a layer's weights: ldw = 1 when k = 1
    A = rng.standard_normal(pad + m * (k + pad)).astype(dtype)
    W = rng.standard_normal(pad + n * ldw + pad).astype(dtype)
    ldc = n + pad
    Z = rng.standard_normal(pad + m * ldc + pad).astype(dtype)
    if m:
        A[pad] = np.nan  # row 0 of C is NaN; the gate keeps it where Z > 0
    if m > 1:
        Z[pad + ldc] = np.nan  # gates an entry of row 1 to 0
    C, G = (rng.standard_normal(pad + m * ldc + pad).astype(dtype) for _ in range(2))
    C_ref, G_ref = C.copy(), G.copy()
    args = (m, n, k, A, pad, k + pad, W, pad, ldw)
    fused = small_backprop_relu(*args, C, pad, ldc, Z, pad, G, pad)
    assert fused == (m > 0 and k > 0 and n > 1 and k * n <= SMALL_WEIGHTS)
    if not fused:
        np.testing.assert_array_equal(C, C_ref)
        np.testing.assert_array_equal(G, G_ref)
        return
    _backprop_separately(*args, C_ref, pad, ldc, Z, pad, G_ref, pad)
    np.testing.assert_array_equal(C.view(np.uint8), C_ref.view(np.uint8))
    np.testing.assert_array_equal(G.view(np.uint8), G_ref.view(np.uint8))
    assert np.isnan(C[pad:pad + n]).all() and (m < 2 or G[pad + ldc] == 0)


# Run in a child process for one choice of the products' vectors (``_small._wide_products``, which
# follows the CPU numba compiles for): every product of SHAPES in each layout and dtype, with beta
# 0 and 1, and the fused layers, on the same operands; the results' bytes go to one .npz file.
_PRODUCTS_OF_ONE_CHOICE = r"""
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import test_products as t
from skmaml._kernels._small import _wide_products
out = {"wide": np.array(_wide_products())}
rng = np.random.default_rng(5)
for dtype in (np.float32, np.float64):
    for m, n, k in t.SHAPES:
        for trans_a, trans_b in ((False, False), (True, False), (False, True)):
            for beta in (0.0, 1.0):
                C = t._product(trans_a, trans_b, m, n, k, dtype, beta, rng)[0]
                out["p%s%s%s%s%s" % (np.dtype(dtype), (m, n, k), trans_a, trans_b, beta)] = C
        if m and k and n > 1 and k * n <= t.SMALL_WEIGHTS:
            pad = 3
            A = rng.standard_normal(pad + m * (k + pad)).astype(dtype)
            W = rng.standard_normal(pad + k * (n + pad) + n).astype(dtype)
            Z, R = np.zeros(pad + m * (n + pad) + pad, dtype), np.zeros(pad + m * (n + pad) + pad, dtype)
            t.small_affine(m, n, k, A, pad, k + pad, W, pad, n + pad, pad + k * (n + pad), Z, pad,
                           n + pad, R, pad, True)
            C, G = np.zeros_like(Z), np.zeros_like(Z)
            t.small_backprop_relu(m, n, k, A, pad, k + pad, W, pad, k, C, pad, n + pad, Z, pad,
                                  G, pad)
            out["l%s%s" % (np.dtype(dtype), (m, n, k))] = np.concatenate([Z, R, C, G])
np.savez(sys.argv[2], **{key: value.view(np.uint8) if value.dtype.kind == "f" else value
                        for key, value in out.items()})
"""


def test_wide_and_narrow_products_have_the_same_bits(tmp_path):
    """On an AVX-512 machine, the products' loops compiled with 512-bit vectors and four rows per
    pass (for a CPU of ``_small._WIDE_CPUS``) and with 256-bit vectors and two rows (any other
    CPU, same instruction set) give the same bytes: every product of SHAPES in every layout, and
    the fused layers. (The choice is a CPU's, so a fit's bits do not depend on it.)"""
    import os
    import subprocess
    import sys

    import llvmlite.binding as llvm

    from skmaml._kernels._small import _WIDE_CPUS

    features = llvm.get_host_cpu_features().flatten()
    if "+avx512f" not in features.split(","):
        pytest.skip("this CPU has no AVX-512: the wide loops cannot run here")
    children = {}
    for label, cpu in (("wide", sorted(_WIDE_CPUS)[0]), ("narrow", "x86-64-v4")):
        env = dict(os.environ, NUMBA_CPU_NAME=cpu, NUMBA_CPU_FEATURES=features,
                   NUMBA_CACHE_DIR=str(tmp_path / f"cache_{label}"))
        children[label] = subprocess.Popen(
            [sys.executable, "-c", _PRODUCTS_OF_ONE_CHOICE, os.path.dirname(__file__),
             str(tmp_path / f"{label}.npz")], env=env, stderr=subprocess.PIPE, text=True)
    for label, child in children.items():
        _, err = child.communicate(timeout=600)
        assert child.returncode == 0, f"{label}: {err[-3000:]}"
    wide, narrow = np.load(tmp_path / "wide.npz"), np.load(tmp_path / "narrow.npz")
    assert bool(wide["wide"]) and not bool(narrow["wide"])
    assert sorted(wide.files) == sorted(narrow.files) and len(wide.files) > 200
    for key in wide.files:
        if key != "wide":
            np.testing.assert_array_equal(wide[key], narrow[key], err_msg=key)
