"""Slow, obvious NumPy reference implementations for the skmaml kernels.

Everything here is computed in float64, layer by layer, with no cleverness.
These functions are the ground truth the numba kernels are tested against,
so readability matters more than speed.

Conventions (see the kernel contract):

* ``theta`` is a flat vector; for each layer ``l`` it holds ``W_l`` of shape
  ``(layer_sizes[l], layer_sizes[l+1])`` in C order, followed by ``b_l`` of
  shape ``(layer_sizes[l+1],)``.
* hidden layers use the activation, the output layer is linear.
* the loss is chosen by the type of ``y``: a float 2-D ``y`` means mean
  squared error over all elements (no 1/2 factor); an integer 1-D ``y`` means
  softmax cross-entropy averaged over rows.
"""

import numpy as np

ACTIVATION_NAMES = {0: "identity", 1: "logistic", 2: "tanh", 3: "relu"}


def _activation_name(activation):
    """Accept either the string name or the integer code."""
    if isinstance(activation, str):
        if activation not in ACTIVATION_NAMES.values():
            raise ValueError("unknown activation %r" % (activation,))
        return activation
    code = int(activation)
    if code not in ACTIVATION_NAMES:
        raise ValueError("unknown activation code %r" % (activation,))
    return ACTIVATION_NAMES[code]


# ---------------------------------------------------------------------------
# activation functions and their first and second derivatives (w.r.t. z)
# ---------------------------------------------------------------------------

def act(name, z):
    if name == "identity":
        return z.copy()
    if name == "logistic":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0.0)
    raise ValueError(name)


def act_prime(name, z):
    if name == "identity":
        return np.ones_like(z)
    if name == "logistic":
        s = 1.0 / (1.0 + np.exp(-z))
        return s * (1.0 - s)
    if name == "tanh":
        t = np.tanh(z)
        return 1.0 - t * t
    if name == "relu":
        return (z > 0).astype(np.float64)  # relu'(0) = 0
    raise ValueError(name)


def act_second(name, z):
    if name == "identity":
        return np.zeros_like(z)
    if name == "logistic":
        s = 1.0 / (1.0 + np.exp(-z))
        return s * (1.0 - s) * (1.0 - 2.0 * s)
    if name == "tanh":
        t = np.tanh(z)
        return -2.0 * t * (1.0 - t * t)
    if name == "relu":
        return np.zeros_like(z)
    raise ValueError(name)


# ---------------------------------------------------------------------------
# parameter layout
# ---------------------------------------------------------------------------

def n_params(layer_sizes):
    sizes = [int(s) for s in layer_sizes]
    return sum(sizes[l] * sizes[l + 1] + sizes[l + 1] for l in range(len(sizes) - 1))


def unpack(theta, layer_sizes):
    """Split flat theta into lists of weight matrices and bias vectors (float64 copies)."""
    theta = np.asarray(theta, dtype=np.float64)
    sizes = [int(s) for s in layer_sizes]
    if theta.shape != (n_params(sizes),):
        raise ValueError("theta has shape %s, expected (%d,)" % (theta.shape, n_params(sizes)))
    Ws, bs = [], []
    pos = 0
    for l in range(len(sizes) - 1):
        n_in, n_out = sizes[l], sizes[l + 1]
        Ws.append(theta[pos:pos + n_in * n_out].reshape(n_in, n_out).copy())
        pos += n_in * n_out
        bs.append(theta[pos:pos + n_out].copy())
        pos += n_out
    return Ws, bs


def pack(Ws, bs):
    """Inverse of unpack."""
    parts = []
    for W, b in zip(Ws, bs):
        parts.append(np.asarray(W, dtype=np.float64).ravel())  # C order
        parts.append(np.asarray(b, dtype=np.float64).ravel())
    return np.concatenate(parts)


# ---------------------------------------------------------------------------
# loss helpers
# ---------------------------------------------------------------------------

def _is_classification(y):
    y = np.asarray(y)
    if np.issubdtype(y.dtype, np.integer):
        if y.ndim != 1:
            raise ValueError("integer y must be 1-D class indices")
        return True
    if np.issubdtype(y.dtype, np.floating):
        if y.ndim != 2:
            raise ValueError("float y must be 2-D (n, n_outputs)")
        return False
    raise ValueError("unsupported y dtype %s" % y.dtype)


def _softmax(out):
    shifted = out - out.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def _loss_from_output(out, y):
    if _is_classification(y):
        n = out.shape[0]
        m = out.max(axis=1)
        logsumexp = m + np.log(np.exp(out - m[:, None]).sum(axis=1))
        picked = out[np.arange(n), y]
        return float(np.mean(logsumexp - picked))
    y = np.asarray(y, dtype=np.float64)
    return float(np.mean((out - y) ** 2))


def _dloss_dout(out, y):
    """Gradient of the loss with respect to the network output (n, n_outputs)."""
    n, k = out.shape
    if _is_classification(y):
        onehot = np.zeros_like(out)
        onehot[np.arange(n), y] = 1.0
        return (_softmax(out) - onehot) / n
    y = np.asarray(y, dtype=np.float64)
    return 2.0 * (out - y) / (n * k)


def _d2loss_dout2_times(out, y, r_out):
    """(Hessian of the loss w.r.t. the output) applied to a direction r_out, row by row."""
    n, k = out.shape
    if _is_classification(y):
        p = _softmax(out)
        result = np.zeros_like(out)
        for i in range(n):
            Hi = np.diag(p[i]) - np.outer(p[i], p[i])
            result[i] = Hi @ r_out[i]
        return result / n
    return 2.0 * r_out / (n * k)


# ---------------------------------------------------------------------------
# network
# ---------------------------------------------------------------------------

def _forward_cache(Ws, bs, name, X):
    """Return lists zs (pre-activations) and as_ (activations), as_[0] = X."""
    a = np.asarray(X, dtype=np.float64)
    as_ = [a]
    zs = []
    L = len(Ws)
    for l in range(L):
        z = as_[-1] @ Ws[l] + bs[l]
        zs.append(z)
        if l < L - 1:
            as_.append(act(name, z))
        else:
            as_.append(z)  # linear output
    return zs, as_


def forward(theta, layer_sizes, activation, X):
    name = _activation_name(activation)
    Ws, bs = unpack(theta, layer_sizes)
    zs, as_ = _forward_cache(Ws, bs, name, X)
    return as_[-1]


def loss(theta, layer_sizes, activation, X, y):
    out = forward(theta, layer_sizes, activation, X)
    return _loss_from_output(out, y)


def grad(theta, layer_sizes, activation, X, y):
    """Plain layer-by-layer backpropagation."""
    name = _activation_name(activation)
    Ws, bs = unpack(theta, layer_sizes)
    zs, as_ = _forward_cache(Ws, bs, name, X)
    L = len(Ws)
    gWs = [None] * L
    gbs = [None] * L
    delta = _dloss_dout(as_[-1], y)  # dL/dz_{L-1} (output layer)
    for l in range(L - 1, -1, -1):
        gWs[l] = as_[l].T @ delta
        gbs[l] = delta.sum(axis=0)
        if l > 0:
            delta = (delta @ Ws[l].T) * act_prime(name, zs[l - 1])
    return pack(gWs, gbs)


def hvp(theta, layer_sizes, activation, X, y, v):
    """Hessian-vector product via the Pearlmutter R-operator.

    R{x} denotes the directional derivative of x along v.
    Forward:  R{z_l} = R{a_l} W_l + a_l V_l + Vb_l,  R{a_{l+1}} = f'(z_l) R{z_l}
    Backward: R{delta_out} = (d2L/dout2) R{out}
              R{gW_l} = R{a_l}^T delta_l + a_l^T R{delta_l},  R{gb_l} = sum R{delta_l}
              R{delta_{l-1}} = (R{delta_l} W_l^T + delta_l V_l^T) * f'(z_{l-1})
                               + (delta_l W_l^T) * f''(z_{l-1}) * R{z_{l-1}}
    """
    name = _activation_name(activation)
    Ws, bs = unpack(theta, layer_sizes)
    Vs, vbs = unpack(v, layer_sizes)
    zs, as_ = _forward_cache(Ws, bs, name, X)
    L = len(Ws)

    # forward R-pass
    R_as = [np.zeros_like(as_[0])]
    R_zs = []
    for l in range(L):
        R_z = R_as[l] @ Ws[l] + as_[l] @ Vs[l] + vbs[l]
        R_zs.append(R_z)
        if l < L - 1:
            R_as.append(act_prime(name, zs[l]) * R_z)
        else:
            R_as.append(R_z)

    # backward pass and backward R-pass together
    delta = _dloss_dout(as_[-1], y)
    R_delta = _d2loss_dout2_times(as_[-1], y, R_zs[-1])
    R_gWs = [None] * L
    R_gbs = [None] * L
    for l in range(L - 1, -1, -1):
        R_gWs[l] = R_as[l].T @ delta + as_[l].T @ R_delta
        R_gbs[l] = R_delta.sum(axis=0)
        if l > 0:
            back = delta @ Ws[l].T
            R_back = R_delta @ Ws[l].T + delta @ Vs[l].T
            new_delta = back * act_prime(name, zs[l - 1])
            new_R_delta = (R_back * act_prime(name, zs[l - 1])
                           + back * act_second(name, zs[l - 1]) * R_zs[l - 1])
            delta, R_delta = new_delta, new_R_delta
    return pack(R_gWs, R_gbs)


def hessian(theta, layer_sizes, activation, X, y):
    """Full P x P Hessian built column by column from hvp on basis vectors."""
    P = n_params(layer_sizes)
    H = np.zeros((P, P))
    for i in range(P):
        e = np.zeros(P)
        e[i] = 1.0
        H[:, i] = hvp(theta, layer_sizes, activation, X, y, e)
    return H


# ---------------------------------------------------------------------------
# MAML
# ---------------------------------------------------------------------------

def inner_adapt(theta, layer_sizes, activation, Xs, ys, inner_lr, n_steps):
    """theta_k = theta_{k-1} - inner_lr * grad L_support(theta_{k-1}), k = 1..n_steps."""
    th = np.asarray(theta, dtype=np.float64).copy()
    for _ in range(n_steps):
        th = th - inner_lr * grad(th, layer_sizes, activation, Xs, ys)
    return th


def meta_grad(theta, layer_sizes, activation, Xs, ys, Xq, yq, inner_lr, n_steps,
              first_order):
    """Return (query loss at theta_N, meta-gradient).

    Second order: J = (I - a H_0)(I - a H_1)...(I - a H_{N-1}) built as an explicit
    matrix from full Hessians, then applied to grad L_q(theta_N).
    First order: grad L_q(theta_N).
    """
    theta = np.asarray(theta, dtype=np.float64)
    P = theta.shape[0]
    thetas = [theta.copy()]
    for _ in range(n_steps):
        thetas.append(thetas[-1] - inner_lr * grad(thetas[-1], layer_sizes, activation, Xs, ys))
    theta_N = thetas[-1]
    lq = loss(theta_N, layer_sizes, activation, Xq, yq)
    gq = grad(theta_N, layer_sizes, activation, Xq, yq)
    if first_order:
        return lq, gq
    J = np.eye(P)
    for k in range(n_steps):
        Hk = hessian(thetas[k], layer_sizes, activation, Xs, ys)
        J = J @ (np.eye(P) - inner_lr * Hk)
    return lq, J @ gq


def meta_batch(theta, layer_sizes, activation, tasks, inner_lr, n_steps, first_order):
    """tasks: list of (Xs, ys, Xq, yq). Returns (mean query loss, mean meta-gradient)."""
    losses = []
    grads = []
    for Xs, ys, Xq, yq in tasks:
        lq, g = meta_grad(theta, layer_sizes, activation, Xs, ys, Xq, yq,
                          inner_lr, n_steps, first_order)
        losses.append(lq)
        grads.append(g)
    return float(np.mean(losses)), np.mean(grads, axis=0)


# ---------------------------------------------------------------------------
# numerics
# ---------------------------------------------------------------------------

def central_diff(f, theta, eps=1e-6):
    """Central finite-difference gradient of a scalar function f at theta."""
    theta = np.asarray(theta, dtype=np.float64)
    g = np.zeros_like(theta)
    for i in range(theta.shape[0]):
        tp = theta.copy()
        tm = theta.copy()
        tp[i] += eps
        tm[i] -= eps
        g[i] = (f(tp) - f(tm)) / (2.0 * eps)
    return g


def central_diff_vec(f, theta, eps=1e-6):
    """Central finite-difference Jacobian columns of a vector function f; returns (m, P)."""
    theta = np.asarray(theta, dtype=np.float64)
    cols = []
    for i in range(theta.shape[0]):
        tp = theta.copy()
        tm = theta.copy()
        tp[i] += eps
        tm[i] -= eps
        cols.append((np.asarray(f(tp)) - np.asarray(f(tm))) / (2.0 * eps))
    return np.stack(cols, axis=1)


# ---------------------------------------------------------------------------
# small random problems (shared by test_naive.py and test_kernels.py)
# ---------------------------------------------------------------------------

def init_theta(layer_sizes, rng):
    """Random parameters with 1/sqrt(fan_in)-scaled weights and small biases."""
    sizes = [int(s) for s in layer_sizes]
    Ws, bs = [], []
    for l in range(len(sizes) - 1):
        Ws.append(rng.standard_normal((sizes[l], sizes[l + 1])) / np.sqrt(sizes[l]))
        bs.append(0.1 * rng.standard_normal(sizes[l + 1]))
    return pack(Ws, bs)


def make_data(n, n_features, n_outputs, loss_kind, rng):
    """X (n, d) float64 and y: float (n, n_outputs) for 'mse', int64 (n,) for 'ce'."""
    X = rng.standard_normal((n, n_features))
    if loss_kind == "mse":
        y = rng.standard_normal((n, n_outputs))
    elif loss_kind == "ce":
        y = rng.integers(0, n_outputs, size=n).astype(np.int64)
    else:
        raise ValueError(loss_kind)
    return X, y


if __name__ == "__main__":  # pragma: no cover - quick manual self-check
    rng = np.random.default_rng(0)
    worst = {"grad": 0.0, "hvp": 0.0, "meta": 0.0}
    for name in ["identity", "logistic", "tanh", "relu"]:
        for loss_kind, k in [("mse", 2), ("ce", 3)]:
            for hidden in [(), (4,), (3, 3)]:
                sizes = np.array([3, *hidden, k], dtype=np.int64)
                th = init_theta(sizes, rng)
                X, y = make_data(6, 3, k, loss_kind, rng)
                Xq, yq = make_data(5, 3, k, loss_kind, rng)
                g = grad(th, sizes, name, X, y)
                gn = central_diff(lambda t: loss(t, sizes, name, X, y), th)
                worst["grad"] = max(worst["grad"], np.abs(g - gn).max())
                v = rng.standard_normal(th.shape)
                hv = hvp(th, sizes, name, X, y, v)
                hn = central_diff_vec(lambda t: grad(t, sizes, name, X, y), th) @ v
                worst["hvp"] = max(worst["hvp"], np.abs(hv - hn).max())
                _, mg = meta_grad(th, sizes, name, X, y, Xq, yq, 0.1, 2, False)
                mn = central_diff(lambda t: loss(inner_adapt(t, sizes, name, X, y, 0.1, 2),
                                                 sizes, name, Xq, yq), th)
                worst["meta"] = max(worst["meta"], np.abs(mg - mn).max())
    print("max abs errors vs central differences:", worst)
