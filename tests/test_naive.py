"""Self-validation of the NumPy references in tests/naive.py.

These check the references against central finite differences (float64,
eps=1e-6) and against a few closed forms, so that test_kernels.py can trust them.
"""

import numpy as np
import pytest

import naive

ACTIVATIONS = ["identity", "logistic", "tanh", "relu"]
LOSSES = [("mse", 2), ("ce", 3)]
HIDDEN = [(), (4,), (3, 3)]
EPS = 1e-6


def _problem(activation, loss_kind, n_out, hidden, seed, n=6, nq=5, d=3):
    rng = np.random.default_rng(seed)
    sizes = np.array([d, *hidden, n_out], dtype=np.int64)
    theta = naive.init_theta(sizes, rng)
    X, y = naive.make_data(n, d, n_out, loss_kind, rng)
    Xq, yq = naive.make_data(nq, d, n_out, loss_kind, rng)
    return rng, sizes, theta, X, y, Xq, yq


def _assert_fd_close(actual, expected, max_tol=1e-6, mean_tol=1e-7):
    """max-abs and mean-abs error tolerances, relative to max(1, ||expected||_inf)."""
    scale = max(1.0, np.abs(expected).max())
    err = np.abs(actual - expected)
    assert err.max() <= max_tol * scale, err.max()
    assert err.mean() <= mean_tol * scale, err.mean()


def test_pack_unpack_roundtrip():
    rng = np.random.default_rng(0)
    sizes = np.array([3, 5, 4, 2], dtype=np.int64)
    theta = rng.standard_normal(naive.n_params(sizes))
    Ws, bs = naive.unpack(theta, sizes)
    assert [W.shape for W in Ws] == [(3, 5), (5, 4), (4, 2)]
    assert [b.shape for b in bs] == [(5,), (4,), (2,)]
    # layout: W_0 row-major then b_0 then W_1 ...
    np.testing.assert_array_equal(Ws[0], theta[:15].reshape(3, 5))
    np.testing.assert_array_equal(bs[0], theta[15:20])
    np.testing.assert_array_equal(Ws[1][0], theta[20:24])
    np.testing.assert_array_equal(naive.pack(Ws, bs), theta)
    assert naive.n_params(sizes) == 3 * 5 + 5 + 5 * 4 + 4 + 4 * 2 + 2


def test_forward_by_hand_and_codes():
    rng = np.random.default_rng(1)
    sizes = np.array([3, 4, 2], dtype=np.int64)
    theta = naive.init_theta(sizes, rng)
    X = rng.standard_normal((5, 3))
    W0, b0, W1, b1 = theta[:12].reshape(3, 4), theta[12:16], theta[16:24].reshape(4, 2), theta[24:]
    expected = np.tanh(X @ W0 + b0) @ W1 + b1
    np.testing.assert_allclose(naive.forward(theta, sizes, "tanh", X), expected, rtol=1e-14)
    for code, name in naive.ACTIVATION_NAMES.items():
        np.testing.assert_array_equal(naive.forward(theta, sizes, code, X),
                                      naive.forward(theta, sizes, name, X))
        np.testing.assert_array_equal(naive.forward(theta, sizes, np.int64(code), X),
                                      naive.forward(theta, sizes, name, X))


def test_losses_by_hand():
    out = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    theta = naive.pack([np.zeros((1, 3))], [np.zeros(3)])
    sizes = np.array([1, 3], dtype=np.int64)
    # squared error: mean over all n*k elements, no 1/2
    y = np.array([[0.0, 2.0, 1.0], [1.0, 1.0, 1.0]])
    assert naive._loss_from_output(out, y) == pytest.approx(np.mean((out - y) ** 2))
    # cross-entropy with stable log-sum-exp, also for huge logits
    yc = np.array([2, 0], dtype=np.int64)
    p = np.exp(out) / np.exp(out).sum(1, keepdims=True)
    assert naive._loss_from_output(out, yc) == pytest.approx(-np.mean(np.log(p[[0, 1], yc])))
    big = out + 1000.0
    assert naive._loss_from_output(big, yc) == pytest.approx(naive._loss_from_output(out, yc))
    assert np.isfinite(naive._loss_from_output(out * 1000.0, yc))
    # loss through the network with a zero net: uniform softmax
    X = np.ones((2, 1))
    assert naive.loss(theta, sizes, 0, X, yc) == pytest.approx(np.log(3.0))


@pytest.mark.parametrize("hidden", HIDDEN, ids=str)
@pytest.mark.parametrize("loss_kind,n_out", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_grad_vs_fd(activation, loss_kind, n_out, hidden):
    _, sizes, theta, X, y, _, _ = _problem(activation, loss_kind, n_out, hidden, 10)
    g = naive.grad(theta, sizes, activation, X, y)
    g_fd = naive.central_diff(lambda t: naive.loss(t, sizes, activation, X, y), theta, EPS)
    _assert_fd_close(g, g_fd)


@pytest.mark.parametrize("hidden", HIDDEN, ids=str)
@pytest.mark.parametrize("loss_kind,n_out", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_hvp_vs_fd_and_hessian_symmetric(activation, loss_kind, n_out, hidden):
    rng, sizes, theta, X, y, _, _ = _problem(activation, loss_kind, n_out, hidden, 20)
    v = rng.standard_normal(theta.shape)
    hv = naive.hvp(theta, sizes, activation, X, y, v)
    J = naive.central_diff_vec(lambda t: naive.grad(t, sizes, activation, X, y), theta, EPS)
    _assert_fd_close(hv, J @ v, max_tol=1e-5, mean_tol=1e-6)
    H = naive.hessian(theta, sizes, activation, X, y)
    np.testing.assert_allclose(H, H.T, atol=1e-12)
    np.testing.assert_allclose(H @ v, hv, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("n_steps", [0, 1, 2, 5])
@pytest.mark.parametrize("hidden", HIDDEN, ids=str)
@pytest.mark.parametrize("loss_kind,n_out", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_meta_grad_vs_fd(activation, loss_kind, n_out, hidden, n_steps):
    _, sizes, theta, Xs, ys, Xq, yq = _problem(activation, loss_kind, n_out, hidden, 30)
    lr = 0.1

    def adapted_query_loss(t):
        tn = naive.inner_adapt(t, sizes, activation, Xs, ys, lr, n_steps)
        return naive.loss(tn, sizes, activation, Xq, yq)

    lq, g = naive.meta_grad(theta, sizes, activation, Xs, ys, Xq, yq, lr, n_steps, False)
    assert lq == pytest.approx(adapted_query_loss(theta), rel=1e-14)
    _assert_fd_close(g, naive.central_diff(adapted_query_loss, theta, EPS))

    lq1, g1 = naive.meta_grad(theta, sizes, activation, Xs, ys, Xq, yq, lr, n_steps, True)
    assert lq1 == lq
    tn = naive.inner_adapt(theta, sizes, activation, Xs, ys, lr, n_steps)
    np.testing.assert_allclose(g1, naive.grad(tn, sizes, activation, Xq, yq), rtol=1e-14)
    if n_steps == 0:
        np.testing.assert_allclose(g, g1, rtol=1e-14)


def test_meta_batch_is_mean():
    rng = np.random.default_rng(40)
    sizes = np.array([3, 4, 2], dtype=np.int64)
    theta = naive.init_theta(sizes, rng)
    tasks = []
    for n in (3, 5, 8):
        Xs, ys = naive.make_data(n, 3, 2, "ce", rng)
        Xq, yq = naive.make_data(n + 1, 3, 2, "ce", rng)
        tasks.append((Xs, ys, Xq, yq))
    for fo in (False, True):
        lm, gm = naive.meta_batch(theta, sizes, "tanh", tasks, 0.2, 2, fo)
        per = [naive.meta_grad(theta, sizes, "tanh", *t, 0.2, 2, fo) for t in tasks]
        assert lm == pytest.approx(np.mean([p[0] for p in per]))
        np.testing.assert_allclose(gm, np.mean([p[1] for p in per], axis=0), rtol=1e-14)


@pytest.mark.parametrize("n_steps", [1, 3])
def test_meta_grad_linear_closed_form(n_steps):
    # linear model, MSE, one output: L(theta) = 1/n ||Xt theta - y||^2 with Xt = [X 1]
    rng = np.random.default_rng(50)
    d, a = 3, 0.05
    sizes = np.array([d, 1], dtype=np.int64)
    theta = rng.standard_normal(d + 1)
    Xs, ys = naive.make_data(7, d, 1, "mse", rng)
    Xq, yq = naive.make_data(4, d, 1, "mse", rng)
    Xts = np.hstack([Xs, np.ones((7, 1))])
    Xtq = np.hstack([Xq, np.ones((4, 1))])
    Hs = 2.0 / 7 * Xts.T @ Xts
    cs = 2.0 / 7 * Xts.T @ ys[:, 0]
    Hq = 2.0 / 4 * Xtq.T @ Xtq
    cq = 2.0 / 4 * Xtq.T @ yq[:, 0]
    A = np.eye(d + 1) - a * Hs
    AN = np.linalg.matrix_power(A, n_steps)
    theta_N = AN @ theta + sum(np.linalg.matrix_power(A, j) @ (a * cs) for j in range(n_steps))
    expected = AN.T @ (Hq @ theta_N - cq)
    np.testing.assert_allclose(naive.inner_adapt(theta, sizes, 0, Xs, ys, a, n_steps), theta_N,
                               rtol=1e-12)
    np.testing.assert_allclose(naive.hessian(theta, sizes, 0, Xs, ys), Hs, rtol=1e-12)
    _, g = naive.meta_grad(theta, sizes, 0, Xs, ys, Xq, yq, a, n_steps, False)
    np.testing.assert_allclose(g, expected, rtol=1e-11, atol=1e-13)
