"""Reference MAML meta-iterations in JAX and PyTorch, for benchmarking the numba kernels.

Each peer computes exactly what the skmaml kernels compute (see the kernel contract):

* ``theta`` is one flat vector; layer ``l`` stores ``W_l`` of shape ``(n_in, n_out)`` in C order,
  then ``b_l`` of shape ``(n_out,)``.  Hidden layers use the activation, the output layer is linear.
* The loss follows the type of the targets: floating targets ``(n, n_outputs)`` give
  ``mean((out - y) ** 2)`` over all elements (no 1/2 factor); integer targets ``(n,)`` give the
  row mean of ``-log softmax(out)[y]``.
* MAML: ``N`` plain SGD steps of size ``inner_lr`` on a task's support rows, then the query loss at
  the adapted parameters.  Second order differentiates through the inner steps; first order treats
  the inner gradients as constants.  The meta-gradient is the mean over tasks.
* One meta-iteration is that meta-gradient followed by one Adam step in Kingma & Ba's form:
  ``theta -= lr * m_hat / (sqrt(v_hat) + eps)`` with bias-corrected moments.

The frameworks are imported inside the builders only, so this module imports without them.
"""

import importlib.util
import os

import numpy as np

__all__ = ["available_peers", "build_peer"]

PEER_NAMES = ("jax", "torch.func", "torch.compile")

# Adam constants of the benchmark (PyTorch / Optax defaults).
_BETA1 = 0.9
_BETA2 = 0.999
_EPS = 1e-8

# Filled by ``available_peers`` when torch.compile cannot run, so the caller can say why.
TORCH_COMPILE_ERROR = None


def _unflatten(theta, layer_sizes):
    """Split a flat contract-layout vector into ``[W_0, b_0, W_1, b_1, ...]`` NumPy views."""
    theta = np.asarray(theta)
    sizes = [int(s) for s in layer_sizes]
    arrays, offset = [], 0
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        arrays.append(theta[offset:offset + n_in * n_out].reshape(n_in, n_out))
        offset += n_in * n_out
        arrays.append(theta[offset:offset + n_out])
        offset += n_out
    if offset != theta.size:
        raise ValueError("theta has %d entries, layer_sizes %s need %d" % (theta.size, sizes, offset))
    return arrays


def _flatten(arrays):
    """Inverse of :func:`_unflatten`: concatenate ``[W_0, b_0, ...]`` into one flat vector."""
    return np.concatenate([np.asarray(a).ravel() for a in arrays])


def _targets(y, n_outputs, dtype):
    """Return the targets as a float array the loss can use, and whether the loss is cross-entropy.

    Integer class indices become one-hot rows so that both losses are a single elementwise
    expression, which keeps the framework code free of gathers under ``vmap``.
    """
    y = np.asarray(y)
    if np.issubdtype(y.dtype, np.integer):
        return np.eye(n_outputs, dtype=dtype)[y], True
    return np.ascontiguousarray(y, dtype=dtype), False


def available_peers():
    """Report which peer implementations can run in this environment.

    Returns
    -------
    peers : dict of str to bool
        ``{"jax": ..., "torch.func": ..., "torch.compile": ...}``.  When torch.compile is
        unavailable although torch is, the reason is stored in ``TORCH_COMPILE_ERROR``.
    """
    global TORCH_COMPILE_ERROR
    # find_spec rather than import: importing jax costs about a second and is not needed to know.
    has_jax = (importlib.util.find_spec("jax") is not None
               and importlib.util.find_spec("jaxlib") is not None)
    has_torch_func = has_compile = False
    if importlib.util.find_spec("torch") is not None:
        import torch
        has_torch_func = all(hasattr(torch.func, f) for f in ("grad", "vmap"))
        # torch.compile needs a working C++ toolchain for the inductor CPU backend; the only
        # reliable test is compiling something.
        try:
            probe = torch.compile(lambda x: torch.tanh(x) * 2.0 + 1.0, fullgraph=True)
            ok = torch.allclose(probe(torch.ones(3)), torch.tanh(torch.ones(3)) * 2.0 + 1.0)
            has_compile = bool(ok)
            TORCH_COMPILE_ERROR = None if ok else "torch.compile probe returned wrong values"
        except Exception as exc:  # any failure (missing compiler, unsupported Python) means "no"
            TORCH_COMPILE_ERROR = "%s: %s" % (type(exc).__name__, exc)
    return {"jax": has_jax, "torch.func": has_torch_func, "torch.compile": has_compile}


def build_peer(name, layer_sizes, activation, n_inner_steps, first_order, inner_lr, meta_lr,
               theta0, Xs, ys, Xq, yq, n_threads=None):
    """Build one peer's MAML meta-iteration on a fixed meta-batch.

    Parameters
    ----------
    name : {"jax", "torch.func", "torch.compile"}
        Which implementation to build.
    layer_sizes : sequence of int
        ``[n_features, h_1, ..., h_k, n_outputs]``.
    activation : {"relu", "tanh", "logistic", "identity"}
        Hidden-layer activation.
    n_inner_steps : int
        Number of inner SGD steps ``N`` (0 is allowed: plain gradient of the query loss).
    first_order : bool
        If True, compute the first-order MAML meta-gradient.
    inner_lr : float
        Inner SGD step size ``alpha``.
    meta_lr : float
        Adam learning rate ``beta``.
    theta0 : ndarray of shape (n_params,)
        Initial parameters in the contract layout; their dtype (float32 or float64) sets the
        precision of the whole computation.  float64 with JAX requires ``jax_enable_x64``.
    Xs : ndarray of shape (B, K, n_features)
        Support inputs of the ``B`` tasks.
    ys : ndarray of shape (B, K, n_outputs) or integer (B, K)
        Support targets; floating means squared error, integer means softmax cross-entropy.
    Xq : ndarray of shape (B, Q, n_features)
        Query inputs.
    yq : ndarray of shape (B, Q, n_outputs) or integer (B, Q)
        Query targets, same kind as ``ys``.
    n_threads : int or None, default=None
        If given, limit the framework's intra-op threads.  For torch this calls
        ``torch.set_num_threads`` (process-wide).  For JAX it only takes effect if the XLA backend
        has not been initialised yet in this process.

    Returns
    -------
    step : callable
        ``step()`` runs one meta-iteration (meta-gradient over the batch and one Adam update)
        and returns once the result is computed.
    get_result : callable
        ``get_result()`` returns ``(loss, theta)``: the mean query loss computed by the last
        ``step()`` (at the parameters before its Adam update) as a float, and the current
        parameters as a flat ndarray in the contract layout.
    """
    peer = _make_peer(name, layer_sizes, activation, n_inner_steps, first_order, inner_lr,
                      meta_lr, theta0, Xs, ys, Xq, yq, n_threads)
    return peer.step, peer.get_result


def _make_peer(name, layer_sizes, activation, n_inner_steps, first_order, inner_lr, meta_lr,
               theta0, Xs, ys, Xq, yq, n_threads=None):
    """Build the peer object; also used by ``_check_peers.py`` to reach ``meta_grad``."""
    if activation not in ("relu", "tanh", "logistic", "identity"):
        raise ValueError("unknown activation %r" % (activation,))
    theta0 = np.asarray(theta0)
    if theta0.dtype not in (np.float32, np.float64):
        raise ValueError("theta0 must be float32 or float64, got %s" % theta0.dtype)
    dtype = theta0.dtype
    n_out = int(layer_sizes[-1])
    ys, classif = _targets(ys, n_out, dtype)
    yq, classif_q = _targets(yq, n_out, dtype)
    if classif != classif_q:
        raise ValueError("support and query targets must be of the same kind")
    data = tuple(np.ascontiguousarray(a, dtype=dtype) for a in (Xs, ys, Xq, yq))
    args = (layer_sizes, activation, int(n_inner_steps), bool(first_order), float(inner_lr),
            float(meta_lr), theta0, data, classif, n_threads)
    if name == "jax":
        return _JaxPeer(*args)
    if name == "torch.func":
        return _TorchPeer(*args, compiled=False)
    if name == "torch.compile":
        return _TorchPeer(*args, compiled=True)
    raise ValueError("unknown peer %r; expected one of %s" % (name, PEER_NAMES))


class _JaxPeer:
    """The whole meta-iteration as one ``jax.jit``-compiled function on CPU."""

    def __init__(self, layer_sizes, activation, n_inner, first_order, inner_lr, meta_lr,
                 theta0, data, classif, n_threads):
        if n_threads is not None:
            _limit_xla_threads(n_threads)
        import jax
        import jax.numpy as jnp

        if theta0.dtype == np.float64 and not jax.config.jax_enable_x64:
            # Without x64 JAX would silently compute in float32.
            raise ValueError("float64 with JAX needs jax.config.update('jax_enable_x64', True)")
        self._jax = jax
        cpu = jax.devices("cpu")[0]
        # Committing every input to the CPU device makes the jitted step run there even if
        # another backend is installed.
        put = lambda a: jax.device_put(a, cpu)  # noqa: E731
        n_layers = len(layer_sizes) - 1
        # jax.nn.relu, unlike jnp.maximum(z, 0), has derivative 0 at 0, as the contract requires.
        act = {"relu": jax.nn.relu, "tanh": jnp.tanh, "logistic": jax.nn.sigmoid,
               "identity": lambda z: z}[activation]

        def forward(params, X):
            a = X
            for l in range(n_layers):
                z = a @ params[2 * l] + params[2 * l + 1]
                a = act(z) if l < n_layers - 1 else z
            return a

        def loss_fn(params, X, Y):
            out = forward(params, X)
            if classif:
                return -jnp.sum(Y * jax.nn.log_softmax(out, axis=-1)) / X.shape[0]
            return jnp.mean((out - Y) ** 2)

        def task_loss(params, xs, ys, xq, yq):
            for _ in range(n_inner):  # unrolled: N is a compile-time constant
                g = jax.grad(loss_fn)(params, xs, ys)
                if first_order:
                    g = jax.lax.stop_gradient(g)
                params = [p - inner_lr * gi for p, gi in zip(params, g)]
            return loss_fn(params, xq, yq)

        def batch_loss(params, Xs, ys, Xq, yq):
            losses = jax.vmap(task_loss, in_axes=(None, 0, 0, 0, 0))(params, Xs, ys, Xq, yq)
            return jnp.mean(losses)

        def meta_step(params, m, v, t, Xs, ys, Xq, yq):
            loss, g = jax.value_and_grad(batch_loss)(params, Xs, ys, Xq, yq)
            t = t + 1
            bc1 = 1 - _BETA1 ** t
            bc2 = 1 - _BETA2 ** t
            m = [_BETA1 * mi + (1 - _BETA1) * gi for mi, gi in zip(m, g)]
            v = [_BETA2 * vi + (1 - _BETA2) * gi * gi for vi, gi in zip(v, g)]
            params = [p - meta_lr * (mi / bc1) / (jnp.sqrt(vi / bc2) + _EPS)
                      for p, mi, vi in zip(params, m, v)]
            return params, m, v, t, loss

        self._meta_step = jax.jit(meta_step)
        self._meta_grad = jax.jit(jax.grad(batch_loss))
        self._data = tuple(put(a) for a in data)
        params = [put(a) for a in _unflatten(theta0, layer_sizes)]
        zeros = [put(np.zeros_like(a)) for a in _unflatten(theta0, layer_sizes)]
        # The step count is kept on the device as a float of the working dtype so the bias
        # corrections are computed in-graph with no per-step host transfer or retrace.
        self._state = (params, zeros, list(zeros), put(np.zeros((), theta0.dtype)))
        self._loss = float("nan")

    def step(self):
        params, m, v, t, loss = self._meta_step(*self._state, *self._data)
        self._jax.block_until_ready((params, loss))
        self._state = (params, m, v, t)
        self._loss = loss

    def get_result(self):
        return float(self._loss), _flatten(self._state[0])

    def meta_grad(self):
        """Mean meta-gradient at the current parameters, flat (for the self-check only)."""
        return _flatten(self._meta_grad(self._state[0], *self._data))


def _limit_xla_threads(n_threads):
    """Ask XLA:CPU for ``n_threads`` intra-op threads, if its backend is not started yet."""
    import sys
    if "jax" in sys.modules:
        from jax._src import xla_bridge  # private, hence the guard below
        if getattr(xla_bridge, "backends_are_initialized", lambda: True)():
            return  # too late: flags are read once, when the backend starts
    flags = os.environ.get("XLA_FLAGS", "")
    if "intra_op_parallelism_threads" not in flags:
        extra = "--xla_cpu_multi_thread_eigen=%s intra_op_parallelism_threads=%d" % (
            "true" if n_threads > 1 else "false", n_threads)
        os.environ["XLA_FLAGS"] = (flags + " " + extra).strip()


class _TorchPeer:
    """Meta-iteration with ``torch.func.grad`` + ``torch.func.vmap``, eager or ``torch.compile``d."""

    def __init__(self, layer_sizes, activation, n_inner, first_order, inner_lr, meta_lr,
                 theta0, data, classif, n_threads, compiled):
        import torch
        from torch.func import grad, vmap

        if n_threads is not None:
            torch.set_num_threads(int(n_threads))
        n_layers = len(layer_sizes) - 1
        # torch.relu's derivative at 0 is 0, as the contract requires.
        act = {"relu": torch.relu, "tanh": torch.tanh, "logistic": torch.sigmoid,
               "identity": lambda z: z}[activation]

        def forward(params, X):
            a = X
            for l in range(n_layers):
                z = a @ params[2 * l] + params[2 * l + 1]
                a = act(z) if l < n_layers - 1 else z
            return a

        def loss_fn(params, X, Y):
            out = forward(params, X)
            if classif:
                return -torch.sum(Y * torch.log_softmax(out, dim=-1)) / X.shape[0]
            return torch.mean((out - Y) ** 2)

        def task_loss(params, xs, ys, xq, yq):
            for _ in range(n_inner):
                g = grad(loss_fn)(params, xs, ys)
                if first_order:
                    # detach() inside a torch.func transform cuts the dependence at this level,
                    # the analogue of jax.lax.stop_gradient.
                    g = tuple(gi.detach() for gi in g)
                params = tuple(p - inner_lr * gi for p, gi in zip(params, g))
            return loss_fn(params, xq, yq)

        def batch_loss(params, Xs, ys, Xq, yq):
            losses = vmap(task_loss, in_dims=(None, 0, 0, 0, 0))(params, Xs, ys, Xq, yq)
            loss = losses.mean()
            return loss, loss

        meta_grad = grad(batch_loss, has_aux=True)

        # Functional (no in-place updates) so that torch.compile sees one pure graph.
        def meta_step(params, m, v, t, Xs, ys, Xq, yq):
            g, loss = meta_grad(params, Xs, ys, Xq, yq)
            t = t + 1
            bc1 = 1 - _BETA1 ** t
            bc2 = 1 - _BETA2 ** t
            m = tuple(_BETA1 * mi + (1 - _BETA1) * gi for mi, gi in zip(m, g))
            v = tuple(_BETA2 * vi + (1 - _BETA2) * gi * gi for vi, gi in zip(v, g))
            params = tuple(p - meta_lr * (mi / bc1) / (torch.sqrt(vi / bc2) + _EPS)
                           for p, mi, vi in zip(params, m, v))
            return params, m, v, t, loss

        if compiled:
            # fullgraph=True: a graph break would silently benchmark a half-eager function.
            meta_step = torch.compile(meta_step, fullgraph=True)
        self._meta_step = meta_step
        self._meta_grad = lambda params, *d: meta_grad(params, *d)[0]
        self._data = tuple(torch.from_numpy(a) for a in data)
        params = tuple(torch.tensor(a) for a in _unflatten(theta0, layer_sizes))
        zeros = tuple(torch.zeros_like(p) for p in params)
        # Step count as a 0-d tensor: a Python int that changes every call would make
        # torch.compile specialise on it and recompile.
        t0 = torch.zeros((), dtype=params[0].dtype)
        self._state = (params, zeros, tuple(torch.zeros_like(p) for p in params), t0)
        self._loss = float("nan")

    def step(self):
        # CPU tensors are computed synchronously, so returning means the step is done.
        params, m, v, t, loss = self._meta_step(*self._state, *self._data)
        self._state = (params, m, v, t)
        self._loss = loss

    def get_result(self):
        return float(self._loss), _flatten([p.detach().numpy() for p in self._state[0]])

    def meta_grad(self):
        """Mean meta-gradient at the current parameters, flat (for the self-check only)."""
        g = self._meta_grad(self._state[0], *self._data)
        return _flatten([gi.detach().numpy() for gi in g])
