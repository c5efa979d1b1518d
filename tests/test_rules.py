"""Tests of the adaptation rules of the compiled core (skmaml._kernels._rules and the kernels of
skmaml._kernels._maml that take a Rule), and of MetaGradient's threads with learned step sizes.

What is checked:

* the second-order meta-gradient with respect to θ *and* the step sizes against central finite
  differences of the whole adapted query loss, for Meta-SGD (one rate per parameter), LSLR (one
  rate per weight matrix and per bias vector, one set per step), plain ANIL (head only, fixed
  step size), ANIL + Meta-SGD, LSLR on the last two layers and one learned rate per step;
* the first-order meta-gradient against NumPy: θ part = grad L_query(θ_N), rate part =
  ``sum_k -grad L_support(θ_k) * grad L_query(θ_N)`` summed over each rate's parameters;
* a linear model (squared error, one output) in closed form, N = 1 and 2;
* that one shared step size, one per parameter and one per layer agree when all are equal, and
  that ``plain_rule`` is the hand-built one-rate rule bit for bit;
* head-only adaptation (the body is never moved but is meta-learned), steps beyond the learned
  sets (they reuse the last one), ragged meta-batches, float32, and bit-identical results of
  MetaGradient for any n_jobs.

How: the conventions of test_kernels.py (its helpers are imported from it): small random problems
seeded from the test parameters, NaN-prefilled outputs, norm-scaled comparisons
(``assert_vec_close``) and max/mean finite-difference checks (``assert_fd_close``). Step sizes are
random and positive around 0.1 (``0.05 + 0.1 U``), so that a kernel that reads the wrong entry of
``rates`` is caught. The NumPy reference of an inner step, ``ref_adapt``, expands a rule's rates
to one step size per parameter with an explicit 0/1 matrix (``rate_map``), independently of the
kernels' group bounds.
"""

import numpy as np
import pytest
from test_kernels import (
    ACTIVATIONS,
    ATOL64,
    FD_EPS,
    INNER_LR,
    LOSS_CASES,
    N_FEATURES,
    RTOL32,
    _ragged_tasks,
    _seed,
    assert_fd_close,
    assert_vec_close,
    k_task_meta_grad,
    make_problem,
)

import naive
from skmaml._kernels import _maml, _mlp
from skmaml._kernels._config import ACTIVATION_CODES, IDENTITY, ONE_RATE, PER_LAYER, PER_PARAMETER, RELU
from skmaml._kernels._rules import Rule, plain_rule, rates_per_step
from skmaml._parallel import MetaGradient, chunk_bounds

HIDDEN = (5, 4)  # L = 3 weight layers: a two-layer body under ANIL's head

# name: (sharing, one set of rates per inner step?, adapted layers counted from the output
# (None: all), learned?)
RULE_SPECS = {
    "meta_sgd": (PER_PARAMETER, False, None, True),
    "lslr": (PER_LAYER, True, None, True),
    "anil": (ONE_RATE, False, 1, False),
    "anil_meta_sgd": (PER_PARAMETER, False, 1, True),
    "lslr_last2": (PER_LAYER, True, 2, True),
    "alpha_per_step": (ONE_RATE, True, None, True),
}
LEARNED = [name for name, spec in RULE_SPECS.items() if spec[3]]


# ---------------------------------------------------------------------------
# NumPy references of a rule
# ---------------------------------------------------------------------------

def layer_blocks(sizes):
    """``(start of W_l, start of b_l, end of b_l)`` of each layer, in naive.py's layout."""
    blocks, start = [], 0
    for a, b in zip(sizes[:-1], sizes[1:]):
        blocks.append((start, start + a * b, start + a * b + b))
        start += (a + 1) * b
    return blocks


def rate_map(sizes, sharing, first_layer):
    """0/1 matrix M of shape (rates per set, n_params): ``M[j, i] = 1`` when parameter i moves by
    rate j of a set. A set's step sizes per parameter are ``M.T @ rates_set`` (0 on the body), and
    a per-parameter gradient ``d`` becomes the rates' gradient ``M @ d``."""
    sizes = [int(s) for s in sizes]
    P = naive.n_params(sizes)
    adapted = layer_blocks(sizes)[first_layer - 1:]
    p0 = adapted[0][0]
    if sharing == ONE_RATE:
        M = np.zeros((1, P))
        M[0, p0:] = 1.0
    elif sharing == PER_LAYER:
        M = np.zeros((2 * len(adapted), P))
        for j, (w, b, end) in enumerate(adapted):
            M[2 * j, w:b] = 1.0
            M[2 * j + 1, b:end] = 1.0
    else:
        M = np.zeros((P - p0, P))
        M[np.arange(P - p0), p0 + np.arange(P - p0)] = 1.0
    return M


def step_rates(rule, M, k):
    """Step sizes per parameter of inner step k: set ``min(k, n_rate_steps - 1)``."""
    n_per = M.shape[0]
    s = min(k, rule.n_rate_steps - 1) * n_per
    return M.T @ np.asarray(rule.rates[s:s + n_per], dtype=np.float64)


def ref_adapt(theta, sizes, activation, Xs, ys, rule, n_steps):
    """``theta_{k+1} = theta_k - alpha_k * grad L_support(theta_k)`` with naive.grad."""
    M = rate_map(sizes, rule.sharing, rule.first_layer)
    for k in range(n_steps):
        theta = theta - step_rates(rule, M, k) * naive.grad(theta, sizes, activation, Xs, ys)
    return theta


def ref_first_order_rates(theta, sizes, code, Xs, ys, Xq, yq, rule, n_steps):
    """First-order rate gradient: ``sum_k M @ (-grad L_support(theta_k) * grad L_query(theta_N))``
    into set ``min(k, n_rate_steps - 1)``, with theta_k from the kernel's inner_adapt."""
    activation = naive.ACTIVATION_NAMES[code]
    M = rate_map(sizes, rule.sharing, rule.first_layer)
    n_per = M.shape[0]
    fixed = rule._replace(learn=False)
    gq = naive.grad(_maml.inner_adapt(theta, sizes, code, Xs, ys, fixed, n_steps), sizes, activation,
                    Xq, yq)
    out = np.zeros(rule.rates.shape[0])
    for k in range(n_steps):
        theta_k = _maml.inner_adapt(theta, sizes, code, Xs, ys, fixed, k)
        s = min(k, rule.n_rate_steps - 1) * n_per
        out[s:s + n_per] += M @ (-naive.grad(theta_k, sizes, activation, Xs, ys) * gq)
    return out


def make_rule(name, sizes, n_steps, rng, dtype=np.float64, n_sets=None):
    """The rule ``name`` of RULE_SPECS with random positive rates around 0.1; a per-step rule has
    ``n_sets`` sets (default: one per inner step)."""
    sharing, per_step, n_adapted, learn = RULE_SPECS[name]
    n_layers = len(sizes) - 1
    first = 1 if n_adapted is None else n_layers - n_adapted + 1
    if n_sets is None:
        n_sets = max(n_steps, 1) if per_step else 1
    n_per = int(rates_per_step(_mlp.layer_offsets(sizes), sharing, first))
    assert n_per == rate_map(sizes, sharing, first).shape[0]
    rates = (0.05 + 0.1 * rng.random(n_sets * n_per)).astype(dtype)
    return Rule(rates, n_sets, sharing, first, learn)


def p0_of(sizes, rule):
    """First adapted parameter: the start of layer ``first_layer``."""
    return int(_mlp.layer_offsets(sizes)[rule.first_layer - 1])


# ---------------------------------------------------------------------------
# 1. second order vs finite differences of the adapted query loss
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("rule_name", list(RULE_SPECS))
@pytest.mark.parametrize("n_steps", [1, 2, 5])
@pytest.mark.parametrize("loss_kind,n_out", LOSS_CASES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_second_order_rule_meta_grad_vs_fd(activation, loss_kind, n_out, n_steps, rule_name):
    rng, sizes, theta, Xs, ys, Xq, yq = make_problem(
        activation, loss_kind, n_out, HIDDEN, _seed("rule-fd", activation, loss_kind, n_steps, rule_name))
    code = ACTIVATION_CODES[activation]
    rule = make_rule(rule_name, sizes, n_steps, rng)
    P = theta.shape[0]
    theta_before, rates_before = theta.copy(), rule.rates.copy()

    def adapted_query_loss(x):
        # relu: like test_kernels, random data and eps = 1e-6 keep the FD points off the kinks
        fixed = rule._replace(rates=x[P:] if rule.learn else rule.rates, learn=False)
        tn = _maml.inner_adapt(x[:P], sizes, code, Xs, ys, fixed, n_steps)
        return naive.loss(tn, sizes, activation, Xq, yq)

    tn = _maml.inner_adapt(theta, sizes, code, Xs, ys, rule, n_steps)
    assert_vec_close(tn, ref_adapt(theta, sizes, activation, Xs, ys, rule, n_steps),
                     what="inner_adapt vs NumPy")
    lq, g = k_task_meta_grad(theta, sizes, code, Xs, ys, Xq, yq, rule, n_steps, False)
    np.testing.assert_array_equal(theta, theta_before)
    np.testing.assert_array_equal(rule.rates, rates_before)
    assert g.shape == (P + (rule.rates.shape[0] if rule.learn else 0),)
    assert float(lq) == pytest.approx(naive.loss(tn, sizes, activation, Xq, yq), rel=1e-10, abs=ATOL64)

    x = np.concatenate([theta, rule.rates]) if rule.learn else theta
    g_fd = naive.central_diff(adapted_query_loss, x, FD_EPS)
    assert_fd_close(g, g_fd, what="%s N=%d: meta-grad vs FD" % (rule_name, n_steps))
    if rule.learn:
        # the rate part carries weight: a sign error in it would be caught
        assert np.max(np.abs(g[P:])) > 1e-6
        with pytest.raises(AssertionError):
            assert_fd_close(np.concatenate([g[:P], -g[P:]]), g_fd)


# ---------------------------------------------------------------------------
# 2. first order
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("rule_name", LEARNED)
@pytest.mark.parametrize("loss_kind,n_out", LOSS_CASES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_first_order_rule_meta_grad(activation, loss_kind, n_out, rule_name):
    # N = 3 with two sets for a per-step rule: steps 1 and 2 share the last set
    n_steps = 3
    rng, sizes, theta, Xs, ys, Xq, yq = make_problem(
        activation, loss_kind, n_out, HIDDEN, _seed("rule-fo", activation, loss_kind, rule_name))
    code = ACTIVATION_CODES[activation]
    rule = make_rule(rule_name, sizes, n_steps, rng, n_sets=2 if RULE_SPECS[rule_name][1] else 1)
    P = theta.shape[0]

    tn = _maml.inner_adapt(theta, sizes, code, Xs, ys, rule, n_steps)
    lq, g1 = k_task_meta_grad(theta, sizes, code, Xs, ys, Xq, yq, rule, n_steps, True)
    assert float(lq) == pytest.approx(naive.loss(tn, sizes, activation, Xq, yq), rel=1e-10, abs=ATOL64)
    assert_vec_close(g1[:P], naive.grad(tn, sizes, activation, Xq, yq), what="first-order theta part")
    expected_rates = ref_first_order_rates(theta, sizes, code, Xs, ys, Xq, yq, rule, n_steps)
    assert_vec_close(g1[P:], expected_rates, what="first-order rate part")
    assert np.max(np.abs(expected_rates)) > 1e-6

    _, g2 = k_task_meta_grad(theta, sizes, code, Xs, ys, Xq, yq, rule, n_steps, False)
    for part in (slice(None, P), slice(P, None)):
        assert np.max(np.abs(g2[part] - g1[part])) > 1e-6 * np.max(np.abs(g1[part]))


# ---------------------------------------------------------------------------
# 3. closed form: linear model, squared error, one output
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("sharing", [PER_PARAMETER, PER_LAYER], ids=["per_parameter", "per_layer"])
@pytest.mark.parametrize("n_steps,n_sets", [(1, 1), (2, 1), (2, 2)])
def test_linear_model_closed_form(sharing, n_steps, n_sets):
    # hidden=(), one output: out = Xt theta, Xt = [X 1], theta = [w; b] (as in test_kernels), so
    #   grad L = H theta - c,  H = 2/n Xt^T Xt,  c = 2/n Xt^T y.
    # With step sizes D_k (a vector, M.T @ rates of set k):
    #   theta_{k+1} = theta_k - D_k (Hs theta_k - cs),  J_k = d theta_{k+1} / d theta_k = I - diag(D_k) Hs;
    #   gq = Hq theta_N - cq;  N = 1: meta-grad = J_0^T gq, d/dD_0 = -(Hs theta - cs) gq;
    #   N = 2: meta-grad = J_0^T J_1^T gq, d/dD_1 = -(Hs theta_1 - cs) gq,
    #          d/dD_0 = -(Hs theta - cs) (J_1^T gq).
    rng = np.random.default_rng(_seed("rule-linear", sharing, n_steps, n_sets))
    d, ns, nq = N_FEATURES, 7, 5
    sizes = np.array([d, 1], dtype=np.int64)
    theta = rng.standard_normal(d + 1)
    Xs, ys = naive.make_data(ns, d, 1, "mse", rng)
    Xq, yq = naive.make_data(nq, d, 1, "mse", rng)
    Xts = np.hstack([Xs, np.ones((ns, 1))])
    Xtq = np.hstack([Xq, np.ones((nq, 1))])
    Hs, cs = 2.0 / ns * Xts.T @ Xts, 2.0 / ns * Xts.T @ ys[:, 0]
    Hq, cq = 2.0 / nq * Xtq.T @ Xtq, 2.0 / nq * Xtq.T @ yq[:, 0]
    M = rate_map(sizes, sharing, 1)
    n_per = M.shape[0]
    rule = Rule(0.05 + 0.1 * rng.random(n_sets * n_per), n_sets, sharing, 1, True)
    D = [M.T @ rule.rates[min(k, n_sets - 1) * n_per:][:n_per] for k in range(n_steps)]
    I = np.eye(d + 1)

    gs0 = Hs @ theta - cs
    theta_1 = theta - D[0] * gs0
    rate_sets = np.zeros((n_sets, n_per))  # d/d rates, set by set
    rate_sets_fo = np.zeros((n_sets, n_per))
    if n_steps == 1:
        theta_N = theta_1
        gq = Hq @ theta_N - cq
        grad_theta = (I - np.diag(D[0]) @ Hs).T @ gq
        rate_sets[0] += M @ (-gs0 * gq)
        rate_sets_fo[0] += M @ (-gs0 * gq)
    else:
        gs1 = Hs @ theta_1 - cs
        theta_N = theta_1 - D[1] * gs1
        gq = Hq @ theta_N - cq
        J0, J1 = I - np.diag(D[0]) @ Hs, I - np.diag(D[1]) @ Hs
        grad_theta = J0.T @ (J1.T @ gq)
        rate_sets[0] += M @ (-gs0 * (J1.T @ gq))
        rate_sets[min(1, n_sets - 1)] += M @ (-gs1 * gq)
        rate_sets_fo[0] += M @ (-gs0 * gq)
        rate_sets_fo[min(1, n_sets - 1)] += M @ (-gs1 * gq)
    expected_loss = np.mean((Xtq @ theta_N - yq[:, 0]) ** 2)

    tn = _maml.inner_adapt(theta, sizes, IDENTITY, Xs, ys, rule, n_steps)
    assert_vec_close(tn, theta_N, what="closed-form theta_N")
    P = d + 1
    lq, g = k_task_meta_grad(theta, sizes, IDENTITY, Xs, ys, Xq, yq, rule, n_steps, False)
    assert float(lq) == pytest.approx(expected_loss, rel=1e-12)
    assert_vec_close(g[:P], grad_theta, what="closed-form meta-grad theta")
    assert_vec_close(g[P:], rate_sets.ravel(), what="closed-form meta-grad rates")
    # first order: theta part gq, rate part without the backprop through later steps
    lq1, g1 = k_task_meta_grad(theta, sizes, IDENTITY, Xs, ys, Xq, yq, rule, n_steps, True)
    assert float(lq1) == pytest.approx(expected_loss, rel=1e-12)
    assert_vec_close(g1[:P], gq, what="closed-form first-order theta")
    assert_vec_close(g1[P:], rate_sets_fo.ravel(), what="closed-form first-order rates")


# ---------------------------------------------------------------------------
# 4. one shared step size == all-equal per-parameter / per-layer rates; plain_rule
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("first_layer", [1, 3], ids=["all_layers", "head_only"])
@pytest.mark.parametrize("loss_kind,n_out", LOSS_CASES)
def test_equal_rates_are_the_plain_rule(loss_kind, n_out, first_layer):
    _, sizes, theta, Xs, ys, Xq, yq = make_problem(
        "tanh", loss_kind, n_out, HIDDEN, _seed("rule-plain", loss_kind, first_layer))
    code = ACTIVATION_CODES["tanh"]
    n_steps, a = 3, INNER_LR
    P = theta.shape[0]
    offsets = _mlp.layer_offsets(sizes)

    def rule(sharing, learn=False):
        n = int(rates_per_step(offsets, sharing, first_layer))
        return Rule(np.full(n, a), 1, sharing, first_layer, learn)

    one = rule(ONE_RATE)
    tn = _maml.inner_adapt(theta, sizes, code, Xs, ys, one, n_steps)
    grads = {fo: k_task_meta_grad(theta, sizes, code, Xs, ys, Xq, yq, one, n_steps, fo)[1]
             for fo in (False, True)}
    for sharing in (PER_PARAMETER, PER_LAYER):
        assert_vec_close(_maml.inner_adapt(theta, sizes, code, Xs, ys, rule(sharing), n_steps), tn,
                         rtol=1e-12, atol=0.0, what="adapted theta, sharing %d" % sharing)
        for fo in (False, True):
            _, g = k_task_meta_grad(theta, sizes, code, Xs, ys, Xq, yq, rule(sharing), n_steps, fo)
            assert_vec_close(g, grads[fo], rtol=1e-12, atol=0.0,
                             what="meta-grad, sharing %d, first_order=%s" % (sharing, fo))
    if first_layer == 1:  # plain MAML's explicit-Jacobian reference
        _, g_ref = naive.meta_grad(theta, sizes, "tanh", Xs, ys, Xq, yq, a, n_steps, False)
        assert_vec_close(grads[False], g_ref, rtol=1e-9, what="one rate vs naive.meta_grad")

    # learned: the one rate's gradient is the sum of the per-parameter (per-layer) rates' gradients
    for fo in (False, True):
        _, g_one = k_task_meta_grad(theta, sizes, code, Xs, ys, Xq, yq, rule(ONE_RATE, True), n_steps, fo)
        assert_vec_close(g_one[:P], grads[fo], rtol=1e-12, atol=0.0, what="learned one rate, theta")
        for sharing in (PER_PARAMETER, PER_LAYER):
            _, g = k_task_meta_grad(theta, sizes, code, Xs, ys, Xq, yq, rule(sharing, True), n_steps, fo)
            assert_vec_close(g[:P], grads[fo], rtol=1e-12, atol=0.0, what="learned, theta part")
            assert float(g_one[P]) == pytest.approx(g[P:].sum(), rel=1e-10, abs=ATOL64)

    # plain_rule is the hand-built one-rate rule, bit for bit
    plain = plain_rule(a, np.float64, first_layer)
    assert plain.rates.dtype == np.float64 and plain.rates.tolist() == [a]
    assert (plain.n_rate_steps, plain.sharing, plain.first_layer, plain.learn) == (1, ONE_RATE,
                                                                                   first_layer, False)
    assert plain_rule(a, np.float32).rates.dtype == np.float32
    assert plain_rule(a, np.float64).first_layer == 1
    np.testing.assert_array_equal(_maml.inner_adapt(theta, sizes, code, Xs, ys, plain, n_steps), tn)
    for fo in (False, True):
        _, g = k_task_meta_grad(theta, sizes, code, Xs, ys, Xq, yq, plain, n_steps, fo)
        np.testing.assert_array_equal(g, grads[fo])


# ---------------------------------------------------------------------------
# 5. head-only adaptation (ANIL)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("rule_name", ["anil", "anil_meta_sgd"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_head_only_moves_the_head_and_learns_the_body(activation, rule_name):
    rng, sizes, theta, Xs, ys, Xq, yq = make_problem(
        activation, "mse", 3, HIDDEN, _seed("rule-head", activation, rule_name))
    code = ACTIVATION_CODES[activation]
    n_steps = 3
    rule = make_rule(rule_name, sizes, n_steps, rng)
    assert rule.first_layer == len(sizes) - 1
    P, p0 = theta.shape[0], p0_of(sizes, rule)

    tn = _maml.inner_adapt(theta, sizes, code, Xs, ys, rule, n_steps)
    np.testing.assert_array_equal(tn[:p0], theta[:p0])
    # every head parameter with a support gradient moves (a dead relu unit's weights have none)
    moved = tn[p0:] != theta[p0:]
    assert np.all(moved[naive.grad(theta, sizes, activation, Xs, ys)[p0:] != 0])
    assert moved.mean() >= 0.5 and np.max(np.abs(tn[p0:] - theta[p0:])) > 1e-3

    _, g2 = k_task_meta_grad(theta, sizes, code, Xs, ys, Xq, yq, rule, n_steps, False)
    _, g1 = k_task_meta_grad(theta, sizes, code, Xs, ys, Xq, yq, rule, n_steps, True)
    # the body is meta-learned through the query loss, and second order sees the head's
    # adaptation depend on it
    assert np.max(np.abs(g2[:p0])) > 1e-6
    assert np.max(np.abs(g2[:p0] - g1[:p0])) > 1e-6 * np.max(np.abs(g1[:p0]))
    assert g2.shape == (P + (P - p0 if rule.learn else 0),)


# ---------------------------------------------------------------------------
# 6. steps beyond the learned sets reuse the last one
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("first_order", [False, True], ids=["second", "first"])
@pytest.mark.parametrize("rule_name", ["lslr", "lslr_last2", "alpha_per_step"])
def test_steps_beyond_the_learned_sets(rule_name, first_order):
    rng, sizes, theta, Xs, ys, Xq, yq = make_problem(
        "tanh", "ce", 4, HIDDEN, _seed("rule-beyond", rule_name, first_order))
    code = ACTIVATION_CODES["tanh"]
    n_steps = 4
    rule = make_rule(rule_name, sizes, n_steps, rng, n_sets=2)
    n_per = rule.rates.shape[0] // 2
    first_set, last_set = rule.rates[:n_per], rule.rates[n_per:]
    repeated = rule._replace(rates=np.concatenate([first_set] + [last_set] * (n_steps - 1)),
                             n_rate_steps=n_steps)
    P = theta.shape[0]

    tn = _maml.inner_adapt(theta, sizes, code, Xs, ys, rule, n_steps)
    np.testing.assert_array_equal(tn, _maml.inner_adapt(theta, sizes, code, Xs, ys, repeated, n_steps))
    # the sets matter: the first set alone gives another theta_N
    only_first = rule._replace(rates=first_set.copy(), n_rate_steps=1)
    assert np.max(np.abs(_maml.inner_adapt(theta, sizes, code, Xs, ys, only_first, n_steps) - tn)) > 1e-6

    lq, g = k_task_meta_grad(theta, sizes, code, Xs, ys, Xq, yq, rule, n_steps, first_order)
    lq_r, g_r = k_task_meta_grad(theta, sizes, code, Xs, ys, Xq, yq, repeated, n_steps, first_order)
    assert float(lq) == float(lq_r)
    assert_vec_close(g[:P], g_r[:P], rtol=1e-12, atol=0.0, what="theta part")
    # chain rule: the shared last set's gradient is the sum of its copies'
    sets_r = g_r[P:].reshape(n_steps, n_per)
    assert_vec_close(g[P:], np.concatenate([sets_r[0], sets_r[1:].sum(axis=0)]), rtol=1e-12,
                     what="rate part")


@pytest.mark.parametrize("rule_name", ["plain", "plain_anil", *RULE_SPECS])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_steps_in_place_have_the_bits_of_steps_into_another_array(rule_name, dtype):
    """``adapt_step`` into ``theta_k`` itself (inner_adapt, adaptation_losses) and
    ``scale_direction`` into ``v`` itself (the sweep's step 0) run their loops on one view of the
    array (see _rules); they give the bits of the same step into another array, move the adapted
    layers only, and read the rates of step ``k``."""
    from skmaml._kernels._mlp import network
    from skmaml._kernels._rules import adapt_step, rate_groups, scale_direction

    rng = np.random.default_rng(_seed("adapt-step-in-place", rule_name, dtype))
    sizes = np.array([N_FEATURES, *HIDDEN, 2], dtype=np.int64)
    if rule_name.startswith("plain"):
        rule = plain_rule(0.05 + 0.1 * rng.random(), dtype,
                          first_layer=len(sizes) - 1 if rule_name == "plain_anil" else 1)
    else:
        rule = make_rule(rule_name, sizes, 3, rng, dtype=dtype)
    groups = rate_groups(network(sizes, ACTIVATION_CODES["tanh"]), rule)
    theta = naive.init_theta(sizes, rng).astype(dtype)
    grad = rng.normal(size=theta.shape).astype(dtype)
    p0 = p0_of(sizes, rule)
    for k in range(3):
        into = np.full_like(theta, np.nan)
        adapt_step(theta, grad, rule, groups, k, into)
        in_place = theta.copy()
        adapt_step(in_place, grad, rule, groups, k, in_place)
        np.testing.assert_array_equal(in_place, into)
        np.testing.assert_array_equal(in_place[:p0], theta[:p0])
        assert np.all(in_place[p0:] != theta[p0:])
        # The step sizes of step k: the expanded rates of its set (the last set beyond them).
        alpha = step_rates(rule, rate_map(sizes, rule.sharing, rule.first_layer), k)
        eps = np.finfo(dtype).eps
        np.testing.assert_allclose(in_place, theta - alpha * grad, rtol=0,
                                   atol=4 * eps * np.abs(theta).max())
        into = np.full_like(theta, np.nan)
        scaled = scale_direction(grad, rule, groups, k, into)
        in_place = grad.copy()
        assert scale_direction(in_place, rule, groups, k, in_place) == scaled
        assert scaled == (rule.sharing != ONE_RATE)
        if scaled:
            np.testing.assert_array_equal(in_place[p0:], into[p0:])
            np.testing.assert_allclose(in_place[p0:], (alpha * grad)[p0:], rtol=4 * eps)


# ---------------------------------------------------------------------------
# 7. ragged meta-batch
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("rule_name", ["meta_sgd", "lslr", "anil_meta_sgd"])
@pytest.mark.parametrize("first_order", [False, True], ids=["second", "first"])
@pytest.mark.parametrize("loss_kind,n_out", LOSS_CASES)
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_meta_batch_grad_ragged_rules(activation, loss_kind, n_out, first_order, rule_name):
    rng = np.random.default_rng(_seed("rule-batch", activation, loss_kind, first_order, rule_name))
    sizes = np.array([N_FEATURES, *HIDDEN, n_out], dtype=np.int64)
    theta = naive.init_theta(sizes, rng)
    code = ACTIVATION_CODES[activation]
    n_steps = 3
    rule = make_rule(rule_name, sizes, n_steps, rng, n_sets=2 if RULE_SPECS[rule_name][1] else 1)
    tasks, Xs, ys, s_off, Xq, yq, q_off = _ragged_tasks(loss_kind, n_out, rng)
    n_out_grad = theta.shape[0] + rule.rates.shape[0]

    def batch(workspace=None):
        g = np.full(n_out_grad, np.nan)
        task_losses = np.full(len(tasks), np.nan)
        loss = _maml.meta_batch_grad(theta, sizes, code, Xs, ys, s_off, Xq, yq, q_off, rule,
                                     n_steps, first_order, g, task_losses, workspace)
        return loss, g, task_losses

    mean_loss, g, task_losses = batch()
    per = [k_task_meta_grad(theta, sizes, code, *t, rule, n_steps, first_order) for t in tasks]
    per_losses = np.array([float(p[0]) for p in per])
    assert_vec_close(task_losses, per_losses, rtol=1e-12, what="task_losses")
    assert float(mean_loss) == pytest.approx(per_losses.mean(), rel=1e-12)
    per_g = np.mean([p[1] for p in per], axis=0)
    P = theta.shape[0]
    assert_vec_close(g[:P], per_g[:P], rtol=1e-12, what="batch vs mean of tasks, theta part")
    assert_vec_close(g[P:], per_g[P:], rtol=1e-12, what="batch vs mean of tasks, rate part")
    assert np.ptp(per_losses) > 0

    # a caller's workspace, oversized and holding garbage (NaN, then the previous call's values)
    size = _maml.workspace_size(sizes, s_off, q_off, n_steps, first_order, rule)
    workspace = np.full(size + 7, np.nan)
    for _ in range(2):
        loss_w, g_w, losses_w = batch(workspace)
        np.testing.assert_array_equal(g_w, g)
        np.testing.assert_array_equal(losses_w, task_losses)
        assert float(loss_w) == float(mean_loss)


@pytest.mark.parametrize("rule_name", ["alpha_per_step", "meta_sgd", "lslr", "anil_meta_sgd"])
@pytest.mark.parametrize("loss_kind,n_out", LOSS_CASES)
def test_adaptation_losses_of_a_ragged_batch(loss_kind, n_out, rule_name):
    """``adaptation_losses`` (the mixture's assignment and routing, validation losses): per task,
    the support loss at every inner step and the query loss after them, the bits of
    ``inner_adapt`` then ``loss_grad`` task by task; the reference adaptation agrees."""
    rng = np.random.default_rng(_seed("adaptation-losses", loss_kind, rule_name))
    sizes = np.array([N_FEATURES, *HIDDEN, n_out], dtype=np.int64)
    theta = naive.init_theta(sizes, rng)
    code = ACTIVATION_CODES["tanh"]
    n_steps = 3
    rule = make_rule(rule_name, sizes, n_steps, rng, n_sets=2 if RULE_SPECS[rule_name][1] else 1)
    tasks, Xs, ys, s_off, Xq, yq, q_off = _ragged_tasks(loss_kind, n_out, rng)
    support = np.full((len(tasks), n_steps), np.nan)
    query = np.full(len(tasks), np.nan)
    _maml.adaptation_losses(theta, sizes, code, Xs, ys, s_off, Xq, yq, q_off, rule, n_steps,
                            support, query)
    grad = np.empty_like(theta)
    for t, (Xs_t, ys_t, Xq_t, yq_t) in enumerate(tasks):
        for k in range(n_steps):
            theta_k = _maml.inner_adapt(theta, sizes, code, Xs_t, ys_t, rule, k)
            assert support[t, k] == _mlp.loss_grad(theta_k, sizes, code, Xs_t, ys_t, grad)
        adapted = _maml.inner_adapt(theta, sizes, code, Xs_t, ys_t, rule, n_steps)
        assert query[t] == _mlp.loss_grad(adapted, sizes, code, Xq_t, yq_t, grad)
        reference = ref_adapt(theta, sizes, "tanh", Xs_t, ys_t, rule, n_steps)
        assert query[t] == pytest.approx(naive.loss(reference, sizes, "tanh", Xq_t, yq_t),
                                         rel=1e-10)
    assert np.ptp(query) > 0 and np.all(support[:, -1] != support[:, 0])


@pytest.mark.parametrize("hidden,batched", [((6, 5), True), ((64, 40), False)],
                         ids=["small-loops", "blas"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_adaptation_losses_over_many_tasks_has_each_tasks_bits(hidden, batched, dtype):
    """Enough tasks (of 1 to 9 support rows) for several of ``adaptation_losses``' step-0 chunks
    (``_STEP0_ROWS`` rows each; a chunk boundary in every place a task can end): the batched step
    0 of small networks, and the task-by-task one of a network whose products run through BLAS,
    give every task the bits of ``inner_adapt`` then ``loss_grad`` on its own rows."""
    from skmaml._kernels._blas import rows_independent

    rng = np.random.default_rng(_seed("adaptation-losses-chunks", hidden, dtype))
    sizes = np.array([N_FEATURES, *hidden, 2], dtype=np.int64)
    assert rows_independent(sizes) == batched
    theta = naive.init_theta(sizes, rng).astype(dtype)
    code = ACTIVATION_CODES["relu"]
    n_steps = 3
    rule = plain_rule(INNER_LR, theta.dtype)
    n_s = rng.integers(1, 10, 3 * _maml._STEP0_ROWS // 5)
    n_q = rng.integers(1, 6, n_s.shape[0])
    s_off = np.concatenate([[0], np.cumsum(n_s)]).astype(np.int64)
    q_off = np.concatenate([[0], np.cumsum(n_q)]).astype(np.int64)
    assert s_off[-1] > 2 * _maml._STEP0_ROWS
    Xs = rng.normal(size=(s_off[-1], N_FEATURES)).astype(dtype)
    ys = rng.normal(size=(s_off[-1], 2)).astype(dtype)
    Xq = rng.normal(size=(q_off[-1], N_FEATURES)).astype(dtype)
    yq = rng.normal(size=(q_off[-1], 2)).astype(dtype)
    support = np.full((n_s.shape[0], n_steps), np.nan)
    query = np.full(n_s.shape[0], np.nan)
    _maml.adaptation_losses(theta, sizes, code, Xs, ys, s_off, Xq, yq, q_off, rule, n_steps,
                            support, query)
    grad = np.empty_like(theta)
    for t in range(n_s.shape[0]):
        Xs_t, ys_t = Xs[s_off[t]:s_off[t + 1]], ys[s_off[t]:s_off[t + 1]]
        for k in range(n_steps):
            theta_k = _maml.inner_adapt(theta, sizes, code, Xs_t, ys_t, rule, k)
            assert support[t, k] == _mlp.loss_grad(theta_k, sizes, code, Xs_t, ys_t, grad), (t, k)
        adapted = _maml.inner_adapt(theta, sizes, code, Xs_t, ys_t, rule, n_steps)
        assert query[t] == _mlp.loss_grad(adapted, sizes, code, Xq[q_off[t]:q_off[t + 1]],
                                          yq[q_off[t]:q_off[t + 1]], grad), t


# ---------------------------------------------------------------------------
# 8. float32
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("rule_name", ["meta_sgd", "lslr"])
@pytest.mark.parametrize("loss_kind,n_out", LOSS_CASES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_float32_rules_match_float64(activation, loss_kind, n_out, rule_name):
    rng, sizes, theta, Xs, ys, Xq, yq = make_problem(
        activation, loss_kind, n_out, HIDDEN, _seed("rule-f32", activation, loss_kind, rule_name))
    code = ACTIVATION_CODES[activation]
    n_steps = 2
    rule32 = make_rule(rule_name, sizes, n_steps, rng, dtype=np.float32)
    rule64 = rule32._replace(rates=rule32.rates.astype(np.float64))

    def cast(a, dt):
        return a.astype(dt) if np.issubdtype(a.dtype, np.floating) else a

    th32, Xs32, ys32, Xq32, yq32 = [cast(a, np.float32) for a in (theta, Xs, ys, Xq, yq)]
    th64, Xs64, ys64, Xq64, yq64 = [cast(a, np.float64) for a in (th32, Xs32, ys32, Xq32, yq32)]
    P = theta.shape[0]

    tn32 = _maml.inner_adapt(th32, sizes, code, Xs32, ys32, rule32, n_steps)
    assert tn32.dtype == np.float32
    assert_vec_close(tn32, _maml.inner_adapt(th64, sizes, code, Xs64, ys64, rule64, n_steps),
                     rtol=RTOL32, atol=0.0, what="inner_adapt float32")
    for first_order in (False, True):
        lq32, g32 = k_task_meta_grad(th32, sizes, code, Xs32, ys32, Xq32, yq32, rule32, n_steps,
                                     first_order)
        lq64, g64 = k_task_meta_grad(th64, sizes, code, Xs64, ys64, Xq64, yq64, rule64, n_steps,
                                     first_order)
        assert g32.dtype == np.float32
        assert float(lq32) == pytest.approx(float(lq64), rel=RTOL32)
        assert_vec_close(g32[:P], g64[:P], rtol=RTOL32, atol=0.0,
                         what="float32 theta part, first_order=%s" % first_order)
        assert_vec_close(g32[P:], g64[P:], rtol=RTOL32, atol=0.0,
                         what="float32 rate part, first_order=%s" % first_order)


# ---------------------------------------------------------------------------
# 9. MetaGradient: learned step sizes in the parameter vector, any n_jobs
# ---------------------------------------------------------------------------

@pytest.mark.bit_identity
@pytest.mark.parametrize("first_order", [False, True], ids=["second", "first"])
@pytest.mark.parametrize("rule_name", ["meta_sgd", "lslr_first_layer_2"])
def test_meta_gradient_threads_with_learned_rates(rule_name, first_order):
    # a batch heavy enough to be chunked (as in test_parallel.py)
    rng = np.random.RandomState(1)
    sizes = np.array([5, 64, 64, 1], dtype=np.int64)
    theta = rng.uniform(-0.2, 0.2, size=int((sizes[:-1] + 1) @ sizes[1:]))
    rows = rng.randint(40, 90, size=10)
    offsets = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)
    X = rng.normal(size=(offsets[-1], 5))
    Y = np.sin(X.sum(axis=1, keepdims=True))
    n_steps = 2
    if rule_name == "meta_sgd":
        sharing, n_sets, first = PER_PARAMETER, 1, 1
    else:
        sharing, n_sets, first = PER_LAYER, n_steps, 2
    n_per = int(rates_per_step(_mlp.layer_offsets(sizes), sharing, first))
    rule = Rule(0.05 + 0.1 * rng.random_sample(n_sets * n_per), n_sets, sharing, first, True)
    params = np.concatenate([theta, rule.rates])

    direct = np.full(params.shape[0], np.nan)
    losses_direct = np.full(10, np.nan)
    loss = _maml.meta_batch_grad(theta, sizes, RELU, X, Y, offsets, X, Y, offsets, rule, n_steps,
                                 first_order, direct, losses_direct)
    # the rates of the rule given at construction are ignored: the tail of params is used
    stale = rule._replace(rates=np.full_like(rule.rates, np.nan))
    results = []
    for n_jobs in (1, 2):
        grad = np.full(params.shape[0], np.nan)
        losses = np.full(10, np.nan)
        with MetaGradient(sizes, RELU, stale, n_steps, first_order, n_jobs=n_jobs) as mg:
            assert chunk_bounds(offsets, offsets, mg.support_flops, mg.query_flops).shape[0] > 2
            results.append((mg(params, X, Y, offsets, X, Y, offsets, grad, losses), grad, losses))
    (loss1, grad1, losses1), (loss2, grad2, losses2) = results
    np.testing.assert_array_equal(grad2, grad1)
    np.testing.assert_array_equal(losses2, losses1)
    assert loss2 == loss1

    P = theta.shape[0]
    assert_vec_close(grad1[:P], direct[:P], rtol=1e-10, what="chunked vs direct, theta part")
    assert_vec_close(grad1[P:], direct[P:], rtol=1e-10, what="chunked vs direct, rate part")
    assert np.max(np.abs(direct[P:])) > 1e-6
    assert_vec_close(losses1, losses_direct, rtol=1e-12, what="task losses")
    assert float(loss1) == pytest.approx(float(loss), rel=1e-12)
