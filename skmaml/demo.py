"""The skmaml demo: meta-train on sinusoid tasks, adapt to new ones from 10 rows, print results.

Run it with ``python -m skmaml.demo`` (``--quick`` for a shorter run). It reproduces the setting of the
MAML paper's regression experiment (Finn et al. 2017, section 5.1) at a small budget: tasks
``y = A sin(x - phi)``, K = 10 support rows, MLP 1-40-40-1, one inner step of size 0.01, Adam.

The baseline is the same network trained on all tasks pooled (MAML with zero inner steps: the
meta-gradient is then the plain gradient of each task's query loss, so in expectation this is
training on all rows, in minibatches grouped by task with every task weighing the same) and then
fine-tuned on the same 10 rows with the same steps, as in the paper.
"""

import argparse
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from skmaml import MAMLRegressor
from skmaml._stats import mean_confidence_interval
from skmaml.datasets import make_sinusoid_tasks


def query_mse(model, tasks, n_support, n_steps):
    """Mean over tasks of the query MSE after adapting on the first ``n_support`` rows."""
    errors = []
    for X, y in tasks:
        adapted = model.adapt(X[:n_support], y[:n_support], n_inner_steps=n_steps)
        errors.append(np.mean((adapted.predict(X[n_support:]) - y[n_support:]) ** 2))
    return mean_confidence_interval(errors)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a shorter run (a few seconds)")
    args = parser.parse_args(argv)
    max_iter = 2000 if args.quick else 15000
    n_support = 10

    train_tasks = make_sinusoid_tasks(n_tasks=5000, n_samples=2 * n_support, random_state=0)
    new_tasks = make_sinusoid_tasks(n_tasks=300, n_samples=n_support + 100, random_state=1)
    # The MAML paper's sinusoid setting: alpha on the MSE of the raw targets (no standardising),
    # and a fixed budget of meta-iterations (no stopping on the training loss).
    common = dict(hidden_layer_sizes=(40, 40), inner_lr=0.01, meta_lr=0.001, meta_batch_size=25,
                  n_support=n_support, max_iter=max_iter, normalize_y=False,
                  n_iter_no_change=max_iter, random_state=0)

    with warnings.catch_warnings():
        # A fixed budget, not convergence, is the point of the demo.
        warnings.simplefilter("ignore", ConvergenceWarning)
        # The first fit in a fresh environment compiles the numba kernels (cached on disk
        # afterwards); time it apart from meta-training.
        start = time.perf_counter()
        MAMLRegressor(max_iter=2, n_support=5, meta_batch_size=4,
                      random_state=0).fit(train_tasks[:4])
        print(f"Kernels compiled or loaded from numba's cache: {time.perf_counter() - start:.1f} s")
        print(f"Meta-training MAML on {len(train_tasks)} sinusoid tasks, up to {max_iter} "
              "meta-iterations (K=10, MLP 1-40-40-1, second order) ...")
        results = {}
        for name, n_inner_steps in (("MAML", 1), ("baseline, all tasks pooled", 0)):
            start = time.perf_counter()
            model = MAMLRegressor(n_inner_steps=n_inner_steps, **common).fit(train_tasks)
            seconds = time.perf_counter() - start
            results[name] = model
            print(f"  {name}: {seconds:.1f} s for {model.n_iter_} meta-iterations "
                  f"({1e3 * seconds / model.n_iter_:.3f} ms each)")
    maml, pooled = results["MAML"], results["baseline, all tasks pooled"]
    print()

    print(f"Query MSE on {len(new_tasks)} NEW tasks after adapting on {n_support} rows "
          "(mean ± 95% CI; lower is better):")
    print(f"  {'model':<34}{'0 steps':>16}{'1 step':>16}{'10 steps':>16}")
    for name, model in (("MAML", maml), ("pretrained on pooled tasks", pooled)):
        cells = [query_mse(model, new_tasks, n_support, steps) for steps in (0, 1, 10)]
        print(f"  {name:<34}" + "".join(f"{m:>10.3f} ±{ci:>5.3f}" for m, ci in cells))
    print("\nMAML's initial parameters are not a good model of any one task (0 steps), but one "
          "gradient step on 10 rows gives a far better fit than fine-tuning the pooled model.")


if __name__ == "__main__":
    main()
