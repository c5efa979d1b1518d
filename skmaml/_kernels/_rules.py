"""Adaptation rules: which parameters the inner loop moves, and by which step sizes.

An inner step is ``theta_{k+1} = theta_k - alpha_k * grad L_support(theta_k)`` on the **adapted
parameters**, the tail ``theta[p0:]`` of the flat vector that holds the layers ``first_layer .. L``
(all layers when ``first_layer = 1``; the last one, ANIL's head, when it is ``L``); the parameters
below ``p0`` (the body) stay at ``theta``'s values. ``alpha_k`` is elementwise: its entries come
from the rule's ``rates``, shared as :data:`._config.ONE_RATE` (one for every adapted parameter:
plain MAML), :data:`._config.PER_LAYER` (one per weight matrix and one per bias vector of each
adapted layer, in layer order: MAML++'s LSLR) or :data:`._config.PER_PARAMETER` (one per adapted
parameter: Meta-SGD). ``rates`` holds ``n_rate_steps`` such sets one after the other; inner step
``k`` uses set ``min(k, n_rate_steps - 1)``, so one set serves every step and a rule learned per
step for N steps reuses its last set for steps beyond N.

Plain MAML is the one-entry case: ``rates = [alpha]``, one set, one rate, all layers.
"""

from collections import namedtuple

import numpy as np
from numba import njit

from ._borrow import borrowed
from ._config import JIT_OPTIONS, ONE_RATE, PER_LAYER, PER_PARAMETER

Rule = namedtuple("Rule", ["rates", "n_rate_steps", "sharing", "first_layer", "learn"])
Rule.__doc__ = """An adaptation rule (see the module docstring). ``rates`` is a 1-D array in
θ's dtype of ``n_rate_steps * rates_per_step`` entries; ``learn`` asks the meta-gradient kernels for
the gradient of the query loss with respect to ``rates`` too."""


def plain_rule(inner_lr, dtype, first_layer=1):
    """The rule of plain MAML (ANIL with ``first_layer > 1``): one fixed step size ``inner_lr``."""
    return Rule(np.full(1, inner_lr, dtype=dtype), 1, ONE_RATE, int(first_layer), False)


@njit(**JIT_OPTIONS)
def borrowed_rule(rule):
    """``rule`` with its step sizes :func:`._borrow.borrowed` (valid while ``rule`` is)."""
    return Rule(borrowed(rule.rates), rule.n_rate_steps, rule.sharing, rule.first_layer,
                rule.learn)


@njit(**JIT_OPTIONS)
def rates_per_step(offsets, sharing, first_layer):
    """Entries of one set of step sizes for a network with these :func:`._mlp.layer_offsets`."""
    n_layers = offsets.shape[0] - 1
    if sharing == PER_PARAMETER:
        return offsets[n_layers] - offsets[first_layer - 1]
    if sharing == PER_LAYER:
        return 2 * (n_layers - first_layer + 1)
    return 1


@njit(**JIT_OPTIONS)
def rate_groups(net, rule):
    """Bounds in θ of the parameter groups that share one step size: ``groups[g]:groups[g + 1]``
    for ``g < len(groups) - 1``. For :data:`PER_PARAMETER` only ``[p0, n_params]`` (every
    parameter is its own group); ``groups[0]`` is always ``p0``, the first adapted parameter."""
    layer_sizes, offsets = net.layer_sizes, net.offsets
    n_layers = layer_sizes.shape[0] - 1
    first = rule.first_layer
    if rule.sharing != PER_LAYER:
        groups = np.empty(2, dtype=np.int64)
        groups[0] = offsets[first - 1]
        groups[1] = offsets[n_layers]
        return groups
    n_adapted = n_layers - first + 1
    groups = np.empty(2 * n_adapted + 1, dtype=np.int64)
    for j in range(n_adapted):
        l = first + j  # 1-based layer
        groups[2 * j] = offsets[l - 1]
        groups[2 * j + 1] = offsets[l - 1] + layer_sizes[l - 1] * layer_sizes[l]
    groups[2 * n_adapted] = offsets[n_layers]
    return groups


# Inlined, as _mlp's elementwise loops (see there): called at every inner step of every task.
@njit(inline="always", **JIT_OPTIONS)
def _rate_set(rule, k, n_per_step):
    """Offset in ``rule.rates`` of the set inner step ``k`` uses."""
    return min(k, rule.n_rate_steps - 1) * n_per_step


# The loops below run from 0 over 1-D views (as those of ``_mlp``): an index that might be
# negative (``base + i``) makes numba check for wraparound at every access, which keeps LLVM from
# vectorising the loop.


@njit(inline="always", **JIT_OPTIONS)
def _step_scalar(theta, grad, alpha, out):
    for i in range(theta.shape[0]):
        out[i] = theta[i] - alpha * grad[i]


@njit(inline="always", **JIT_OPTIONS)
def _step_vector(theta, grad, alpha, out):
    for i in range(theta.shape[0]):
        out[i] = theta[i] - alpha[i] * grad[i]


@njit(**JIT_OPTIONS)
def adapt_step(theta_k, grad, rule, groups, k, out):
    """``out = theta_k - alpha_k * grad`` on the adapted parameters, ``out = theta_k`` on the body
    (``out`` may be ``theta_k``). With one plain step size this is ``theta - alpha * grad``, bit for
    bit."""
    p0 = groups[0]
    n_par = theta_k.shape[0]
    # In place (inner_adapt, adaptation_losses), the loops are given one view for both ``theta_k``
    # and ``out``: passed two arrays that are one, LLVM's run-time overlap test sends a loop to its
    # scalar version, which made an in-place step 2.5 times as long (1,761 float64 parameters, one
    # core of a Zen 4, one run: 0.5 against 0.2 us). The same arithmetic, so the same bits.
    in_place = out.ctypes.data == theta_k.ctypes.data
    if not in_place:
        for i in range(p0):
            out[i] = theta_k[i]
    rates = rule.rates
    if rule.sharing == PER_PARAMETER:
        base = _rate_set(rule, k, n_par - p0)
        alpha = rates[base:base + n_par - p0]
        if in_place:
            o = out[p0:]
            _step_vector(o, grad[p0:], alpha, o)
        else:
            _step_vector(theta_k[p0:], grad[p0:], alpha, out[p0:])
        return
    n_groups = groups.shape[0] - 1
    base = _rate_set(rule, k, n_groups)
    for g in range(n_groups):
        lo, hi = groups[g], groups[g + 1]
        if in_place:
            o = out[lo:hi]
            _step_scalar(o, grad[lo:hi], rates[base + g], o)
        else:
            _step_scalar(theta_k[lo:hi], grad[lo:hi], rates[base + g], out[lo:hi])


@njit(**JIT_OPTIONS)
def add_rate_grad(grad_k, v, rule, groups, k, acc):
    """``acc += -grad_k * v`` on the adapted parameters, into the set of step ``k``: the
    derivative of the loss by each adapted parameter's step size at step ``k``, ``v`` being its
    gradient with respect to ``theta_{k+1}``. ``acc`` holds ``n_rate_steps`` sets of one entry per
    adapted parameter (a set shared by several steps gets each step's share); for rules with
    fewer step sizes, :func:`sum_rate_groups` then sums each group. Elementwise, so it
    vectorises (a per-group sum at every step of every task would not)."""
    p0 = groups[0]
    n_adapted = grad_k.shape[0] - p0
    base = _rate_set(rule, k, n_adapted)
    target, g, d = acc[base:base + n_adapted], grad_k[p0:], v[p0:]
    for i in range(n_adapted):
        target[i] -= g[i] * d[i]


@njit(**JIT_OPTIONS)
def sum_rate_groups(acc, rule, groups, out):
    """The gradient of a rule's step sizes from the per-parameter ``acc`` of
    :func:`add_rate_grad`: ``out`` (``rule.rates``' size) gets each group's sum, set by set."""
    p0 = groups[0]
    n_adapted = groups[groups.shape[0] - 1] - p0
    n_groups = groups.shape[0] - 1
    for s in range(rule.n_rate_steps):
        for j in range(n_groups):
            part = acc[s * n_adapted + groups[j] - p0:s * n_adapted + groups[j + 1] - p0]
            total = 0.0
            for i in range(part.shape[0]):
                total += part[i]
            out[s * n_groups + j] = total


@njit(inline="always", **JIT_OPTIONS)
def _scale_scalar(d, alpha, o):
    for i in range(d.shape[0]):
        o[i] = alpha * d[i]


@njit(inline="always", **JIT_OPTIONS)
def _scale_vector(d, alpha, o):
    for i in range(d.shape[0]):
        o[i] = alpha[i] * d[i]


@njit(**JIT_OPTIONS)
def scale_direction(v, rule, groups, k, out):
    """The direction the backward sweep multiplies by the support Hessian of step ``k``:
    ``alpha_k * v`` on the adapted parameters, for rules with more than one step size (the
    Jacobian of ``theta_{k+1}`` in ``theta_k`` is ``I - diag(alpha_k) H``, so ``v`` becomes
    ``v - H (alpha_k * v)``). Returns whether it wrote ``out`` (which may be ``v``): with one
    step size ``alpha`` the sweep uses ``v`` itself and ``v - alpha (H v)``, plain MAML's
    arithmetic."""
    if rule.sharing == ONE_RATE:
        return False
    p0 = groups[0]
    n_par = v.shape[0]
    rates = rule.rates
    in_place = out.ctypes.data == v.ctypes.data  # one view for both (see adapt_step)
    if rule.sharing == PER_PARAMETER:
        base = _rate_set(rule, k, n_par - p0)
        alpha = rates[base:base + n_par - p0]
        if in_place:
            o = out[p0:]
            _scale_vector(o, alpha, o)
        else:
            _scale_vector(v[p0:], alpha, out[p0:])
        return True
    n_groups = groups.shape[0] - 1
    base = _rate_set(rule, k, n_groups)
    for j in range(n_groups):
        alpha = rates[base + j]
        lo, hi = groups[j], groups[j + 1]
        if in_place:
            o = out[lo:hi]
            _scale_scalar(o, alpha, o)
        else:
            _scale_scalar(v[lo:hi], alpha, out[lo:hi])
    return True


@njit(**JIT_OPTIONS)
def sweep_step(v, hv, rule, k, scaled):
    """``v <- v - alpha_k hv`` (one step size, ``hv = H v``) or ``v <- v - hv`` (``scaled``:
    ``hv = H (alpha_k * v)``), over all of θ: the body's entries move too (it shapes the
    adapted layers' gradient)."""
    if scaled:
        for i in range(v.shape[0]):
            v[i] = v[i] - hv[i]
        return
    _step_scalar(v, hv, rule.rates[min(k, rule.n_rate_steps - 1)], v)
