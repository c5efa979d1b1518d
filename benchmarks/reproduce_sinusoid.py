"""Reproduce the MAML paper's sinusoid regression experiment with ``MAMLRegressor``.

Run it from the repository root::

    python benchmarks/reproduce_sinusoid.py                 # full run: 70,000 meta-iterations
    python benchmarks/reproduce_sinusoid.py --quick         # smoke run: 2,000 meta-iterations
    python benchmarks/reproduce_sinusoid.py --output sinusoid.md
    python benchmarks/reproduce_sinusoid.py --torch-reference   # the same run in PyTorch beside it
    python benchmarks/reproduce_sinusoid.py --variants      # MAML, Meta-SGD, LSLR, ANIL (see below)

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

When JAX is installed the script also times its meta-iteration of the same training step in the
same run (one thread, ``bench_meta_step.py``'s peer) and prints the fit's time as a share of 70,000
times it.

``--torch-reference`` also trains the run in PyTorch as its PyTorch ports do (``nn.Linear``
layers and their default initialisation, a fresh meta-batch at every iteration, ``torch.func``,
Adam) and evaluates it with the same test tasks and the same adaptation code as skmaml's model,
so the two rows differ only by the training implementation and its random draws.

Timing: the numba cache is warmed first (a tiny fit of each model and one ``adapt``), then the
70,000-iteration MAML fit is timed by itself, wall time and process CPU time, and so is the
baseline's training. The meta-batch of the sinusoid problem is far too small to split over threads
(about 10 MFLOP per meta-iteration, below skmaml's minimum chunk of work), so ``--n-jobs`` does not
change the training time here; it is passed through for completeness.

``--variants`` runs another experiment **instead of** the one above (the default run is
unchanged): the adaptation rules of ``MAMLRegressor`` side by side, from the same budget, in the
protocol of the issue's PyTorch Meta-SGD reference. For each K in {5, 10}, five models are trained
with ``n_support = n_query = K``, one inner step initialised at alpha = 0.01, Adam beta = 0.001,
meta-batches of 25, second order, float32, ``--max-iter`` meta-iterations (default 20,000; --quick
2,000), the same ``random_state`` (so the same initial theta, meta-batches and splits):

* MAML: one fixed alpha;
* Meta-SGD (``learn_inner_lr="per_parameter"``; Li et al. 2017): a step size per parameter,
  initialised to alpha and meta-learned with theta by the same Adam;
* LSLR (``learn_inner_lr="per_layer_step"``; MAML++): one step size per weight matrix and per bias
  vector (and per inner step: one here);
* ANIL (``adapted_layers=1``): only the output layer adapts in the inner loop;
* ANIL + Meta-SGD: both.

Training tasks are drawn as above (a fixed pool of ``--n-train-tasks`` tasks of 20 rows, a fresh
split into K support and K query rows of those 20 at every visit: 20,000 x 25 = 500,000 visits, each
task seen about 5 times), where the issue's reference draws 25 fresh tasks of 2K rows at every
meta-iteration. Each model is evaluated on the same 600 test tasks of the run above (K support + 100
query rows) after 1 and 10 steps with its own (learned) step sizes (Meta-SGD's one vector at every
step; 10 steps is beyond what any of them was trained for): mean +/- 95% CI, median and worst task.
The issue's reference numbers (1 step) are printed beside them, with the training wall time of every
model and the mean learned step size of every layer. With ``--torch-reference`` the mode also trains
that reference here in PyTorch (plain MAML and Meta-SGD, the step sizes a learnable tensor shaped
like theta, initialised to 0.01, in the same Adam; fresh tasks of 2K rows at every iteration) for
both K and scores it with the same code.
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

from bench_meta_step import (  # noqa: E402  (after the path set-up)
    XLA_SINGLE_THREAD,
    Report,
    accuracy_header,
    init_theta,
    progress,
    sinusoid_batch,
    table,
)

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

# --variants: the adaptation rules side by side (name, learn_inner_lr, adapted_layers).
VARIANTS = (("MAML", None, "all"), ("Meta-SGD", "per_parameter", "all"),
            ("LSLR", "per_layer_step", "all"), ("ANIL", None, 1),
            ("ANIL + Meta-SGD", "per_parameter", 1))
VARIANT_SHOTS = (5, 10)
VARIANT_ITERATIONS = 20_000
VARIANT_STEPS = (1, 10)
# As quoted in the issue: its PyTorch reference (Meta-SGD and plain MAML from the same code, trained
# and tested at K, 25 fresh tasks a batch, 20,000 meta-iterations, PyTorch init, second order;
# 600 test tasks, 100 query points), query MSE after 1 step, mean and 95% CI half-width.
TARGET_1STEP = {5: {"MAML": (0.676, 0.062), "Meta-SGD": (0.415, 0.048)},
                10: {"MAML": (0.394, 0.036), "Meta-SGD": (0.231, 0.025)}}

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

def make_estimator(n_inner_steps, max_iter, random_state, n_jobs, weight_init="uniform_fan_in",
                   n_support=N_SUPPORT_TRAIN, n_query=N_QUERY_TRAIN, learn_inner_lr=None,
                   adapted_layers="all"):
    from skmaml import MAMLRegressor

    return MAMLRegressor(hidden_layer_sizes=HIDDEN, activation="relu", weight_init=weight_init,
                         inner_lr=INNER_LR, learn_inner_lr=learn_inner_lr,
                         adapted_layers=adapted_layers,
                         n_inner_steps=n_inner_steps, meta_lr=META_LR, meta_optimizer="adam",
                         first_order=False, meta_batch_size=META_BATCH,
                         n_support=n_support, n_query=n_query, max_iter=max_iter,
                         # The paper's setting: alpha on the MSE of the raw targets, and all
                         # max_iter meta-iterations.
                         normalize_y=False, n_iter_no_change=max_iter,
                         random_state=random_state, n_jobs=n_jobs)


def train_torch_reference(max_iter, random_state, n_support=N_SUPPORT_TRAIN,
                          n_query=N_QUERY_TRAIN, meta_sgd=False):
    """The paper's run in PyTorch, written the way its PyTorch ports are: ``nn.Linear`` layers
    (so their default initialisation), a fresh meta-batch of 25 tasks of ``n_support + n_query``
    rows drawn at every iteration, one inner step through ``torch.func.grad`` (second order),
    ``torch.optim.Adam``; float32, one thread. ``meta_sgd``: Meta-SGD, the inner step sizes a
    learnable tensor of each parameter's shape, initialised to alpha and updated by the same Adam
    as theta. Returns a dict: ``coefs``, ``intercepts`` (skmaml's layout), ``rates`` (the learned
    step sizes as ``(inner_lr_coefs_, inner_lr_intercepts_)``, None without ``meta_sgd``),
    ``seconds`` (training wall time) and ``loss_curve`` (the meta-batch query loss at every
    iteration)."""
    try:
        import torch
        from torch.func import grad, grad_and_value, vmap
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
    n_theta = len(params)
    if meta_sgd:
        params += [torch.nn.Parameter(torch.full_like(t, INNER_LR)) for t in params]

    def forward(p, x):
        for i in range(0, len(p), 2):
            x = x @ p[i].T + p[i + 1]
            if i + 2 < len(p):
                x = torch.relu(x)
        return x

    def loss(p, x, y):
        return torch.mean((forward(p, x) - y) ** 2)

    def task_query_loss(p, xs, ys, xq, yq):
        theta = p[:n_theta]
        steps = p[n_theta:] if meta_sgd else (INNER_LR,) * n_theta
        g = grad(loss)(theta, xs, ys)
        return loss(tuple(a - s * b for a, s, b in zip(theta, steps, g)), xq, yq)

    def batch_loss(p, Xs, Ys, Xq, Yq):
        return vmap(task_query_loss, in_dims=(None, 0, 0, 0, 0))(p, Xs, Ys, Xq, Yq).mean()

    meta_grad = grad_and_value(batch_loss)
    optimizer = torch.optim.Adam(params, lr=META_LR)
    n_rows = n_support + n_query
    losses = np.empty(max_iter)
    start = time.perf_counter()
    for it in range(max_iter):
        amplitude = rng.uniform(0.1, 5.0, (META_BATCH, 1, 1))
        phase = rng.uniform(0.0, np.pi, (META_BATCH, 1, 1))
        x = rng.uniform(-5.0, 5.0, (META_BATCH, n_rows, 1))
        x, y = (torch.tensor(a, dtype=torch.float32) for a in (x, amplitude * np.sin(x - phase)))
        gradients, value = meta_grad(tuple(params), x[:, :n_support], y[:, :n_support],
                                     x[:, n_support:], y[:, n_support:])
        losses[it] = float(value.detach())
        for param, gradient in zip(params, gradients):
            param.grad = gradient
        optimizer.step()
    seconds = time.perf_counter() - start
    arrays = [p.detach().numpy().astype(DTYPE) for p in params]
    theta, steps = arrays[:n_theta], arrays[n_theta:]
    return {"coefs": [W.T.copy() for W in theta[0::2]],
            "intercepts": [b.copy() for b in theta[1::2]],
            "rates": ([W.T.copy() for W in steps[0::2]], [b.copy() for b in steps[1::2]])
            if meta_sgd else None,
            "seconds": seconds, "loss_curve": losses}


def with_parameters(estimator, coefs, intercepts, rates=None):
    """A copy of a fitted estimator holding other parameters (and learned step sizes, ``rates`` =
    ``(inner_lr_coefs_, inner_lr_intercepts_)``), so that they are adapted and scored by exactly
    the same code."""
    model = copy.deepcopy(estimator)
    model.coefs_, model.intercepts_ = coefs, intercepts
    if rates is not None:
        model.inner_lr_coefs_, model.inner_lr_intercepts_ = rates
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


def jax_iteration_seconds(n_blocks=7, block_iterations=300):
    """The median time of one meta-iteration of the same training step in JAX (``jit`` + ``vmap``,
    ``bench_meta_step.py``'s peer: 25 tasks of 10 + 10 rows, 1-40-40-1 ReLU, float32, one second
    order inner step, Adam) on one thread, after a warm-up; None when JAX is not installed."""
    import _peers

    if not _peers.available_peers()["jax"]:
        return None
    rng = np.random.default_rng(1)
    Xs, ys, Xq, yq = sinusoid_batch(rng, META_BATCH, N_SUPPORT_TRAIN, N_QUERY_TRAIN)
    theta0 = init_theta(rng, [1, 40, 40, 1])
    step, _ = _peers.build_peer("jax", [1, 40, 40, 1], "relu", 1, False, INNER_LR, META_LR,
                                theta0, Xs, ys, Xq, yq, n_threads=1)
    for _ in range(block_iterations):
        step()
    times = []
    for _ in range(n_blocks):
        t0 = time.perf_counter()
        for _ in range(block_iterations):
            step()
        times.append((time.perf_counter() - t0) / block_iterations)
    return float(np.median(times))


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
    accuracy_header(report, "MAML sinusoid regression (Finn et al. 2017, section 5.1) with skmaml"
                    + (": MAML, Meta-SGD, LSLR and ANIL from the same budget"
                       if args.variants else ""))
    report("- run: %s, %d meta-iterations, random_state=%d, n_jobs=%d, dtype float32, "
           "weight_init=%s"
           % ("QUICK (smoke run, not the paper's budget)" if args.quick else "full",
              max_iter, args.random_state, args.n_jobs, args.weight_init))
    report("")


# ---------------------------------------------------------------------------------------------
# --variants: MAML, Meta-SGD, LSLR and ANIL from the same budget
# ---------------------------------------------------------------------------------------------

def warm_variants(random_state, n_jobs, weight_init):
    """A tiny fit of every adaptation rule and two adapts, so the timed fits load no compiled
    code."""
    X, y, groups = sinusoid_tasks(50, 20, random_state, flat=True)
    start = time.perf_counter()
    for _, learn, adapted in VARIANTS:
        model = make_estimator(1, 5, random_state, n_jobs, weight_init, 5, 5, learn, adapted)
        timed_fit(model, X, y, groups)
        for n_steps in VARIANT_STEPS:
            model.adapt(X[:5], y[:5], n_inner_steps=n_steps).predict(X[5:20])
    return time.perf_counter() - start


def fmt_value(value):
    """A per-task error that may be huge (an adaptation run away) in a narrow cell."""
    if not np.isfinite(value):
        return "inf"
    return "%.3f" % value if value < 100 else "%.3g" % value


def fmt_errors(errors):
    """Mean ± 95% CI of per-task errors; how many diverged, if any did."""
    n_bad = int(np.sum(~np.isfinite(errors)))
    if n_bad:
        return "%d/%d diverged" % (n_bad, len(errors))
    mean, ci = mean_ci(errors)
    return fmt_ci(mean, ci) if mean < 100 else "%.2g ± %.2g" % (mean, ci)


def fmt_paired(errors, baseline):
    """Paired difference of per-task errors on the same tasks, mean ± 95% CI."""
    if not (np.isfinite(errors).all() and np.isfinite(baseline).all()):
        return "-"
    mean, ci = mean_ci(errors - baseline)
    return "%+.3f ± %.3f" % (mean, ci) if abs(mean) < 100 else "%+.2g ± %.2g" % (mean, ci)


def against_target(mean, ci, target):
    """An unpaired comparison with a published mean ± CI (other test tasks): the difference and
    the half-width of its 95% interval, sqrt(ci^2 + ci_target^2)."""
    target_mean, target_ci = target
    diff, half = mean - target_mean, float(np.hypot(ci, target_ci))
    if not np.isfinite(diff):
        return "does NOT match (diverged)"
    words = ("beats it (lower beyond the interval)" if diff < -half else
             "matches it (mean lower, inside the interval)" if diff <= 0 else
             "matches it (mean higher, inside the interval)" if diff <= half else
             "does NOT match (higher beyond the interval)")
    return "difference %+.3f ± %.3f: %s" % (diff, half, words)


def quarters(curve):
    """Mean training query MSE in each quarter of the iterations, as one cell."""
    return " / ".join("%.3f" % np.mean(part) for part in np.array_split(np.asarray(curve), 4))


def rate_rows(k, name, rates):
    """Rows of the learned-step-size table: per layer, the weights' and biases' step sizes."""
    rows = []
    sizes = (1, *HIDDEN, 1)
    for i, (W, b) in enumerate(zip(*rates)):
        layer = "%d (%d→%d)" % (i + 1, sizes[i], sizes[i + 1])
        W, b = np.asarray(W, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if not W.any() and not b.any():
            rows.append(["K=%d" % k, name, layer, "not adapted", "", "", "", ""])
            continue
        rows.append(["K=%d" % k, name, layer, "%.4f" % W.mean(),
                     "%.4f … %.4f" % (W.min(), W.max()) if W.size > 1 else "",
                     "%d / %d" % ((W < 0).sum(), W.size), "%.4f" % b.mean(),
                     "%.4f … %.4f" % (b.min(), b.max()) if b.size > 1 else ""])
    return rows


def run_variants(report, args, max_iter, n_train, train, test):
    """Train every adaptation rule for each K of VARIANT_SHOTS and report the variants tables."""
    X, y, groups = train
    warm_seconds = warm_variants(args.random_state, args.n_jobs, args.weight_init)
    models, timings, curves = {}, {}, {}
    for k in VARIANT_SHOTS:
        for name, learn, adapted in VARIANTS:
            progress("K=%d: training %s (%d meta-iterations)" % (k, name, max_iter))
            est = make_estimator(1, max_iter, args.random_state, args.n_jobs, args.weight_init,
                                 k, k, learn, adapted)
            timings[name, k] = timed_fit(est, X, y, groups)
            models[name, k], curves[name, k] = est, est.loss_curve_
    references = []  # (name, plain-MAML counterpart's name) of the PyTorch rows
    if args.torch_reference:
        for k in VARIANT_SHOTS:
            for name, meta_sgd in (("MAML", False), ("Meta-SGD", True)):
                progress("K=%d: training %s in PyTorch (%d meta-iterations)" % (k, name, max_iter))
                ref = train_torch_reference(max_iter, args.random_state, k, k, meta_sgd)
                label = name + ", PyTorch reference"
                models[label, k] = with_parameters(models[name, k], ref["coefs"],
                                                   ref["intercepts"], ref["rates"])
                timings[label, k] = (ref["seconds"], np.nan)
                curves[label, k] = ref["loss_curve"]
        references = ["MAML, PyTorch reference", "Meta-SGD, PyTorch reference"]
    names = [name for name, _, _ in VARIANTS] + references

    report("## Training", "")
    report("For each K: n_support = n_query = K, one inner step with step sizes initialised to "
           "alpha = %g, second order, meta-batch %d, Adam beta = %g on theta and any learned step "
           "sizes, %d meta-iterations, MLP 1-40-40-1 ReLU, weight_init=%s, float32, the same "
           "random_state=%d for every model (the same initial theta, meta-batches and support / "
           "query splits). Tasks: a fixed pool of %s tasks x %d rows, a fresh split of a task's rows "
           "into K support + K query rows at each visit (%d x %d = %s visits, each task about %.1f "
           "times); the issue's reference draws %d fresh tasks of 2K rows at every meta-iteration "
           "(as the PyTorch rows here do). The numba cache was warmed first (%.1f s, not "
           "included)."
           % (INNER_LR, META_BATCH, META_LR, max_iter, args.weight_init, args.random_state,
              format(n_train, ","), N_SUPPORT_TRAIN + N_QUERY_TRAIN, max_iter, META_BATCH,
              format(max_iter * META_BATCH, ","), max_iter * META_BATCH / n_train, META_BATCH,
              warm_seconds), "")
    rows = []
    for k in VARIANT_SHOTS:
        for name in names:
            wall, cpu = timings[name, k]
            rows.append(["K=%d" % k, name, "%.1f" % wall, "-" if np.isnan(cpu) else "%.1f" % cpu,
                         "%.3f" % (1e3 * wall / max_iter), quarters(curves[name, k])])
    report(*table(["K", "model", "wall s", "CPU s", "wall ms / it.",
                   "train query MSE after adaptation, by quarter of training"], rows, "llrrrl"))
    if references:
        report("", "(PyTorch: eager torch.func, one thread, tasks drawn in NumPy at every "
               "iteration; CPU time not measured.)")
    report("")

    report("## Test: query MSE on %d new tasks after 1 and 10 steps" % N_TEST_TASKS, "")
    report("The same test tasks as the default run: K support rows, %d other query rows of the "
           "same function; each model adapts with its own step sizes (the learned ones where "
           "learned; Meta-SGD's vector at every step, LSLR's one step reused). Mean ± 95%% CI, "
           "per-task median and worst task; \"vs MAML\" is the paired difference from skmaml's "
           "MAML on the same tasks after 1 step (negative: better). The issue's reference rows "
           "are its own measurement (1 step, other test tasks)." % N_QUERY_TEST, "")
    errors = {}
    rows = []
    for k in VARIANT_SHOTS:
        for name in names:
            cells = []
            for n_steps in VARIANT_STEPS:
                e = query_errors(models[name, k], test[k], k, n_steps)
                # A prediction run to inf - inf is NaN: count it as diverged, as an inf.
                e = errors[name, k, n_steps] = np.where(np.isnan(e), np.inf, e)
                cells += [fmt_errors(e), fmt_value(np.median(e)), fmt_value(e.max())]
            paired = ("" if name == "MAML" else
                      fmt_paired(errors[name, k, 1], errors["MAML", k, 1]))
            rows.append(["K=%d" % k, name] + cells[:3] + [paired] + cells[3:])
        for name, (mean, ci) in TARGET_1STEP[k].items():
            rows.append(["K=%d" % k, name + ", the issue's PyTorch reference",
                         fmt_ci(mean, ci), "", "", "", "", "", ""])
    report(*table(["K", "model", "1 step", "median", "worst", "vs MAML, 1 step", "10 steps",
                   "median", "worst"], rows, "llrrrrrrr"), "")

    report("## Meta-SGD against the target column (1 step)", "")
    for k in VARIANT_SHOTS:
        for name in ("Meta-SGD", "MAML") + (("Meta-SGD, PyTorch reference",) if references
                                            else ()):
            e = errors[name, k, 1]
            mean, ci = mean_ci(e)
            target_name = name.split(",")[0]
            report("- K=%d, %s: %s vs the issue's %s %s: %s. Median %s, worst task %s."
                   % (k, "skmaml " + name if name in ("Meta-SGD", "MAML") else name,
                      fmt_errors(e), target_name, fmt_ci(*TARGET_1STEP[k][target_name]),
                      against_target(mean, ci, TARGET_1STEP[k][target_name]),
                      fmt_value(np.median(e)), fmt_value(e.max())))
        e, base = errors["Meta-SGD", k, 1], errors["MAML", k, 1]
        report("- K=%d, skmaml Meta-SGD − skmaml MAML on the same tasks: %s (the issue's "
               "reference: %+.3f); ratio of means %.2f (the issue's: %.2f)."
               % (k, fmt_paired(e, base),
                  TARGET_1STEP[k]["Meta-SGD"][0] - TARGET_1STEP[k]["MAML"][0],
                  np.mean(e) / np.mean(base),
                  TARGET_1STEP[k]["Meta-SGD"][0] / TARGET_1STEP[k]["MAML"][0]))
    report("")

    report("## Learned inner step sizes (all initialised to %g)" % INNER_LR, "")
    report("Per layer: the mean, range and number of negative step sizes of the weights, and the "
           "mean and range of the biases' (Meta-SGD: one per parameter; LSLR: one per weight "
           "matrix and one per bias vector).", "")
    rows = []
    for k in VARIANT_SHOTS:
        for name in names:
            model = models[name, k]
            if getattr(model, "inner_lr_coefs_", None) is not None:
                rows += rate_rows(k, name, (model.inner_lr_coefs_, model.inner_lr_intercepts_))
    report(*table(["K", "model", "layer", "weights: mean", "weights: range", "weights < 0",
                   "biases: mean", "biases: range"], rows, "lllrrrrr"), "")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: %d meta-iterations, 10,000 training tasks"
                        % QUICK_ITERATIONS)
    p.add_argument("--max-iter", type=int, default=None,
                   help="meta-iterations (default %d, --variants %d, --quick %d)"
                        % (FULL_ITERATIONS, VARIANT_ITERATIONS, QUICK_ITERATIONS))
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
                        "every iteration) and evaluate it with the same code; about 5 minutes "
                        "(with --variants: MAML and Meta-SGD for each K, about 10 minutes)")
    p.add_argument("--variants", action="store_true",
                   help="instead of the default run: MAML, Meta-SGD, LSLR, ANIL and ANIL + "
                        "Meta-SGD trained at K = 5 and 10 (n_support = n_query = K) for %d "
                        "meta-iterations, tested after 1 and 10 steps (about 2 minutes)"
                        % VARIANT_ITERATIONS)
    p.add_argument("--no-jax-time", action="store_true",
                   help="do not time JAX's meta-iteration beside the fit (it is when JAX is "
                        "installed)")
    p.add_argument("--output", metavar="FILE", help="also write the report (Markdown) to FILE")
    args = p.parse_args(argv)
    flags = os.environ.get("XLA_FLAGS", "")
    if "intra_op_parallelism_threads" not in flags:  # before anything imports jax
        os.environ["XLA_FLAGS"] = (flags + " " + XLA_SINGLE_THREAD).strip()
    max_iter = args.max_iter or (QUICK_ITERATIONS if args.quick else
                                 VARIANT_ITERATIONS if args.variants else FULL_ITERATIONS)
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

    if args.variants:
        run_variants(report, args, max_iter, n_train, (X, y, groups), test)
        report("Total run time of this script: %.0f s." % (time.perf_counter() - script_start))
        report.write(args.output)
        return

    warm_seconds = warm_numba_cache(args.random_state, args.n_jobs, args.weight_init)

    maml = make_estimator(1, max_iter, args.random_state, args.n_jobs, args.weight_init)
    maml_wall, maml_cpu = timed_fit(maml, X, y, groups)
    pooled = make_estimator(0, max_iter, args.random_state, args.n_jobs, args.weight_init)
    pooled_wall, pooled_cpu = timed_fit(pooled, X, y, groups)
    models = [("MAML", maml), ("pretrained", pooled)]
    if args.torch_reference:
        reference = train_torch_reference(max_iter, args.random_state)
        torch_seconds = reference["seconds"]
        models.insert(1, ("MAML, PyTorch reference",
                          with_parameters(maml, reference["coefs"], reference["intercepts"])))

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
    jax_seconds = None if args.no_jax_time else jax_iteration_seconds()
    if jax_seconds is None:
        report("JAX: not timed (%s)." % ("--no-jax-time" if args.no_jax_time else
                                          "not installed"), "")
    else:
        report("JAX, same run: %.3f ms per meta-iteration of the same step (jit + vmap, one "
               "thread, median of 7 blocks of 300 after a warm-up; bench_meta_step.py's peer), "
               "so %d meta-iterations would take %.1f s; skmaml's fit took %.2f of that "
               "(target < 0.5: %s)." % (1e3 * jax_seconds, maml.n_iter_, jax_seconds * maml.n_iter_,
                                       maml_wall / (jax_seconds * maml.n_iter_),
                                       "met" if maml_wall < 0.5 * jax_seconds * maml.n_iter_
                                       else "NOT met"), "")

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
