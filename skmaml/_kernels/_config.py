"""Jit options and integer codes shared by every kernel: the one place these facts live.

Losses have no code: a kernel chooses the loss from the *type* of the targets it is given
(floating 2-D targets -> squared error, integer 1-D targets -> softmax cross-entropy), so targets and
loss can never disagree.
"""

# ``cache=True`` keeps ``import skmaml`` and the first fit fast after the first-ever compile.
# ``nogil=True`` lets joblib threads run kernels side by side. No ``fastmath``: flags such as
# ``nnan``/``ninf`` would let a diverging meta-training produce NaN that is never seen.
# numba's parallel mode is never used: it must not be combined with the on-disk cache.
# ``error_model="numpy"``: division by zero gives inf/NaN (still detected by the estimator) instead of
# a per-division zero check that stops loops from vectorising (e.g. the Adam update).
JIT_OPTIONS = {"nogil": True, "cache": True, "error_model": "numpy"}

IDENTITY = 0
LOGISTIC = 1
TANH = 2
RELU = 3

ACTIVATION_CODES = {"identity": IDENTITY, "logistic": LOGISTIC, "tanh": TANH, "relu": RELU}


def _cache_probe():
    return 0


def _ensure_cache_location():
    """Give numba a cache directory when it finds none, instead of failing at import.

    numba caches next to the source (``__pycache__``) or in the user's cache directory. On a
    read-only install run by an account without a writable home (a service, a cluster worker)
    neither exists and every ``cache=True`` kernel raises "cannot cache function ... no locator
    available" when it is defined. Then a per-user directory under the system temporary directory
    is used (``NUMBA_CACHE_DIR`` set by the user always wins; see docs/scaling_out.rst).
    """
    import os
    import tempfile
    import warnings

    from numba import config, njit

    if config.CACHE_DIR:
        return
    try:
        njit(cache=True)(_cache_probe)
    except RuntimeError:
        user = os.getuid() if hasattr(os, "getuid") else "user"
        config.CACHE_DIR = os.path.join(tempfile.gettempdir(), f"skmaml-numba-cache-{user}")
        warnings.warn(
            "numba cannot cache compiled kernels next to skmaml or in the user cache directory; "
            f"using {config.CACHE_DIR}. Set NUMBA_CACHE_DIR to choose the location.",
            RuntimeWarning, stacklevel=2)


_ensure_cache_location()
