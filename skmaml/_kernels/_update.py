"""Meta-optimiser steps on the flat parameter vector θ, in place.

Arithmetic is done in θ's dtype: hyper-parameters arrive as Python floats (float64) and are rounded
once to θ's dtype before the loop, so a float32 θ is updated with float32 operations only, like the
NumPy formula on float32 arrays, and is never silently promoted to float64 element by element.
The gradient and the moment arrays must have θ's dtype (the Python side allocates them so).
Each update is a plain loop: no temporaries, no allocation, and no ``fastmath`` (which could fuse or
reorder operations and change the result bits, or hide a NaN).
"""

import numpy as np
from numba import njit

from ._config import JIT_OPTIONS
from ._numeric import as_dtype_of


@njit(**JIT_OPTIONS)
def sgd_update(theta, grad, learning_rate):
    """Plain gradient step ``theta <- theta - learning_rate * grad``, in place.

    Bit for bit the NumPy expression ``theta - dtype(learning_rate) * grad`` in θ's dtype.

    Parameters
    ----------
    theta : ndarray of shape (n_params,), float32 or float64
        Updated in place.
    grad : ndarray of shape (n_params,), dtype of theta
    learning_rate : float
        β, rounded to theta's dtype.
    """
    lr = as_dtype_of(learning_rate, theta)
    for i in range(theta.shape[0]):
        theta[i] = theta[i] - lr * grad[i]


@njit(**JIT_OPTIONS)
def adam_update(theta, grad, m, v, t, learning_rate, beta_1, beta_2, epsilon):
    """One Adam step (Kingma & Ba 2015, Algorithm 1), in place.

    With ``g = grad``::

        m <- beta_1 m + (1 - beta_1) g
        v <- beta_2 v + (1 - beta_2) g**2
        m_hat = m / (1 - beta_1**t)
        v_hat = v / (1 - beta_2**t)
        theta <- theta - learning_rate * m_hat / (sqrt(v_hat) + epsilon)

    ``epsilon`` is added outside the square root of the bias-corrected ``v_hat``, as in Algorithm 1
    (not the paper's "more efficient" reordering, which moves the bias correction into the step size
    and so changes the effective epsilon).

    A moment that falls below the smallest normal number of θ's dtype (``np.finfo(dtype).tiny``)
    is stored as zero. A parameter whose gradient is exactly zero step after step (the weights of
    a relu unit that no row activates) has ``m`` shrunk by ``beta_1`` each step into the
    subnormal range, where rounding holds it: ``0.9 x`` rounds back to ``x`` for the smallest few
    subnormals, so it never reaches zero. Arithmetic on subnormals takes a slow path on many x86
    CPUs: on one core of an Intel Xeon (Ice Lake), this update of 1,761 float32 parameters took
    40 us with the moments that ``benchmarks/bench_meta_step.py``'s bare loop had after 6,000
    iterations (956 of them subnormal) against 2.7 us with them stored as zero (one run). Such a
    moment's share of the step, ``learning_rate * m_hat / (sqrt(v_hat) + epsilon)``, is below
    ``learning_rate * tiny / epsilon`` (1e-33 in float32 with the defaults), which leaves θ
    unchanged unless θ is itself that small; NaN and infinities are kept.

    Parameters
    ----------
    theta : ndarray of shape (n_params,), float32 or float64
        Updated in place.
    grad : ndarray of shape (n_params,), dtype of theta
    m, v : ndarray of shape (n_params,), dtype of theta
        First and second moment estimates, updated in place; zero before the first step.
    t : int
        Number of this step, counting from 1 (the caller increments it before the call).
    learning_rate, beta_1, beta_2, epsilon : float
        The paper's α, β1, β2, ε.
    """
    # Scalar factors are computed in float64 and rounded once; beta**t in float32 would lose digits of
    # the bias correction for no speed gain (it is one scalar per step). The exponent is made a float
    # so that numba calls pow() as Python and NumPy do: with an integer exponent it multiplies
    # repeatedly (llvm.powi), which differs in the last bit from step 4 on.
    t_float = np.float64(t)
    lr = as_dtype_of(learning_rate, theta)
    decay_1 = as_dtype_of(beta_1, theta)
    decay_2 = as_dtype_of(beta_2, theta)
    weight_1 = as_dtype_of(1.0 - beta_1, theta)
    weight_2 = as_dtype_of(1.0 - beta_2, theta)
    bias_correction_1 = as_dtype_of(1.0 - beta_1**t_float, theta)
    bias_correction_2 = as_dtype_of(1.0 - beta_2**t_float, theta)
    eps = as_dtype_of(epsilon, theta)
    tiny = np.finfo(theta.dtype).tiny
    zero = as_dtype_of(0.0, theta)
    for i in range(theta.shape[0]):
        g = grad[i]
        m_i = decay_1 * m[i] + weight_1 * g
        v_i = decay_2 * v[i] + weight_2 * (g * g)
        # Subnormal moments stored as zero (see above); a select, so the loop stays vectorised.
        m_i = zero if abs(m_i) < tiny else m_i
        v_i = zero if v_i < tiny else v_i
        m[i] = m_i
        v[i] = v_i
        # np.true_divide, not `/`: numba's `/` follows Python and checks every divisor for zero (to
        # raise ZeroDivisionError), and that branch stops LLVM from vectorising the loop. The
        # quotient is the same IEEE division, bit for bit.
        m_hat = np.true_divide(m_i, bias_correction_1)
        v_hat = np.true_divide(v_i, bias_correction_2)
        theta[i] = theta[i] - np.true_divide(lr * m_hat, np.sqrt(v_hat) + eps)

