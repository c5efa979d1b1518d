"""Task generators for few-shot experiments."""

import numpy as np
from sklearn.utils import check_random_state


def _as_output(tasks, flat):
    if not flat:
        return tasks
    X = np.concatenate([t[0] for t in tasks])
    y = np.concatenate([t[1] for t in tasks])
    groups = np.repeat(np.arange(len(tasks)), [t[0].shape[0] for t in tasks])
    return X, y, groups


def make_sinusoid_tasks(n_tasks=1000, n_samples=20, *, amplitude_range=(0.1, 5.0),
                        phase_range=(0.0, np.pi), x_range=(-5.0, 5.0), noise=0.0, flat=False,
                        return_params=False, random_state=None):
    """Sinusoid regression tasks of the MAML paper: ``y = A sin(x - phi)``.

    Each task draws an amplitude ``A ~ U[amplitude_range]`` and a phase ``phi ~ U[phase_range]``,
    then ``n_samples`` inputs ``x ~ U[x_range]`` (Finn et al. 2017, section 5.1).

    Parameters
    ----------
    n_tasks : int, default=1000
    n_samples : int, default=20
        Rows per task.
    amplitude_range, phase_range, x_range : tuple of two floats
        Bounds of the uniform distributions.
    noise : float, default=0.0
        Standard deviation of Gaussian noise added to ``y``.
    flat : bool, default=False
        Return ``(X, y, groups)`` instead of a list of tasks.
    return_params : bool, default=False
        Also return an array of shape (n_tasks, 2) with each task's amplitude and phase.
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    tasks : list of (X, y) with X of shape (n_samples, 1) and y of shape (n_samples,)
        Or ``(X, y, groups)`` with ``flat=True``.
    params : ndarray of shape (n_tasks, 2)
        Only with ``return_params=True``.

    Examples
    --------
    >>> from skmaml.datasets import make_sinusoid_tasks
    >>> tasks = make_sinusoid_tasks(n_tasks=3, n_samples=5, random_state=0)
    >>> len(tasks), tasks[0][0].shape, tasks[0][1].shape
    (3, (5, 1), (5,))
    """
    rng = check_random_state(random_state)
    tasks, params = [], []
    for _ in range(n_tasks):
        amplitude = rng.uniform(*amplitude_range)
        phase = rng.uniform(*phase_range)
        x = rng.uniform(*x_range, size=(n_samples, 1))
        y = amplitude * np.sin(x[:, 0] - phase)
        if noise:
            y = y + rng.normal(scale=noise, size=n_samples)
        tasks.append((x, y))
        params.append((amplitude, phase))
    out = _as_output(tasks, flat)
    if return_params:
        return out, np.asarray(params)
    return out
