"""Tests of the numba kernels (skmaml._kernels) against the NumPy references in naive.py
and against central finite differences.

Conventions used throughout:

* every problem is small and random with a seed derived from the test parameters;
* the activation is passed to the kernels as its integer code, to naive.py by name;
* output buffers (grad_out, out, task_losses) are pre-filled with NaN so that a kernel
  which accumulates into, or forgets to write, its output is caught;
* the kernel-vs-naive comparisons are norm-scaled: ``max|a - e| <= rtol * max|e| + atol``
  (float64: rtol 1e-10, atol 1e-12); the finite-difference comparisons check both the
  max-abs and the mean-abs error (as umap's gradient tests do), scaled by max(1, max|e|).
"""

import zlib

import numpy as np
import pytest

import naive
from skmaml._kernels import _maml, _mlp
from skmaml._kernels._config import ACTIVATION_CODES, IDENTITY, LOGISTIC, RELU, TANH
from skmaml._kernels._rules import Rule, plain_rule

ACTIVATIONS = ["identity", "logistic", "tanh", "relu"]
# (loss kind, number of outputs): 1 and 3 outputs for regression, 2 and 4 classes for CE
OUTPUT_CASES = [("mse", 1), ("mse", 3), ("ce", 2), ("ce", 4)]
LOSS_CASES = [("mse", 3), ("ce", 4)]
HIDDEN = [(), (7,), (5, 4)]
N_FEATURES = 4
INNER_LR = 0.1
FD_EPS = 1e-6

# float64 kernel vs float64 naive: only summation order differs
RTOL64 = 1e-10
ATOL64 = 1e-12
# float32 kernel vs float64 kernel on the same (float32-representable) inputs:
# error relative to the float64 result's max-abs (inf-norm) must be below 1e-4
# (float32 eps is 1.2e-7; 1e-4 leaves room for accumulation over ~100 terms and N=2
# inner steps, while still catching a wrong formula or a float32 that is secretly float16).
RTOL32 = 1e-4


def _hid_id(h):
    return "h" + "x".join(str(s) for s in h) if h else "h0"


def _seed(*parts):
    return zlib.crc32(repr(parts).encode())


# ---------------------------------------------------------------------------
# comparison helpers
# ---------------------------------------------------------------------------

def assert_vec_close(actual, expected, rtol=RTOL64, atol=ATOL64, what=""):
    """Norm-scaled closeness: max|actual - expected| <= rtol * max|expected| + atol."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    assert np.all(np.isfinite(actual)), (what, "non-finite values in kernel output", actual)
    err = np.max(np.abs(actual - expected)) if actual.size else 0.0
    bound = rtol * (np.max(np.abs(expected)) if expected.size else 0.0) + atol
    assert err <= bound, "%s: max abs error %.3e > bound %.3e" % (what, err, bound)


def assert_fd_close(actual, numerical, max_tol=1e-6, mean_tol=1e-7, what=""):
    """Finite-difference check with both a max-abs and a mean-abs tolerance,
    relative to max(1, max|numerical|)."""
    actual = np.asarray(actual, dtype=np.float64)
    numerical = np.asarray(numerical, dtype=np.float64)
    assert actual.shape == numerical.shape, (what, actual.shape, numerical.shape)
    assert np.all(np.isfinite(actual)), (what, actual)
    scale = max(1.0, np.max(np.abs(numerical)))
    err = np.abs(actual - numerical)
    assert err.max() <= max_tol * scale, "%s: max abs error %.3e > %.3e" % (
        what, err.max(), max_tol * scale)
    assert err.mean() <= mean_tol * scale, "%s: mean abs error %.3e > %.3e" % (
        what, err.mean(), mean_tol * scale)


# ---------------------------------------------------------------------------
# problems and kernel wrappers
# ---------------------------------------------------------------------------

def make_problem(activation, loss_kind, n_out, hidden, seed, n=9, nq=7):
    rng = np.random.default_rng(seed)
    sizes = np.array([N_FEATURES, *hidden, n_out], dtype=np.int64)
    theta = naive.init_theta(sizes, rng)
    Xs, ys = naive.make_data(n, N_FEATURES, n_out, loss_kind, rng)
    Xq, yq = naive.make_data(nq, N_FEATURES, n_out, loss_kind, rng)
    return rng, sizes, theta, Xs, ys, Xq, yq


def k_loss_grad(theta, sizes, code, X, y):
    g = np.full(theta.shape[0], np.nan, dtype=theta.dtype)
    loss = _mlp.loss_grad(theta, sizes, code, X, y, g)
    return loss, g


def k_hvp(theta, sizes, code, X, y, v):
    out = np.full(theta.shape[0], np.nan, dtype=theta.dtype)
    res = _mlp.hvp(theta, sizes, code, X, y, v, out)
    assert res is None
    return out


def as_rule(lr, dtype):
    """A step size as the kernels take it: a Rule (a float is plain MAML's one-entry rule)."""
    return lr if isinstance(lr, Rule) else plain_rule(lr, dtype)


def k_inner_adapt(theta, sizes, code, Xs, ys, lr, n_steps):
    return _maml.inner_adapt(theta, sizes, code, Xs, ys, as_rule(lr, theta.dtype), n_steps)


def k_task_meta_grad(theta, sizes, code, Xs, ys, Xq, yq, lr, n_steps, first_order):
    rule = as_rule(lr, theta.dtype)
    n_rates = rule.rates.shape[0] if rule.learn else 0
    g = np.full(theta.shape[0] + n_rates, np.nan, dtype=theta.dtype)
    loss = _maml.task_meta_grad(theta, sizes, code, Xs, ys, Xq, yq, rule, n_steps,
                                first_order, g)
    return loss, g


# ---------------------------------------------------------------------------
# layout and codes
# ---------------------------------------------------------------------------

def test_activation_codes():
    assert ACTIVATION_CODES == {"identity": IDENTITY, "logistic": LOGISTIC, "tanh": TANH,
                                "relu": RELU}
    assert (IDENTITY, LOGISTIC, TANH, RELU) == (0, 1, 2, 3)
    for name, code in ACTIVATION_CODES.items():
        assert naive.ACTIVATION_NAMES[code] == name


@pytest.mark.parametrize("hidden", HIDDEN + [(3, 6, 2)], ids=_hid_id)
def test_layout(hidden):
    sizes = np.array([N_FEATURES, *hidden, 3], dtype=np.int64)
    P = naive.n_params(sizes)
    assert _mlp.n_params(sizes) == P
    offs = np.asarray(_mlp.layer_offsets(sizes))
    assert offs.dtype == np.int64
    expected = [0]
    for l in range(len(sizes) - 1):
        expected.append(expected[-1] + sizes[l] * sizes[l + 1] + sizes[l + 1])
    np.testing.assert_array_equal(offs, expected)
    assert offs[-1] == P


# ---------------------------------------------------------------------------
# kernel vs naive, float64, tight
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("hidden", HIDDEN, ids=_hid_id)
@pytest.mark.parametrize("loss_kind,n_out", OUTPUT_CASES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_forward_and_loss_grad_vs_naive(activation, loss_kind, n_out, hidden):
    _, sizes, theta, X, y, _, _ = make_problem(activation, loss_kind, n_out, hidden,
                                               _seed("fwd", activation, loss_kind, n_out, hidden))
    code = ACTIVATION_CODES[activation]
    theta_before = theta.copy()

    out = _mlp.forward(theta, sizes, code, X)
    assert out.dtype == np.float64 and out.shape == (X.shape[0], n_out)
    assert_vec_close(out, naive.forward(theta, sizes, activation, X), what="forward")

    loss, g = k_loss_grad(theta, sizes, code, X, y)
    assert float(loss) == pytest.approx(naive.loss(theta, sizes, activation, X, y),
                                        rel=RTOL64, abs=ATOL64)
    assert_vec_close(g, naive.grad(theta, sizes, activation, X, y), what="loss_grad")
    # The loss alone (a forward pass: query losses of assignments and validation) has the bits
    # of loss_grad's, in either dtype.
    assert _mlp.loss(theta, sizes, code, X, y) == loss
    theta32 = theta.astype(np.float32)
    X32, y32 = X.astype(np.float32), (y if y.ndim == 1 else y.astype(np.float32))
    assert _mlp.loss(theta32, sizes, code, X32, y32) == k_loss_grad(theta32, sizes, code, X32,
                                                                    y32)[0]
    np.testing.assert_array_equal(theta, theta_before)


@pytest.mark.parametrize("hidden", HIDDEN, ids=_hid_id)
@pytest.mark.parametrize("loss_kind,n_out", OUTPUT_CASES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_hvp_vs_naive(activation, loss_kind, n_out, hidden):
    rng, sizes, theta, X, y, _, _ = make_problem(activation, loss_kind, n_out, hidden,
                                                 _seed("hvp", activation, loss_kind, n_out, hidden))
    code = ACTIVATION_CODES[activation]
    v = rng.standard_normal(theta.shape[0])
    v_before = v.copy()
    hv = k_hvp(theta, sizes, code, X, y, v)
    assert_vec_close(hv, naive.hvp(theta, sizes, activation, X, y, v), what="hvp")
    np.testing.assert_array_equal(v, v_before)


def test_loss_grad_int32_labels():
    # integer labels of another width must select cross-entropy too and give the same result
    _, sizes, theta, X, y, _, _ = make_problem("tanh", "ce", 3, (5,), 7)
    l64, g64 = k_loss_grad(theta, sizes, TANH, X, y)
    l32, g32 = k_loss_grad(theta, sizes, TANH, X, y.astype(np.int32))
    assert float(l32) == pytest.approx(float(l64), rel=1e-14)
    assert_vec_close(g32, g64, rtol=1e-14, atol=0.0, what="int32 labels")


# ---------------------------------------------------------------------------
# kernel vs central finite differences
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("hidden", [(7,), (5, 4)], ids=_hid_id)
@pytest.mark.parametrize("loss_kind,n_out", LOSS_CASES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_grad_and_hvp_vs_fd(activation, loss_kind, n_out, hidden):
    rng, sizes, theta, X, y, _, _ = make_problem(activation, loss_kind, n_out, hidden,
                                                 _seed("fd", activation, loss_kind, n_out, hidden))
    code = ACTIVATION_CODES[activation]

    _, g = k_loss_grad(theta, sizes, code, X, y)
    g_fd = naive.central_diff(lambda t: float(k_loss_grad(t, sizes, code, X, y)[0]), theta, FD_EPS)
    assert_fd_close(g, g_fd, what="grad vs FD of loss")

    v = rng.standard_normal(theta.shape[0])
    hv = k_hvp(theta, sizes, code, X, y, v)
    # directional FD of the gradient: (g(theta + eps v) - g(theta - eps v)) / (2 eps)
    hv_fd = (k_loss_grad(theta + FD_EPS * v, sizes, code, X, y)[1]
             - k_loss_grad(theta - FD_EPS * v, sizes, code, X, y)[1]) / (2 * FD_EPS)
    assert_fd_close(hv, hv_fd, max_tol=1e-6, mean_tol=1e-7, what="hvp vs FD of grad")
    # and the full FD Jacobian of the gradient applied to v (column-wise, less cancellation)
    J = naive.central_diff_vec(lambda t: k_loss_grad(t, sizes, code, X, y)[1], theta, FD_EPS)
    assert_fd_close(hv, J @ v, max_tol=1e-5, mean_tol=1e-6, what="hvp vs FD Jacobian")


@pytest.mark.parametrize("n_steps", [0, 1, 2, 5])
@pytest.mark.parametrize("loss_kind,n_out", LOSS_CASES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_second_order_meta_grad_vs_fd(activation, loss_kind, n_out, n_steps):
    hidden = (5, 4)
    _, sizes, theta, Xs, ys, Xq, yq = make_problem(
        activation, loss_kind, n_out, hidden, _seed("meta", activation, loss_kind, n_steps))
    code = ACTIVATION_CODES[activation]
    theta_before = theta.copy()

    def adapted_query_loss(t):
        tn = k_inner_adapt(t, sizes, code, Xs, ys, INNER_LR, n_steps)
        return naive.loss(tn, sizes, activation, Xq, yq)

    lq, g = k_task_meta_grad(theta, sizes, code, Xs, ys, Xq, yq, INNER_LR, n_steps, False)
    np.testing.assert_array_equal(theta, theta_before)
    assert float(lq) == pytest.approx(adapted_query_loss(theta), rel=1e-10, abs=ATOL64)
    assert_fd_close(g, naive.central_diff(adapted_query_loss, theta, FD_EPS),
                    what="second-order meta-grad vs FD, N=%d" % n_steps)
    # and against the explicit-Jacobian reference
    lq_ref, g_ref = naive.meta_grad(theta, sizes, activation, Xs, ys, Xq, yq, INNER_LR,
                                    n_steps, False)
    assert float(lq) == pytest.approx(lq_ref, rel=1e-10, abs=ATOL64)
    assert_vec_close(g, g_ref, rtol=1e-9, what="second-order meta-grad vs naive, N=%d" % n_steps)


@pytest.mark.parametrize("loss_kind,n_out", LOSS_CASES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_inner_adapt_and_first_order(activation, loss_kind, n_out):
    _, sizes, theta, Xs, ys, Xq, yq = make_problem(
        activation, loss_kind, n_out, (7,), _seed("fo", activation, loss_kind))
    code = ACTIVATION_CODES[activation]
    n_steps = 3

    # inner_adapt vs the naive loop; N=0 returns theta itself (as a value)
    tn = k_inner_adapt(theta, sizes, code, Xs, ys, INNER_LR, n_steps)
    assert tn.dtype == np.float64 and tn.shape == theta.shape
    assert_vec_close(tn, naive.inner_adapt(theta, sizes, activation, Xs, ys, INNER_LR, n_steps),
                     what="inner_adapt")
    t0 = k_inner_adapt(theta, sizes, code, Xs, ys, INNER_LR, 0)
    np.testing.assert_array_equal(t0, theta)

    # first order == grad of the query loss at the kernel's adapted parameters
    lq, g1 = k_task_meta_grad(theta, sizes, code, Xs, ys, Xq, yq, INNER_LR, n_steps, True)
    assert float(lq) == pytest.approx(naive.loss(tn, sizes, activation, Xq, yq),
                                      rel=1e-10, abs=ATOL64)
    assert_vec_close(g1, naive.grad(tn, sizes, activation, Xq, yq), what="first-order")
    # first and second order differ for N > 0 (otherwise the Jacobian is not applied)
    _, g2 = k_task_meta_grad(theta, sizes, code, Xs, ys, Xq, yq, INNER_LR, n_steps, False)
    assert np.max(np.abs(g2 - g1)) > 1e-6 * np.max(np.abs(g1))

    # N = 0: first order == second order == plain query gradient
    l0f, g0f = k_task_meta_grad(theta, sizes, code, Xs, ys, Xq, yq, INNER_LR, 0, True)
    l0s, g0s = k_task_meta_grad(theta, sizes, code, Xs, ys, Xq, yq, INNER_LR, 0, False)
    assert float(l0f) == pytest.approx(float(l0s), rel=1e-14)
    assert_vec_close(g0f, g0s, rtol=1e-14, atol=0.0, what="N=0 first vs second order")
    assert_vec_close(g0s, naive.grad(theta, sizes, activation, Xq, yq), what="N=0")


# ---------------------------------------------------------------------------
# ragged meta-batch
# ---------------------------------------------------------------------------

SUPPORT_SIZES = (3, 5, 8)
QUERY_SIZES = (6, 2, 4)


def _ragged_tasks(loss_kind, n_out, rng):
    tasks = []
    for ns, nq in zip(SUPPORT_SIZES, QUERY_SIZES):
        Xs, ys = naive.make_data(ns, N_FEATURES, n_out, loss_kind, rng)
        Xq, yq = naive.make_data(nq, N_FEATURES, n_out, loss_kind, rng)
        tasks.append((Xs, ys, Xq, yq))
    Xs = np.ascontiguousarray(np.concatenate([t[0] for t in tasks]))
    ys = np.ascontiguousarray(np.concatenate([t[1] for t in tasks]))
    Xq = np.ascontiguousarray(np.concatenate([t[2] for t in tasks]))
    yq = np.ascontiguousarray(np.concatenate([t[3] for t in tasks]))
    s_off = np.concatenate([[0], np.cumsum(SUPPORT_SIZES)]).astype(np.int64)
    q_off = np.concatenate([[0], np.cumsum(QUERY_SIZES)]).astype(np.int64)
    return tasks, Xs, ys, s_off, Xq, yq, q_off


@pytest.mark.parametrize("first_order", [False, True], ids=["second", "first"])
@pytest.mark.parametrize("loss_kind,n_out", LOSS_CASES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_meta_batch_grad_ragged(activation, loss_kind, n_out, first_order):
    rng = np.random.default_rng(_seed("batch", activation, loss_kind, first_order))
    sizes = np.array([N_FEATURES, 5, n_out], dtype=np.int64)
    theta = naive.init_theta(sizes, rng)
    code = ACTIVATION_CODES[activation]
    n_steps = 2
    tasks, Xs, ys, s_off, Xq, yq, q_off = _ragged_tasks(loss_kind, n_out, rng)

    g = np.full(theta.shape[0], np.nan)
    task_losses = np.full(len(tasks), np.nan)
    mean_loss = _maml.meta_batch_grad(theta, sizes, code, Xs, ys, s_off, Xq, yq, q_off,
                                      plain_rule(INNER_LR, theta.dtype), n_steps, first_order, g, task_losses)

    per = [k_task_meta_grad(theta, sizes, code, *t, INNER_LR, n_steps, first_order)
           for t in tasks]
    per_losses = np.array([float(p[0]) for p in per])
    assert_vec_close(task_losses, per_losses, rtol=1e-12, what="task_losses")
    assert float(mean_loss) == pytest.approx(per_losses.mean(), rel=1e-12)
    assert_vec_close(g, np.mean([p[1] for p in per], axis=0), rtol=1e-12,
                     what="meta_batch_grad vs mean of task_meta_grad")

    ref_loss, ref_g = naive.meta_batch(theta, sizes, activation, tasks, INNER_LR, n_steps,
                                       first_order)
    assert float(mean_loss) == pytest.approx(ref_loss, rel=1e-10, abs=ATOL64)
    assert_vec_close(g, ref_g, rtol=1e-9, what="meta_batch_grad vs naive.meta_batch")
    # the tasks really differ (so the mean is not trivially one task's value)
    assert np.ptp(per_losses) > 0


# ---------------------------------------------------------------------------
# float32
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("loss_kind,n_out", LOSS_CASES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_float32_matches_float64(activation, loss_kind, n_out):
    rng, sizes, theta, Xs, ys, Xq, yq = make_problem(
        activation, loss_kind, n_out, (5, 4), _seed("f32", activation, loss_kind))
    code = ACTIVATION_CODES[activation]
    v = rng.standard_normal(theta.shape[0])

    def cast(a, dt):
        return a.astype(dt) if np.issubdtype(a.dtype, np.floating) else a

    f32 = [cast(a, np.float32) for a in (theta, Xs, ys, Xq, yq, v)]
    # float64 run on exactly the float32-representable values
    f64 = [cast(a, np.float64) for a in f32]
    th32, Xs32, ys32, Xq32, yq32, v32 = f32
    th64, Xs64, ys64, Xq64, yq64, v64 = f64

    out32 = _mlp.forward(th32, sizes, code, Xs32)
    assert out32.dtype == np.float32
    assert_vec_close(out32, _mlp.forward(th64, sizes, code, Xs64), rtol=RTOL32, atol=0.0,
                     what="forward float32")

    l32, g32 = k_loss_grad(th32, sizes, code, Xs32, ys32)
    l64, g64 = k_loss_grad(th64, sizes, code, Xs64, ys64)
    assert g32.dtype == np.float32
    assert float(l32) == pytest.approx(float(l64), rel=RTOL32)
    assert_vec_close(g32, g64, rtol=RTOL32, atol=0.0, what="loss_grad float32")

    hv32 = k_hvp(th32, sizes, code, Xs32, ys32, v32)
    assert_vec_close(hv32, k_hvp(th64, sizes, code, Xs64, ys64, v64), rtol=RTOL32, atol=0.0,
                     what="hvp float32")

    tn32 = k_inner_adapt(th32, sizes, code, Xs32, ys32, INNER_LR, 2)
    assert tn32.dtype == np.float32, "inner_adapt silently upcast float32 to %s" % tn32.dtype
    assert_vec_close(tn32, k_inner_adapt(th64, sizes, code, Xs64, ys64, INNER_LR, 2),
                     rtol=RTOL32, atol=0.0, what="inner_adapt float32")

    for first_order in (False, True):
        lq32, mg32 = k_task_meta_grad(th32, sizes, code, Xs32, ys32, Xq32, yq32, INNER_LR, 2,
                                      first_order)
        lq64, mg64 = k_task_meta_grad(th64, sizes, code, Xs64, ys64, Xq64, yq64, INNER_LR, 2,
                                      first_order)
        assert float(lq32) == pytest.approx(float(lq64), rel=RTOL32)
        assert_vec_close(mg32, mg64, rtol=RTOL32, atol=0.0,
                         what="task_meta_grad float32 first_order=%s" % first_order)


# ---------------------------------------------------------------------------
# closed form: linear model, squared error, one output
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("n_steps", [1, 3])
def test_linear_model_closed_form(n_steps):
    # hidden_layer_sizes=(), one output: out = Xt @ theta with Xt = [X 1], theta = [w; b]
    # (W_0 is (d, 1) row-major, then b_0), L(theta) = 1/n ||Xt theta - y||^2, so
    #   grad L = H theta - c,  H = 2/n Xt^T Xt,  c = 2/n Xt^T y.
    # Inner steps: theta_k = A theta_{k-1} + a c_s with A = I - a H_s, hence
    #   theta_N = A^N theta + sum_{j<N} A^j a c_s,   d theta_N / d theta = A^N (symmetric),
    #   meta-grad = A^N (H_q theta_N - c_q),   query loss = 1/nq ||Xt_q theta_N - y_q||^2.
    rng = np.random.default_rng(123 + n_steps)
    d, a, ns, nq = N_FEATURES, 0.05, 7, 5
    sizes = np.array([d, 1], dtype=np.int64)
    theta = rng.standard_normal(d + 1)
    Xs, ys = naive.make_data(ns, d, 1, "mse", rng)
    Xq, yq = naive.make_data(nq, d, 1, "mse", rng)
    Xts = np.hstack([Xs, np.ones((ns, 1))])
    Xtq = np.hstack([Xq, np.ones((nq, 1))])
    Hs, cs = 2.0 / ns * Xts.T @ Xts, 2.0 / ns * Xts.T @ ys[:, 0]
    Hq, cq = 2.0 / nq * Xtq.T @ Xtq, 2.0 / nq * Xtq.T @ yq[:, 0]
    A = np.eye(d + 1) - a * Hs
    AN = np.linalg.matrix_power(A, n_steps)
    theta_N = AN @ theta + sum(np.linalg.matrix_power(A, j) @ (a * cs) for j in range(n_steps))
    expected_grad = AN @ (Hq @ theta_N - cq)
    expected_loss = np.mean((Xtq @ theta_N - yq[:, 0]) ** 2)

    assert_vec_close(k_inner_adapt(theta, sizes, IDENTITY, Xs, ys, a, n_steps), theta_N,
                     what="closed-form theta_N")
    H_col = k_hvp(theta, sizes, IDENTITY, Xs, ys, np.eye(d + 1)[1])
    assert_vec_close(H_col, Hs[:, 1], what="closed-form Hessian column")
    lq, g = k_task_meta_grad(theta, sizes, IDENTITY, Xs, ys, Xq, yq, a, n_steps, False)
    assert float(lq) == pytest.approx(expected_loss, rel=1e-12)
    assert_vec_close(g, expected_grad, what="closed-form meta-grad N=%d" % n_steps)
    # the activation code must not matter without hidden layers
    _, g_relu = k_task_meta_grad(theta, sizes, RELU, Xs, ys, Xq, yq, a, n_steps, False)
    assert_vec_close(g_relu, expected_grad, what="closed-form meta-grad (relu code)")


# ---------------------------------------------------------------------------
# the tests can fail: tolerances are not vacuous
# ---------------------------------------------------------------------------

def test_comparisons_reject_perturbations():
    rng, sizes, theta, X, y, _, _ = make_problem("tanh", "ce", 4, (5, 4), 99)
    v = rng.standard_normal(theta.shape[0])
    hv = k_hvp(theta, sizes, TANH, X, y, v)
    ref = naive.hvp(theta, sizes, "tanh", X, y, v)
    assert_vec_close(hv, ref, what="unperturbed")  # accepted as is
    scale = np.max(np.abs(ref))
    for i in (0, len(hv) // 2, len(hv) - 1):
        bad = hv.copy()
        bad[i] += 1e-8 * scale  # a relative error of 1e-8 in one entry
        with pytest.raises(AssertionError):
            assert_vec_close(bad, ref, what="perturbed")
    bad = hv.copy()
    bad[0] = np.nan
    with pytest.raises(AssertionError):
        assert_vec_close(bad, ref)

    # the finite-difference check rejects a 1e-4 relative error in one gradient entry
    _, g = k_loss_grad(theta, sizes, TANH, X, y)
    g_fd = naive.central_diff(lambda t: float(k_loss_grad(t, sizes, TANH, X, y)[0]), theta, FD_EPS)
    assert_fd_close(g, g_fd)
    bad = g.copy()
    bad[3] += 1e-4 * max(1.0, np.max(np.abs(g_fd)))
    with pytest.raises(AssertionError):
        assert_fd_close(bad, g_fd)
    # ... and a small error spread over all entries (caught by the mean-abs criterion)
    bad = g + 2e-7 * max(1.0, np.max(np.abs(g_fd))) * np.sign(rng.standard_normal(g.shape))
    with pytest.raises(AssertionError):
        assert_fd_close(bad, g_fd)


def test_relu_derivative_at_zero_is_zero():
    # contract: relu'(0) = 0. With a zero first layer every hidden pre-activation is exactly 0,
    # so the gradient of W_0 and b_0 must vanish (it would not if relu'(0) were taken as 1).
    rng = np.random.default_rng(5)
    sizes = np.array([N_FEATURES, 5, 3], dtype=np.int64)
    theta = naive.init_theta(sizes, rng)
    n_first = N_FEATURES * 5 + 5
    theta[:n_first] = 0.0
    X, y = naive.make_data(6, N_FEATURES, 3, "ce", rng)
    _, g = k_loss_grad(theta, sizes, RELU, X, y)
    assert_vec_close(g, naive.grad(theta, sizes, "relu", X, y), what="relu grad at kink")
    np.testing.assert_array_equal(g[:n_first], 0.0)
    v = rng.standard_normal(theta.shape[0])
    assert_vec_close(k_hvp(theta, sizes, RELU, X, y, v), naive.hvp(theta, sizes, "relu", X, y, v),
                     what="relu hvp at kink")
