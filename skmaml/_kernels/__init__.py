"""Compiled numba kernels of skmaml.

Everything in this sub-package works on contiguous NumPy arrays, scalars and the integer codes of
:mod:`skmaml._kernels._config`; it knows nothing of scikit-learn or of estimator objects.
"""

from ._cache import ensure_cache_location

# Before any kernel module defines a ``cache=True`` function (each imports this package first).
ensure_cache_location()
