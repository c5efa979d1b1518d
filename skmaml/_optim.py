"""Meta-optimisers: how the mean meta-gradient moves θ (the flat parameter vector).

Each optimiser is a small plain object: hyper-parameters as Python floats, state as NumPy arrays and
ints, nothing numba-compiled stored on it, so it pickles (an estimator with ``warm_start`` can carry it)
and copies cheaply. ``update`` is one call into a compiled kernel of :mod:`skmaml._kernels._update`:
a small meta-iteration takes a fraction of a millisecond (``benchmarks/bench_meta_step.py``), so
the Python side does no array work of its own.
"""

import numpy as np

from ._kernels._config import ADAM, SGD
from ._kernels._update import adam_update, sgd_update

OPTIMIZER_NAMES = ("sgd", "adam")


class SGDOptimizer:
    """Plain meta-gradient descent: ``theta <- theta - learning_rate * grad``, exactly.

    Parameters
    ----------
    learning_rate : float
        The meta step size β (``meta_lr``).
    """

    name = "sgd"

    def __init__(self, learning_rate):
        # float() so every call hits the same compiled signature, whatever scalar type came in.
        self.learning_rate = float(learning_rate)

    def reset(self, n_params, dtype):
        """Forget any state (SGD has none); present so every optimiser has the same interface."""

    def update(self, theta, grad):
        """Apply one step to ``theta`` in place.

        Parameters
        ----------
        theta : ndarray of shape (n_params,), float32 or float64, C-contiguous
            Updated in place.
        grad : ndarray of shape (n_params,), dtype of theta
            The mean meta-gradient.
        """
        sgd_update(theta, grad, self.learning_rate)

    def kernel_args(self, theta):
        """What the compiled training loop (``_kernels._train.meta_train_run``) takes of the
        optimiser: ``(code, m, v, t, learning_rate, beta_1, beta_2, epsilon)``."""
        empty = theta[:0]
        return SGD, empty, empty, 0, self.learning_rate, 0.0, 0.0, 0.0

    def advance(self, n_steps):
        """Count ``n_steps`` steps the compiled loop took (SGD keeps no count)."""

    def __repr__(self):
        return f"SGDOptimizer(learning_rate={self.learning_rate!r})"


class AdamOptimizer:
    """Adam (Kingma & Ba 2015, Algorithm 1) on the meta-gradient.

    Parameters
    ----------
    learning_rate : float
        The meta step size β (``meta_lr``).
    beta_1, beta_2 : float, default=0.9, 0.999
        Decay rates of the first and second moment estimates.
    epsilon : float, default=1e-8
        Added to ``sqrt(v_hat)`` for numerical stability.

    Attributes
    ----------
    m, v : ndarray of shape (n_params,), dtype of theta, or None
        First and second moment estimates; None until :meth:`reset` or the first :meth:`update`.
        An estimate below the dtype's smallest normal number is stored as zero (a parameter with a
        zero gradient would otherwise keep a subnormal ``m`` for good, slow to compute with on many
        CPUs; see :func:`._kernels._update.adam_update`).
    t : int
        Number of steps taken so far.
    """

    name = "adam"

    def __init__(self, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
        self.learning_rate = float(learning_rate)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.m = None
        self.v = None
        self.t = 0

    def reset(self, n_params, dtype):
        """Start again from zero moments for a θ of ``n_params`` entries of ``dtype``."""
        self.m = np.zeros(n_params, dtype=dtype)
        self.v = np.zeros(n_params, dtype=dtype)
        self.t = 0

    def update(self, theta, grad):
        """Apply one step to ``theta`` in place.

        Parameters
        ----------
        theta : ndarray of shape (n_params,), float32 or float64, C-contiguous
            Updated in place. Must keep the size and dtype of the moments (see :meth:`reset`).
        grad : ndarray of shape (n_params,), dtype of theta
            The mean meta-gradient.

        Raises
        ------
        ValueError
            If the moments do not have θ's shape and dtype.
        """
        self._check_state(theta)
        self.t += 1
        adam_update(
            theta, grad, self.m, self.v, self.t, self.learning_rate, self.beta_1, self.beta_2, self.epsilon
        )

    def _check_state(self, theta):
        """Allocate the moments for θ if there are none; refuse moments that do not fit θ."""
        if self.m is None:
            self.reset(theta.shape[0], theta.dtype)
        elif not (self.m.shape == self.v.shape == theta.shape
                  and self.m.dtype == self.v.dtype == theta.dtype):
            # The kernel indexes m and v by θ's entries with no bounds check, so a state that does
            # not fit θ (e.g. one edited in a saved file) is refused here rather than read past.
            raise ValueError(
                f"The Adam state does not fit θ: moments of shapes {self.m.shape}, {self.v.shape} "
                f"and dtypes {self.m.dtype}, {self.v.dtype} for θ of shape {theta.shape} and dtype "
                f"{theta.dtype}. Fit with warm_start=False to start afresh.")

    def kernel_args(self, theta):
        """What the compiled training loop (``_kernels._train.meta_train_run``) takes of the
        optimiser: ``(code, m, v, t, learning_rate, beta_1, beta_2, epsilon)``; the moments are
        updated in place there and :meth:`advance` counts its steps."""
        self._check_state(theta)
        return (ADAM, self.m, self.v, self.t, self.learning_rate, self.beta_1, self.beta_2,
                self.epsilon)

    def advance(self, n_steps):
        """Count ``n_steps`` steps the compiled loop took."""
        self.t += n_steps

    def __repr__(self):
        return (
            f"AdamOptimizer(learning_rate={self.learning_rate!r}, beta_1={self.beta_1!r}, "
            f"beta_2={self.beta_2!r}, epsilon={self.epsilon!r})"
        )


def make_optimizer(name, learning_rate, n_params, dtype):
    """A meta-optimiser by name, with its state allocated for θ.

    Parameters
    ----------
    name : {"sgd", "adam"}
        The estimator's ``meta_optimizer``. Adam uses the paper's defaults for β1, β2, ε.
    learning_rate : float
        The estimator's ``meta_lr``.
    n_params : int
        Size of θ.
    dtype : numpy dtype
        θ's dtype (float32 or float64); the optimiser state uses it too.

    Returns
    -------
    optimizer : SGDOptimizer or AdamOptimizer
    """
    if name == "sgd":
        optimizer = SGDOptimizer(learning_rate)
    elif name == "adam":
        optimizer = AdamOptimizer(learning_rate)
    else:
        raise ValueError(f"Unknown meta_optimizer {name!r}; expected one of {OPTIMIZER_NAMES}.")
    optimizer.reset(n_params, np.dtype(dtype))
    return optimizer
