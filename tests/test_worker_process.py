"""A fitted estimator shipped to a fresh process -- a cluster worker, or a machine with a read-only
install -- adapts and predicts exactly as where it was fitted, with numba's cache in
``NUMBA_CACHE_DIR``.

Each child process starts with an empty cache directory, so it compiles the kernels it needs (a
cold compile, several seconds); a second child with the same directory loads them from there.
"""

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numba import config as numba_config

import skmaml
from skmaml import MAMLClassifier, MAMLRegressor
from skmaml.datasets import make_sinusoid_tasks

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

PACKAGE_DIR = Path(skmaml.__file__).resolve().parent

# Loads the pickled estimators, adapts each to its new task and predicts; writes the outputs to an
# .npz file and prints, as JSON, where skmaml came from and numba's cache hits and misses of every
# kernel called from Python (a miss is a compile, a hit a load from the on-disk cache).
CHILD = r"""
import json, pickle, sys, time
t0 = time.perf_counter()
import numpy as np
import skmaml
from numba.core.registry import CPUDispatcher
with open(sys.argv[1], "rb") as f:
    payload = pickle.load(f)
out = {}
for name, (est, X_support, y_support, X_query) in payload.items():
    model = est.adapt(X_support, y_support)
    out[name + "_coef0"] = model.coefs_[0]
    out[name + "_predict"] = model.predict(X_query)
    if hasattr(model, "predict_proba"):
        out[name + "_proba"] = model.predict_proba(X_query)
np.savez(sys.argv[2], **out)
hits = misses = 0
for module_name, module in list(sys.modules.items()):
    if module_name.startswith("skmaml._kernels"):
        for obj in vars(module).values():
            if isinstance(obj, CPUDispatcher):
                hits += sum(obj.stats.cache_hits.values())
                misses += sum(obj.stats.cache_misses.values())
print(json.dumps({"skmaml": skmaml.__file__, "cache_hits": hits, "cache_misses": misses,
                  "seconds": time.perf_counter() - t0}))
"""


def classification_tasks(n_tasks=10, n_rows=20, n_features=3, seed=0):
    """Binary tasks with string labels shared across tasks, each with its own linear boundary."""
    rng = np.random.RandomState(seed)
    tasks = []
    for _ in range(n_tasks):
        X = rng.normal(size=(n_rows, n_features))
        score = X @ rng.normal(size=n_features)
        tasks.append((X, np.where(score > np.median(score), "yes", "no")))
    return tasks


@pytest.fixture(scope="module")
def fitted():
    """name -> (fitted estimator, support X, support y, query X) of a task unseen in fit."""
    reg_tasks = make_sinusoid_tasks(n_tasks=21, n_samples=20, random_state=0)
    reg = MAMLRegressor(hidden_layer_sizes=(16, 16), n_support=5, meta_batch_size=5, max_iter=30,
                        random_state=0).fit(reg_tasks[:-1])
    clf_tasks = classification_tasks()
    clf = MAMLClassifier(hidden_layer_sizes=(8,), n_support=3, inner_lr=0.1, meta_batch_size=3,
                         max_iter=30, random_state=0).fit(clf_tasks[:-1])
    (X_r, y_r), (X_c, y_c) = reg_tasks[-1], clf_tasks[-1]
    return {"regressor": (reg, X_r[:5], y_r[:5], X_r[5:]),
            "classifier": (clf, X_c[:8], y_c[:8], X_c[8:])}


def parent_outputs(fitted):
    out = {}
    for name, (est, X_support, y_support, X_query) in fitted.items():
        model = est.adapt(X_support, y_support)
        out[name + "_coef0"] = model.coefs_[0]
        out[name + "_predict"] = model.predict(X_query)
        if hasattr(model, "predict_proba"):
            out[name + "_proba"] = model.predict_proba(X_query)
    return out


def child_env(pythonpath, **extra):
    """The parent's environment without numba cache / JIT switches, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "NUMBA_DISABLE_JIT", "PYTHONPATH")}
    env["PYTHONPATH"] = str(pythonpath)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_child(tmp_path, fitted, env, tag):
    pickled = tmp_path / "estimators.pkl"
    if not pickled.exists():
        pickled.write_bytes(pickle.dumps(fitted))
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    result = tmp_path / f"result_{tag}.npz"
    completed = subprocess.run([sys.executable, str(script), str(pickled), str(result)],
                               env=env, cwd=str(tmp_path), capture_output=True, text=True,
                               timeout=600)
    return completed, result


def assert_child_matches_parent(result, fitted):
    expected = parent_outputs(fitted)
    with np.load(result, allow_pickle=False) as child:
        assert sorted(child.files) == sorted(expected)
        for key, value in expected.items():
            assert child[key].dtype == value.dtype, key
            if numba_config.DISABLE_JIT:  # e.g. a coverage run: Python here, compiled there
                np.testing.assert_allclose(child[key], value, rtol=1e-10, atol=1e-12,
                                           err_msg=key)
            else:
                assert child[key].tobytes() == value.tobytes(), key


def cache_files(directory):
    return sorted(p for p in Path(directory).rglob("*") if p.suffix in (".nbi", ".nbc"))


@pytest.mark.bit_identity
def test_fresh_worker_with_empty_numba_cache_dir(tmp_path, fitted):
    """A new worker process, NUMBA_CACHE_DIR a new empty directory: it compiles, writes the cache
    there, and gives the parent's results bit for bit; the next worker loads that cache."""
    cache_dir = tmp_path / "numba_cache"
    env = child_env(PACKAGE_DIR.parent, NUMBA_CACHE_DIR=cache_dir)

    completed, result = run_child(tmp_path, fitted, env, "cold")
    assert completed.returncode == 0, completed.stderr
    info = json.loads(completed.stdout.strip().splitlines()[-1])
    assert Path(info["skmaml"]).resolve().parent == PACKAGE_DIR
    assert info["cache_misses"] > 0 and info["cache_hits"] == 0  # compiled here, from nothing
    assert cache_files(cache_dir)  # ... into NUMBA_CACHE_DIR
    assert_child_matches_parent(result, fitted)

    completed, result = run_child(tmp_path, fitted, env, "warm")
    assert completed.returncode == 0, completed.stderr
    info = json.loads(completed.stdout.strip().splitlines()[-1])
    assert info["cache_hits"] > 0 and info["cache_misses"] == 0  # loaded, nothing compiled
    assert_child_matches_parent(result, fitted)


@pytest.fixture
def read_only_install(tmp_path):
    """A copy of the package whose directories cannot take numba's (or Python's) cache files.

    Every package directory gets a regular *file* named ``__pycache__`` where the cache directory
    would go, which blocks it even for root; for other users the directories are also made
    read-only. Returns the directory to put on ``PYTHONPATH``.
    """
    site = tmp_path / "site"
    shutil.copytree(PACKAGE_DIR, site / "skmaml",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc"))
    directories = [site / "skmaml"] + [p for p in (site / "skmaml").rglob("*") if p.is_dir()]
    for directory in directories:
        (directory / "__pycache__").touch()
    for directory in directories:
        directory.chmod(0o555)
    yield site
    for directory in directories:
        directory.chmod(0o755)


def test_read_only_install_uses_numba_cache_dir_or_a_fallback(tmp_path, fitted,
                                                              read_only_install):
    # No writable user cache either (as for a service account without a home directory):
    # XDG_CACHE_HOME below a regular file can never be created.
    blocker = tmp_path / "not_a_directory"
    blocker.touch()
    no_home_cache = blocker / "cache"

    # Without NUMBA_CACHE_DIR numba finds nowhere to cache; rather than failing at import
    # ("cannot cache function ... no locator available"), skmaml warns and caches under the
    # system temporary directory (here a private one), with the same results.
    fallback_tmp = tmp_path / "tmp"
    fallback_tmp.mkdir()
    env = child_env(read_only_install, XDG_CACHE_HOME=no_home_cache, TMPDIR=fallback_tmp)
    completed, result = run_child(tmp_path, fitted, env, "no_cache_dir")
    assert completed.returncode == 0, completed.stderr
    assert "numba cannot cache compiled kernels" in completed.stderr
    assert cache_files(fallback_tmp)
    assert not cache_files(read_only_install)
    assert_child_matches_parent(result, fitted)

    # With it, the read-only copy works: cache files go to NUMBA_CACHE_DIR, none into the copy.
    cache_dir = tmp_path / "numba_cache"
    env = child_env(read_only_install, XDG_CACHE_HOME=no_home_cache, NUMBA_CACHE_DIR=cache_dir)
    completed, result = run_child(tmp_path, fitted, env, "cache_dir")
    assert completed.returncode == 0, completed.stderr
    info = json.loads(completed.stdout.strip().splitlines()[-1])
    assert Path(info["skmaml"]).resolve().parent == (read_only_install / "skmaml").resolve()
    assert cache_files(cache_dir)
    assert not cache_files(read_only_install)
    assert_child_matches_parent(result, fitted)
