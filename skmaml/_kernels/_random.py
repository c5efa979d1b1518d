"""A small seedable random number generator for nogil kernels, with no global state.

Why not ``np.random`` inside numba: numba's ``np.random`` is one hidden stream per thread, seeded
globally. Kernels run in joblib threads over chunks of a meta-batch, so drawing from it would make
results depend on ``n_jobs`` and on which thread ran which task, and seeding it would touch state other
code shares. Instead every stream here is an explicit ``uint64`` state array owned by its caller, and
every episode gets its own stream from a seed the estimator draws up front from ``random_state``.

Generator
---------
State: ``ndarray of shape (4,), uint64``. It is filled from one 64-bit seed by SplitMix64 (so nearby
seeds such as 0, 1, 2 give unrelated streams, and the state is never all zero) and advanced by
xoshiro256** 1.0 (Blackman & Vigna, https://prng.di.unimi.it/), a fast generator with 256 bits of state
that passes BigCrush and PractRand. Only integer operations are involved (and one exact conversion
to float64 in :func:`rng_uniform`), so a seed gives the same numbers on every platform and with or
without the JIT.

All arithmetic is on ``uint64`` values: mixing ``uint64`` with ``int64`` in numba promotes to float64,
so every constant below is a ``np.uint64``. Multiplication and addition wrap modulo 2**64 by design;
they go through :func:`_wrapping_mul` / :func:`_wrapping_add` so that the pure-Python run used for
coverage (``NUMBA_DISABLE_JIT=1``) wraps too instead of emitting NumPy overflow warnings.
"""

import numpy as np
from numba import njit, types
from numba.extending import overload

from ._config import JIT_OPTIONS

_MASK64 = (1 << 64) - 1
_TWO_POW_32 = np.uint64(1 << 32)
_LOW_32_BITS = np.uint64((1 << 32) - 1)
_UINT64_MAX = np.uint64(_MASK64)
# 2**-53: the spacing of float64 values in [0.5, 1); see rng_uniform.
_INV_TWO_POW_53 = 1.0 / 9007199254740992.0

_SPLITMIX_INCREMENT = np.uint64(0x9E3779B97F4A7C15)
_SPLITMIX_MULTIPLIER_1 = np.uint64(0xBF58476D1CE4E5B9)
_SPLITMIX_MULTIPLIER_2 = np.uint64(0x94D049BB133111EB)

_U5 = np.uint64(5)
_U7 = np.uint64(7)
_U9 = np.uint64(9)
_U11 = np.uint64(11)
_U17 = np.uint64(17)
_U27 = np.uint64(27)
_U30 = np.uint64(30)
_U31 = np.uint64(31)
_U32 = np.uint64(32)
_U45 = np.uint64(45)
_U64 = np.uint64(64)

# --------------------------------------------------------------------------------------------------
# Wrapping uint64 arithmetic (native in compiled code, emulated when the JIT is disabled)
# --------------------------------------------------------------------------------------------------


def _wrapping_mul(a, b):
    """``a * b mod 2**64`` for uint64 scalars (the pure-Python version, used without the JIT)."""
    return np.uint64((int(a) * int(b)) & _MASK64)


def _wrapping_add(a, b):
    """``a + b mod 2**64`` for uint64 scalars (the pure-Python version, used without the JIT)."""
    return np.uint64((int(a) + int(b)) & _MASK64)


@overload(_wrapping_mul, jit_options=JIT_OPTIONS)
def _wrapping_mul_impl(a, b):
    if isinstance(a, types.Integer) and isinstance(b, types.Integer):
        # Compiled uint64 multiplication already wraps (no overflow checks in numba).
        return lambda a, b: a * b
    return None


@overload(_wrapping_add, jit_options=JIT_OPTIONS)
def _wrapping_add_impl(a, b):
    if isinstance(a, types.Integer) and isinstance(b, types.Integer):
        return lambda a, b: a + b
    return None


@njit(inline="always", **JIT_OPTIONS)
def _rotl(x, k):
    """Rotate the uint64 ``x`` left by ``k`` bits, ``0 < k < 64`` (``k`` a uint64)."""
    return (x << k) | (x >> (_U64 - k))


# --------------------------------------------------------------------------------------------------
# Seeding and raw output
# --------------------------------------------------------------------------------------------------


@njit(**JIT_OPTIONS)
def rng_seed(state, seed):
    """Fill ``state`` in place from one 64-bit seed (SplitMix64), without allocating.

    Parameters
    ----------
    state : ndarray of shape (4,), uint64
        Overwritten.
    seed : int
        Any value that fits in 64 bits; int64 and uint64 are both accepted (the bits are what count).
        Callers pass non-negative seeds so that the pure-Python run gives the same stream.
    """
    counter = np.uint64(seed)
    for i in range(4):
        counter = _wrapping_add(counter, _SPLITMIX_INCREMENT)
        z = counter
        z = _wrapping_mul(z ^ (z >> _U30), _SPLITMIX_MULTIPLIER_1)
        z = _wrapping_mul(z ^ (z >> _U27), _SPLITMIX_MULTIPLIER_2)
        state[i] = z ^ (z >> _U31)


@njit(**JIT_OPTIONS)
def rng_init(seed):
    """A new generator state seeded from ``seed`` (see :func:`rng_seed`).

    Test entry point: the samplers reseed one state in place with :func:`rng_seed`.

    Parameters
    ----------
    seed : int
        64-bit seed.

    Returns
    -------
    state : ndarray of shape (4,), uint64
    """
    state = np.empty(4, dtype=np.uint64)
    rng_seed(state, seed)
    return state


@njit(inline="always", **JIT_OPTIONS)
def rng_next_u64(state):
    """Advance ``state`` (xoshiro256** 1.0) and return 64 uniformly random bits.

    Parameters
    ----------
    state : ndarray of shape (4,), uint64
        Updated in place.

    Returns
    -------
    bits : uint64
    """
    s0 = state[0]
    s1 = state[1]
    s2 = state[2]
    s3 = state[3]
    result = _wrapping_mul(_rotl(_wrapping_mul(s1, _U5), _U7), _U9)
    t = s1 << _U17
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, _U45)
    state[0] = s0
    state[1] = s1
    state[2] = s2
    state[3] = s3
    return result


# --------------------------------------------------------------------------------------------------
# Derived draws
# --------------------------------------------------------------------------------------------------


@njit(**JIT_OPTIONS)
def rng_uniform(state):
    """A float64 uniformly distributed on ``[0, 1)``.

    Test entry point (its distribution is tested; the samplers draw integers only).

    The top 53 bits times ``2**-53``: every value is a multiple of ``2**-53``, each equally likely, and
    the conversion is exact (the same on every platform); 1.0 cannot occur.

    Parameters
    ----------
    state : ndarray of shape (4,), uint64
        Updated in place.

    Returns
    -------
    u : float64
    """
    return np.float64(rng_next_u64(state) >> _U11) * _INV_TWO_POW_53


@njit(inline="always", **JIT_OPTIONS)
def rng_integers(state, n):
    """An integer uniformly distributed on ``[0, n)``, exactly (no modulo bias).

    For ``n <= 2**32`` (every row count in practice) this is Lemire's multiply-and-reject method on the
    top 32 bits of one draw ("Fast random integer generation in an interval", 2019): one
    multiplication and, except with probability ``< n / 2**32``, no division and no second draw.
    Larger ``n`` falls back to rejection of the ``2**64 mod n`` lowest 64-bit values, then modulo.

    Parameters
    ----------
    state : ndarray of shape (4,), uint64
        Updated in place (one draw, rarely more).
    n : int
        ``1 <= n < 2**63``. Not checked.

    Returns
    -------
    k : int64
        ``0 <= k < n``.
    """
    bound = np.uint64(n)
    if bound <= _TWO_POW_32:
        # floor(r * n / 2**32) for a 32-bit r is in [0, n); it is biased only through the products
        # whose low 32 bits fall below 2**32 mod n, which are rejected. r * n < 2**64: no overflow.
        product = (rng_next_u64(state) >> _U32) * bound
        low = product & _LOW_32_BITS
        if low < bound:
            threshold = (_TWO_POW_32 - bound) % bound  # == 2**32 mod n, computed only when needed
            while low < threshold:
                product = (rng_next_u64(state) >> _U32) * bound
                low = product & _LOW_32_BITS
        return np.int64(product >> _U32)
    # 2**64 mod n, without forming 2**64: the accepted range [threshold, 2**64) is a multiple of n.
    threshold = (_UINT64_MAX - bound + np.uint64(1)) % bound
    x = rng_next_u64(state)
    while x < threshold:
        x = rng_next_u64(state)
    return np.int64(x % bound)


@njit(**JIT_OPTIONS)
def partial_shuffle(state, arr, k):
    """Put a uniformly random ordered sample of ``k`` entries of ``arr`` in ``arr[:k]``, in place.

    The first ``k`` steps of a (forward) Fisher-Yates shuffle: afterwards ``arr[:k]`` is a uniformly
    random ``k``-permutation of the original entries and ``arr[k:]`` holds the others (in an order that
    is not uniformly random). Splitting ``arr[:k]`` into consecutive pieces therefore gives disjoint
    uniformly random subsets, each in uniformly random order. With ``k >= len(arr) - 1`` it is a full
    uniform shuffle (the last step is always a no-op, so no number is drawn for it).

    Parameters
    ----------
    state : ndarray of shape (4,), uint64
        Updated in place (one :func:`rng_integers` per step).
    arr : ndarray of shape (n,)
        Any dtype; permuted in place.
    k : int
        Number of entries to draw, ``k >= 0``; values above ``n`` are treated as ``n``.
    """
    n = arr.shape[0]
    n_steps = min(k, n - 1)
    for i in range(n_steps):
        j = i + rng_integers(state, n - i)
        held = arr[i]
        arr[i] = arr[j]
        arr[j] = held


@njit(**JIT_OPTIONS)
def shuffle_inplace(state, arr):
    """Uniformly random permutation of ``arr`` in place (Fisher-Yates).

    Parameters
    ----------
    state : ndarray of shape (4,), uint64
        Updated in place (``len(arr) - 1`` calls of :func:`rng_integers`).
    arr : ndarray of shape (n,)
        Any dtype.
    """
    partial_shuffle(state, arr, arr.shape[0])


@njit(**JIT_OPTIONS)
def choice_without_replacement(state, n, k):
    """``k`` distinct integers drawn uniformly from ``[0, n)``, in uniformly random order.

    Test entry point: allocates ``O(n)``, so the samplers use :func:`partial_shuffle` on their own
    buffer instead; the tests check the shuffle's uniformity through this function.

    Parameters
    ----------
    state : ndarray of shape (4,), uint64
        Updated in place.
    n : int
        Population size, ``n >= 0``.
    k : int
        Sample size, ``0 <= k <= n``. Not checked.

    Returns
    -------
    sample : ndarray of shape (k,), int64
    """
    pool = np.arange(n, dtype=np.int64)
    partial_shuffle(state, pool, k)
    return pool[:k].copy()
