"""Self-check of the benchmark peers in ``_peers.py`` (a script, not a test).

Run ``python benchmarks/_check_peers.py``.  It compares every available peer with an independent
float64 NumPy reference written here (hand-written backprop; the second-order meta-gradient by
central finite differences of the whole adapted query loss), and the peers with each other:

1. tanh MLP, squared error, N in {0, 1, 2} x {first, second order}, all peers, float64;
2. every activation x both losses, N = 2, the eager peers (torch.compile is left out only because
   compiling 16 more variants takes minutes), float64;
3. the float32 sinusoid benchmark workload, N = 5, 10 meta-iterations, peers against JAX.

Exits with status 1 if any difference exceeds its tolerance.
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _peers  # noqa: E402

PEERS = [name for name, ok in _peers.available_peers().items() if ok]
if "jax" in PEERS:
    import jax
    # Only this script needs float64 JAX; the benchmark itself runs in float32.
    jax.config.update("jax_enable_x64", True)

ADAM = (_peers._BETA1, _peers._BETA2, _peers._EPS)


# ---------------------------------------------------------------------------------------------
# NumPy float64 reference, independent of both frameworks
# ---------------------------------------------------------------------------------------------

def _act(name, z):
    return {"identity": lambda: z, "tanh": lambda: np.tanh(z), "relu": lambda: np.maximum(z, 0),
            "logistic": lambda: 1 / (1 + np.exp(-z))}[name]()


def _act_prime(name, z):
    if name == "identity":
        return np.ones_like(z)
    if name == "tanh":
        return 1 - np.tanh(z) ** 2
    if name == "relu":
        return (z > 0).astype(z.dtype)
    s = 1 / (1 + np.exp(-z))
    return s * (1 - s)


def ref_loss_grad(theta, layer_sizes, act, X, Y, classif):
    """Loss and gradient by plain backprop; ``Y`` is one-hot when ``classif``."""
    arrays = _peers._unflatten(theta, layer_sizes)
    n_layers = len(arrays) // 2
    a, inputs, zs = X, [], []
    for l in range(n_layers):
        inputs.append(a)
        z = a @ arrays[2 * l] + arrays[2 * l + 1]
        zs.append(z)
        a = _act(act, z) if l < n_layers - 1 else z
    if classif:
        shifted = a - a.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = -np.sum(Y * logp) / X.shape[0]
        delta = (np.exp(logp) - Y) / X.shape[0]
    else:
        loss = np.mean((a - Y) ** 2)
        delta = 2 * (a - Y) / a.size
    grads = [None] * (2 * n_layers)
    for l in reversed(range(n_layers)):
        grads[2 * l] = inputs[l].T @ delta
        grads[2 * l + 1] = delta.sum(axis=0)
        if l > 0:
            delta = (delta @ arrays[2 * l].T) * _act_prime(act, zs[l - 1])
    return loss, _peers._flatten(grads)


def ref_adapt(theta, layer_sizes, act, xs, ys, classif, alpha, n_steps):
    for _ in range(n_steps):
        theta = theta - alpha * ref_loss_grad(theta, layer_sizes, act, xs, ys, classif)[1]
    return theta


def ref_meta(theta, layer_sizes, act, data, classif, alpha, n_steps, first_order, h=1e-5):
    """Mean query loss and mean meta-gradient over the tasks.

    First order: the analytic query gradient at the adapted parameters.  Second order: central
    finite differences of theta -> L_query(adapt(theta)), which involves no derivative code at all
    beyond the inner steps themselves.
    """
    Xs, ys, Xq, yq = data
    losses, grads = [], []
    for t in range(Xs.shape[0]):
        def adapted_query_loss(th):
            th_n = ref_adapt(th, layer_sizes, act, Xs[t], ys[t], classif, alpha, n_steps)
            return ref_loss_grad(th_n, layer_sizes, act, Xq[t], yq[t], classif)
        loss, g = adapted_query_loss(theta)
        if not first_order:
            g = np.empty_like(theta)
            for i in range(theta.size):
                e = np.zeros_like(theta)
                e[i] = h
                g[i] = (adapted_query_loss(theta + e)[0] - adapted_query_loss(theta - e)[0]) / (2 * h)
        losses.append(loss)
        grads.append(g)
    return np.mean(losses), np.mean(grads, axis=0)


def ref_adam_first_step(theta, g, lr):
    b1, b2, eps = ADAM
    m, v = (1 - b1) * g, (1 - b2) * g * g
    return theta - lr * (m / (1 - b1)) / (np.sqrt(v / (1 - b2)) + eps)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def make_task_batch(rng, layer_sizes, n_tasks, k, q, classif, dtype):
    d, n_out = layer_sizes[0], layer_sizes[-1]
    Xs = rng.standard_normal((n_tasks, k, d))
    Xq = rng.standard_normal((n_tasks, q, d))
    if classif:
        ys = rng.integers(0, n_out, (n_tasks, k))
        yq = rng.integers(0, n_out, (n_tasks, q))
    else:
        ys = rng.standard_normal((n_tasks, k, n_out)).astype(dtype)
        yq = rng.standard_normal((n_tasks, q, n_out)).astype(dtype)
    return Xs.astype(dtype), ys, Xq.astype(dtype), yq


def n_params(layer_sizes):
    return sum(a * b + b for a, b in zip(layer_sizes[:-1], layer_sizes[1:]))


def run_peer(name, layer_sizes, act, n_steps, first_order, alpha, lr, theta, batch, n_iter):
    """Meta-gradient at theta, then (loss, theta) after 1 and after ``n_iter`` meta-iterations."""
    peer = _peers._make_peer(name, layer_sizes, act, n_steps, first_order, alpha, lr, theta, *batch)
    g = peer.meta_grad()
    peer.step()
    loss1, theta1 = peer.get_result()
    for _ in range(n_iter - 1):
        peer.step()
    return g, loss1, theta1, peer.get_result()[1]


FAILED = []


def report(row, values, tols):
    flags = ["" if v <= tol else " !" for v, tol in zip(values, tols)]
    if any(flags):
        FAILED.append(row)
    print("%-44s" % row + "".join("%12.2e%-2s" % (v, f) for v, f in zip(values, flags)))


def check_against_reference(title, layer_sizes, activations, losses, n_steps_list, peers):
    print("\n" + title)
    print("%-44s%14s%14s%14s%14s%14s" % ("case / peer", "|loss-ref|", "|g-ref|/|g|",
                                          "|th1-adam(g)|", "|th3-jax|", "|gSO-gFO|/|g|"))
    alpha, lr = 0.1, 1e-3  # a large alpha makes the second-order terms clearly visible
    for act in activations:
        for loss_kind in losses:
            classif = loss_kind == "ce"
            for n_steps in n_steps_list:
                rng = np.random.default_rng(1000 * n_steps + len(act) + classif)
                theta = 0.5 * rng.standard_normal(n_params(layer_sizes))
                batch = make_task_batch(rng, layer_sizes, 3, 4, 5, classif, np.float64)
                oh = [_peers._targets(y, layer_sizes[-1], np.float64)[0] for y in batch[1::2]]
                ref_data = (batch[0], oh[0], batch[2], oh[1])
                refs = {fo: ref_meta(theta, layer_sizes, act, ref_data, classif, alpha, n_steps, fo)
                        for fo in (True, False)}
                # How much second order matters here, to show the check can tell them apart.
                sep = (np.abs(refs[True][1] - refs[False][1]).max() / np.abs(refs[False][1]).max())
                for fo in (True, False):
                    ref_loss, ref_g = refs[fo]
                    jax_th3 = None
                    for name in peers:
                        g, loss1, th1, th3 = run_peer(name, layer_sizes, act, n_steps, fo, alpha,
                                                      lr, theta, batch, 3)
                        if jax_th3 is None:
                            jax_th3 = th3
                        row = "%s %s N=%d %s  %s" % (act, loss_kind, n_steps, "FO" if fo else "SO",
                                                     name)
                        report(row, [abs(loss1 - ref_loss),
                                     np.abs(g - ref_g).max() / np.abs(ref_g).max(),
                                     # Adam is checked on the peer's own gradient: near-zero
                                     # components would amplify FD noise to ~lr otherwise.
                                     np.abs(th1 - ref_adam_first_step(theta, g, lr)).max(),
                                     np.abs(th3 - jax_th3).max(),
                                     sep],
                               [1e-12, 1e-7 if not fo else 1e-12, 1e-10, 1e-12, np.inf])


def check_float32_benchmark(peers):
    print("\nfloat32 sinusoid benchmark workload ([1, 40, 40, 1] relu, B=25, K=Q=10, N=5, "
          "alpha=0.01, 10 meta-iterations), against jax")
    print("%-44s%14s%14s%14s" % ("case / peer", "|loss-jax|/L", "|g-jax|/|g|", "|th10-jax|"))
    layer_sizes = [1, 40, 40, 1]
    rng = np.random.default_rng(0)
    amp, phase = rng.uniform(0.1, 5.0, (25, 1, 1)), rng.uniform(0, np.pi, (25, 1, 1))
    Xs, Xq = rng.uniform(-5, 5, (25, 10, 1)), rng.uniform(-5, 5, (25, 10, 1))
    batch = [a.astype(np.float32) for a in (Xs, amp * np.sin(Xs + phase),
                                            Xq, amp * np.sin(Xq + phase))]
    # He-style init so that the relu network is not dead.
    arrays = []
    for n_in, n_out in zip(layer_sizes[:-1], layer_sizes[1:]):
        arrays += [rng.standard_normal((n_in, n_out)) * np.sqrt(2 / n_in), np.zeros(n_out)]
    theta = _peers._flatten(arrays).astype(np.float32)
    for fo in (True, False):
        base = None
        for name in peers:
            g, loss1, _, th10 = run_peer(name, layer_sizes, "relu", 5, fo, 0.01, 1e-3, theta,
                                         batch, 10)
            if base is None:
                base = (g, loss1, th10)
            report("relu mse N=5 %s  %s" % ("FO" if fo else "SO", name),
                   [abs(loss1 - base[1]) / abs(base[1]), np.abs(g - base[0]).max() / np.abs(base[0]).max(),
                    np.abs(th10 - base[2]).max()],
                   [1e-5, 1e-4, 1e-5])  # float32 sums in different orders


def main():
    print("peers:", _peers.available_peers())
    if _peers.TORCH_COMPILE_ERROR:
        print("torch.compile unavailable:", _peers.TORCH_COMPILE_ERROR)
    eager = [p for p in PEERS if p != "torch.compile"]
    check_against_reference("1) float64, tanh, squared error, reference = NumPy (FD for SO)",
                            [2, 5, 4, 2], ["tanh"], ["mse"], [0, 1, 2], PEERS)
    check_against_reference("2) float64, all activations and losses, N=2, eager peers",
                            [2, 5, 4, 3], ["identity", "logistic", "tanh", "relu"],
                            ["mse", "ce"], [2], eager)
    check_float32_benchmark(PEERS)
    print("\nFAILED: %s" % FAILED if FAILED else "\nall differences within tolerance")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
