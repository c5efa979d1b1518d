"""Where a meta-iteration's time goes: the matrix products against everything else, per BLAS kernel.

Run it from the repository root, pinned to one core::

    taskset -c 1 python benchmarks/profile_meta_step.py
    taskset -c 1 python benchmarks/profile_meta_step.py --coretypes SkylakeX,Haswell,Sandybridge

For the workload of ``bench_meta_step.py``'s Table 1 (25 sinusoid tasks of 10 + 10 rows, MLP
[1, 40, 40, 1] ReLU, float32, N in {1, 5}, first and second order), in a fresh process per
OpenBLAS kernel (``OPENBLAS_CORETYPE``; threadpoolctl reports which one runs):

1. the kernel's meta-iteration (``meta_batch_grad``; median of blocks after a warm-up);
2. the same sequence of matrix products alone: every ``gemm`` call of one meta-iteration (its
   transposes and sizes, recorded once by running the kernel with the JIT disabled) replayed from
   compiled code on buffers of the same sizes, so the products' share of the time is measured,
   not estimated;
3. what is left (elementwise passes: activations, biases, losses, the workspace traffic, the
   inner updates): 1 - 2;
4. the products by shape: how many calls of each, and the mean time per call.

The products are those ``skmaml._kernels._blas.gemm`` runs: for these small layers the SIMD loops
of ``skmaml._kernels._small``, the same under every BLAS kernel; larger ones through OpenBLAS
(SciPy's ``sgemm``), whose kernels without a small-matrix path (it exists for SkylakeX, not for
Haswell or Zen) cost several times more per product of these sizes.
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# Recorded with the JIT disabled (the pure-Python gemm of skmaml._kernels._blas), in a child.
_RECORD = r"""
import json, os, sys
sys.path.insert(0, os.environ["SKMAML_BENCH_DIR"])
import numpy as np
import skmaml._kernels._blas as blas
calls = []
plain = blas.gemm
def recording(trans_a, trans_b, m, n, k, *rest):
    calls.append((int(bool(trans_a)), int(bool(trans_b)), int(m), int(n), int(k)))
    return plain(trans_a, trans_b, m, n, k, *rest)
# Every kernel module that calls gemm imported it by name.
import skmaml._kernels._mlp as mlp, skmaml._kernels._maml as maml
for module in (blas, mlp, maml):
    if hasattr(module, "gemm"):
        module.gemm = recording
from bench_meta_step import build_skmaml, sinusoid_workload
layer_sizes, _, theta0, (Xs, ys, Xq, yq) = sinusoid_workload()
n_steps, first_order = int(sys.argv[1]), sys.argv[2] == "first"
step, _ = build_skmaml(layer_sizes, n_steps, first_order, theta0, Xs, ys, Xq, yq)
step()
print(json.dumps(calls))
"""

# Timed under one OPENBLAS_CORETYPE, in a child (the kernel is chosen when OpenBLAS loads).
_TIME = r"""
import json, os, sys, time
sys.path.insert(0, os.environ["SKMAML_BENCH_DIR"])
import numpy as np
from numba import njit
from threadpoolctl import threadpool_info, threadpool_limits
from skmaml._kernels._blas import gemm
from bench_meta_step import build_skmaml, sinusoid_workload
threadpool_limits(1)
arch = sorted({d.get("architecture") for d in threadpool_info() if d.get("user_api") == "blas"})

@njit(nogil=True)  # not cached: defined in a -c string
def replay(calls, A, B, C, reps):
    for _ in range(reps):
        for i in range(calls.shape[0]):
            ta, tb, m, n, k = calls[i, 0], calls[i, 1], calls[i, 2], calls[i, 3], calls[i, 4]
            lda = m if ta else k
            ldb = k if tb else n
            gemm(ta == 1, tb == 1, m, n, k, 1.0, A, 0, lda, B, 0, ldb, 0.0, C, 0, n)

def median_time(fn, reps, blocks=9):
    fn(max(1, reps // 10))
    times = []
    for _ in range(blocks):
        t0 = time.perf_counter()
        fn(reps)
        times.append((time.perf_counter() - t0) / reps)
    return float(np.median(times))

layer_sizes, _, theta0, (Xs, ys, Xq, yq) = sinusoid_workload()
out = {"arch": arch, "configs": []}
for spec in json.loads(sys.stdin.read()):
    n_steps, first_order, calls = spec["n_steps"], spec["first_order"], spec["calls"]
    step, _ = build_skmaml(layer_sizes, n_steps, first_order, theta0, Xs, ys, Xq, yq)
    def kernel(reps):
        for _ in range(reps):
            step()
    t_kernel = median_time(kernel, 300 if n_steps == 1 else 80)
    table = np.array(calls, dtype=np.int64).reshape(-1, 5)
    size = int(max(table[:, 2].max() * table[:, 4].max(), table[:, 3].max() * table[:, 4].max(),
                   table[:, 2].max() * table[:, 3].max()))
    rng = np.random.default_rng(0)
    A, B = (rng.standard_normal(size).astype(np.float32) for _ in range(2))
    C = np.zeros(size, dtype=np.float32)
    t_products = median_time(lambda reps: replay(table, A, B, C, reps), 300 if n_steps == 1 else 80)
    shapes = {}
    for key in sorted({tuple(r) for r in table.tolist()}):
        rows = table[(table == np.array(key)).all(axis=1)]
        t = median_time(lambda reps: replay(rows, A, B, C, reps), max(20, 20000 // len(rows)), 5)
        shapes[json.dumps(key)] = [len(rows), t / len(rows)]
    out["configs"].append({"n_steps": n_steps, "first_order": first_order, "kernel": t_kernel,
                           "products": t_products, "n_calls": len(calls), "shapes": shapes})
print(json.dumps(out))
"""


def child_env(**extra):
    env = dict(os.environ, SKMAML_BENCH_DIR=HERE, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p))
    env.update(extra)
    return env


def run_child(code, args, env, stdin=None):
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, input=stdin)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--coretypes", default="default,Haswell",
                   help="OPENBLAS_CORETYPE values, comma-separated ('default': none set)")
    args = p.parse_args(argv)
    sys.path.insert(0, HERE)
    from bench_meta_step import cpu_description, flops_per_iteration, ms, table

    configs = [(1, True), (1, False), (5, True), (5, False)]
    specs = []
    for n_steps, first_order in configs:
        calls = run_child(_RECORD, [str(n_steps), "first" if first_order else "second"],
                          child_env(NUMBA_DISABLE_JIT="1"))
        specs.append({"n_steps": n_steps, "first_order": first_order, "calls": calls})
    model, simd, _, affinity = cpu_description()
    print("# Where a meta-iteration's time goes (Table 1 workload of bench_meta_step.py)\n")
    print("- CPU: %s (%s); this process may run on %s" % (model, ", ".join(simd), affinity))
    print("- date: %s\n" % time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    rows, shape_rows = [], []
    for coretype in args.coretypes.split(","):
        extra = {} if coretype == "default" else {"OPENBLAS_CORETYPE": coretype}
        result = run_child(_TIME, [], child_env(**extra), stdin=json.dumps(specs))
        arch = "/".join(a for a in result["arch"] if a)
        for c in result["configs"]:
            order = "first" if c["first_order"] else "second"
            flops = flops_per_iteration([1, 40, 40, 1], 25, 10, 10, c["n_steps"],
                                        c["first_order"])
            rest = c["kernel"] - c["products"]
            rows.append([arch, c["n_steps"], order, ms(c["kernel"]), "%.1f" % (flops / c["kernel"]
                                                                              / 1e9),
                         c["n_calls"], ms(c["products"]),
                         "%.0f%%" % (100 * c["products"] / c["kernel"]),
                         "%.2f" % (c["products"] / c["n_calls"] * 1e6), ms(rest),
                         "%.0f%%" % (100 * rest / c["kernel"])])
            if c["n_steps"] == 5 and not c["first_order"]:
                for key, (count, per_call) in c["shapes"].items():
                    ta, tb, m, n, k = json.loads(key)
                    shape_rows.append([arch, "%s%s" % ("T" if ta else "N", "T" if tb else "N"),
                                       m, n, k, count, "%.3f" % (per_call * 1e6),
                                       "%.1f" % (2 * m * n * k / per_call / 1e9)])
    print(*table(["BLAS kernel", "N", "order", "meta-iteration ms", "GFLOP/s", "gemm calls",
                  "products ms", "share", "us per product", "the rest ms", "share"], rows,
                 "lrlrrrrrrrr"), sep="\n")
    print("\n- products = the meta-iteration's gemm calls replayed alone (same transposes, sizes "
          "and order, from compiled code); the rest = elementwise passes, losses, inner updates, "
          "workspace traffic and call overhead.\n")
    print("## The products of one meta-iteration by shape (N = 5, second order)\n")
    print(*table(["BLAS kernel", "op", "m", "n", "k", "calls", "us per call", "GFLOP/s"],
                 shape_rows, "llrrrrrr"), sep="\n")
    print("\n- op: transposes of (A, B) in C = op(A) op(B), row-major, C (m x n); m = rows of a "
          "task (10) or of the whole batch (250, the shared step-0 passes).")


if __name__ == "__main__":
    main()
