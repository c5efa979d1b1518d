"""Time one MAML meta-iteration of skmaml's numba kernels, against JAX and PyTorch peers.

Run it pinned to one core, from the repository root::

    taskset -c 1 python benchmarks/bench_meta_step.py             # full run, a few minutes
    taskset -c 1 python benchmarks/bench_meta_step.py --quick     # smoke run
    taskset -c 1 python benchmarks/bench_meta_step.py --no-peers --output results.md

One meta-iteration is the mean meta-gradient over a meta-batch of tasks
(``skmaml._kernels._maml.meta_batch_grad``) followed by one Adam update
(``skmaml._optim.AdamOptimizer(0.001).update``).  The peers (``benchmarks/_peers.py``) compute the
same iteration as one JAX ``jit`` function, with ``torch.func`` (eager) and with ``torch.compile``.

What is printed:

* a header: versions, BLAS, CPU, date, git commit;
* Table 1, the sinusoid workload of the MAML paper (25 tasks of 10 support + 10 query rows,
  MLP [1, 40, 40, 1] ReLU, float32, inner_lr 0.01) for N in {1, 5} x {first, second order}:
  median ms per iteration and interquartile range, first-call (compile) time in its own column,
  GFLOP/s under the FLOP model printed below the table, and peer time / skmaml time;
* Table 2, how skmaml's time scales when one factor at a time leaves the base case
  (tasks, rows per task, hidden width, N), second and first order;
* Table 3, the cost of each adaptation rule (Meta-SGD, LSLR, ANIL, ANIL + Meta-SGD) per
  meta-iteration against plain MAML on the workload of Table 1 (``--tables 3`` runs it alone);
* compile time: a fresh process with an empty ``NUMBA_CACHE_DIR`` (the first-ever compile) and a
  second one reusing that cache (what every later ``import`` + first fit pays).

Everything runs on one thread: the BLAS libraries that skmaml uses are limited with
``threadpoolctl.threadpool_limits(1)``, torch with ``torch.set_num_threads(1)``, and XLA by setting
``XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"`` before JAX is
imported.  ``taskset -c 1`` additionally keeps the process (and its children) on one core.

The machine this was written on is shared and noisy.  Hence: each number is the median over
several timing blocks taken after a warm-up, the spread is shown as the interquartile range, the
implementations of one Table-1 configuration are timed in interleaved rounds (so a slow period
hits all of them alike), and every ratio is computed from timings of the same run -- never compare
absolute times across runs or machines.

Only numpy, numba and scipy are required; a peer that is not installed is reported as such.
"""

import argparse
import gc
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import datetime, timezone

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

XLA_SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

INNER_LR = 0.01
META_LR = 0.001
BASE = {"n_tasks": 25, "n_rows": 10, "hidden": 40, "n_steps": 1}


# ---------------------------------------------------------------------------------------------
# Workload
# ---------------------------------------------------------------------------------------------

def sinusoid_batch(rng, n_tasks, n_support, n_query):
    """The MAML paper's regression tasks: ``y = A sin(x - phi)``, ``x ~ U[-5, 5]``.

    Returns float32 arrays ``Xs (T, K, 1), ys (T, K, 1), Xq (T, Q, 1), yq (T, Q, 1)``.
    """
    amplitude = rng.uniform(0.1, 5.0, size=(n_tasks, 1, 1))
    phase = rng.uniform(0.0, np.pi, size=(n_tasks, 1, 1))
    xs = rng.uniform(-5.0, 5.0, size=(n_tasks, n_support, 1))
    xq = rng.uniform(-5.0, 5.0, size=(n_tasks, n_query, 1))
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return (f32(xs), f32(amplitude * np.sin(xs - phase)),
            f32(xq), f32(amplitude * np.sin(xq - phase)))


def init_theta(rng, layer_sizes):
    """Glorot-uniform weights and zero biases, flat in the kernel layout, float32."""
    parts = []
    for n_in, n_out in zip(layer_sizes[:-1], layer_sizes[1:]):
        limit = np.sqrt(6.0 / (n_in + n_out))
        parts.append(rng.uniform(-limit, limit, size=n_in * n_out))
        parts.append(np.zeros(n_out))
    return np.concatenate(parts).astype(np.float32)


def flops_per_iteration(layer_sizes, n_tasks, n_support, n_query, n_steps, first_order):
    """FLOPs of one meta-iteration under the stated model (skmaml's own, which cuts meta-batches
    into chunks by it: ``skmaml._parallel.flops_per_row``)."""
    from skmaml._parallel import flops_per_row

    support, query = flops_per_row(layer_sizes, n_steps, first_order)
    return float(n_tasks * (n_support * support + n_query * query))


def flop_model_text(layer_sizes):
    from skmaml._parallel import mlp_products

    fwd, grad, hvp = (int(v) for v in mlp_products(layer_sizes))
    return [
        "FLOP model (the same count for every implementation; useful work, not what each one "
        "does internally): only the matrix products the algorithm needs, 2 flops per "
        "multiply-add. Per row and weight layer l (n_in x n_out): forward 1 product, gradient "
        "2 (dW and delta propagation; 1 for the first layer), Hessian-vector product 6 (3 for "
        "the first layer: no incoming R-activation, no delta below it). Per task: "
        "N x support rows x (forward + gradient) + query rows x (forward + gradient) "
        "+ [second order] N x support rows x HVP. The Adam update and elementwise work are not "
        "counted.",
        "For %s: forward %d, gradient %d, HVP %d multiply-adds per row." % (
            list(layer_sizes), fwd, grad, hvp),
    ]


# ---------------------------------------------------------------------------------------------
# Implementations
# ---------------------------------------------------------------------------------------------

def build_skmaml(layer_sizes, n_steps, first_order, theta0, Xs, ys, Xq, yq, learn_inner_lr=None,
                 adapted_layers="all"):
    """skmaml's meta-iteration as ``(step, get_loss)`` on the (T, K, d) batch, flattened; with
    an adaptation rule of the estimators' options (Table 3), its step sizes learned with θ."""
    from skmaml._adaptation import Layout
    from skmaml._kernels._config import RELU
    from skmaml._kernels._maml import meta_batch_grad, workspace_size
    from skmaml._optim import AdamOptimizer

    n_tasks, n_s, n_q = Xs.shape[0], Xs.shape[1], Xq.shape[1]
    flat = lambda a: np.ascontiguousarray(a.reshape(-1, a.shape[-1]))  # noqa: E731
    Xs2, ys2, Xq2, yq2 = flat(Xs), flat(ys), flat(Xq), flat(yq)
    s_off = np.arange(n_tasks + 1, dtype=np.int64) * n_s
    q_off = np.arange(n_tasks + 1, dtype=np.int64) * n_q
    sizes = np.asarray(layer_sizes, dtype=np.int64)
    layout = Layout(learn_inner_lr, adapted_layers, n_steps, sizes)
    # θ then the learned step sizes (none for plain MAML), moved together by Adam, as in fit.
    params = np.concatenate([theta0, layout.initial_rates(INNER_LR, theta0.dtype)])
    theta, rule = layout.kernel_rule(params, INNER_LR)
    grad = np.empty_like(params)
    task_losses = np.empty(n_tasks, dtype=params.dtype)
    optimizer = AdamOptimizer(META_LR)
    # Scratch memory kept across iterations, as the estimator's fit keeps it.
    workspace = np.empty(workspace_size(sizes, s_off, q_off, n_steps, first_order, rule),
                         dtype=params.dtype)
    last = [float("nan")]

    def step():
        last[0] = meta_batch_grad(theta, sizes, RELU, Xs2, ys2, s_off, Xq2, yq2, q_off,
                                  rule, n_steps, first_order, grad, task_losses, workspace)
        optimizer.update(params, grad)

    return step, lambda: float(last[0])


def build_peer(name, layer_sizes, n_steps, first_order, theta0, Xs, ys, Xq, yq):
    import _peers
    step, get_result = _peers.build_peer(name, list(layer_sizes), "relu", n_steps, first_order,
                                         INNER_LR, META_LR, theta0, Xs, ys, Xq, yq, n_threads=1)
    return step, lambda: get_result()[0]


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------

class Timed:
    """One implementation under test: first call, warm-up, then timing blocks on demand."""

    def __init__(self, label, builder):
        self.label = label
        self.error = None
        self.times = []
        t0 = time.perf_counter()
        try:
            self.step, get_loss = builder()
            self.step()
            self.first_call = time.perf_counter() - t0
            self.first_loss = get_loss()
        except Exception as exc:  # report, do not abort the whole benchmark
            self.error = "failed: %s: %s" % (type(exc).__name__, str(exc).splitlines()[0][:80])

    def warm_up(self, min_seconds, block_seconds):
        """Run >= 3 calls and >= ``min_seconds``; choose the calls per block from the rate."""
        n, t0 = 0, time.perf_counter()
        while n < 3 or time.perf_counter() - t0 < min_seconds:
            self.step()
            n += 1
        per_call = (time.perf_counter() - t0) / n
        self.n_inner = max(1, int(round(block_seconds / per_call)))
        return per_call

    def block(self):
        step, n = self.step, self.n_inner
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            t0 = time.perf_counter()
            for _ in range(n):
                step()
            elapsed = time.perf_counter() - t0
        finally:
            if gc_was_enabled:
                gc.enable()
        self.times.append(elapsed / n)

    def stats(self):
        t = np.asarray(self.times)
        return np.median(t), np.percentile(t, 25), np.percentile(t, 75)


def fit_workload(n_steps, first_order):
    """Table 1's workload through ``MAMLRegressor.fit``: ``(tasks, estimator)``, 1,000 sinusoid
    tasks of 20 rows (each visit draws 10 support + 10 query rows, 25 tasks per batch, as Table 1's
    meta-batch) and ``estimator(n_iter)``, a fresh regressor of the same network, dtype, inner_lr
    and Adam that runs exactly ``n_iter`` meta-iterations."""
    from skmaml import MAMLRegressor

    rng = np.random.default_rng(2)
    Xs, ys, Xq, yq = sinusoid_batch(rng, 1000, 10, 10)
    tasks = [(np.concatenate([a, b]), np.concatenate([c, d])[:, 0])
             for a, b, c, d in zip(Xs, Xq, ys, yq)]

    def estimator(n_iter):
        return MAMLRegressor(hidden_layer_sizes=(40, 40), activation="relu",
                             inner_lr=INNER_LR, meta_lr=META_LR, n_inner_steps=n_steps,
                             first_order=first_order, n_support=10, n_query=10,
                             meta_batch_size=BASE["n_tasks"], normalize_y=False,
                             max_iter=n_iter, n_iter_no_change=n_iter, tol=0.0,
                             random_state=0)

    return tasks, estimator


class TimedFit(Timed):
    """skmaml through ``MAMLRegressor.fit`` on the workload of Table 1: the cost of one
    meta-iteration as the difference of a long and a short fit on the same tasks, divided by the
    difference of their meta-iterations, so the fixed cost of a fit (validation, set-up) cancels
    and what remains is the kernel plus the training loop (episode sampling, checks, the
    optimiser step, bookkeeping). One block = one (short, long) pair."""

    SHORT, LONG = 50, 550

    def __init__(self, label, n_steps, first_order):
        def builder():
            self.tasks, self.estimator = fit_workload(n_steps, first_order)
            estimator = self.estimator
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ConvergenceWarning: the budget is the point
                fitted = estimator(self.SHORT).fit(self.tasks)
            return (lambda: None), (lambda: float(fitted.loss_curve_[0]))

        super().__init__(label, builder)

    def _fit_seconds(self, n_iter):
        est = self.estimator(n_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: the budget is the point
            t0 = time.perf_counter()
            est.fit(self.tasks)
            return time.perf_counter() - t0

    def warm_up(self, min_seconds, block_seconds):
        self._fit_seconds(self.SHORT)
        self.n_inner = 1
        return self._fit_seconds(self.LONG) / self.LONG

    def block(self):
        short = self._fit_seconds(self.SHORT)
        long = self._fit_seconds(self.LONG)
        self.times.append((long - short) / (self.LONG - self.SHORT))


def time_interleaved(impls, args):
    """Warm up the implementations that built, then time them in interleaved rounds, rotating
    who goes first, so drift and noisy periods are shared."""
    live = [t for t in impls if t.error is None]
    for t in live:
        t.warm_up(args.warmup_seconds, args.block_seconds)
    for r in range(args.repeats):
        for i in range(len(live)):
            live[(r + i) % len(live)].block()


def paired_ratio(t, ref):
    """Median over the interleaved rounds of ``t``'s block time over ``ref``'s, with the
    interquartile range."""
    paired = np.asarray(t.times) / np.asarray(ref.times)
    return "%.2fx (%.2f-%.2f)" % (np.median(paired), np.percentile(paired, 25),
                                  np.percentile(paired, 75))


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------

def table(headers, rows, align):
    """A padded Markdown table (readable on a terminal, renders as a table in Markdown)."""
    cells = [list(map(str, headers))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def fmt(row):
        out = []
        for c, w, a in zip(row, widths, align):
            out.append(c.rjust(w) if a == "r" else c.ljust(w))
        return "| " + " | ".join(out) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2))
                          for w, a in zip(widths, align)) + "|"
    return [fmt(cells[0]), rule] + [fmt(r) for r in cells[1:]]


def ms(seconds):
    v = seconds * 1e3
    if v >= 100:
        return "%.0f" % v
    if v >= 10:
        return "%.1f" % v
    if v >= 1:
        return "%.2f" % v
    return "%.3f" % v


def sec(seconds):
    return "%.3f" % seconds if seconds < 1 else "%.2f" % seconds


class Report:
    """Collects the lines printed to stdout, for ``--output``."""

    def __init__(self):
        self.lines = []

    def __call__(self, *lines):
        for line in lines:
            print(line, flush=True)
            self.lines.append(line)

    def write(self, path):
        """Write the collected lines to ``path`` (the scripts' ``--output``), if given."""
        if path:
            with open(path, "w") as f:
                f.write("\n".join(self.lines) + "\n")
            print("(written to %s)" % path)


def accuracy_header(report, title):
    """Title, date, library versions, CPU and load, commit and command line of an accuracy script."""
    import numba
    import scipy
    import sklearn

    import skmaml

    model, simd, n_cpu, affinity = cpu_description()
    try:
        load = "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        load = "?"
    report("# " + title, "")
    report("- date: %s" % datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"))
    report("- python %s, skmaml %s, numpy %s, numba %s (llvmlite %s), scikit-learn %s, scipy %s"
           % (platform.python_version(), skmaml.__version__, np.__version__, numba.__version__,
              dist_version("llvmlite"), sklearn.__version__, scipy.__version__))
    report("- CPU: %s (%s); %d logical CPUs, this process may run on %s; load average %s at "
           "start" % (model, ", ".join(simd) or "no avx2/avx512 flags", n_cpu,
                      affinity if affinity is not None else "?", load))
    report("- skmaml git commit %s" % git_description())
    report("- command: %s" % " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]))


def progress(msg):
    print("  ... " + msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Header
# ---------------------------------------------------------------------------------------------

def dist_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpuinfo():
    """The first value of each key of /proc/cpuinfo (the first CPU's); empty where it cannot be
    read."""
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def cpu_identity():
    """``(vendor, family, model)`` from /proc/cpuinfo (``None`` where it does not say): a virtual
    machine's model name may be only "AMD EPYC", which names no generation."""
    info = _cpuinfo()
    family, model = info.get("cpu family"), info.get("model")
    return (info.get("vendor_id"), int(family) if family and family.isdigit() else None,
            int(model) if model and model.isdigit() else None)


def cpu_description():
    info = _cpuinfo()
    model = info.get("model name", "unknown") if info else platform.processor() or "unknown"
    flags = set(info.get("flags", "").split())
    _, family, number = cpu_identity()
    details = []
    if family is not None:
        details.append("family %d, model %d" % (family, number if number is not None else -1))
    try:
        import llvmlite.binding as llvm
        details.append("LLVM host CPU %s" % llvm.get_host_cpu_name())
    except Exception:  # noqa: BLE001 -- the name is a courtesy of the header
        pass
    if details:
        model = "%s (%s)" % (model, "; ".join(details))
    simd = [f for f in ("avx2", "fma", "avx512f") if f in flags]
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return model, simd, os.cpu_count(), affinity


def git_description():
    try:
        head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "skmaml"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + (" (skmaml/ has uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def nominal_peak():
    """``(GFLOP/s, how)``: the float32 peak of one core from its clock and vector units, or
    ``(None, why not)``. Clock: the largest ``cpuinfo_max_freq`` (else ``cpu MHz``); two FMA
    units (every x86 core with FMA since Haswell / Zen 1, but some Xeons have one 512-bit unit);
    lanes: 8 with AVX2 (4 on Zen 1 and Zen+, family 23 below model 0x30, whose FMA units are 128
    bits wide), 16 with AVX-512 on Intel and on AMD from Zen 5 (family 26; Zen 4 runs 512-bit
    instructions on 256-bit units: 8); 2 flops per FMA lane."""
    model, simd, _, _ = cpu_description()
    mhz = None
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq") as f:
            mhz = int(f.read()) / 1000.0
    except (OSError, ValueError):
        try:
            with open("/proc/cpuinfo") as f:
                mhz = max(float(line.split(":")[1]) for line in f if line.startswith("cpu MHz"))
        except (OSError, ValueError):
            return None, "clock unknown"
    if "fma" not in simd:
        return None, "no FMA"
    vendor, family, number = cpu_identity()
    if vendor == "AuthenticAMD" and family == 23 and number is not None and number < 0x30:
        lanes = 4  # Zen 1 and Zen+ split a 256-bit instruction over two 128-bit FMA units
    elif "avx512f" in simd and (vendor != "AuthenticAMD" or (family or 0) >= 26):
        lanes = 16  # Intel; AMD from Zen 5 (family 26), whose FMA units are 512 bits wide
    else:
        lanes = 8
    gflops = mhz / 1e3 * 2 * lanes * 2
    return gflops, "%.0f MHz x 2 FMA units x %d float32 lanes x 2 flops" % (mhz, lanes)


def measured_peak(seconds=1.0):
    """The best GFLOP/s of a single-thread float32 ``1024 x 1024`` matrix product (OpenBLAS,
    whose kernels for large products run near the hardware peak): the peak any code reaches on
    this core, measured in this run."""
    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    b = a.T.copy()
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * 1024 ** 3 / (time.perf_counter() - t0) / 1e9)
    return best


def header(report, blas_before, blas_after, args):
    import numba
    import scipy

    model, simd, n_cpu, affinity = cpu_description()
    report("# skmaml meta-iteration benchmark", "")
    report("- date: %s (local %s)" % (
        datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")))
    report("- python %s, numpy %s, numba %s (llvmlite %s), scipy %s, threadpoolctl %s" % (
        platform.python_version(), np.__version__, numba.__version__,
        dist_version("llvmlite"), scipy.__version__, dist_version("threadpoolctl")))
    report("- jax %s (jaxlib %s), torch %s" % (
        dist_version("jax"), dist_version("jaxlib"), dist_version("torch")))
    for before, after in zip(blas_before, blas_after):
        report("- BLAS: %s %s (%s, %s), %s; threads %s -> %s" % (
            before.get("internal_api"), before.get("version"), before.get("architecture"),
            before.get("threading_layer"), os.path.basename(before.get("filepath", "?")),
            before.get("num_threads"), after.get("num_threads")))
    report("- CPU: %s (%s); %d logical CPUs, this process may run on %s" % (
        model, ", ".join(simd) or "no avx2/avx512 flags", n_cpu,
        affinity if affinity is not None else "?"))
    report("- skmaml git commit %s" % git_description())
    nominal, how = nominal_peak()
    report("- peak of one core, float32: %.1f GFLOP/s measured (the best single-thread OpenBLAS "
           "sgemm of 1024 x 1024 matrices in this run), nominal %s (%s); '%% of peak' uses the "
           "larger, %s (OpenBLAS's kernel for a CPU it does not know may use narrower vectors "
           "than the CPU has; the nominal clock is the base clock, not the boost)"
           % (args.measured_peak, "%.1f GFLOP/s" % nominal if nominal else "unknown", how,
              "the nominal one" if args.peak > args.measured_peak else "the measured one"))
    report("- timing: median of %d blocks of ~%.0f ms after >= %.1f s warm-up (Table 2: fewer "
           "rounds for its slowest cases); one thread everywhere (threadpoolctl, "
           "torch.set_num_threads(1), XLA_FLAGS=%r)" % (
               args.repeats, args.block_seconds * 1e3, args.warmup_seconds,
               os.environ.get("XLA_FLAGS", "")))
    if affinity is not None and len(affinity) > 1:
        report("- WARNING: not pinned to one core; run under `taskset -c 1` for steadier numbers")
    report("")


# ---------------------------------------------------------------------------------------------
# Table 1
# ---------------------------------------------------------------------------------------------

def sinusoid_workload():
    """The workload of Tables 1 and 3: the MAML paper's sinusoid meta-batch (25 tasks of 10 + 10
    rows) and a θ_0 for [1, 40, 40, 1]."""
    layer_sizes = [1, 40, 40, 1]
    n_tasks, n_support, n_query = 25, 10, 10
    rng = np.random.default_rng(0)
    Xs, ys, Xq, yq = sinusoid_batch(rng, n_tasks, n_support, n_query)
    theta0 = init_theta(rng, layer_sizes)
    return layer_sizes, (n_tasks, n_support, n_query), theta0, (Xs, ys, Xq, yq)


def table1(report, args, peer_status):
    layer_sizes, (n_tasks, n_support, n_query), theta0, (Xs, ys, Xq, yq) = sinusoid_workload()
    step_values = (1,) if args.quick else (1, 5)

    report("## Table 1: MAML sinusoid workload (25 tasks x (10 support + 10 query) rows, "
           "MLP [1, 40, 40, 1] ReLU, float32, inner_lr 0.01, Adam(0.001), 1 thread)", "")
    headers = ["N", "order", "implementation", "median ms/iter", "IQR ms", "first call s",
               "GFLOP/s", "% of peak", "peer / skmaml", "peer / skmaml fit",
               "rel. diff. loss it. 1"]
    rows = []
    for n_steps in step_values:
        for first_order in (True, False):
            order = "first" if first_order else "second"
            flops = flops_per_iteration(layer_sizes, n_tasks, n_support, n_query, n_steps,
                                        first_order)
            progress("Table 1: N=%d %s order" % (n_steps, order))
            impls = [Timed("skmaml", lambda: build_skmaml(
                layer_sizes, n_steps, first_order, theta0, Xs, ys, Xq, yq))]
            fit = None
            if not args.no_fit:
                fit = TimedFit("skmaml, through fit", n_steps, first_order)
                impls.append(fit)
            absent = []
            for name, status in peer_status.items():
                if status is True:
                    impls.append(Timed(name, lambda name=name: build_peer(
                        name, layer_sizes, n_steps, first_order, theta0, Xs, ys, Xq, yq)))
                else:
                    absent.append((name, status))
            time_interleaved(impls, args)
            ref = impls[0]
            fit_ok = fit is not None and fit.error is None
            for t in impls:
                if t.error is not None:
                    rows.append([n_steps, order, t.label, t.error] + [""] * 7)
                    continue
                med, q1, q3 = t.stats()
                via_fit = "-"
                if t is ref:
                    ratio, diff = "1 (reference)", "-"
                elif t is fit:
                    ratio, diff = "fit / kernel %s" % paired_ratio(t, ref), "-"
                elif ref.error is None:
                    ratio = paired_ratio(t, ref)
                    via_fit = paired_ratio(t, fit) if fit_ok else "-"
                    diff = "%.1e" % (abs(t.first_loss - ref.first_loss)
                                     / max(abs(ref.first_loss), 1e-30))
                else:
                    ratio = diff = "-"
                gflops = flops / med / 1e9
                rows.append([n_steps, order, t.label, ms(med), "%s-%s" % (ms(q1), ms(q3)),
                             sec(t.first_call), "%.2f" % gflops,
                             "%.1f%%" % (100 * gflops / args.peak) if args.peak else "-",
                             ratio, via_fit, diff])
            for name, status in absent:
                rows.append([n_steps, order, name, status] + [""] * 7)
    report(*table(headers, rows, "rlllrrrrrrr"))
    report("")
    report(*["- " + line for line in flop_model_text(layer_sizes)])
    report("- Per iteration: %s." % "; ".join(
        "N=%d %s order %.2f MFLOP" % (n, "first" if fo else "second",
                                      flops_per_iteration(layer_sizes, n_tasks, n_support,
                                                          n_query, n, fo) / 1e6)
        for n in step_values for fo in (True, False)))
    report("- peer / skmaml = median over the interleaved rounds of (peer's block time / "
           "skmaml's block time in the same round); > 1: skmaml is that many times faster. In "
           "brackets the interquartile range of those per-round ratios.",
           "- skmaml, through fit: `MAMLRegressor.fit` on 1,000 sinusoid tasks of 20 rows (each "
           "visit draws 10 support + 10 query rows; 25 tasks per batch; the same network, dtype, "
           "inner_lr and Adam), per meta-iteration = (time of a %d-iteration fit - time of a "
           "%d-iteration fit) / %d, so a fit's fixed set-up cancels; fit / kernel = the paired "
           "ratio of that to the bare kernel's meta-iteration (1.05 = the training loop adds "
           "5%%); peer / skmaml fit = a peer's time over that." % (
               TimedFit.LONG, TimedFit.SHORT, TimedFit.LONG - TimedFit.SHORT),
           "- % of peak = GFLOP/s / the peak of one core of this CPU (see the header).",
           "- first call = build + first meta-iteration: for skmaml, loading the numba on-disk "
           "cache (or compiling, if it is stale) on the first configuration only, since numba "
           "compiles once per dtype, not per shape or N (cold compile: see the compile-time "
           "section); for jax, tracing + XLA compilation (no persistent cache); for torch.compile,"
           " dynamo + inductor %s; for torch.func, eager (no compilation)." % (
               "with a fresh, empty inductor cache (a true cold compile)"
               if not args.warm_torch_cache else "using the default inductor cache (may be warm)"),
           "- rel. diff. loss it. 1 = |loss_peer - loss_skmaml| / loss_skmaml of the mean query "
           "loss of the first iteration (same theta_0 and data): a check that the same "
           "computation is timed.")
    report("")


# ---------------------------------------------------------------------------------------------
# Table 2
# ---------------------------------------------------------------------------------------------

def table2(report, args):
    factors = [
        ("tasks", "n_tasks", (25, 100, 400)),
        ("rows/task (support = query)", "n_rows", (10, 100, 1000)),
        ("hidden width (2 layers)", "hidden", (40, 128, 512)),
        ("N inner steps", "n_steps", (1, 5, 10)),
    ]
    if args.quick:
        factors = [(a, b, v[:2]) for a, b, v in factors]
    results, bases = {}, {}
    base_pool = {False: [], True: []}  # every block time of the base case, for its own row

    def make(cfg, first_order):
        layer_sizes = [1, cfg["hidden"], cfg["hidden"], 1]
        rng = np.random.default_rng(1)
        Xs, ys, Xq, yq = sinusoid_batch(rng, cfg["n_tasks"], cfg["n_rows"], cfg["n_rows"])
        theta0 = init_theta(rng, layer_sizes)
        t = Timed("skmaml", lambda: build_skmaml(layer_sizes, cfg["n_steps"], first_order,
                                                  theta0, Xs, ys, Xq, yq))
        if t.error is None:
            t.per_call = t.warm_up(args.warmup_seconds, args.block_seconds)
            t.flops = flops_per_iteration(layer_sizes, cfg["n_tasks"], cfg["n_rows"],
                                          cfg["n_rows"], cfg["n_steps"], first_order)
            t.task_rows = cfg["n_tasks"] * 2 * cfg["n_rows"]
        return t

    def measure(cfg, first_order):
        """Time one case in rounds alternating with the base case (same order)."""
        key = (tuple(sorted(cfg.items())), first_order)
        if key in results:
            return results[key]
        progress("Table 2: %s, %s order" % (", ".join("%s=%s" % kv for kv in cfg.items()),
                                             "first" if first_order else "second"))
        if first_order not in bases:
            bases[first_order] = make(BASE, first_order)
        base = bases[first_order]
        is_base = cfg == BASE
        t = base if is_base else make(cfg, first_order)
        if t.error is not None or base.error is not None:
            results[key] = {"error": t.error or base.error}
            return results[key]
        # At least 5 rounds; at most --repeats, and fewer when a case's blocks are slow
        # (keeps each case to a few seconds).
        per_block = t.per_call * t.n_inner
        n_rounds = max(5, min(args.repeats, int(max(3.0, args.repeats * args.block_seconds)
                                                 / per_block)))
        t.times, base.times = [], []
        for r in range(n_rounds):
            if is_base:
                t.block()
                continue
            pair = (t, base) if r % 2 == 0 else (base, t)
            pair[0].block()
            pair[1].block()
        base_pool[first_order].extend(base.times)
        med, q1, q3 = t.stats()
        slow = 1.0 if is_base else float(np.median(np.asarray(t.times) / np.asarray(base.times)))
        results[key] = {"error": None, "med": med, "q1": q1, "q3": q3, "slow": slow,
                        "work": t.flops / base.flops, "flops": t.flops,
                        "task_rows": t.task_rows}
        return results[key]

    report("## Table 2: scaling of skmaml (float32, 1 thread, ReLU; one factor at a time from "
           "the base: 25 tasks, 10 + 10 rows, hidden (40, 40), N = 1)", "")
    headers = ["factor", "value", "order", "median ms/iter", "IQR ms", "work x base",
               "time x base", "time/work x base", "us per task-row", "GFLOP/s", "% of peak"]
    for title, key, values in factors:
        for value in values:
            for first_order in (False, True):
                measure(dict(BASE, **{key: value}), first_order)
    for first_order, pool in base_pool.items():
        r = results.get((tuple(sorted(BASE.items())), first_order))
        if pool and r is not None and r["error"] is None:
            r["med"], r["q1"], r["q3"] = (np.median(pool), np.percentile(pool, 25),
                                          np.percentile(pool, 75))
    rows = []
    for title, key, values in factors:
        for value in values:
            cfg = dict(BASE, **{key: value})
            for first_order in (False, True):
                order = "first" if first_order else "second"
                r = measure(cfg, first_order)
                mark = "%s%s" % (value, " (base)" if value == BASE[key] else "")
                if r["error"] is not None:
                    rows.append([title, mark, order, r["error"]] + [""] * 7)
                    continue
                rows.append([title, mark, order, ms(r["med"]),
                             "%s-%s" % (ms(r["q1"]), ms(r["q3"])), "%.3g" % r["work"],
                             "%.3g" % r["slow"], "%.2f" % (r["slow"] / r["work"]),
                             "%.3g" % (r["med"] / r["task_rows"] * 1e6),
                             "%.2f" % (r["flops"] / r["med"] / 1e9),
                             "%.1f%%" % (100 * r["flops"] / r["med"] / 1e9 / args.peak)])
    report(*table(headers, rows, "lllrrrrrrrr"))
    report("")
    report("- work x base = FLOPs (model of Table 1) relative to the base case of the same order.",
           "- time x base = median over rounds of (this case's block time / the base case's "
           "block time in the same round): each case is timed in rounds alternating with the "
           "base case, so a noisy period affects both. The base rows show all base-case blocks "
           "of the table pooled, so a case's ms/iter divided by the base's need not equal its "
           "time x base exactly.",
           "- time/work x base = (time x base) / (work x base): 1 means the time grows exactly "
           "like the work; below 1, larger problems use the machine better; above 1, a slowdown "
           "(e.g. a cache cliff at wide layers, or per-iteration allocation costs).",
           "- us per task-row = median time / (tasks x (support + query) rows); GFLOP/s from the "
           "median time.")
    report("")


# ---------------------------------------------------------------------------------------------
# Table 3
# ---------------------------------------------------------------------------------------------

# The adaptation rules of the estimators' options (learn_inner_lr, adapted_layers).
RULES = [("MAML", None, "all"), ("Meta-SGD", "per_parameter", "all"),
         ("LSLR", "per_layer_step", "all"), ("ANIL (head only)", None, 1),
         ("ANIL + Meta-SGD", "per_parameter", 1)]


def table3(report, args):
    layer_sizes, _, theta0, (Xs, ys, Xq, yq) = sinusoid_workload()
    step_values = (1,) if args.quick else (1, 5)
    report("## Table 3: adaptation rules (the workload of Table 1; skmaml only; each rule timed "
           "in rounds interleaved with plain MAML)", "")
    headers = ["N", "order", "rule", "median ms/iter", "IQR ms", "time / MAML"]
    rows = []
    for n_steps in step_values:
        for first_order in (True, False):
            order = "first" if first_order else "second"
            progress("Table 3: N=%d %s order" % (n_steps, order))
            impls = [Timed(label, lambda learn=learn, layers=layers: build_skmaml(
                layer_sizes, n_steps, first_order, theta0, Xs, ys, Xq, yq, learn, layers))
                for label, learn, layers in RULES]
            time_interleaved(impls, args)
            ref = impls[0]
            for t in impls:
                if t.error is not None:
                    rows.append([n_steps, order, t.label, t.error, "", ""])
                    continue
                med, q1, q3 = t.stats()
                if t is ref:
                    ratio = "1 (reference)"
                else:
                    ratio = paired_ratio(t, ref)
                rows.append([n_steps, order, t.label, ms(med), "%s-%s" % (ms(q1), ms(q3)),
                             ratio])
    report(*table(headers, rows, "rllrrr"))
    report("")
    report("- One meta-iteration: the meta-gradient with respect to θ and, for Meta-SGD and "
           "LSLR, to the step sizes (learned with θ by the same Adam update).",
           "- time / MAML = median over the interleaved rounds of (this rule's block time / "
           "plain MAML's in the same round), interquartile range in brackets; < 1 is cheaper.",
           "- ANIL adapts the output layer only: the body's forward pass over the support rows "
           "is computed once per task (the batched step-0 pass), the inner steps' backward "
           "passes stop at the head, and so do the sweep's forward R-passes.")
    report("")


# ---------------------------------------------------------------------------------------------
# Compile time
# ---------------------------------------------------------------------------------------------

_CHILD = r"""
import json, time
c0 = time.process_time()
t0 = time.perf_counter()
from skmaml._kernels._maml import meta_batch_grad
from skmaml._kernels._config import RELU
from skmaml._kernels._rules import plain_rule
from skmaml._optim import AdamOptimizer
t1 = time.perf_counter()
c1 = time.process_time()
import numpy as np
rng = np.random.default_rng(0)
T, K = 25, 10
sizes = np.array([1, 40, 40, 1], dtype=np.int64)
def rows():
    a = rng.uniform(0.1, 5, (T, 1)); p = rng.uniform(0, np.pi, (T, 1))
    x = rng.uniform(-5, 5, (T, K))
    return (x.reshape(-1, 1).astype(np.float32),
            (a * np.sin(x - p)).reshape(-1, 1).astype(np.float32))
Xs, ys = rows(); Xq, yq = rows()
off = np.arange(T + 1, dtype=np.int64) * K
theta = (0.1 * rng.standard_normal(1761)).astype(np.float32)
grad = np.empty_like(theta); losses = np.empty(T, dtype=np.float32)
opt = AdamOptimizer(0.001)
c2 = time.process_time()
t2 = time.perf_counter()
meta_batch_grad(theta, sizes, RELU, Xs, ys, off, Xq, yq, off, plain_rule(0.01, np.float32), 1,
                False, grad, losses)
t3 = time.perf_counter()
opt.update(theta, grad)
t4 = time.perf_counter()
c4 = time.process_time()
meta_batch_grad(theta, sizes, RELU, Xs, ys, off, Xq, yq, off, plain_rule(0.01, np.float32), 1,
                False, grad, losses)
opt.update(theta, grad)
t5 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "grad": t3 - t2, "update": t4 - t3, "second": t5 - t4,
                  "cpu": (c1 - c0) + (c4 - c2)}))
"""


def compile_times(report):
    progress("compile time: cold and warm numba cache in fresh processes")
    cache_dir = tempfile.mkdtemp(prefix="skmaml_numba_cache_")
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, OPENBLAS_NUM_THREADS="1",
               OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p))
    results = {}
    try:
        for label in ("cold", "warm"):
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True,
                                  text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                results[label] = "failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1]
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            r["wall"] = wall
            results[label] = r
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)

    report("## Compile time (fresh processes, float32 [1, 40, 40, 1] ReLU, 25 tasks, N = 1, "
           "second order)", "")
    headers = ["numba cache", "import s", "first meta_batch_grad s", "first Adam update s",
               "import + first iteration s", "same, CPU s", "second iteration ms",
               "process wall s"]
    rows = []
    for label, desc in (("cold", "cold (empty NUMBA_CACHE_DIR)"), ("warm", "warm (same dir)")):
        r = results.get(label)
        if not isinstance(r, dict):
            rows.append([desc, r or "not run"] + [""] * 6)
            continue
        total = r["import"] + r["grad"] + r["update"]
        rows.append([desc, sec(r["import"]), sec(r["grad"]), sec(r["update"]), sec(total),
                     sec(r["cpu"]), ms(r["second"]), sec(r["wall"])])
    report(*table(headers, rows, "lrrrrrrr"))
    report("")
    warm = results.get("warm")
    if isinstance(warm, dict):
        total = warm["import"] + warm["grad"] + warm["update"]
        report("- warm-cache import + first meta-iteration: %.2f s wall, %.2f s CPU (target "
               "< 2 s: %s)." % (total, warm["cpu"], "met" if total < 2.0 else
                                "NOT met" + (" in wall time, met in CPU time (the machine was "
                                             "busy)" if warm["cpu"] < 2.0 else "")))
    report("- cold = the first-ever compile of every kernel the meta-iteration needs (numba "
           "compiles once per dtype; first_order, N and all shapes are run-time arguments); "
           "warm = a new process loading those kernels from the on-disk cache. "
           "import = `import skmaml._kernels._maml, skmaml._optim`, which runs the package's "
           "`__init__` too. CPU time = process time of the same span (less sensitive to other "
           "load on a shared machine; data set-up excluded); process wall includes interpreter "
           "start-up and the numpy import.")
    report("")


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Run pinned: taskset -c 1 python "
                                       "benchmarks/bench_meta_step.py")
    p.add_argument("--quick", action="store_true",
                   help="short smoke run: N=1 only in Table 1, two values per factor in Table 2, "
                        "few short blocks, default (possibly warm) torch.compile cache")
    p.add_argument("--repeats", type=int, default=None,
                   help="timing blocks per measurement (default 15, --quick 3)")
    p.add_argument("--block-seconds", type=float, default=None,
                   help="target length of one timing block (default 0.1 s, --quick 0.02 s)")
    p.add_argument("--no-peers", action="store_true",
                   help="time skmaml only (do not import jax or torch)")
    p.add_argument("--warm-torch-cache", action="store_true",
                   help="let torch.compile use its default on-disk cache (default: a fresh one, "
                        "so its first-call time is a cold compile; --quick implies this)")
    p.add_argument("--no-compile-time", action="store_true",
                   help="skip the cold/warm compile-time subprocesses")
    p.add_argument("--output", metavar="FILE",
                   help="also write the report (Markdown) to FILE")
    p.add_argument("--no-fit", action="store_true",
                   help="Table 1 without the rows through MAMLRegressor.fit")
    p.add_argument("--tables", default="1,2,3",
                   help="which tables to run, comma-separated (default 1,2,3)")
    args = p.parse_args(argv)
    args.tables = {int(t) for t in args.tables.split(",") if t.strip()}
    if args.repeats is None:
        args.repeats = 3 if args.quick else 15
    if args.block_seconds is None:
        args.block_seconds = 0.02 if args.quick else 0.1
    args.warmup_seconds = 0.05 if args.quick else 0.2
    if args.quick:
        args.warm_torch_cache = True
    if args.repeats < 1 or args.block_seconds <= 0:
        p.error("--repeats must be >= 1 and --block-seconds > 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    # Before anything can import jax or torch.
    flags = os.environ.get("XLA_FLAGS", "")
    if "intra_op_parallelism_threads" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " " + XLA_SINGLE_THREAD).strip()
    torch_cache = None
    if not args.no_peers and not args.warm_torch_cache:
        torch_cache = tempfile.mkdtemp(prefix="skmaml_bench_inductor_")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = torch_cache
    sys.path.insert(0, HERE)
    if REPO not in sys.path:
        sys.path.insert(1, REPO)

    try:
        from threadpoolctl import threadpool_info, threadpool_limits

        # Importing the kernels loads SciPy's BLAS (numba's gemm), so limit threads afterwards.
        import skmaml._kernels._maml  # noqa: F401
        import skmaml._optim  # noqa: F401
        blas_before = [d for d in threadpool_info() if d.get("user_api") == "blas"]
        limiter = threadpool_limits(limits=1)  # noqa: F841  (stays in force for the run)
        blas_after = [d for d in threadpool_info() if d.get("user_api") == "blas"]

        if args.no_peers:
            peer_status = {name: "skipped (--no-peers)"
                           for name in ("jax", "torch.func", "torch.compile")}
        else:
            progress("probing peers (imports torch if present and compiles a probe)")
            import _peers
            found = _peers.available_peers()
            peer_status = {}
            for name, ok in found.items():
                if ok:
                    peer_status[name] = True
                elif name == "torch.compile" and found.get("torch.func"):
                    peer_status[name] = "unavailable (%s)" % (_peers.TORCH_COMPILE_ERROR or "?")
                else:
                    peer_status[name] = "not installed"
            if peer_status.get("jax") is True:
                import jax  # noqa: F401  (now, so its import time is not a "first call")

        report = Report()
        args.measured_peak = measured_peak(0.3 if args.quick else 1.0)
        args.peak = max(args.measured_peak or 0.0, nominal_peak()[0] or 0.0)
        header(report, blas_before, blas_after, args)
        if 1 in args.tables:
            table1(report, args, peer_status)
        if 2 in args.tables:
            table2(report, args)
        if 3 in args.tables:
            table3(report, args)
        if not args.no_compile_time:
            compile_times(report)
        report("Total run time of this script: %.0f s." % (time.perf_counter() - start))
        report.write(args.output)
    finally:
        if torch_cache is not None:
            shutil.rmtree(torch_cache, ignore_errors=True)


if __name__ == "__main__":
    main()
