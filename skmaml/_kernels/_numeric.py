"""Small numeric helpers shared by the kernels."""

import numpy as np
from numba import njit, types
from numba.extending import overload

from ._config import JIT_OPTIONS


def as_dtype_of(value, arr):
    """``value`` rounded to the dtype of ``arr`` (pure-Python version, used without the JIT)."""
    return arr.dtype.type(value)


@overload(as_dtype_of, jit_options=JIT_OPTIONS)
def as_dtype_of_impl(value, arr):
    if isinstance(arr, types.Array):
        dtype = arr.dtype  # a numba type such as float32; calling it in jit code is a cast

        def impl(value, arr):
            return dtype(value)

        return impl
    return None


@njit(**JIT_OPTIONS)
def all_finite(values):
    """Whether every entry of the 1-D array ``values`` is finite (no temporary mask).

    An and over every entry, with no early exit: LLVM vectorises that reduction, not a loop that
    returns at the first non-finite entry. On one core of a Zen 5, 1,761 float32 entries took
    0.041 us against 0.476 with the early exit (one run: the fastest of 7 blocks of 100,000
    calls), and the
    training loop checks the meta-gradient and the parameters at every meta-iteration."""
    finite = True
    for i in range(values.shape[0]):
        finite &= np.isfinite(values[i])
    return finite


@njit(**JIT_OPTIONS)
def mean_loss(task_losses):
    """Mean of the task losses of a meta-batch, summed in task order in float64: the one
    definition of the loss ``loss_curve_`` records, whether the batch ran as one kernel call or
    in chunks."""
    total = 0.0
    for t in range(task_losses.shape[0]):
        total += task_losses[t]
    return total / task_losses.shape[0]
