"""Tests of the borrowed views (skmaml._kernels._borrow) and of the kernels that run on them."""

import numpy as np
import pytest
from numba import config, njit, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

from skmaml._kernels import _maml
from skmaml._kernels._borrow import borrowed, keep_alive
from skmaml._kernels._config import RELU
from skmaml._kernels._rules import plain_rule

# What the views are is a property of compiled code; in a NUMBA_DISABLE_JIT run (coverage) the
# kernels run as Python on the arrays themselves, which the last test still checks.
compiled_only = pytest.mark.skipif(config.DISABLE_JIT, reason="borrowed views exist in compiled code")


@intrinsic
def _has_meminfo(typingctx, arr):
    """Whether the array ``arr`` holds a reference to its memory (a non-null meminfo)."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, signature, args):
        meminfo = context.make_array(arr)(context, builder, value=args[0]).meminfo
        return builder.icmp_unsigned("!=", meminfo, cgutils.get_null_value(meminfo.type))

    return types.boolean(arr), codegen


@njit
def _views(a):
    """The meminfo test on ``a``, its borrowed view, and a row and a slice of that view; and the
    view's address, shape and strides."""
    b = borrowed(a)
    row = b[1]
    part = b[1:, ::2]
    flags = (_has_meminfo(a), _has_meminfo(b), _has_meminfo(row), _has_meminfo(part))
    return flags, b.ctypes.data, b.shape, b.strides


@njit
def _write_through(a):
    b = borrowed(a)
    b[0, 0] = 7.0
    b[2:, 1] += 1.0
    keep_alive(a)


@compiled_only
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_borrowed_view_is_the_same_array_with_no_reference(layout):
    base = np.arange(48.0).reshape(6, 8)
    a = {"C": base, "F": np.asfortranarray(base), "strided": base[::2, 1::3]}[layout]
    flags, address, shape, strides = _views(a)
    # The array itself counts its memory; the borrowed view and every view of it do not.
    assert flags == (True, False, False, False)
    assert address == a.ctypes.data
    assert shape == a.shape and strides == a.strides


@compiled_only
def test_borrowed_view_writes_to_the_array():
    a = np.zeros((4, 3))
    _write_through(a)
    expected = np.zeros((4, 3))
    expected[0, 0] = 7.0
    expected[2:, 1] = 1.0
    np.testing.assert_array_equal(a, expected)


@compiled_only
def test_borrowed_rejects_what_is_not_an_array():
    @njit
    def borrow_a_number(x):
        return borrowed(x)

    with pytest.raises(TypingError):
        borrow_a_number(1.0)


@pytest.mark.parametrize("first_order", [True, False])
def test_kernels_own_workspace_matches_the_callers(first_order):
    # meta_batch_grad allocates its workspace when given none and keeps it alive while its
    # borrowed views are in use; the same batch with the caller's workspace, and repeated calls
    # with allocations in between (which would reuse freed memory), give the same bits.
    rng = np.random.default_rng(3)
    layer_sizes = np.array([2, 6, 5, 1], dtype=np.int64)
    n_par = sum((layer_sizes[i] + 1) * layer_sizes[i + 1] for i in range(3))
    theta = rng.normal(size=n_par) * 0.5
    s_off = np.array([0, 4, 9, 12], dtype=np.int64)
    q_off = np.array([0, 3, 7, 10], dtype=np.int64)
    Xs, ys = rng.normal(size=(12, 2)), rng.normal(size=(12, 1))
    Xq, yq = rng.normal(size=(10, 2)), rng.normal(size=(10, 1))
    rule = plain_rule(0.1, np.float64)
    args = (theta, layer_sizes, RELU, Xs, ys, s_off, Xq, yq, q_off, rule, 3, first_order)

    def run(workspace):
        grad, losses = np.full(n_par, np.nan), np.full(3, np.nan)
        loss = _maml.meta_batch_grad(*args, grad, losses, workspace)
        return loss, grad, losses

    size = _maml.workspace_size(layer_sizes, s_off, q_off, 3, first_order, rule)
    expected = run(np.full(size, np.nan))
    for _ in range(20):
        got = run(None)
        _ = [np.full(size, np.nan) for _ in range(5)]  # allocations between calls
        assert got[0] == expected[0]
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_array_equal(got[2], expected[2])

    support_losses, query_losses = np.full((3, 3), np.nan), np.full(3, np.nan)
    _maml.adaptation_losses(theta, layer_sizes, RELU, Xs, ys, s_off, Xq, yq, q_off, rule, 3,
                            support_losses, query_losses)
    np.testing.assert_array_equal(query_losses, expected[2])
