"""Where a meta-iteration's CPU time goes, by compiled function, from a ``perf`` sampling profile.

Run it from the repository root (Linux, with ``perf`` installed and allowed to sample)::

    taskset -c 1 python benchmarks/perf_attribution.py                 # N = 1 second order
    taskset -c 1 python benchmarks/perf_attribution.py --steps 5 --first-order --seconds 10
    taskset -c 1 python benchmarks/perf_attribution.py --fit     # MAMLRegressor.fit itself

It runs the Table 1 workload of ``bench_meta_step.py`` (25 tasks x (10 + 10) rows, MLP
[1, 40, 40, 1], float32) in a loop under ``perf record`` and attributes the samples. numba's
compiled code lives in anonymous memory that ``perf`` cannot name, so the script writes perf's map
file (``/tmp/perf-<pid>.map``) itself, from the addresses of the kernels' entry points, and
counts every sample by the executable mapping it falls in: the product loops of
``_kernels._small`` (their C-callable entry points and the loops they call), the rest of the
meta-iteration kernel (``meta_batch_grad``, with what numba inlined into it), and numba's
reference-count helpers (``NRT_incref``/``NRT_decref``, found by their machine code), beside
Python and the C libraries. ``--fit`` profiles ``MAMLRegressor.fit`` on the same workload instead
(``bench_meta_step.py``'s "through fit" row): its compiled training loop names the episode sampling,
the checks and the optimiser step beside the kernel.

The counts are shares of samples, not a timing: ``bench_meta_step.py`` and
``profile_meta_step.py`` time the same work. This is the profile ``docs/compiled_core.rst``
quotes.
"""

import argparse
import ctypes
import importlib
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
if REPO not in sys.path:
    sys.path.insert(1, REPO)

# The machine code of numba's NRT_incref / NRT_decref on x86-64 (a null test, then an atomic
# add): how the profile recognises them, since they are not exported symbols.
_INCREF = bytes.fromhex("4885ff7404f048ff07c3")
_DECREF = bytes.fromhex("4885ff7406f048ff0f7401c3")


_COMPILED = ("products and fused layers (_small)", "the rest of the compiled kernels",
             "reference counts (NRT)")


def _executable_anonymous_maps():
    regions = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split()
            if "x" in parts[1] and len(parts) < 6:
                lo, hi = (int(v, 16) for v in parts[0].split("-"))
                regions.append((lo, hi))
    return regions


def _short_name(symbol):
    """``module.function`` of a numba-mangled symbol (``_ZN6skmaml8_kernels4_mlp...``: names
    prefixed by their lengths, then the ABI tags)."""
    start = symbol.find("_ZN")
    if start < 0:
        return symbol[:60]
    i, names = start + 3, []
    while i < len(symbol) and symbol[i].isdigit():
        j = i
        while symbol[j].isdigit():
            j += 1
        size = int(symbol[i:j])
        names.append(symbol[j:j + size])
        i = j + size
    names = [name for name in names if name not in ("cpython", "skmaml", "_kernels")]
    return (".".join(names[-2:]) or symbol[:60]) + (" (wrapper)" if symbol.startswith("cfunc")
                                                    else "")


def _function_map():
    """(address, size, name) of every compiled function of the kernels (from each library's
    object code and symbol table) and of numba's reference-count helpers."""
    import numba
    from numba.core.registry import CPUDispatcher

    import skmaml._kernels as kernels

    libraries = []
    for info in pkgutil.iter_modules(kernels.__path__):
        module = importlib.import_module("skmaml._kernels." + info.name)
        for obj in vars(module).values():
            if isinstance(obj, CPUDispatcher):
                libraries += [cres.library for cres in obj.overloads.values()]
    from skmaml._kernels import _small

    libraries += [entry._library for entries in _small._ENTRIES.values() for entry in entries]
    functions, seen = {}, set()
    with tempfile.TemporaryDirectory() as tmp:
        for library in libraries:
            if id(library) in seen:
                continue
            seen.add(id(library))
            try:
                code = library._get_compiled_object()
            except RuntimeError:  # loaded from numba's cache: no object code kept
                continue
            path = os.path.join(tmp, "lib.o")
            with open(path, "wb") as f:
                f.write(code)
            listing = subprocess.run(["nm", "-S", "--defined-only", path], capture_output=True,
                                     text=True).stdout
            for line in listing.splitlines():
                parts = line.split()
                if len(parts) != 4 or parts[2] not in "Tt":
                    continue
                address = library.get_pointer_to_function(parts[3])
                if address:
                    functions[address] = (int(parts[1], 16), _short_name(parts[3]))
    for lo, hi in _executable_anonymous_maps():
        code = ctypes.string_at(lo, hi - lo)
        for pattern, name in ((_INCREF, "NRT_incref"), (_DECREF, "NRT_decref")):
            at = code.find(pattern)
            while at >= 0:
                functions.setdefault(lo + at, (len(pattern), name))
                at = code.find(pattern, at + 1)
    del numba
    return sorted((address, size, name) for address, (size, name) in functions.items())


def child(args):
    """The profiled process: warm up, describe its code, then run until the time is up."""
    if args.fit:
        import warnings

        from bench_meta_step import fit_workload

        tasks, estimator = fit_workload(args.steps, args.first_order)
        warnings.simplefilter("ignore")  # ConvergenceWarning: the budget is the point
        estimator(50).fit(tasks)  # compiles
        t0 = time.perf_counter()
        estimator(500).fit(tasks)
        per_iteration = (time.perf_counter() - t0) / 500
        # One fit that lasts about --seconds (its set-up is a small share of that).
        fit = estimator(max(1, int(args.seconds / per_iteration)))

        def run():
            fit.fit(tasks)
    else:
        from bench_meta_step import build_skmaml, sinusoid_workload

        layer_sizes, _, theta0, (Xs, ys, Xq, yq) = sinusoid_workload()
        step, _ = build_skmaml(layer_sizes, args.steps, args.first_order, theta0, Xs, ys, Xq,
                               yq)
        for _ in range(50):
            step()

        def run():
            stop = time.perf_counter() + args.seconds
            while time.perf_counter() < stop:
                step()
    with open("/tmp/perf-%d.map" % os.getpid(), "w") as out:
        for address, size, name in _function_map():
            out.write("%x %x %s\n" % (address, size, name))
    open(os.path.join(args.child, "ready"), "w").close()
    run()
    # Sampling lasts until the process ends: leave without the interpreter's teardown (freeing
    # every module's objects, numba's and LLVM's among them), which took 10-15% of the samples.
    sys.stdout.flush()
    os._exit(0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=1, help="inner steps N (default 1)")
    p.add_argument("--first-order", action="store_true", help="first-order MAML")
    p.add_argument("--fit", action="store_true",
                   help="profile MAMLRegressor.fit on the workload (its compiled training loop: "
                        "sampling, checks, Adam) instead of the bare kernel called from Python")
    p.add_argument("--seconds", type=float, default=8.0, help="profiled loop time")
    p.add_argument("--top", type=int, default=15, help="functions listed")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    if shutil.which("perf") is None:
        sys.exit("perf_attribution.py needs Linux perf ('perf' not found on PATH).")
    work = tempfile.mkdtemp(prefix="skmaml-perf-")
    data = os.path.join(work, "perf.data")
    command = [sys.executable, os.path.abspath(__file__), "--child", work, "--steps",
               str(args.steps), "--seconds", str(args.seconds)] + (
        ["--first-order"] if args.first_order else []) + (["--fit"] if args.fit else [])
    # A fresh numba cache: code loaded from the cache keeps no object code, whose symbol table
    # names the functions (so the child compiles everything, about a minute).
    env = dict(os.environ, NUMBA_CACHE_DIR=os.path.join(work, "numba-cache"))
    proc = subprocess.Popen(command, env=env)
    while not os.path.exists(os.path.join(work, "ready")):
        if proc.poll() is not None:
            sys.exit("the profiled process failed")
        time.sleep(0.05)
    # Sample the loop only (not the imports, compilation and warm-up): attach once it is ready.
    record = subprocess.run(["perf", "record", "-F", "10000", "-p", str(proc.pid), "-o", data],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    proc.wait()
    if record.returncode != 0 and not os.path.exists(data):
        sys.exit("perf record failed: %s" % record.stderr.strip()[-500:])
    script = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym,dso"],
                            capture_output=True, text=True)
    functions, places, total = Counter(), Counter(), 0
    for line in script.stdout.splitlines():
        match = re.match(r"\s*[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$", line)
        if not match:
            continue
        symbol, dso = match.groups()
        total += 1
        if "perf-" in dso:  # numba's compiled code, named by the map the child wrote
            name = symbol if symbol and symbol != "[unknown]" else "compiled code, unnamed"
            place = ("products and fused layers (_small)" if name.startswith("_small.")
                     else "reference counts (NRT)" if name.startswith("NRT_")
                     else "the rest of the compiled kernels")
        else:
            base = os.path.basename(dso)
            name = place = "Python" if base.startswith("libpython") else base
        functions[name] += 1
        places[place] += 1
    shutil.rmtree(work, ignore_errors=True)
    print("# Samples of %s (N = %d, %s order; %d samples)\n"
          % ("MAMLRegressor.fit" if args.fit else "a meta-iteration loop", args.steps,
             "first" if args.first_order else "second", total))
    compiled = sum(n for place, n in places.items() if place in _COMPILED)
    print("| where | share of all samples | of the compiled code's |\n|---|---:|---:|")
    for name, n in places.most_common():
        if n >= 0.005 * total:
            print("| %s | %.1f%% | %s |" % (name, 100.0 * n / total, "%.1f%%" % (
                100.0 * n / compiled) if name in _COMPILED else ""))
    print("\n| function | share of all samples | of the compiled code's |\n|---|---:|---:|")
    for name, n in functions.most_common(args.top):
        print("| %s | %.1f%% | %s |" % (name, 100.0 * n / total, "%.1f%%" % (
            100.0 * n / compiled) if name not in places or name in _COMPILED else ""))
    print("\nPython: %s; NRT: numba's reference counts of the arrays passed between compiled "
          "functions (each an atomic add)." % (
              "fit's loop between compiled runs of meta-iterations" if args.fit else
              "the benchmark's loop calling the kernel from Python (fit calls it from compiled "
              "code)"))


if __name__ == "__main__":
    main()
