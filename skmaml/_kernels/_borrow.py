"""Borrowed array views: views that hold no reference to their memory.

Every array in numba code carries a pointer to the reference count of its memory (its
"meminfo"). numba increments and decrements that count, each an atomic read-modify-write,
whenever a view is taken, an array is put in a tuple, or it is passed to or held by a compiled
function; its pruning pass removes the pairs only inside functions that call no other compiled
function. The meta-gradient's passes over a task's rows take views and call each other, so the
count of the workspace, of θ and of the rows went up and down dozens of times per task and inner
step: 10% of the samples of an N = 5 first-order meta-iteration in one profile on a Zen 1 core
(``benchmarks/perf_attribution.py``).

A view from :func:`borrowed` has the same data pointer, shape and strides, and a null meminfo,
which numba's increment and decrement test for and skip; a view of a borrowed view is borrowed
too. So a kernel that borrows its arrays once at its top runs its loops with no reference
counting at all, on the same memory: the same arithmetic, the same bits.

The one rule: a borrowed view must not outlive the array it borrows. Borrow only the
function's arguments (its caller holds them until it returns), or arrays the function made
itself and names in a :func:`keep_alive` call after the views' last use (numba releases a
variable after its last use, not at the end of the function). A compiled function may return
views it borrowed to a caller that holds their arrays (:func:`._mlp.borrowed_network` does);
never keep one past its array's life, or hand one to Python.
"""

from numba import config, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._config import JIT_OPTIONS


@intrinsic
def borrowed(typingctx, arr):
    """A view of the array ``arr`` with the same type, data, shape and strides and no
    reference to its memory (see the module docstring for when that is safe)."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, signature, args):
        source = context.make_array(arr)(context, builder, value=args[0])
        view = context.make_array(arr)(context, builder)
        for field in ("data", "shape", "strides", "itemsize", "nitems"):
            setattr(view, field, getattr(source, field))
        view.meminfo = cgutils.get_null_value(view.meminfo.type)
        view.parent = cgutils.get_null_value(view.parent.type)
        return view._getvalue()  # owns nothing, so nothing to count

    return arr(arr), codegen


@njit(**JIT_OPTIONS)
def keep_alive(*owners):
    """Does nothing: a call names ``owners`` so that numba keeps them until this point, past
    the last use of the views borrowed from them."""


if config.DISABLE_JIT:
    # With NUMBA_DISABLE_JIT=1 (coverage runs of the kernel bodies) the intrinsic cannot run; in
    # Python the array itself is the view, held by Python's own reference counts.
    def borrowed(arr):  # noqa: D103 - same contract as the intrinsic
        return arr
