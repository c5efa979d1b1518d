"""The flat parameter vector θ and its MLP view (``coefs_``, ``intercepts_``), and initialisation.

The layout is the kernels' (:mod:`skmaml._kernels._mlp`): per layer ``W_l`` in C order then ``b_l``.
The estimator stores only the MLP view, as :class:`~sklearn.neural_network.MLPRegressor` does, and packs
it into a flat vector at the boundary of every kernel call, so ``coefs_``/``intercepts_`` set by a
user are what ``warm_start`` continues from.
"""

import numpy as np

from ._kernels._mlp import n_params


def layer_sizes_array(n_features, hidden_layer_sizes, n_outputs):
    """``[n_features, *hidden_layer_sizes, n_outputs]`` as the kernels' int64 array."""
    return np.array([n_features, *hidden_layer_sizes, n_outputs], dtype=np.int64)


def pack(coefs, intercepts, dtype):
    """Flat θ (C-contiguous, ``dtype``) from lists of weight matrices and bias vectors."""
    parts = []
    for W, b in zip(coefs, intercepts):
        parts.append(np.asarray(W, dtype=dtype).reshape(-1))
        parts.append(np.asarray(b, dtype=dtype).reshape(-1))
    return np.ascontiguousarray(np.concatenate(parts))


def unpack(theta, layer_sizes):
    """Lists ``coefs`` and ``intercepts`` (copies) from a flat θ."""
    coefs, intercepts = [], []
    start = 0
    for n_in, n_out in zip(layer_sizes[:-1], layer_sizes[1:]):
        coefs.append(theta[start:start + n_in * n_out].reshape(n_in, n_out).copy())
        start += n_in * n_out
        intercepts.append(theta[start:start + n_out].copy())
        start += n_out
    return coefs, intercepts


# The ``weight_init`` options, the default first.
WEIGHT_INITS = ("uniform_fan_in", "glorot_uniform")


def init_theta(layer_sizes, activation, random_state, dtype, weight_init=WEIGHT_INITS[0]):
    """Initial θ, drawn from ``random_state``.

    ``"uniform_fan_in"``: every weight and bias of a layer with ``fan_in`` inputs from
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's ``nn.Linear`` default and so the initialisation
    of the MAML reference implementations (the paper's PyTorch ports, learn2learn, higher,
    torchmeta). ``"glorot_uniform"``: ``MLPRegressor``'s, bound sqrt(f / (fan_in + fan_out)) with
    f = 2 for logistic and 6 otherwise, for weights and biases alike.
    """
    if weight_init not in WEIGHT_INITS:
        raise ValueError(f"weight_init must be one of {WEIGHT_INITS}; got {weight_init!r}.")
    factor = 2.0 if activation == "logistic" else 6.0
    parts = []
    for n_in, n_out in zip(layer_sizes[:-1], layer_sizes[1:]):
        if weight_init == "uniform_fan_in":
            bound = 1.0 / np.sqrt(n_in)
        else:
            bound = np.sqrt(factor / (n_in + n_out))
        parts.append(random_state.uniform(-bound, bound, n_in * n_out))
        parts.append(random_state.uniform(-bound, bound, n_out))
    theta = np.concatenate(parts).astype(dtype)
    assert theta.shape[0] == n_params(layer_sizes)
    return theta


def check_shapes(coefs, intercepts, layer_sizes, remedy="Set warm_start=False to start afresh."):
    """Raise a clear error when ``coefs_``/``intercepts_`` do not fit the layer sizes."""
    expected = [(int(a), int(b)) for a, b in zip(layer_sizes[:-1], layer_sizes[1:])]
    got = [np.shape(W) for W in coefs]
    got_b = [np.shape(b) for b in intercepts]
    if got != expected or got_b != [(b,) for _, b in expected]:
        raise ValueError(
            "coefs_/intercepts_ do not match the network: expected weight shapes "
            f"{expected} and bias lengths {[b for _, b in expected]}, got {got} and {got_b}. "
            + remedy)
