"""Reproduce the MAML paper's sinusoid regression experiment with ``MAMLRegressor``.

Run it from the repository root::

    python benchmarks/reproduce_sinusoid.py                 # full run: 70,000 meta-iterations
    python benchmarks/reproduce_sinusoid.py --quick         # smoke run: 2,000 meta-iterations
    python benchmarks/reproduce_sinusoid.py --output sinusoid.md
    python benchmarks/reproduce_sinusoid.py --torch-reference   # the same run in PyTorch beside it

The setting of Finn, Abbeel & Levine (2017), section 5.1: tasks ``y = A sin(x - phi)`` with
``A ~ U[0.1, 5]``, ``phi ~ U[0, pi]``, ``x ~ U[-5, 5]``; an MLP 1-40-40-1 with ReLU; K = 10 support
rows and 10 query rows per task in meta-training; meta-batches of 25 tasks; one inner gradient step
of size alpha = 0.01 (second order); Adam with beta = 0.001; 70,000 meta-iterations.

Differences from the paper, stated:

* The paper draws a fresh task at every meta-iteration. ``fit`` takes a fixed set of tasks, so the
  script draws ``--n-train-tasks`` (default 100,000) tasks of 20 rows each; every visit of a task
  draws a fresh split of its 20 rows into 10 support and 10 query rows. 70,000 x 25 = 1.75 M task
  visits means each task is seen about 17 times, each time with another split.
* Inputs are float32 (the estimator computes in the input dtype).

Evaluation: for each K in {5, 10, 20}, 600 new tasks (a seed the training tasks never use), each
with K support rows and 100 other query rows of the same function; the query MSE after 0, 1 and 10
gradient steps of size alpha = 0.01 on the K support rows, as mean +/- the 95% Student-t interval over the
600 tasks. At K = 5 after several steps the per-task errors have a heavy tail (a task whose five
support points lie close together is fitted there and extrapolated wildly elsewhere), so the
comparison with the published numbers also prints the median and the largest per-task errors.

Baseline "pretrained": the same network trained on all tasks pooled. ``MAMLRegressor(
n_inner_steps=0)`` is that in expectation (with no inner step the meta-gradient is the plain
gradient of each task's query loss, i.e. multi-task training in minibatches grouped by task, every
task weighing the same), trained with the same tasks, meta-batch, Adam and
number of iterations. It is then fine-tuned on the K support rows by plain gradient steps whose
step size is chosen, separately for each K and each number of steps, from a grid on 200 validation
tasks (another seed), as the paper does. MAML keeps alpha = 0.01, untuned.

``--torch-reference`` also trains the run in PyTorch as its PyTorch ports do (``nn.Linear``
layers and their default initialisation, a fresh meta-batch at every iteration, ``torch.func``,
Adam) and evaluates it with the same test tasks and the same adaptation code as skmaml's model,
so the two rows differ only by the training implementation and its random draws.

Timing: the numba cache is warmed first (a tiny fit of each model and one ``adapt``), then the
70,000-iteration MAML fit is timed by itself, wall time and process CPU time, and so is the
baseline's training. The meta-batch of the sinusoid problem is far too small to split over threads
(about 10 MFLOP per meta-iteration, below skmaml's minimum chunk of work), so ``--n-jobs`` does not
change the training time here; it is passed through for completeness.
"""

import argparse
import copy
import os
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from bench_meta_step import Report, accuracy_header, table  # noqa: E402  (after the path set-up)

# The paper's hyper-parameters (section 5.1 and appendix A.1).
HIDDEN = (40, 40)
INNER_LR = 0.01
META_LR = 0.001
META_BATCH = 25
N_SUPPORT_TRAIN = 10
N_QUERY_TRAIN = 10
FULL_ITERATIONS = 70_000
QUICK_ITERATIONS = 2_000

TEST_SHOTS = (5, 10, 20)
N_TEST_TASKS = 600
N_QUERY_TEST = 100
N_VALIDATION_TASKS = 200
STEP_COUNTS = (0, 1, 10)
PRETRAINED_STEP_GRID = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)

# As quoted in the issue: Finn et al. 2017, trained at K = 10, tested at K = 5 (query MSE).
PUBLISHED_K5 = {"MAML": {1: 0.67, 10: 0.35}, "pretrained": {1: 2.41, 10: 2.19}}

DTYPE = np.float32


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

def sinusoid_tasks(n_tasks, n_rows, random_state, flat):
    """``make_sinusoid_tasks`` with float32 inputs and targets."""
    from skmaml.datasets import make_sinusoid_tasks

    out = make_sinusoid_tasks(n_tasks=n_tasks, n_samples=n_rows, flat=flat,
                              random_state=random_state)
    if flat:
        X, y, groups = out
        return X.astype(DTYPE), y.astype(DTYPE), groups
    return [(X.astype(DTYPE), y.astype(DTYPE)) for X, y in out]


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------

def make_estimator(n_inner_steps, max_iter, random_state, n_jobs, weight_init="uniform_fan_in"):
    from skmaml import MAMLRegressor

    return MAMLRegressor(hidden_layer_sizes=HIDDEN, activation="relu", weight_init=weight_init,
                         inner_lr=INNER_LR,
                         n_inner_steps=n_inner_steps, meta_lr=META_LR, meta_optimizer="adam",
                         first_order=False, meta_batch_size=META_BATCH,
                         n_support=N_SUPPORT_TRAIN, n_query=N_QUERY_TRAIN, max_iter=max_iter,
                         # The paper's setting: alpha on the MSE of the raw targets, and all
                         # max_iter meta-iterations.
                         normalize_y=False, n_iter_no_change=max_iter,
                         random_state=random_state, n_jobs=n_jobs)


def train_torch_reference(max_iter, random_state):
    """The paper's run in PyTorch, written the way its PyTorch ports are: ``nn.Linear`` layers
    (so their default initialisation), a fresh meta-batch of 25 tasks drawn at every iteration,
    one inner step through ``torch.func.grad`` (second order), ``torch.optim.Adam``; float32,
    one thread. Returns ``(coefs, intercepts, seconds)`` in skmaml's layout."""
    try:
        import torch
        from torch.func import grad, vmap
    except ImportError as exc:
        raise SystemExit("--torch-reference needs PyTorch: pip install torch==2.13.0 (a CPU "
                         "build; see benchmarks/README.md)") from exc

    torch.set_num_threads(1)
    torch.manual_seed(random_state)
    rng = np.random.RandomState(random_state)
    sizes = (1, *HIDDEN, 1)
    layers = [torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
    params = [torch.nn.Parameter(t.detach().clone()) for layer in layers
              for t in (layer.weight, layer.bias)]

    def forward(p, x):
        for i in range(0, len(p), 2):
            x = x @ p[i].T + p[i + 1]
            if i + 2 < len(p):
                x = torch.relu(x)
        return x

    def loss(p, x, y):
        return torch.mean((forward(p, x) - y) ** 2)

    def task_query_loss(p, xs, ys, xq, yq):
        g = grad(loss)(p, xs, ys)
        return loss(tuple(a - INNER_LR * b for a, b in zip(p, g)), xq, yq)

    def batch_loss(p, Xs, Ys, Xq, Yq):
        return vmap(task_query_loss, in_dims=(None, 0, 0, 0, 0))(p, Xs, Ys, Xq, Yq).mean()

    meta_grad = grad(batch_loss)
    optimizer = torch.optim.Adam(params, lr=META_LR)
    n_rows = N_SUPPORT_TRAIN + N_QUERY_TRAIN
    start = time.perf_counter()
    for _ in range(max_iter):
        amplitude = rng.uniform(0.1, 5.0, (META_BATCH, 1, 1))
        phase = rng.uniform(0.0, np.pi, (META_BATCH, 1, 1))
        x = rng.uniform(-5.0, 5.0, (META_BATCH, n_rows, 1))
        x, y = (torch.tensor(a, dtype=torch.float32) for a in (x, amplitude * np.sin(x - phase)))
        gradients = meta_grad(tuple(params), x[:, :N_SUPPORT_TRAIN], y[:, :N_SUPPORT_TRAIN],
                              x[:, N_SUPPORT_TRAIN:], y[:, N_SUPPORT_TRAIN:])
        for param, gradient in zip(params, gradients):
            param.grad = gradient
        optimizer.step()
    seconds = time.perf_counter() - start
    arrays = [p.detach().numpy().astype(DTYPE) for p in params]
    return [W.T.copy() for W in arrays[0::2]], [b.copy() for b in arrays[1::2]], seconds


def with_parameters(estimator, coefs, intercepts):
    """A copy of a fitted estimator holding other parameters, so that they are adapted and
    scored by exactly the same code."""
    model = copy.deepcopy(estimator)
    model.coefs_, model.intercepts_ = coefs, intercepts
    return model


def timed_fit(estimator, X, y, groups):
    """Fit for the fixed budget; return (wall seconds, CPU seconds)."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        # A fixed number of meta-iterations is the protocol, not convergence.
        warnings.simplefilter("ignore", ConvergenceWarning)
        wall, cpu = time.perf_counter(), time.process_time()
        estimator.fit(X, y, groups=groups)
        return time.perf_counter() - wall, time.process_time() - cpu


def warm_numba_cache(random_state, n_jobs, weight_init):
    """A tiny fit of both models and one adapt, so the timed fits load no compiled code."""
    X, y, groups = sinusoid_tasks(50, 20, random_state, flat=True)
    start = time.perf_counter()
    for n_steps in (1, 0):
        model = make_estimator(n_steps, 5, random_state, n_jobs, weight_init)
        timed_fit(model, X, y, groups)
        model.adapt(X[:5], y[:5], n_inner_steps=2).predict(X[5:20])
    return time.perf_counter() - start


def query_errors(model, tasks, n_support, n_steps, inner_lr=None):
    """Per-task query MSE after ``n_steps`` gradient steps on the first ``n_support`` rows.

    ``inner_lr`` overrides the fitted model's step size (for the tuned baseline). A fine-tuning run
    that diverges counts as an infinite error.
    """
    if inner_lr is not None:
        model = copy.copy(model).set_params(inner_lr=inner_lr)
    errors = np.empty(len(tasks))
    for i, (X, y) in enumerate(tasks):
        try:
            adapted = model.adapt(X[:n_support], y[:n_support], n_inner_steps=n_steps)
        except ValueError:  # "Adaptation diverged"
            errors[i] = np.inf
            continue
        residual = adapted.predict(X[n_support:]).astype(np.float64) - y[n_support:]
        errors[i] = np.mean(residual ** 2)
    return errors


def mean_ci(errors):
    """Mean and the half-width of its 95% confidence interval (skmaml's Student-t interval)."""
    from skmaml._stats import mean_confidence_interval

    if not np.isfinite(errors).all():
        return np.inf, np.nan
    return mean_confidence_interval(errors)


def tune_pretrained_steps(pooled, validation_tasks):
    """For each (K, steps): the grid step size with the lowest mean validation query MSE."""
    chosen, scores = {}, {}
    for k in TEST_SHOTS:
        tasks = validation_tasks[k]
        for n_steps in STEP_COUNTS[1:]:
            means = [mean_ci(query_errors(pooled, tasks, k, n_steps, lr))[0]
                     for lr in PRETRAINED_STEP_GRID]
            best = int(np.argmin(means))
            chosen[k, n_steps] = PRETRAINED_STEP_GRID[best]
            scores[k, n_steps] = means
    return chosen, scores


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

def fmt_ci(mean, ci):
    if not np.isfinite(mean):
        return "diverged"
    return "%.3f ± %.3f" % (mean, ci)


def header(report, args, max_iter):
    accuracy_header(report, "MAML sinusoid regression (Finn et al. 2017, section 5.1) with skmaml")
    report("- run: %s, %d meta-iterations, random_state=%d, n_jobs=%d, dtype float32, "
           "weight_init=%s"
           % ("QUICK (smoke run, not the paper's budget)" if args.quick else "full",
              max_iter, args.random_state, args.n_jobs, args.weight_init))
    report("")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: %d meta-iterations, 10,000 training tasks"
                        % QUICK_ITERATIONS)
    p.add_argument("--max-iter", type=int, default=None,
                   help="meta-iterations (default %d, --quick %d)"
                        % (FULL_ITERATIONS, QUICK_ITERATIONS))
    p.add_argument("--n-train-tasks", type=int, default=None,
                   help="training tasks of 20 rows (default 100,000, --quick 10,000)")
    p.add_argument("--random-state", type=int, default=0)
    p.add_argument("--n-jobs", type=int, default=1,
                   help="threads for the meta-gradient (default 1; no effect at this size)")
    p.add_argument("--weight-init", default="uniform_fan_in",
                   choices=("uniform_fan_in", "glorot_uniform"),
                   help="initialisation of both models (default: skmaml's default)")
    p.add_argument("--torch-reference", action="store_true",
                   help="also train the same run in PyTorch (nn.Linear init, fresh tasks at "
                        "every iteration) and evaluate it with the same code; about 5 minutes")
    p.add_argument("--output", metavar="FILE", help="also write the report (Markdown) to FILE")
    args = p.parse_args(argv)
    max_iter = args.max_iter or (QUICK_ITERATIONS if args.quick else FULL_ITERATIONS)
    n_train = args.n_train_tasks or (10_000 if args.quick else 100_000)
    script_start = time.perf_counter()

    report = Report()
    header(report, args, max_iter)

    # Independent seeds for the training, validation and test tasks.
    seeds = np.random.RandomState(args.random_state).randint(0, 2**31 - 1, size=2 + len(TEST_SHOTS))
    X, y, groups = sinusoid_tasks(n_train, N_SUPPORT_TRAIN + N_QUERY_TRAIN, int(seeds[0]),
                                  flat=True)
    validation = {k: sinusoid_tasks(N_VALIDATION_TASKS, k + N_QUERY_TEST,
                                    int(seeds[1]) + k, flat=False) for k in TEST_SHOTS}
    test = {k: sinusoid_tasks(N_TEST_TASKS, k + N_QUERY_TEST, int(seeds[2 + i]), flat=False)
            for i, k in enumerate(TEST_SHOTS)}

    warm_seconds = warm_numba_cache(args.random_state, args.n_jobs, args.weight_init)

    maml = make_estimator(1, max_iter, args.random_state, args.n_jobs, args.weight_init)
    maml_wall, maml_cpu = timed_fit(maml, X, y, groups)
    pooled = make_estimator(0, max_iter, args.random_state, args.n_jobs, args.weight_init)
    pooled_wall, pooled_cpu = timed_fit(pooled, X, y, groups)
    models = [("MAML", maml), ("pretrained", pooled)]
    if args.torch_reference:
        coefs, intercepts, torch_seconds = train_torch_reference(max_iter, args.random_state)
        models.insert(1, ("MAML, PyTorch reference", with_parameters(maml, coefs, intercepts)))

    report("## Training", "")
    report("%d training tasks x %d rows (%d support + %d query drawn afresh at each visit), "
           "float32; meta-batch %d, alpha %g (1 inner step, second order), Adam beta %g, "
           "MLP 1-40-40-1 ReLU. The numba cache was warmed first by a tiny fit of each model "
           "and one adapt (%.2f s, not included below)."
           % (n_train, N_SUPPORT_TRAIN + N_QUERY_TRAIN, N_SUPPORT_TRAIN, N_QUERY_TRAIN,
              META_BATCH, INNER_LR, META_LR, warm_seconds), "")
    rows = []
    for name, est, wall, cpu in (("MAML (N=1, second order)", maml, maml_wall, maml_cpu),
                                 ("pretrained on pooled tasks (N=0)", pooled, pooled_wall,
                                  pooled_cpu)):
        rows.append([name, "%d" % est.n_iter_, "%.1f" % wall, "%.1f" % cpu,
                     "%.3f" % (1e3 * wall / est.n_iter_),
                     "%.3f" % np.mean(est.loss_curve_[-1000:])])
    report(*table(["model", "meta-iterations", "wall s", "CPU s", "wall ms / iteration",
                   "train query MSE (last 1,000 it.)"], rows, "lrrrrr"))
    report("", "(The training query MSE is after the model's own inner steps: one step for MAML, "
           "none for the pooled model.)")
    per_full = FULL_ITERATIONS / maml.n_iter_
    report("", "MAML training for %d meta-iterations: %.1f s wall, %.1f s CPU%s. Target: "
           "< 30 s wall for %d: %s. (CPU time is what the fit itself used; wall time also "
           "counts waiting for a core when the machine is busy, see the load average above.)"
           % (maml.n_iter_, maml_wall, maml_cpu,
              "" if maml.n_iter_ == FULL_ITERATIONS else
              " (extrapolated to %d: %.1f s wall, %.1f s CPU)"
              % (FULL_ITERATIONS, maml_wall * per_full, maml_cpu * per_full),
              FULL_ITERATIONS, "met" if maml_wall * per_full < 30 else "NOT met"), "")
    if args.torch_reference:
        report("PyTorch reference: %d meta-iterations in %.1f s (eager torch.func, one thread, "
               "fresh tasks drawn in NumPy at every iteration)." % (max_iter, torch_seconds), "")

    chosen, scores = tune_pretrained_steps(pooled, validation)
    report("## Pretrained baseline: fine-tuning step size chosen on %d validation tasks"
           % N_VALIDATION_TASKS, "")
    rows = []
    for k in TEST_SHOTS:
        for n_steps in STEP_COUNTS[1:]:
            rows.append(["K=%d, %d step%s" % (k, n_steps, "" if n_steps == 1 else "s")]
                        + ["%.3f" % s if np.isfinite(s) else "div." for s in scores[k, n_steps]]
                        + ["%g" % chosen[k, n_steps]])
    report(*table(["validation query MSE"] + ["step %g" % s for s in PRETRAINED_STEP_GRID]
                  + ["chosen"], rows, "l" + "r" * (len(PRETRAINED_STEP_GRID) + 1)), "")

    report("## Test: query MSE on %d new tasks (mean ± 95%% CI)" % N_TEST_TASKS, "")
    report("Per task: K support rows, %d other query rows of the same function; plain gradient "
           "steps on the support rows (MAML: alpha = %g; pretrained: the chosen step size above)."
           % (N_QUERY_TEST, INNER_LR), "")
    results = {}
    rows = []
    for k in TEST_SHOTS:
        for name, model in models:
            cells = []
            for n_steps in STEP_COUNTS:
                lr = chosen[k, n_steps] if name == "pretrained" and n_steps else None
                results[name, k, n_steps] = query_errors(model, test[k], k, n_steps, lr)
                cells.append(fmt_ci(*mean_ci(results[name, k, n_steps])))
            steps = ("α=%g" % INNER_LR if name != "pretrained" else
                     "%g / %g" % (chosen[k, 1], chosen[k, 10]))
            rows.append(["K=%d" % k, name, steps] + cells)
            if k == 5 and name in PUBLISHED_K5:
                published = PUBLISHED_K5[name]
                rows.append(["K=5", name + ", published", "", "",
                             "%.2f" % published[1], "%.2f" % published[10]])
    report(*table(["K", "model", "step size (1 / 10 steps)", "0 steps", "1 step", "10 steps"],
                  rows, "lllrrr"), "")

    report("## Heavy tails: median and worst task beside the mean", "")
    report("A mean can hide one exploded task (e.g. five support points bunched at one end, "
           "extrapolated wildly by ten steps): the per-task median and maximum of the same "
           "errors.", "")
    rows = []
    for k in TEST_SHOTS:
        for name, _ in models:
            for n_steps in STEP_COUNTS[1:]:
                errors = results[name, k, n_steps]
                rows.append(["K=%d" % k, name, "%d" % n_steps, fmt_ci(*mean_ci(errors)),
                             "%.3f" % np.median(errors), "%.2f" % errors.max()])
    report(*table(["K", "model", "steps", "mean ± 95% CI", "median", "worst task"], rows,
                  "llrrrr"), "")

    report("## Against the published numbers (K=5, trained at K=10)", "")
    for n_steps in (1, 10):
        errors = results["MAML", 5, n_steps]
        mean, ci = mean_ci(errors)
        published = PUBLISHED_K5["MAML"][n_steps]
        verdict = ("beats" if mean + ci < published else
                   "mean below the published value" if mean <= published else
                   "matches (published value within the 95% CI)" if mean - ci <= published else
                   "does NOT match")
        worst = np.argsort(errors)[::-1]
        report("- MAML after %d step%s: %.3f ± %.3f vs published %.2f: %s. Per-task median "
               "%.3f; largest per-task MSEs %s; mean without the largest one %.3f."
               % (n_steps, "" if n_steps == 1 else "s", mean, ci, published, verdict,
                  np.median(errors), ", ".join("%.1f" % e for e in errors[worst[:3]]),
                  errors[worst[1:]].mean()))
    report("- MAML training: %.1f s wall, %.1f s CPU for %d meta-iterations (target < 30 s "
           "wall for %d)." % (maml_wall, maml_cpu, maml.n_iter_, FULL_ITERATIONS))
    report("", "Total run time of this script: %.0f s." % (time.perf_counter() - script_start))
    report.write(args.output)


if __name__ == "__main__":
    main()
