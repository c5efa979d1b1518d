"""How well can any method do on ``make_family_tasks`` from K support rows, knowing the true model?

**Routing.** The Bayes-optimal classifier of a task's family from its K noisy support points,
knowing the true generative model (each family's parameter prior,
:data:`skmaml.datasets._FAMILY_RANGES`, and the noise sd 0.3): the marginal likelihood of the K
points under each family, estimated as the mean likelihood over ``--draws`` parameter draws of
that family, and the family of the largest. Its accuracy bounds the routing accuracy of every task
memory that routes by the support rows only.

**Query MSE** (``--mse``). The Bayes-optimal prediction of the query points from the K support
points is the posterior mean of the curve: each family's prior draws weighted by their likelihood
of the support points, averaged over the families by their posterior probability (family
unknown, what any method that sees the support rows only can at best do), or within the true
family only (family known, the best the per-family oracle of ``task_memory.py`` could do). Its
query MSE (noise included) bounds the MSE of every learner from below; the ratio of the two says
what knowing the family is worth.

Run it from the repository root::

    python benchmarks/routing_bound.py            # about a minute
    python benchmarks/routing_bound.py --tasks 1000
    python benchmarks/routing_bound.py --mse --tasks 200

One run (300 tasks each, so about ±0.025; 16 s): 2 families 0.99 (K = 5), 1.00 (K = 10); 3 families
0.92, 0.98; 5 families 0.75, 0.84.
"""

import argparse
import os
import sys

import numpy as np
from scipy.special import logsumexp

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(1, os.path.dirname(HERE))

from skmaml.datasets import (  # noqa: E402  (the generator's own ranges and curves)
    _FAMILIES,
    _FAMILY_RANGES,
    _family_curve,
    make_family_tasks,
)

NOISE = 0.3


def prior_draws(family, n_draws, rng):
    """``n_draws`` parameter vectors of ``family``, as ``make_family_tasks`` draws them."""
    p = np.column_stack([rng.uniform(low, high, n_draws) for low, high in _FAMILY_RANGES[family]])
    if family == "quadratic":  # a random sign on c
        p[:, 0] *= rng.choice([-1.0, 1.0], n_draws)
    return p


def log_marginal(family, draws, x, y):
    """log p(y | x, family), by Monte Carlo over the prior draws (up to a shared constant)."""
    curves = _family_curve(family, [column[:, None] for column in draws.T], x[None, :])
    return logsumexp(-0.5 * np.sum((curves - y[None, :]) ** 2, axis=1) / NOISE ** 2)


def posterior_mean(family, draws, x, y, x_new):
    """``(log p(y | x, family), E[f(x_new) | x, y, family])`` by likelihood weighting of the prior
    draws (the log marginal up to the constant shared by all families)."""
    params = [column[:, None] for column in draws.T]
    log_w = -0.5 * np.sum((_family_curve(family, params, x[None, :]) - y[None, :]) ** 2,
                          axis=1) / NOISE ** 2
    log_marginal_y = logsumexp(log_w)
    w = np.exp(log_w - log_marginal_y)
    return log_marginal_y, w @ _family_curve(family, params, x_new[None, :])


def mse_bounds(args, rng):
    """Bayes-optimal query MSE from K = 5 support rows, family unknown and known."""
    k_support, n_query = 5, 100
    print("| families | K | Bayes-optimal query MSE, family unknown | family known | ratio |")
    print("|---:|---:|---:|---:|---:|")
    for families in (_FAMILIES[:2], _FAMILIES[:3], _FAMILIES):
        draws = {f: prior_draws(f, args.draws, rng) for f in families}
        tasks, labels = make_family_tasks(n_tasks=args.tasks, n_samples=k_support + n_query,
                                          families=families, noise=NOISE,
                                          random_state=args.random_state + 7)
        unknown, known = [], []
        for (X, y), family in zip(tasks, labels):
            x, ys, xq, yq = X[:k_support, 0], y[:k_support], X[k_support:, 0], y[k_support:]
            fits = {f: posterior_mean(f, draws[f], x, ys, xq) for f in families}
            log_post = np.array([fits[f][0] for f in families])
            post = np.exp(log_post - logsumexp(log_post))
            mixed = sum(p * fits[f][1] for p, f in zip(post, families))
            unknown.append(np.mean((mixed - yq) ** 2))
            known.append(np.mean((fits[family][1] - yq) ** 2))
        u, kn = np.mean(unknown), np.mean(known)
        print(f"| {len(families)} | {k_support} | {u:.3f} (median {np.median(unknown):.3f}) | "
              f"{kn:.3f} (median {np.median(known):.3f}) | {u / kn:.2f} |", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=300, help="test tasks per setting")
    parser.add_argument("--draws", type=int, default=20000, help="prior draws per family")
    parser.add_argument("--random-state", type=int, default=0)
    parser.add_argument("--mse", action="store_true",
                        help="the Bayes-optimal query MSE instead of the routing accuracy")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.random_state)
    if args.mse:
        return mse_bounds(args, rng)
    print("| families | K | Bayes-optimal routing accuracy |")
    print("|---:|---:|---:|")
    for families in (_FAMILIES[:2], _FAMILIES[:3], _FAMILIES):
        draws = {f: prior_draws(f, args.draws, rng) for f in families}
        tasks, labels = make_family_tasks(n_tasks=args.tasks, n_samples=20, families=families,
                                          noise=NOISE, random_state=args.random_state + 5)
        for k in (5, 10):
            correct = 0
            for (X, y), family in zip(tasks, labels):
                scores = [log_marginal(f, draws[f], X[:k, 0], y[:k]) for f in families]
                correct += families[int(np.argmax(scores))] == family
            print(f"| {len(families)} | {k} | {correct / len(tasks):.3f} |", flush=True)


if __name__ == "__main__":
    main()
