"""Matrix products for small layers: explicit SIMD loops generated as LLVM IR.

A MAML meta-iteration is thousands of products whose weight matrix is a few dozen rows and columns
(``10 x 40 @ 40 x 40`` for the sinusoid network) on a handful of rows. A BLAS call spends most of
such a product on its fixed cost (argument checks, packing the operands into its block layout)
unless the library has a small-matrix path for the CPU: OpenBLAS has one for its SkylakeX kernels
(AVX-512) but not for Haswell or Zen (AVX2), where ``10 x 40 @ 40 x 40`` took 3 times as long
(``benchmarks/profile_meta_step.py``). These loops need no packing and keep their sums in vector
registers:

* :func:`rows_times_matrix` -- ``C (+)= op(A) B`` with ``B`` read by rows: each row of ``C`` (two at
  a time, four on the CPUs of ``_WIDE_CPUS``; up to five vectors of it, the last one masked) is
  accumulated over ``p`` by fused multiply-adds of a broadcast ``A[i, p]`` with row ``p`` of ``B``
  (``A`` may be read transposed);
* :func:`rows_times_transposed` -- ``C (+)= A B^T`` (backpropagation through a layer): ``B^T`` is
  built on the stack, ``W x W`` blocks transposed in registers, then multiplied as above;
* :func:`rows_dot_rows` -- ``C (+)= A b`` for one column ``b``: dot products of rows, vectorised
  along them and reduced by shuffles;
* :func:`rows_times_matrix_plus_bias` and :func:`relu_backprop` -- a layer's ``A W + b`` (and relu
  of it), and backpropagation through a relu layer, with the elementwise work done on the results
  while they are in registers, rounded as the separate passes would round them.

The vectors are 256 bits (8 float32 or 4 float64 lanes): LLVM lowers them to the machine's SIMD
(two 128-bit halves on SSE machines). The products' multiply loops use 512-bit vectors on the
AVX-512 CPUs listed in ``_WIDE_CPUS``, where that measured faster. Multiply-adds are
``llvm.fmuladd`` (one rounding where the CPU fuses them, two where it cannot), and the order of
every sum is fixed by the code alone: an entry of ``C`` is the same function of its row of
``op(A)`` and its column of ``op(B)`` whatever the number of rows of the product, the other
columns or the blocking, so computing a product over one task's rows or over a batch of tasks'
rows gives the same bits.

Callers: :func:`._blas.gemm` chooses between these and BLAS; :func:`._blas.small_affine` and
:func:`._blas.small_backprop_relu` run the fused layers where the product would run as these loops.
"""

import llvmlite.binding as llvm
from llvmlite import ir
from numba import carray, cfunc, config, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._config import JIT_OPTIONS

_I32 = ir.IntType(32)

# Products whose weight matrix (the (k, n) operand of op(A) B or A B^T; the (m, n) result of
# A^T B, a weight gradient) has at most this many entries run as these loops (``_blas.gemm``),
# larger ones through BLAS. Measured on one core (Zen 4; OpenBLAS's SkylakeX and Haswell
# kernels; one run each), float32: the loops took 0.5-0.8 of BLAS's time at 40 x 40 weights on 10 rows with
# SkylakeX kernels (which have a small-matrix path) and 0.25-0.6 with Haswell's; at 64 x 64 BLAS
# was faster with SkylakeX kernels, and at 100 x 100 on 1,000 rows with both. It bounds the
# stack buffer of rows_times_transposed.
SMALL_WEIGHTS = 2048

# Vectors of C per row in one pass of rows_times_matrix; with two rows, 10 accumulators, which
# with the two broadcasts and a row of B fit the 16 vector registers of AVX2. With 512-bit
# vectors and four rows, three (48 float32 columns, 12 accumulators): the sinusoid's 40 columns
# in one pass, with less code to compile than five.
_ROW_VECTORS = 5
_WIDE_ROW_VECTORS = 3

# The CPUs (LLVM's names for them) on which the products' loops use 512-bit vectors and four rows
# of C per pass: AVX-512 cores that execute 512-bit operations at full width and were measured
# faster so. On an AMD EPYC of the Zen 5 generation (znver5), one core, float32, the workload of
# Table 1 of ``benchmarks/bench_meta_step.py``: a meta-iteration took 0.75-0.82 of the time it
# took with 256-bit vectors and two rows (min of 21 blocks, three alternating pairs of runs);
# 512-bit vectors with two rows gained little (six accumulators cannot hide the latency of the
# multiply-adds), and 256-bit vectors with four rows gained at N = 1 only (docs/compiled_core.rst,
# "On a Zen 5 core"). On an Intel Ice Lake Xeon 512-bit vectors with two
# rows were slower; four rows have not been measured there, nor on Zen 4 (which splits a 512-bit
# operation into two halves), so every other CPU keeps 256-bit vectors and two rows. The choice
# follows the CPU numba compiles for (``NUMBA_CPU_NAME``, ``NUMBA_CPU_FEATURES``), which is part
# of the key of numba's cache, and changes no bits: an entry's sum runs over ``p`` in the same
# order whatever the width of the vectors along ``j`` or the rows computed together.
_WIDE_CPUS = frozenset({"znver5"})


def _wide_products():
    """Whether the products' loops use 512-bit vectors and four rows (:data:`_WIDE_CPUS`)."""
    name = config.CPU_NAME or llvm.get_host_cpu_name()
    features = config.CPU_FEATURES
    if features is None:
        features = llvm.get_host_cpu_features().flatten()
    return name in _WIDE_CPUS and "+avx512f" in features.split(",")


class _Codegen:
    """Types, intrinsics and small IR idioms shared by the products (one per call site)."""

    def __init__(self, context, builder, dtype, wide=False):
        """``wide``: the vectors and rows per pass of the products' loops on this CPU
        (:func:`_wide_products`); otherwise 256-bit vectors and two rows (transposes, dot
        products)."""
        self.b = builder
        self.fty = context.get_value_type(dtype)
        wide = wide and _wide_products()
        self.lanes = (512 if wide else 256) // (32 if dtype == types.float32 else 64)
        self.rows = 4 if wide else 2
        self.row_vectors = _WIDE_ROW_VECTORS if wide else _ROW_VECTORS
        self.vty = ir.VectorType(self.fty, self.lanes)
        self.intp = context.get_value_type(types.intp)
        bits = 32 if dtype == types.float32 else 64
        suffix = "v%df%d" % (self.lanes, bits)
        module = builder.module
        vptr = self.vty.as_pointer()
        self.mty = ir.VectorType(ir.IntType(1), self.lanes)
        self.fmuladd = cgutils.get_or_insert_function(
            module, ir.FunctionType(self.vty, [self.vty] * 3), "llvm.fmuladd." + suffix)
        self.masked_load = cgutils.get_or_insert_function(
            module, ir.FunctionType(self.vty, [vptr, _I32, self.mty, self.vty]),
            "llvm.masked.load.%s.p0%s" % (suffix, suffix))
        self.masked_store = cgutils.get_or_insert_function(
            module, ir.FunctionType(ir.VoidType(), [self.vty, vptr, _I32, self.mty]),
            "llvm.masked.store.%s.p0%s" % (suffix, suffix))
        self.zero = ir.Constant(self.vty, [0.0] * self.lanes)

    def const(self, value):
        return ir.Constant(self.intp, value)

    def shuffle(self, x, y, lanes):
        return self.b.shuffle_vector(x, y, ir.Constant(ir.VectorType(_I32, len(lanes)), lanes))

    def _vector_pointer(self, base, offset):
        return self.b.bitcast(self.b.gep(base, [offset]), self.vty.as_pointer())

    def load(self, base, offset, mask=None):
        """The vector at ``base + offset`` (unaligned; lanes off ``mask`` read as 0, not read)."""
        pointer = self._vector_pointer(base, offset)
        if mask is None:
            return self.b.load(pointer, align=1)
        return self.b.call(self.masked_load, [pointer, ir.Constant(_I32, 1), mask, self.zero])

    def store(self, value, base, offset, mask=None):
        pointer = self._vector_pointer(base, offset)
        if mask is None:
            self.b.store(value, pointer, align=1)
        else:
            self.b.call(self.masked_store, [value, pointer, ir.Constant(_I32, 1), mask])

    def splat(self, scalar):
        undef = ir.Constant(self.vty, ir.Undefined)
        return self.shuffle(self.b.insert_element(undef, scalar, ir.Constant(_I32, 0)), undef,
                            [0] * self.lanes)

    def first_lanes(self, count):
        """The mask of lanes ``0 .. count - 1``."""
        ity = ir.VectorType(self.intp, self.lanes)
        undef = ir.Constant(ity, ir.Undefined)
        counts = self.shuffle(self.b.insert_element(undef, count, ir.Constant(_I32, 0)), undef,
                              [0] * self.lanes)
        return self.b.icmp_signed("<", ir.Constant(ity, list(range(self.lanes))), counts)

    def lane_sum(self, vector):
        """The sum of a vector's lanes, by halving: lane l + lane l + W/2, and so on."""
        width = self.lanes
        while width > 1:
            half = width // 2
            vector = self.b.fadd(self.shuffle(vector, vector, list(range(half))),
                                 self.shuffle(vector, vector, list(range(half, width))))
            width = half
        return self.b.extract_element(vector, ir.Constant(_I32, 0))

    def transpose_within_halves(self, rows):
        """The columns of a W x W block from W vectors that hold the 128-bit halves of its rows,
        the halves of rows ``r`` and ``r + W / 2`` in vector ``r`` (first halves, ``r < W / 2``)
        and ``r + W / 2`` (second halves), as :func:`_emit_transpose` loads them: each half is
        transposed as a block of the halves of its vectors, by interleaves of one x86
        instruction each. 8 lanes, per 4 vectors: by single lanes, then by pairs of lanes (8
        shuffles); 4 lanes, per 2 vectors: by single lanes (2)."""
        if self.lanes == 4:
            single = ([0, 4, 2, 6], [1, 5, 3, 7])
            return [self.shuffle(rows[v], rows[v + 1], lanes) for v in (0, 2) for lanes in single]
        single = ([0, 8, 1, 9, 4, 12, 5, 13], [2, 10, 3, 11, 6, 14, 7, 15])
        double = ([0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15])
        columns = []
        for v in (0, 4):
            a, b, c, d = rows[v:v + 4]
            ab = [self.shuffle(a, b, lanes) for lanes in single]
            cd = [self.shuffle(c, d, lanes) for lanes in single]
            for i in range(2):
                columns += [self.shuffle(ab[i], cd[i], lanes) for lanes in double]
        return columns


def _operands(context, builder, signature, args, integer_args, arrays):
    """The integer arguments as intp, and a pointer to each ``(array index, offset index)``."""
    ints = {i: context.cast(builder, args[i], signature.args[i], types.intp)
            for i in integer_args}
    pointers = []
    for i_array, i_offset in arrays:
        array = context.make_array(signature.args[i_array])(context, builder, args[i_array])
        pointers.append(builder.gep(array.data, [ints[i_offset]]))
    return ints, pointers


def _same_float_dtype(*arrays):
    dtype = arrays[-1].dtype
    if dtype in (types.float32, types.float64) and all(a.dtype == dtype for a in arrays):
        return dtype
    return None


def _emit_rows_times_matrix(g, m, n, k, a0, a_row, a_col, b0, ldb, c0, ldc, add_to_c,
                            bias0=None, relu0=None, gate=None):
    """The IR of ``C[i, j] (+)= sum_p a0[i a_row + p a_col] b0[p ldb + j]`` (pointers and intp
    values; ``add_to_c`` an i1). With ``bias0``, each stored sum is ``sum + bias0[j]`` instead
    (``add_to_c`` false), and with ``relu0`` also ``relu0[i ldc + j] = max(that, 0)``: a layer's
    ``Z = A W + b`` and ``relu(Z)`` in the pass that computes the product, rounded as the product,
    then the bias add, then the activation would be. With ``gate = (z0, out0)`` also
    ``out0[i ldc + j] = C[i, j] if z0[i ldc + j] > 0 else 0`` (backpropagation through relu)."""
    b, w = g.b, g.lanes
    full = b.sdiv(n, g.const(w))
    tail = b.sub(n, b.mul(full, g.const(w)))
    has_tail = b.icmp_signed(">", tail, g.const(0))
    tail_mask = g.first_lanes(tail)
    n_vectors = b.add(full, b.zext(has_tail, g.intp))  # per row, the last one maybe masked
    accs = [[cgutils.alloca_once(b, g.vty) for _ in range(g.row_vectors)]
            for _ in range(g.rows)]

    def block(i, n_rows, v0, count, masked):
        """Rows ``i .. i + n_rows - 1``, vectors ``v0 .. v0 + count - 1`` of them."""
        c_rows = [b.gep(c0, [b.mul(b.add(i, g.const(r)), ldc)]) for r in range(n_rows)]
        a_rows = [b.gep(a0, [b.mul(b.add(i, g.const(r)), a_row)]) for r in range(n_rows)]
        offsets = [b.mul(b.add(v0, g.const(v)), g.const(w)) for v in range(count)]
        masks = [tail_mask if masked and v == count - 1 else None for v in range(count)]
        for r in range(n_rows):
            for v in range(count):
                old = g.load(c_rows[r], offsets[v], masks[v])
                b.store(b.select(add_to_c, old, g.zero), accs[r][v])
        with cgutils.for_range(b, k) as loop:
            p = loop.index
            a = [g.splat(b.load(b.gep(a_rows[r], [b.mul(p, a_col)]))) for r in range(n_rows)]
            b_row = b.gep(b0, [b.mul(p, ldb)])
            for v in range(count):
                b_vector = g.load(b_row, offsets[v], masks[v])
                for r in range(n_rows):
                    b.store(b.call(g.fmuladd, [a[r], b_vector, b.load(accs[r][v])]),
                            accs[r][v])
        biases = [None] * count if bias0 is None else [g.load(bias0, offsets[v], masks[v])
                                                        for v in range(count)]
        relu_rows = None if relu0 is None else [
            b.gep(relu0, [b.mul(b.add(i, g.const(r)), ldc)]) for r in range(n_rows)]
        gate_rows = None if gate is None else [
            [b.gep(pointer, [b.mul(b.add(i, g.const(r)), ldc)]) for r in range(n_rows)]
            for pointer in gate]
        for r in range(n_rows):
            for v in range(count):
                value = b.load(accs[r][v])
                if biases[v] is not None:
                    value = b.fadd(value, biases[v])
                g.store(value, c_rows[r], offsets[v], masks[v])
                if relu_rows is not None:  # relu(z) = z if z > 0 else 0, NaN included
                    positive = b.fcmp_ordered(">", value, g.zero)
                    g.store(b.select(positive, value, g.zero), relu_rows[r], offsets[v],
                            masks[v])
                if gate_rows is not None:  # relu'(z) g = g if z > 0 else 0
                    z = g.load(gate_rows[0][r], offsets[v], masks[v])
                    positive = b.fcmp_ordered(">", z, g.zero)
                    g.store(b.select(positive, value, g.zero), gate_rows[1][r], offsets[v],
                            masks[v])

    def rows(i, n_rows):
        # Passes of g.row_vectors unmasked vectors while more remain, then one of the rest.
        passes = b.sdiv(b.sub(n_vectors, g.const(1)), g.const(g.row_vectors))
        with cgutils.for_range(b, passes) as loop:
            block(i, n_rows, b.mul(loop.index, g.const(g.row_vectors)), g.row_vectors, False)
        v0 = b.mul(passes, g.const(g.row_vectors))
        left = b.sub(n_vectors, v0)
        for count in range(1, g.row_vectors + 1):
            this = b.icmp_signed("==", left, g.const(count))
            with b.if_then(b.and_(this, b.not_(has_tail))):
                block(i, n_rows, v0, count, False)
            with b.if_then(b.and_(this, has_tail)):
                block(i, n_rows, v0, count, True)

    with b.if_then(b.icmp_signed(">", n_vectors, g.const(0))):
        # Groups of g.rows rows, then the rest (fewer than g.rows) in blocks of half as many
        # rows, a quarter, ..., one: e.g. 3 = 2 + 1.
        groups = b.sdiv(m, g.const(g.rows))
        with cgutils.for_range(b, groups) as loop:
            rows(b.mul(loop.index, g.const(g.rows)), g.rows)
        done = b.mul(groups, g.const(g.rows))
        size = g.rows // 2
        while size >= 1:
            fits = b.icmp_signed(">=", b.sub(m, done), g.const(size))
            with b.if_then(fits):
                rows(done, size)
            done = b.select(fits, b.add(done, g.const(size)), done)
            size //= 2


def _emit_transpose(g, n, k, b0, ldb, t0):
    """The IR of ``t0[p n + j] = b0[j ldb + p]`` for ``j < n, p < k``: blocks of W x W entries
    transposed in registers, the edges one entry at a time. The first stage of the transpose,
    which swaps the 128-bit halves of row pairs, is done by the loads: each vector is loaded as
    two halves, one from each row of the pair (an insert from memory). As a shuffle across the
    halves of 256-bit registers it was slow on Zen 1 (``vperm2f128``, 8 micro-ops there); the
    stages left stay within the halves."""
    b, w = g.b, g.lanes
    half = w // 2
    half_pointer = ir.VectorType(g.fty, half).as_pointer()
    row_blocks, col_blocks = b.sdiv(n, g.const(w)), b.sdiv(k, g.const(w))

    def load_half(row, column):
        pointer = b.gep(b0, [b.add(b.mul(row, ldb), column)])
        return b.load(b.bitcast(pointer, half_pointer), align=1)

    with cgutils.for_range(b, row_blocks) as j_loop:
        j0 = b.mul(j_loop.index, g.const(w))
        with cgutils.for_range(b, col_blocks) as p_loop:
            p0 = b.mul(p_loop.index, g.const(w))
            # After the first stage, vector r < W / 2 holds the first halves of rows r and
            # r + W / 2, and vector r + W / 2 their second halves.
            rows = [None] * w
            for r in range(half):
                top, bottom = b.add(j0, g.const(r)), b.add(j0, g.const(r + half))
                for v, column in ((r, p0), (r + half, b.add(p0, g.const(half)))):
                    rows[v] = g.shuffle(load_half(top, column), load_half(bottom, column),
                                        list(range(w)))
            for c, column in enumerate(g.transpose_within_halves(rows)):
                g.store(column, t0, b.add(b.mul(b.add(p0, g.const(c)), n), j0))

    def copy(j, p):
        value = b.load(b.gep(b0, [b.add(b.mul(j, ldb), p)]))
        b.store(value, b.gep(t0, [b.add(b.mul(p, n), j)]))

    j_end, p_end = b.mul(row_blocks, g.const(w)), b.mul(col_blocks, g.const(w))
    with cgutils.for_range(b, n) as j_loop:  # the last k mod W columns of B, every row
        with cgutils.for_range_slice(b, p_end, k, g.const(1)) as (p, _):
            copy(j_loop.index, p)
    with cgutils.for_range_slice(b, j_end, n, g.const(1)) as (j, _):  # the last rows, the rest
        with cgutils.for_range(b, p_end) as p_loop:
            copy(j, p_loop.index)


@intrinsic
def rows_times_matrix(typingctx, m, n, k, A, a_off, a_row, a_col, B, b_off, ldb, C, c_off, ldc,
                      accumulate):
    """``C[i, j] (+)= sum_p A[a_off + i a_row + p a_col] B[b_off + p ldb + j]`` for the
    ``(m, n)`` block of ``C`` at ``c_off`` (row stride ``ldc``); ``accumulate`` adds to ``C``
    instead of overwriting it. ``op(A)`` is ``A`` with ``(a_row, a_col) = (lda, 1)``, ``A^T`` with
    ``(1, lda)``. Each sum runs over ``p = 0 .. k-1`` in order, by fused multiply-adds."""
    dtype = _same_float_dtype(A, B, C)
    if dtype is None:
        return None
    sig = types.void(m, n, k, A, a_off, a_row, a_col, B, b_off, ldb, C, c_off, ldc, accumulate)

    def codegen(context, builder, signature, args):
        g = _Codegen(context, builder, dtype, wide=True)
        ints, (a0, b0, c0) = _operands(context, builder, signature, args,
                                       (0, 1, 2, 4, 5, 6, 8, 9, 11, 12), ((3, 4), (7, 8), (10, 11)))
        add_to_c = context.cast(builder, args[13], signature.args[13], types.boolean)
        _emit_rows_times_matrix(g, ints[0], ints[1], ints[2], a0, ints[5], ints[6], b0, ints[9],
                                c0, ints[12], add_to_c)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def rows_times_matrix_plus_bias(typingctx, m, n, k, A, a_off, lda, W, w_off, ldw, b_off, Z, z_off,
                                ldz, R, r_off, relu):
    """A layer: ``Z = A W + b`` for the ``(m, n)`` block of ``Z`` at ``z_off`` (``A`` row-major
    with row stride ``lda``, ``W`` the ``(k, n)`` block at ``w_off``, ``b`` the ``n`` entries of
    ``W``'s array at ``b_off``) and, with ``relu``, ``R = relu(Z)`` for the block of ``R`` at
    ``r_off`` (row stride ``ldz``): the same bits as :func:`rows_times_matrix`, then adding ``b``,
    then the activation."""
    dtype = _same_float_dtype(A, W, Z, R)
    if dtype is None:
        return None
    sig = types.void(m, n, k, A, a_off, lda, W, w_off, ldw, b_off, Z, z_off, ldz, R, r_off, relu)

    def codegen(context, builder, signature, args):
        g = _Codegen(context, builder, dtype, wide=True)
        ints, (a0, w0, bias0, z0, r0) = _operands(
            context, builder, signature, args, (0, 1, 2, 4, 5, 7, 8, 9, 11, 12, 14),
            ((3, 4), (6, 7), (6, 9), (10, 11), (13, 14)))
        relu = context.cast(builder, args[15], signature.args[15], types.boolean)
        no = ir.Constant(ir.IntType(1), 0)
        with builder.if_else(relu) as (with_relu, without):
            with with_relu:
                _emit_rows_times_matrix(g, ints[0], ints[1], ints[2], a0, ints[5], g.const(1),
                                        w0, ints[8], z0, ints[12], no, bias0, r0)
            with without:
                _emit_rows_times_matrix(g, ints[0], ints[1], ints[2], a0, ints[5], g.const(1),
                                        w0, ints[8], z0, ints[12], no, bias0)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def rows_times_transposed(typingctx, m, n, k, A, a_off, lda, B, b_off, ldb, C, c_off, ldc,
                          accumulate):
    """``C (+)= A B^T`` (``B`` stored ``(n, k)``, ``n k <= SMALL_WEIGHTS``): ``B^T`` is written
    to a buffer on the stack, then multiplied as :func:`rows_times_matrix` does (the same sums,
    in the same order, as the product with a stored ``B^T``)."""
    dtype = _same_float_dtype(A, B, C)
    if dtype is None:
        return None
    sig = types.void(m, n, k, A, a_off, lda, B, b_off, ldb, C, c_off, ldc, accumulate)

    def codegen(context, builder, signature, args):
        g = _Codegen(context, builder, dtype)
        ints, (a0, b0, c0) = _operands(context, builder, signature, args,
                                       (0, 1, 2, 4, 5, 7, 8, 10, 11), ((3, 4), (6, 7), (9, 10)))
        add_to_c = context.cast(builder, args[12], signature.args[12], types.boolean)
        n, k = ints[1], ints[2]
        with builder.goto_entry_block():
            transposed = builder.alloca(g.fty, size=g.const(SMALL_WEIGHTS))
        _emit_transpose(g, n, k, b0, ints[8], transposed)
        gw = _Codegen(context, builder, dtype, wide=True)
        _emit_rows_times_matrix(gw, ints[0], n, k, a0, ints[5], g.const(1), transposed, n, c0,
                                ints[11], add_to_c)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def rows_dot_rows(typingctx, m, n, k, A, a_off, lda, B, b_off, ldb, C, c_off, ldc, accumulate):
    """``C[i, j] (+)= sum_p A[a_off + i lda + p] B[b_off + j ldb + p]`` for the ``(m, n)`` block of
    ``C`` at ``c_off``, one dot product at a time (two rows of ``A`` per pass over a row of
    ``B``): lane ``l`` of a vector accumulates the ``p = l (mod W)`` terms in order by fused
    multiply-adds (the last ``k mod W`` from a masked load), then the lanes are summed by halving.
    For ``A b`` (one column); :func:`rows_times_transposed` is faster for more."""
    dtype = _same_float_dtype(A, B, C)
    if dtype is None:
        return None
    sig = types.void(m, n, k, A, a_off, lda, B, b_off, ldb, C, c_off, ldc, accumulate)

    def codegen(context, builder, signature, args):
        g, b = _Codegen(context, builder, dtype), builder
        ints, (a0, b0, c0) = _operands(context, builder, signature, args,
                                       (0, 1, 2, 4, 5, 7, 8, 10, 11), ((3, 4), (6, 7), (9, 10)))
        m, n, k = ints[0], ints[1], ints[2]
        lda, ldb, ldc = ints[5], ints[8], ints[11]
        add_to_c = context.cast(builder, args[12], signature.args[12], types.boolean)
        w = g.lanes
        full = b.sdiv(k, g.const(w))
        tail = b.sub(k, b.mul(full, g.const(w)))
        has_tail = b.icmp_signed(">", tail, g.const(0))
        tail_mask = g.first_lanes(tail)
        accs = [cgutils.alloca_once(b, g.vty) for _ in range(2)]

        def entries(i, n_rows, j):
            a_rows = [b.gep(a0, [b.mul(b.add(i, g.const(r)), lda)]) for r in range(n_rows)]
            b_row = b.gep(b0, [b.mul(j, ldb)])
            for r in range(n_rows):
                b.store(g.zero, accs[r])

            def terms(p, mask):
                b_vector = g.load(b_row, p, mask)
                for r in range(n_rows):
                    a_vector = g.load(a_rows[r], p, mask)
                    b.store(b.call(g.fmuladd, [a_vector, b_vector, b.load(accs[r])]), accs[r])

            with cgutils.for_range(b, full) as loop:
                terms(b.mul(loop.index, g.const(w)), None)
            with b.if_then(has_tail):
                terms(b.mul(full, g.const(w)), tail_mask)
            for r in range(n_rows):
                pointer = b.gep(c0, [b.add(b.mul(b.add(i, g.const(r)), ldc), j)])
                total = g.lane_sum(b.load(accs[r]))
                b.store(b.select(add_to_c, b.fadd(b.load(pointer), total), total), pointer)

        def rows(i, n_rows):
            with cgutils.for_range(b, n) as loop:
                entries(i, n_rows, loop.index)

        pairs = b.sdiv(m, g.const(2))
        with cgutils.for_range(b, pairs) as loop:
            rows(b.mul(loop.index, g.const(2)), 2)
        with b.if_then(b.icmp_signed("!=", b.mul(pairs, g.const(2)), m)):
            rows(b.sub(m, g.const(1)), 1)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def relu_backprop(typingctx, m, n, k, A, a_off, lda, B, b_off, ldb, C, c_off, ldc, Z, z_off, G,
                  g_off):
    """Backpropagation through a small relu layer in one pass: ``C = A B^T`` (``B`` stored
    ``(n, k)``: ``dLoss/dA`` of the layer below from ``dLoss/dZ`` of this one) and
    ``G = C if Z > 0 else 0`` (``dLoss/dZ`` below), ``C``, ``Z`` and ``G`` blocks of row stride
    ``ldc``: the bits of :func:`_small_product_body` then relu's derivative. ``A B^T`` runs as
    ``A`` times the transpose of ``B`` built on the stack, or for ``k = 1`` (``B^T`` one
    contiguous row, ``ldb = 1``) as ``A`` times that row; ``n = 1`` is not handled (dot
    products of rows)."""
    dtype = _same_float_dtype(A, B, C, Z, G)
    if dtype is None:
        return None
    sig = types.void(m, n, k, A, a_off, lda, B, b_off, ldb, C, c_off, ldc, Z, z_off, G, g_off)

    def codegen(context, builder, signature, args):
        g = _Codegen(context, builder, dtype)
        ints, (a0, b0, c0, z0, g0) = _operands(
            context, builder, signature, args, (0, 1, 2, 4, 5, 7, 8, 10, 11, 13, 15),
            ((3, 4), (6, 7), (9, 10), (12, 13), (14, 15)))
        m, n, k, lda, ldb, ldc = ints[0], ints[1], ints[2], ints[5], ints[8], ints[11]
        gw = _Codegen(context, builder, dtype, wide=True)
        no = ir.Constant(ir.IntType(1), 0)
        one_row = builder.and_(builder.icmp_signed("==", k, g.const(1)),
                               builder.icmp_signed("==", ldb, g.const(1)))
        with builder.if_else(one_row) as (row, transposed):
            with row:
                _emit_rows_times_matrix(gw, m, n, k, a0, lda, g.const(1), b0, g.const(1), c0, ldc,
                                        no, gate=(z0, g0))
            with transposed:
                with builder.goto_entry_block():
                    buffer = builder.alloca(g.fty, size=g.const(SMALL_WEIGHTS))
                _emit_transpose(g, n, k, b0, ldb, buffer)
                _emit_rows_times_matrix(gw, m, n, k, a0, lda, g.const(1), buffer, n, c0, ldc, no,
                                        gate=(z0, g0))
        return context.get_dummy_value()

    return sig, codegen


# --------------------------------------------------------------------------------------------------
# One compiled entry point per dtype
# --------------------------------------------------------------------------------------------------
# The loops above are a lot of IR. Emitted into every caller (gemm is called with two dozen
# combinations of array types, and LLVM inlines what it is given), they made a first compile
# two and a half times as long. Instead they are compiled once per dtype into a C-callable function
# (cached like every kernel) whose address is registered with LLVM under a fixed name, and
# callers emit a call to that name, as they call BLAS's numba_xxgemm: resolved when the code is
# loaded, so the callers stay cacheable. The fused layers' loops have entry points of their own.

_ENTRY_NAMES = {types.float32: "skmaml_small_product_f32", types.float64: "skmaml_small_product_f64"}
_LAYER_ENTRY_NAMES = {types.float32: "skmaml_small_layer_f32",
                      types.float64: "skmaml_small_layer_f64"}
_BACKPROP_ENTRY_NAMES = {types.float32: "skmaml_small_relu_backprop_f32",
                         types.float64: "skmaml_small_relu_backprop_f64"}


def _small_product_body(trans_a, trans_b, m, n, k, A, a_off, lda, B, b_off, ldb, accumulate, C,
                        c_off, ldc):
    """``C (+)= op(A) op(B)`` by the loops above (not both transposed; ``k >= 1``; the weight
    matrix of at most ``SMALL_WEIGHTS`` entries). A product with one column of ``op(B)`` or one
    inner dimension runs in the layout whose loop is vectorised along contiguous memory: ``A b``
    as dot products of rows, ``A^T b`` as ``b^T A``, an outer product ``a b^T`` as ``a`` times
    the row ``b^T``; ``A B^T`` otherwise as ``A`` times the transpose of ``B``."""
    if trans_b:
        if k == 1 and ldb == 1:  # B^T is one contiguous row
            rows_times_matrix(m, n, 1, A, a_off, lda, 1, B, b_off, 1, C, c_off, ldc, accumulate)
        elif n == 1:  # B is one row: dot products of A's rows with it
            rows_dot_rows(m, 1, k, A, a_off, lda, B, b_off, ldb, C, c_off, ldc, accumulate)
        else:
            rows_times_transposed(m, n, k, A, a_off, lda, B, b_off, ldb, C, c_off, ldc,
                                  accumulate)
    elif n == 1 and ldb == 1 and ldc == 1:  # one contiguous column b, and of C
        if trans_a:  # C^T = b^T A, A stored (k, m)
            rows_times_matrix(1, m, k, B, b_off, 0, 1, A, a_off, lda, C, c_off, 0, accumulate)
        else:  # dot products of A's rows with b
            rows_dot_rows(m, 1, k, A, a_off, lda, B, b_off, k, C, c_off, 1, accumulate)
    elif trans_a:
        rows_times_matrix(m, n, k, A, a_off, 1, lda, B, b_off, ldb, C, c_off, ldc, accumulate)
    else:
        rows_times_matrix(m, n, k, A, a_off, lda, 1, B, b_off, ldb, C, c_off, ldc, accumulate)


def _entry(trans_a, trans_b, m, n, k, a, a_off, lda, b, b_off, ldb, accumulate, c, c_off, ldc):
    """The C-callable entry point: arrays over the raw pointers (their length is not used: the
    loops index by offsets)."""
    _small_product_body(trans_a != 0, trans_b != 0, m, n, k, carray(a, 1), a_off, lda,
                        carray(b, 1), b_off, ldb, accumulate != 0, carray(c, 1), c_off, ldc)


def _layer_entry(m, n, k, a, a_off, lda, w, w_off, ldw, b_off, z, z_off, ldz, r, r_off, relu):
    """The C-callable entry point of :func:`rows_times_matrix_plus_bias` (as :func:`_entry`)."""
    rows_times_matrix_plus_bias(m, n, k, carray(a, 1), a_off, lda, carray(w, 1), w_off, ldw,
                                b_off, carray(z, 1), z_off, ldz, carray(r, 1), r_off, relu != 0)


def _backprop_entry(m, n, k, a, a_off, lda, b, b_off, ldb, c, c_off, ldc, z, z_off, g, g_off):
    """The C-callable entry point of :func:`relu_backprop` (as :func:`_entry`)."""
    relu_backprop(m, n, k, carray(a, 1), a_off, lda, carray(b, 1), b_off, ldb, carray(c, 1),
                  c_off, ldc, carray(z, 1), z_off, carray(g, 1), g_off)


def _compile_entry(dtype):
    pointer = types.CPointer(dtype)
    i64 = types.int64
    # A cfunc never holds the GIL (nogil is an option of njit's dispatchers only).
    options = {key: value for key, value in JIT_OPTIONS.items() if key != "nogil"}
    product = cfunc(types.void(i64, i64, i64, i64, i64, pointer, i64, i64, pointer, i64, i64,
                               i64, pointer, i64, i64), **options)(_entry)
    llvm.add_symbol(_ENTRY_NAMES[dtype], product.address)
    layer = cfunc(types.void(i64, i64, i64, pointer, i64, i64, pointer, i64, i64, i64, pointer,
                             i64, i64, pointer, i64, i64), **options)(_layer_entry)
    llvm.add_symbol(_LAYER_ENTRY_NAMES[dtype], layer.address)
    backprop = cfunc(types.void(i64, i64, i64, pointer, i64, i64, pointer, i64, i64, pointer, i64,
                                i64, pointer, i64, pointer, i64), **options)(_backprop_entry)
    llvm.add_symbol(_BACKPROP_ENTRY_NAMES[dtype], backprop.address)
    return product, layer, backprop


if not config.DISABLE_JIT:
    from numba import njit as _njit

    # Inlined into the entry point: as a function of its own, each product passed its three
    # arrays through one more call (on Zen 1, 12-15 ns of a 1 x 1 x 1 product's 51, 8-16 of a
    # 10 x 40 x 1 product's 130).
    _small_product_body = _njit(inline="always", **JIT_OPTIONS)(_small_product_body)
    _ENTRIES = {dtype: _compile_entry(dtype) for dtype in _ENTRY_NAMES}


def _call_entry(names, arrays, *args):
    """``(signature, codegen)`` of a call, by name, of the entry point of the arrays' dtype:
    arrays passed as their data pointers, everything else as int64."""
    dtype = _same_float_dtype(*arrays)
    if dtype is None:
        return None
    sig = types.void(*args)

    def codegen(context, builder, signature, values):
        i64 = ir.IntType(64)
        fty = context.get_value_type(dtype).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [fty if isinstance(ty, types.Array) else i64
                                               for ty in signature.args])
        fn = cgutils.get_or_insert_function(builder.module, fnty, names[dtype])
        arguments = []
        for value, ty in zip(values, signature.args):
            if isinstance(ty, types.Array):
                arguments.append(context.make_array(ty)(context, builder, value).data)
            else:
                arguments.append(context.cast(builder, value, ty, types.int64))
        builder.call(fn, arguments)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def small_product(typingctx, trans_a, trans_b, m, n, k, A, a_off, lda, B, b_off, ldb, accumulate,
                  C, c_off, ldc):
    """A call of the compiled entry point of ``C``'s dtype (see above) on the arrays' data."""
    return _call_entry(_ENTRY_NAMES, (A, B, C), trans_a, trans_b, m, n, k, A, a_off, lda, B,
                       b_off, ldb, accumulate, C, c_off, ldc)


@intrinsic
def small_layer(typingctx, m, n, k, A, a_off, lda, W, w_off, ldw, b_off, Z, z_off, ldz, R, r_off,
                relu):
    """A call of the compiled :func:`rows_times_matrix_plus_bias` of ``Z``'s dtype."""
    return _call_entry(_LAYER_ENTRY_NAMES, (A, W, Z, R), m, n, k, A, a_off, lda, W, w_off, ldw,
                       b_off, Z, z_off, ldz, R, r_off, relu)


@intrinsic
def small_relu_backprop(typingctx, m, n, k, A, a_off, lda, B, b_off, ldb, C, c_off, ldc, Z, z_off,
                        G, g_off):
    """A call of the compiled :func:`relu_backprop` of ``C``'s dtype."""
    return _call_entry(_BACKPROP_ENTRY_NAMES, (A, B, C, Z, G), m, n, k, A, a_off, lda, B, b_off,
                       ldb, C, c_off, ldc, Z, z_off, G, g_off)
