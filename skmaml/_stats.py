"""The confidence interval every figure of skmaml reports (demo, displays, benchmarks)."""

import numpy as np


def mean_confidence_interval(values, confidence_level=0.95, axis=0):
    """Mean of ``values`` along ``axis`` and the half-width of the Student-t confidence interval
    of that mean (``nan`` with fewer than two values).

    Parameters
    ----------
    values : array-like
        Per-task (or per-episode) results.
    confidence_level : float, default=0.95
    axis : int, default=0

    Returns
    -------
    mean, half_width : float or ndarray
    """
    from scipy.stats import t as student_t

    values = np.asarray(values, dtype=np.float64)
    n = values.shape[axis]
    mean = values.mean(axis=axis)
    if n < 2:
        return mean, np.full_like(mean, np.nan) if np.ndim(mean) else np.nan
    half_width = (student_t.ppf((1 + confidence_level) / 2, n - 1)
                  * values.std(axis=axis, ddof=1) / np.sqrt(n))
    return mean, half_width
