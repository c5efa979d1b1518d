"""Speed-up of ``n_jobs=2`` over ``n_jobs=1`` inside one fit: skmaml's threads on a meta-batch.

Run it UNPINNED, on an otherwise idle machine with at least two cores, from the repository root::

    python benchmarks/bench_parallel.py            # full run, about 1-2 minutes
    python benchmarks/bench_parallel.py --quick    # smoke run, about 20 s
    python benchmarks/bench_parallel.py --output parallel.md

Unlike ``bench_meta_step.py`` (one core, ``taskset -c 1``), this script needs two cores: do not
pin it with ``taskset`` to a single CPU, and do not run it next to other CPU-heavy work -- a
second thread can only help if a second core is free. The header prints the CPUs this process may
run on and the load average before and after; a load average near the number of cores means the
speed-ups printed are lower bounds.

What is timed is the estimator's own meta-iteration, exactly as ``BaseMAML._meta_train`` runs it:

1. episode sampling: the compiled sampler draws support and query rows of a meta-batch of tasks
   (shuffled epochs without replacement, one seed per task visit, as in ``fit``);
2. the mean meta-gradient: ``skmaml._parallel.MetaGradient`` cuts the batch into chunks by its
   estimated work (``chunk_bounds``, independent of ``n_jobs``) and runs them one after the other
   (``n_jobs=1``) or on its thread pool (``n_jobs=2``); a one-chunk batch is a direct kernel call;
3. one Adam update (``skmaml._optim.AdamOptimizer``).

The ``n_jobs=1`` and ``n_jobs=2`` variants walk the same sequence of batches and seeds, and their
timing blocks alternate (rotating which goes first), so each pair of blocks covers the same
meta-iterations under the same machine conditions. At the end the two variants' parameters are
compared: they must be bit-identical (the chunking does not depend on ``n_jobs``).

Workloads:

* (a) heavy: 64 tasks per meta-batch, each visit 100 support + 100 query rows (200 rows per task)
  of 20 features, MLP [20, 128, 128, 1] ReLU, N = 5 inner steps, second order, float64 (the dtype
  of NumPy data), 256 tasks in the pool. Target: speed-up >= 1.7x.
* (b) the MAML paper's sinusoid workload of ``bench_meta_step.py``: 25 tasks per meta-batch of
  10 support + 10 query rows (drawn from 20-row tasks of ``make_sinusoid_tasks``), MLP
  [1, 40, 40, 1] ReLU, float32, inner_lr 0.01, Adam(0.001), N in {1, 5} x {first, second order}.
  Most of these are one chunk (no threads used); target: no slowdown, speed-up >= 0.95x.

A second, shorter table times whole ``MAMLRegressor.fit`` calls with a fixed ``max_iter`` (input
validation, thread pool start-up and epoch bookkeeping included) as a cross-check.

Nothing is asserted: the script prints the times, the ratios and the targets. Each number is the
median of several timing blocks after a warm-up; compare ratios from the same run, not absolute
times across runs or machines.
"""

import argparse
import contextlib
import gc
import os
import sys
import time
import warnings
from datetime import datetime, timezone

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_meta_step import ms  # noqa: E402  (shared formatting; stdlib + numpy only)

TARGETS = {"heavy": 1.7, "sinusoid": 0.95}
SEED_HIGH = np.iinfo(np.int64).max


# ---------------------------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------------------------

def heavy_workload(n_pool=256, n_rows=200, n_features=20, seed=0):
    """Random smooth regression tasks, 200 rows x 20 features each, float64."""
    rng = np.random.default_rng(seed)
    tasks = []
    for _ in range(n_pool):
        w = rng.normal(size=n_features) / np.sqrt(n_features)
        X = rng.normal(size=(n_rows, n_features))
        tasks.append((X, np.sin(2.0 * (X @ w)) + 0.1 * rng.normal(size=n_rows)))
    return {
        "name": "heavy", "label": "(a) heavy: 64 tasks x (100 + 100) rows x 20 features, "
                                  "[20, 128, 128, 1], N=5, second order, float64",
        "tasks": tasks, "hidden": (128, 128), "n_steps": 5, "first_order": False,
        "batch": 64, "n_support": 100, "n_query": 100, "inner_lr": 0.01, "meta_lr": 0.001,
        "dtype": np.float64, "target": TARGETS["heavy"],
    }


def sinusoid_workload(n_steps, first_order, n_pool=1000):
    from skmaml.datasets import make_sinusoid_tasks
    tasks = make_sinusoid_tasks(n_tasks=n_pool, n_samples=20, random_state=0)
    order = "first" if first_order else "second"
    return {
        "name": "sinusoid", "label": "(b) sinusoid: 25 tasks x (10 + 10) rows, [1, 40, 40, 1], "
                                     "N=%d, %s order, float32" % (n_steps, order),
        "tasks": tasks, "hidden": (40, 40), "n_steps": n_steps, "first_order": first_order,
        "batch": 25, "n_support": 10, "n_query": 10, "inner_lr": 0.01, "meta_lr": 0.001,
        "dtype": np.float32, "target": TARGETS["sinusoid"],
    }


def concatenated(workload):
    """The TaskSet layout the estimator's sampler works on: rows, targets (n, 1), offsets."""
    dtype = workload["dtype"]
    X = np.ascontiguousarray(np.concatenate([X for X, _ in workload["tasks"]]), dtype=dtype)
    Y = np.ascontiguousarray(np.concatenate([y for _, y in workload["tasks"]])[:, None],
                             dtype=dtype)
    sizes = [len(y) for _, y in workload["tasks"]]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    fixed = np.full(len(sizes), -1, dtype=np.int64)
    return X, Y, offsets, fixed


def layer_sizes_of(workload, n_features):
    return np.array([n_features, *workload["hidden"], 1], dtype=np.int64)


def n_chunks(workload, n_features):
    """Chunks ``MetaGradient`` cuts one full meta-batch of this workload into."""
    from skmaml._parallel import chunk_bounds, flops_per_row
    support_flops, query_flops = flops_per_row(layer_sizes_of(workload, n_features),
                                               workload["n_steps"], workload["first_order"])
    s_off = np.arange(workload["batch"] + 1, dtype=np.int64) * workload["n_support"]
    q_off = np.arange(workload["batch"] + 1, dtype=np.int64) * workload["n_query"]
    bounds = chunk_bounds(s_off, q_off, support_flops, query_flops)
    work = workload["batch"] * (support_flops * workload["n_support"]
                                + query_flops * workload["n_query"])
    return bounds.shape[0] - 1, work


# ---------------------------------------------------------------------------------------------
# The meta-iteration, as BaseMAML._meta_train runs it
# ---------------------------------------------------------------------------------------------

class MetaIteration:
    """Meta-training state for one ``n_jobs``: call ``step()`` for one meta-iteration."""

    def __init__(self, workload, data, n_jobs, seed=0):
        from skmaml._kernels._config import RELU
        from skmaml._kernels._rules import plain_rule
        from skmaml._kernels._sampling import sample_regression_episodes
        from skmaml._optim import make_optimizer
        from skmaml._parallel import MetaGradient
        from skmaml._params import init_theta

        self.X, self.Y, self.offsets, self.fixed = data
        self.n_jobs = n_jobs
        self.layer_sizes = layer_sizes_of(workload, self.X.shape[1])
        self.rng = np.random.RandomState(seed)
        self.theta = init_theta(self.layer_sizes, "relu", self.rng, workload["dtype"])
        self.optimizer = make_optimizer("adam", workload["meta_lr"], self.theta.shape[0],
                                        workload["dtype"])
        self.meta_gradient = MetaGradient(self.layer_sizes, RELU,
                                          plain_rule(workload["inner_lr"], workload["dtype"]),
                                          workload["n_steps"], workload["first_order"], n_jobs)
        self.sample = sample_regression_episodes
        self.batch_size = workload["batch"]
        self.n_tasks = self.offsets.shape[0] - 1
        self.support_sizes = np.full(self.n_tasks, workload["n_support"], dtype=np.int64)
        self.n_query = workload["n_query"]
        self.grad = np.empty_like(self.theta)
        self.task_losses = np.empty(self.batch_size, dtype=self.theta.dtype)
        self.position = self.n_tasks
        self.order = self.seeds = None
        self.loss = float("nan")

    def step(self):
        if self.position >= self.n_tasks:
            self.order = self.rng.permutation(self.n_tasks)
            self.seeds = self.rng.randint(0, SEED_HIGH, size=self.n_tasks, dtype=np.int64)
            self.position = 0
        batch = self.order[self.position:self.position + self.batch_size]
        seeds = self.seeds[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        Xs, ys, s_off, Xq, yq, q_off = self.sample(self.X, self.Y, self.offsets, self.fixed,
                                                   batch, seeds, self.support_sizes, self.n_query)
        self.loss = self.meta_gradient(self.theta, Xs, ys, s_off, Xq, yq, q_off, self.grad,
                                       self.task_losses[:batch.shape[0]])
        self.optimizer.update(self.theta, self.grad)


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------

def timed_block(fn, n):
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            fn()
        return time.perf_counter() - t0, time.process_time() - c0
    finally:
        if gc_was_enabled:
            gc.enable()


def compare(variants, repeats, block_seconds, warmup_seconds, min_warmup_calls=2):
    """Interleaved blocks of ``variants`` (label -> callable, one unit per call).

    Returns {label: per-call wall times of each block}, the paired per-round ratios (first
    variant's time / second variant's time), and {label: CPU seconds per wall second over all its
    blocks} (process CPU time, all threads: how many cores the variant actually got).
    """
    labels = list(variants)
    # Warm-up: the first variant for >= min_warmup_calls calls and >= warmup_seconds, then every
    # other variant for the same number of calls, so all variants stay at the same meta-iteration
    # (every block of a round then covers the same batches). Calls per block from the slower rate.
    per_call = {}
    n_warm = None
    for label in labels:
        n, t0 = 0, time.perf_counter()
        while True:
            if n_warm is None:
                done = n >= min_warmup_calls and time.perf_counter() - t0 >= warmup_seconds
            else:
                done = n >= n_warm
            if done:
                break
            variants[label]()
            n += 1
        n_warm = n
        per_call[label] = (time.perf_counter() - t0) / n
    n_inner = max(1, int(round(block_seconds / max(per_call.values()))))
    times = {label: [] for label in labels}
    cpu = {label: [0.0, 0.0] for label in labels}
    for r in range(repeats):
        for i in range(len(labels)):
            label = labels[(r + i) % len(labels)]
            wall, cpu_seconds = timed_block(variants[label], n_inner)
            times[label].append(wall / n_inner)
            cpu[label][0] += cpu_seconds
            cpu[label][1] += wall
    t1, t2 = (np.asarray(times[label]) for label in labels)
    return times, t1 / t2, {label: c / w for label, (c, w) in cpu.items()}




def verdict(speedup, target):
    return "met" if speedup >= target else "NOT met"


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------

def header(report, args, bench):
    import numba
    import scipy
    import sklearn
    from threadpoolctl import threadpool_info

    model, simd, n_cpu, affinity = bench.cpu_description()
    report("# skmaml within-fit parallelism benchmark (n_jobs=2 vs n_jobs=1)", "")
    report("- date: %s" % datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"))
    report("- python %s, numpy %s, numba %s, scipy %s, scikit-learn %s" % (
        sys.version.split()[0], np.__version__, numba.__version__, scipy.__version__,
        sklearn.__version__))
    for lib in threadpool_info():
        if lib.get("user_api") == "blas":
            report("- BLAS: %s %s (%s); %s threads outside fit, 1 inside (MetaGradient)" % (
                lib.get("internal_api"), lib.get("version"), lib.get("threading_layer"),
                lib.get("num_threads")))
    report("- CPU: %s (%s); %d logical CPUs, this process may run on %s" % (
        model, ", ".join(simd) or "no avx2/avx512 flags", n_cpu, affinity))
    report("- load average (1, 5, 15 min) at start: %.2f, %.2f, %.2f" % os.getloadavg())
    report("- skmaml git commit %s" % bench.git_description())
    report("- timing: median of %d interleaved blocks of ~%.0f ms per variant after >= %.1f s "
           "warm-up; speed-up = median over rounds of (n_jobs=1 block time / n_jobs=2 block time "
           "of the same round)" % (args.repeats, args.block_seconds * 1e3, args.warmup_seconds))
    if affinity is not None and len(affinity) < 2:
        report("- WARNING: this process may run on one CPU only (%s): n_jobs=2 cannot be faster. "
               "Run it without taskset." % affinity)
    load = os.getloadavg()[0]
    if load > 0.5:
        report("- WARNING: the machine is not idle (1-min load %.2f): other processes compete "
               "for the second core, so the speed-ups below are lower bounds." % load)
    report("")


def meta_iteration_table(report, args, bench, workloads):
    from skmaml._parallel import MAX_CHUNKS, MIN_CHUNK_FLOPS

    report("## Time per meta-iteration (sampling + meta-gradient + Adam)", "")
    headers = ["workload", "chunks", "MFLOP/iter", "n_jobs=1 ms (IQR)", "n_jobs=2 ms (IQR)",
               "speed-up (IQR)", "target", "", "cores used 1 / 2", "same θ"]
    rows = []
    results = {}
    for workload in workloads:
        bench.progress("meta-iteration: " + workload["label"])
        data = concatenated(workload)
        chunks, work = n_chunks(workload, data[0].shape[1])
        serial, threaded = MetaIteration(workload, data, 1), MetaIteration(workload, data, 2)
        with contextlib.ExitStack() as stack:
            for it in (serial, threaded):
                stack.enter_context(it.meta_gradient)
            times, ratios, cores = compare(
                {"n_jobs=1": serial.step, "n_jobs=2": threaded.step},
                args.repeats, args.block_seconds, args.warmup_seconds)
        same = (serial.theta.tobytes() == threaded.theta.tobytes()
                and serial.loss == threaded.loss)
        t1, t2 = (np.asarray(times[k]) for k in ("n_jobs=1", "n_jobs=2"))
        speedup = float(np.median(ratios))
        results[workload["label"]] = speedup
        rows.append([workload["label"], chunks, "%.1f" % (work / 1e6),
                     "%s (%s-%s)" % (ms(np.median(t1)), ms(np.percentile(t1, 25)),
                                     ms(np.percentile(t1, 75))),
                     "%s (%s-%s)" % (ms(np.median(t2)), ms(np.percentile(t2, 25)),
                                     ms(np.percentile(t2, 75))),
                     "%.2fx (%.2f-%.2f)" % (speedup, np.percentile(ratios, 25),
                                            np.percentile(ratios, 75)),
                     ">= %.2fx" % workload["target"], verdict(speedup, workload["target"]),
                     "%.2f / %.2f" % (cores["n_jobs=1"], cores["n_jobs=2"]),
                     "yes" if same else "NO"])
    report(*bench.table(headers, rows, "lrrrrrllrl"))
    report("")
    report("- chunks = how many pieces `chunk_bounds` cuts one full meta-batch into (at most %d, "
           "and %.0f MFLOP of estimated work or more on average; 1 chunk = a direct kernel call, "
           "no thread hand-off). MFLOP/iter = that estimate for the whole batch "
           "(`flops_per_row`: matrix products only)." % (MAX_CHUNKS, MIN_CHUNK_FLOPS / 1e6),
           "- cores used = process CPU time (all threads) / wall time over all timing blocks of "
           "that variant: about 1 for n_jobs=1 and for one-chunk batches; up to 2 for n_jobs=2. "
           "Well below 2 for a many-chunk workload means the second core was busy with other "
           "work, and the speed-up is limited by that, not by skmaml.",
           "- same θ = the n_jobs=1 and n_jobs=2 parameters are bit-identical after all the "
           "meta-iterations run here (same batches, same seeds).", "")
    return results


def fit_table(report, args, bench, workloads):
    from sklearn.exceptions import ConvergenceWarning

    from skmaml import MAMLRegressor

    report("## Cross-check: whole `MAMLRegressor.fit` calls, time per meta-iteration", "")
    headers = ["workload", "max_iter", "n_jobs=1 ms/iter", "n_jobs=2 ms/iter", "speed-up",
               "cores used 1 / 2"]
    rows = []
    for workload, max_iter in workloads:
        bench.progress("fit: " + workload["label"])
        tasks = [(X.astype(workload["dtype"]), y.astype(workload["dtype"]))
                 for X, y in workload["tasks"]]

        def fit(n_jobs, tasks=tasks, workload=workload, max_iter=max_iter):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                MAMLRegressor(hidden_layer_sizes=workload["hidden"],
                              n_inner_steps=workload["n_steps"],
                              first_order=workload["first_order"],
                              inner_lr=workload["inner_lr"], meta_lr=workload["meta_lr"],
                              meta_batch_size=workload["batch"], n_support=workload["n_support"],
                              n_query=workload["n_query"], max_iter=max_iter, tol=0.0,
                              random_state=0, n_jobs=n_jobs).fit(tasks)

        times, ratios, cores = compare({"n_jobs=1": lambda: fit(1), "n_jobs=2": lambda: fit(2)},
                                       args.fit_repeats, 0.0, 0.0, min_warmup_calls=1)
        t1, t2 = (np.median(times[k]) / max_iter for k in ("n_jobs=1", "n_jobs=2"))
        rows.append([workload["label"], max_iter, ms(t1), ms(t2),
                     "%.2fx" % float(np.median(ratios)),
                     "%.2f / %.2f" % (cores["n_jobs=1"], cores["n_jobs=2"])])
    report(*bench.table(headers, rows, "lrrrrr"))
    report("")
    report("- ms/iter = fit time / max_iter, so it includes everything else a fit does (input "
           "validation, initialisation, starting and stopping the thread pool, end-of-pass "
           "bookkeeping, any final check of θ); %s interleaved fits per variant after one "
           "warm-up fit each, median. The table above is the cleaner per-iteration number." %
           args.fit_repeats, "")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Run unpinned on an idle machine with >= 2 cores.")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: few short blocks, sinusoid N=1 and N=5 second order only")
    p.add_argument("--repeats", type=int, default=None,
                   help="timing blocks per variant (default 15, --quick 3)")
    p.add_argument("--block-seconds", type=float, default=None,
                   help="target length of one block (default 0.5 s, --quick 0.1 s)")
    p.add_argument("--no-fit", action="store_true", help="skip the whole-fit cross-check")
    p.add_argument("--output", metavar="FILE", help="also write the report (Markdown) to FILE")
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 15
    if args.block_seconds is None:
        args.block_seconds = 0.1 if args.quick else 0.5
    args.warmup_seconds = 0.2 if args.quick else 1.0
    args.fit_repeats = 1 if args.quick else 5
    if args.repeats < 1 or args.block_seconds <= 0:
        p.error("--repeats must be >= 1 and --block-seconds > 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    sys.path.insert(0, HERE)
    if REPO not in sys.path:
        sys.path.insert(1, REPO)
    import bench_meta_step as bench  # shared helpers: table, Report, CPU / git description

    report = bench.Report()
    header(report, args, bench)
    heavy = heavy_workload()
    sinusoid_cases = ((1, False), (5, False)) if args.quick else (
        (1, True), (1, False), (5, True), (5, False))
    sinusoids = [sinusoid_workload(n, fo) for n, fo in sinusoid_cases]
    results = meta_iteration_table(report, args, bench, [heavy] + sinusoids)
    if not args.no_fit:
        fit_table(report, args, bench, [(heavy, 2 if args.quick else 6),
                                        (sinusoid_workload(1, False), 100 if args.quick else 500),
                                        (sinusoid_workload(5, False), 50 if args.quick else 200)])
    report("## Targets", "")
    report("- (a) heavy: %.2fx, target >= %.2fx: %s" % (
        results[heavy["label"]], TARGETS["heavy"],
        verdict(results[heavy["label"]], TARGETS["heavy"])))
    worst = min(results[w["label"]] for w in sinusoids)
    report("- (b) sinusoid, worst case: %.2fx, target >= %.2fx: %s" % (
        worst, TARGETS["sinusoid"], verdict(worst, TARGETS["sinusoid"])))
    report("- load average at end: %.2f, %.2f, %.2f" % os.getloadavg())
    report("", "Total run time of this script: %.0f s." % (time.perf_counter() - start))
    report.write(args.output)


if __name__ == "__main__":
    main()
