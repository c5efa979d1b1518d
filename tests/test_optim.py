"""Tests of the meta-optimisers: kernels (skmaml._kernels._update) and their Python front
(skmaml._optim).

SGD must be the NumPy formula bit for bit. Adam is compared with a literal NumPy transcription of
Kingma & Ba (2015), Algorithm 1, in the same dtype with the scalars rounded the same way; today the
two agree bit for bit, the tests allow 2 ulps so that a libm whose pow() differs in the last bit
between call sites does not fail them. A float32 θ is also compared with the float64 reference."""

import pickle

import numpy as np
import pytest

from skmaml._kernels._update import adam_update, sgd_update
from skmaml._optim import OPTIMIZER_NAMES, AdamOptimizer, SGDOptimizer, make_optimizer

DTYPES = [np.float32, np.float64]
N_PARAMS = 37  # not a multiple of a SIMD width, so vectorised loops' remainders are exercised


def problem(dtype, n_steps=6, seed=0):
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=N_PARAMS).astype(dtype)
    # gradients of very different scales, with exact zeros and sign changes across steps
    grads = (rng.normal(size=(n_steps, N_PARAMS)) * np.logspace(-4, 2, N_PARAMS)).astype(dtype)
    grads[:, :3] = 0
    return theta, grads


def adam_reference(theta, grads, lr, beta_1=0.9, beta_2=0.999, epsilon=1e-8, moments=False):
    """Algorithm 1 of Kingma & Ba, in theta's dtype; returns theta after each step (and, with
    ``moments``, the last ``m`` and ``v`` too)."""
    dtype = theta.dtype.type
    theta = theta.copy()
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    history = []
    for t, g in enumerate(grads, start=1):
        m = dtype(beta_1) * m + dtype(1 - beta_1) * g
        v = dtype(beta_2) * v + dtype(1 - beta_2) * (g * g)
        m_hat = m / dtype(1 - beta_1**t)
        v_hat = v / dtype(1 - beta_2**t)
        theta = theta - dtype(lr) * m_hat / (np.sqrt(v_hat) + dtype(epsilon))
        history.append(theta.copy())
    return (history, m, v) if moments else history


# ---------------------------------------------------------------------------
# SGD
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_is_the_numpy_formula_bit_for_bit(dtype):
    theta, grads = problem(dtype)
    lr = 0.0123
    expected = theta.copy()
    optimizer = SGDOptimizer(lr)
    for g in grads:
        expected = expected - dtype(lr) * g
        optimizer.update(theta, g)
        assert theta.dtype == dtype
        np.testing.assert_array_equal(theta, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_kernel_in_place_and_scalar_types(dtype):
    theta, grads = problem(dtype)
    expected = theta - dtype(0.5) * grads[0]
    original = theta
    # a NumPy scalar learning rate of another dtype is rounded to theta's dtype too
    sgd_update(theta, grads[0], np.float64(0.5))
    assert theta is original and theta.dtype == dtype
    np.testing.assert_array_equal(theta, expected)


# ---------------------------------------------------------------------------
# Adam
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_matches_algorithm_1(dtype):
    theta, grads = problem(dtype)
    lr = 0.01
    history = adam_reference(theta, grads, lr)
    optimizer = AdamOptimizer(lr)
    for t, g in enumerate(grads):
        optimizer.update(theta, g)
        assert theta.dtype == dtype and optimizer.m.dtype == dtype and optimizer.v.dtype == dtype
        np.testing.assert_array_max_ulp(theta, history[t], maxulp=2)
    assert optimizer.t == len(grads)


def test_adam_float32_close_to_float64():
    theta32, grads32 = problem(np.float32)
    history64 = adam_reference(theta32.astype(np.float64), grads32.astype(np.float64), 0.01)
    optimizer = AdamOptimizer(0.01)
    for g in grads32:
        optimizer.update(theta32, g)
    # |theta| ~ 1: float32 spacing ~1e-7 per step, six steps
    np.testing.assert_allclose(theta32, history64[-1], rtol=0, atol=2e-6)


def test_adam_first_step_has_size_learning_rate():
    # after one step m_hat = g and v_hat = g**2, so every coordinate with g != 0 moves by lr (up to eps)
    theta, grads = problem(np.float64)
    before = theta.copy()
    AdamOptimizer(0.01).update(theta, grads[0])
    step = before - theta
    nonzero = grads[0] != 0
    np.testing.assert_allclose(step[nonzero], 0.01 * np.sign(grads[0][nonzero]), rtol=1e-3)
    np.testing.assert_array_equal(step[~nonzero], 0.0)


def test_adam_hyperparameters_are_used():
    theta, grads = problem(np.float64)
    expected = adam_reference(theta, grads, 0.05, beta_1=0.5, beta_2=0.9, epsilon=1e-3)[-1]
    optimizer = AdamOptimizer(0.05, beta_1=0.5, beta_2=0.9, epsilon=1e-3)
    for g in grads:
        optimizer.update(theta, g)
    np.testing.assert_array_max_ulp(theta, expected, maxulp=2)


def test_adam_kernel_direct():
    theta, grads = problem(np.float64)
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    expected = adam_reference(theta, grads[:2], 0.01)[-1]
    adam_update(theta, grads[0], m, v, 1, 0.01, 0.9, 0.999, 1e-8)
    adam_update(theta, grads[1], m, v, 2, 0.01, 0.9, 0.999, 1e-8)
    np.testing.assert_array_max_ulp(theta, expected, maxulp=2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_moments_of_a_silent_parameter_reach_zero(dtype):
    # A gradient that turns exactly zero (a dead relu unit's weights) shrinks m by beta_1 a step
    # into the subnormal range, where rounding would hold it for good (0.9 x rounds back to x for
    # the smallest subnormals), and arithmetic on subnormals is slow on many x86 cores. The kernel
    # stores moments below np.finfo(dtype).tiny as zero; theta moves as Algorithm 1 moves it.
    n_steps = {np.float32: 1200, np.float64: 8000}[dtype]
    rng = np.random.default_rng(3)
    theta = rng.normal(size=N_PARAMS).astype(dtype)
    grads = np.zeros((n_steps, N_PARAMS), dtype=dtype)
    grads[:5] = rng.normal(size=(5, N_PARAMS)) * 1e-3
    grads[:, -1] = 1e-3  # one parameter keeps a gradient: its moments stay normal
    history, reference_m, _ = adam_reference(theta, grads, 1e-3, moments=True)
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    tiny = np.finfo(dtype).tiny
    for t, g in enumerate(grads, start=1):
        adam_update(theta, g, m, v, t, 1e-3, 0.9, 0.999, 1e-8)
        assert not np.any((m != 0) & (np.abs(m) < tiny)) and not np.any((v != 0) & (v < tiny))
    # Unflushed, Algorithm 1 leaves the silent parameters' m subnormal, never zero ...
    assert np.all((reference_m[:-1] != 0) & (np.abs(reference_m[:-1]) < tiny))
    # ... the kernel has zero there, and the same theta.
    assert np.all(m[:-1] == 0) and m[-1] != 0 and v[-1] != 0
    np.testing.assert_array_max_ulp(theta, history[-1], maxulp=2)


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_nan_gradient_stays_visible(name):
    theta = np.ones(5)
    grad = np.array([0.0, np.nan, 1.0, np.inf, -1.0])
    make_optimizer(name, 0.1, 5, np.float64).update(theta, grad)
    assert np.isnan(theta[1]) and not np.all(np.isfinite(theta))


# ---------------------------------------------------------------------------
# Python front: factory, state, pickling
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_make_optimizer(dtype):
    sgd = make_optimizer("sgd", 0.1, N_PARAMS, dtype)
    assert isinstance(sgd, SGDOptimizer) and sgd.learning_rate == 0.1
    adam = make_optimizer("adam", 0.001, N_PARAMS, dtype)
    assert isinstance(adam, AdamOptimizer)
    assert (adam.beta_1, adam.beta_2, adam.epsilon) == (0.9, 0.999, 1e-8)
    assert adam.t == 0
    for moment in (adam.m, adam.v):
        assert moment.dtype == dtype and moment.shape == (N_PARAMS,) and not moment.any()
    with pytest.raises(ValueError, match="meta_optimizer"):
        make_optimizer("rmsprop", 0.1, N_PARAMS, dtype)


def test_adam_allocates_state_lazily_and_reset_restarts():
    theta, grads = problem(np.float32)
    optimizer = AdamOptimizer(0.01)
    assert optimizer.m is None
    optimizer.update(theta, grads[0])
    assert optimizer.m.dtype == np.float32 and optimizer.t == 1
    optimizer.reset(N_PARAMS, np.float32)
    assert optimizer.t == 0 and not optimizer.m.any() and not optimizer.v.any()


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_pickle_round_trip_continues_identically(name, dtype):
    theta, grads = problem(dtype, n_steps=8)
    optimizer = make_optimizer(name, 0.01, N_PARAMS, dtype)
    for g in grads[:4]:
        optimizer.update(theta, g)
    # only plain Python / NumPy state, nothing compiled
    for value in vars(optimizer).values():
        assert isinstance(value, (int, float, np.ndarray)) and not isinstance(value, bool)
    restored = pickle.loads(pickle.dumps(optimizer))
    theta_restored = theta.copy()
    for g in grads[4:]:
        optimizer.update(theta, g)
        restored.update(theta_restored, g)
    np.testing.assert_array_equal(theta_restored, theta)
    for key, value in vars(optimizer).items():
        np.testing.assert_array_equal(vars(restored)[key], value)
