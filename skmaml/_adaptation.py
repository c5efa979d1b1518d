"""The adaptation rule of an estimator: its options, its learned step sizes and their MLP view.

``learn_inner_lr`` and ``adapted_layers`` choose the rule the kernels run (:mod:`._kernels._rules`):
which layers the inner loop moves and which step sizes it moves them by. Learned step sizes travel
with θ in one flat vector (``params = [θ, rates]``), so the meta-optimiser updates both with one
call, and are shown as fitted attributes shaped like ``coefs_`` and ``intercepts_``:

- ``"per_parameter"`` (Meta-SGD, Li et al. 2017): ``inner_lr_coefs_[i]`` has the shape of
  ``coefs_[i]``, ``inner_lr_intercepts_[i]`` that of ``intercepts_[i]``; one set for every step.
- ``"per_layer_step"`` (MAML++'s LSLR, Antoniou et al. 2019): ``inner_lr_coefs_[i]`` and
  ``inner_lr_intercepts_[i]`` have shape ``(n_inner_steps,)``: entry ``k`` is the step size of
  that weight matrix and that bias vector at inner step ``k``. Steps beyond those learned (an
  ``adapt`` with more steps) reuse the last step's sizes.

Layers the inner loop does not adapt (``adapted_layers``) have step size 0 in these attributes.
The learned step sizes are not constrained to be positive: neither paper constrains them, and
Meta-SGD's argument is that the learned vector chooses the update's direction as well as its
size.
"""

import numpy as np

from ._kernels._config import ONE_RATE, PER_LAYER, PER_PARAMETER
from ._kernels._mlp import n_params
from ._kernels._rules import Rule, plain_rule

# The values of ``learn_inner_lr`` (None: plain MAML's one fixed ``inner_lr``).
LEARN_INNER_LR = ("per_parameter", "per_layer_step")


class Layout:
    """Where an estimator's adaptation rule puts step sizes, from its options and layer sizes.

    Attributes: ``first_layer`` (1-based first adapted layer), ``sharing`` (kernel code),
    ``n_rate_steps``, ``learn`` and ``n_rates`` (entries of the learned step sizes, 0 if none).
    """

    def __init__(self, learn_inner_lr, adapted_layers, n_inner_steps, layer_sizes):
        n_layers = len(layer_sizes) - 1
        if adapted_layers == "all":
            self.first_layer = 1
        elif adapted_layers > n_layers:
            raise ValueError(
                f"adapted_layers={adapted_layers}, but the network has {n_layers} weight "
                f"layer{'s' if n_layers != 1 else ''} ({len(layer_sizes) - 2} hidden "
                "layer(s) and the output layer). Use at most that many, or 'all'.")
        else:
            self.first_layer = n_layers - int(adapted_layers) + 1
        self.learn = learn_inner_lr is not None
        if self.learn and n_inner_steps < 1:
            raise ValueError(f"learn_inner_lr={learn_inner_lr!r} learns the step sizes of the "
                             "inner steps, but n_inner_steps=0: there are none. Set "
                             "n_inner_steps >= 1 or learn_inner_lr=None.")
        self.mode = learn_inner_lr
        self.layer_sizes = np.asarray(layer_sizes, dtype=np.int64)
        self.n_theta = int(n_params(self.layer_sizes))
        # (n_in, n_out) of each weight layer, and of the adapted ones.
        self._sizes = [(int(a), int(b)) for a, b in zip(layer_sizes[:-1], layer_sizes[1:])]
        self._adapted = self._sizes[self.first_layer - 1:]
        if learn_inner_lr == "per_parameter":
            self.sharing, self.n_rate_steps = PER_PARAMETER, 1
            self.n_rates = sum((a + 1) * b for a, b in self._adapted)
        elif learn_inner_lr == "per_layer_step":
            self.sharing, self.n_rate_steps = PER_LAYER, int(n_inner_steps)
            self.n_rates = 2 * len(self._adapted) * self.n_rate_steps
        else:
            self.sharing, self.n_rate_steps, self.n_rates = ONE_RATE, 1, 0

    def signature(self):
        """What must be equal for learned step sizes to carry over (``warm_start``)."""
        return (self.mode, self.first_layer, self.n_rate_steps,
                tuple(int(s) for s in self.layer_sizes))

    def initial_rates(self, inner_lr, dtype):
        """Learned step sizes before meta-training: all ``inner_lr``."""
        return np.full(self.n_rates, inner_lr, dtype=dtype)

    def kernel_rule(self, params, inner_lr, first_step=0):
        """θ (a view of ``params``) and the kernels' :class:`Rule` (its rates a view too) for
        inner steps counted from ``first_step`` (the steps an adapted model has taken already:
        its next step is step ``first_step`` of a per-step rule)."""
        theta = params[:self.n_theta]
        if not self.learn:
            return theta, plain_rule(inner_lr, params.dtype, self.first_layer)
        rates, n_sets = params[self.n_theta:], self.n_rate_steps
        if first_step:
            skip = min(first_step, n_sets - 1)
            per_set = rates.shape[0] // n_sets
            rates, n_sets = rates[skip * per_set:], n_sets - skip
        return theta, Rule(rates, n_sets, self.sharing, self.first_layer, True)

    def to_attributes(self, rates):
        """``(inner_lr_coefs_, inner_lr_intercepts_)`` from flat learned step sizes (None, None
        without learned step sizes)."""
        if not self.learn:
            return None, None
        sizes = self._sizes
        n_body = self.first_layer - 1
        if self.sharing == PER_PARAMETER:
            coefs = [np.zeros((a, b), dtype=rates.dtype) for a, b in sizes[:n_body]]
            intercepts = [np.zeros(b, dtype=rates.dtype) for _, b in sizes[:n_body]]
            start = 0
            for a, b in self._adapted:
                coefs.append(rates[start:start + a * b].reshape(a, b).copy())
                intercepts.append(rates[start + a * b:start + (a + 1) * b].copy())
                start += (a + 1) * b
            return coefs, intercepts
        per_step = rates.reshape(self.n_rate_steps, len(self._adapted), 2)
        zeros = [np.zeros(self.n_rate_steps, dtype=rates.dtype) for _ in range(n_body)]
        coefs = zeros + [per_step[:, j, 0].copy() for j in range(len(self._adapted))]
        intercepts = [z.copy() for z in zeros] + [per_step[:, j, 1].copy()
                                                  for j in range(len(self._adapted))]
        return coefs, intercepts

    def from_attributes(self, coefs, intercepts, dtype, remedy):
        """Flat learned step sizes from the fitted attributes, checked against this layout."""
        if not self.learn:
            if coefs is not None or intercepts is not None:
                raise ValueError(
                    "The model has learned step sizes (inner_lr_coefs_), but learn_inner_lr is "
                    f"None: they would be ignored. {remedy}")
            return np.empty(0, dtype=dtype)
        if coefs is None or intercepts is None:
            raise ValueError(f"learn_inner_lr={self.mode!r}, but the model has no learned step "
                             f"sizes (inner_lr_coefs_ is None). {remedy}")
        sizes = self._sizes
        if self.sharing == PER_PARAMETER:
            expected_c, expected_b = sizes, [(b,) for _, b in sizes]
        else:
            expected_c = expected_b = [(self.n_rate_steps,)] * len(sizes)
        got_c, got_b = [np.shape(c) for c in coefs], [np.shape(b) for b in intercepts]
        if got_c != list(expected_c) or got_b != list(expected_b):
            raise ValueError(
                f"inner_lr_coefs_/inner_lr_intercepts_ do not match learn_inner_lr={self.mode!r}"
                f" and n_inner_steps: expected shapes {list(expected_c)} and "
                f"{list(expected_b)}, got {got_c} and {got_b}. {remedy}")
        n_body = self.first_layer - 1
        if self.sharing == PER_PARAMETER:
            parts = []
            for c, b in zip(coefs[n_body:], intercepts[n_body:]):
                parts += [np.asarray(c, dtype=dtype).reshape(-1), np.asarray(b, dtype=dtype)]
            return np.concatenate(parts)
        per_step = np.stack([np.stack([np.asarray(c, dtype=dtype), np.asarray(b, dtype=dtype)],
                                      axis=1)
                             for c, b in zip(coefs[n_body:], intercepts[n_body:])], axis=1)
        return np.ascontiguousarray(per_step.reshape(-1))
