"""numba's on-disk cache of the compiled kernels: a usable location, found before any kernel is
defined (``skmaml/_kernels/__init__.py`` calls :func:`ensure_cache_location`).

Kept apart from :mod:`._config`, which holds only constants (as stumpy keeps ``config.py`` and
``cache.py`` apart).
"""


def _cache_probe():
    return 0


def ensure_cache_location():
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
