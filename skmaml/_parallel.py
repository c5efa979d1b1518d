"""Parallel meta-gradients inside one fit: fixed chunks of the meta-batch on threads.

A meta-batch is cut into chunks of tasks by an estimate of their work (floating-point operations from
the layer sizes, rows and N), never by ``n_jobs``: ``n_jobs=1`` runs the same chunks one after the
other, and chunk results are combined in chunk order, so the model is bit-identical whatever
``n_jobs``. A batch whose work is below :data:`MIN_CHUNK_FLOPS` is one chunk and runs with a direct
kernel call, with no thread dispatch at all.

Threads come from a standard-library pool created once per fit. joblib's ``Parallel`` waits for
results by polling (``time.sleep(0.01)`` in its retrieval loop), so a call costs up to 10 ms: longer
than a whole meta-iteration of a small network.
Across fits (GridSearchCV, cross_validate), joblib and any of its backends, Dask included, are used as
usual; the within-fit threads stay on the worker that runs the fit.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from joblib import effective_n_jobs, parallel_config
from threadpoolctl import threadpool_limits

from ._kernels._maml import meta_batch_grad, workspace_size
from ._kernels._mlp import n_params
from ._kernels._numeric import mean_loss
from ._kernels._train import is_one_chunk

# Below this much estimated work per chunk, a thread hand-off and the smaller step-0 products of a
# split batch cost more than a second core saves: 20 MFLOP is a fraction of a millisecond of kernel
# time (benchmarks/bench_meta_step.py prints GFLOP/s; benchmarks/bench_parallel.py measures the
# resulting speed-ups).
MIN_CHUNK_FLOPS = 20e6
# A batch of less work than this is one chunk, without planning (two chunks' worth at least).
MAX_ONE_CHUNK_FLOPS = 2 * MIN_CHUNK_FLOPS
# At most this many chunks: enough to balance two to eight threads without making the products small.
MAX_CHUNKS = 16


def resolve_n_jobs(n_jobs):
    """Threads for ``n_jobs``, counted as joblib counts them: ``None`` is 1 unless a
    ``joblib.parallel_config(n_jobs=...)`` says otherwise, -1 all cores, -2 all but one.

    The threads run in this process whatever backend ``parallel_config`` names for searches (a
    Dask backend would count a whole cluster's workers for -1), so they are counted as threads.
    """
    with parallel_config(backend="threading"):
        return effective_n_jobs(n_jobs)


def mlp_products(layer_sizes):
    """Multiply-adds per row of one forward pass, one gradient and one Hessian-vector product.

    The matrix products only: a forward pass is one product per layer, a gradient two (one for the
    first layer: no delta below it), a Hessian-vector product six (three for the first layer). The
    FLOP model of the chunking here and of ``benchmarks/bench_meta_step.py``.
    """
    sizes = np.asarray(layer_sizes, dtype=np.float64)
    macs = sizes[:-1] * sizes[1:]
    return macs.sum(), 2 * macs.sum() - macs[0], 6 * macs.sum() - 3 * macs[0]


def flops_per_row(layer_sizes, n_inner_steps, first_order):
    """Estimated floating-point operations (2 per multiply-add, :func:`mlp_products`) per
    (support row, query row) of one task."""
    forward, gradient, hvp = mlp_products(layer_sizes)
    support = n_inner_steps * (forward + gradient)
    if not first_order:
        support += n_inner_steps * hvp
    return 2 * support, 2 * (forward + gradient)


def chunk_bounds(s_offsets, q_offsets, support_flops, query_flops):
    """Task boundaries of the chunks, balancing estimated work; depends on the batch only."""
    work = (support_flops * np.diff(s_offsets) + query_flops * np.diff(q_offsets))
    total = work.sum()
    n_tasks = work.shape[0]
    n_chunks = int(min(MAX_CHUNKS, n_tasks, total // MIN_CHUNK_FLOPS))
    if n_chunks <= 1:
        return np.array([0, n_tasks])
    cumulative = np.cumsum(work)
    cuts = np.searchsorted(cumulative, total * np.arange(1, n_chunks) / n_chunks, side="right")
    return np.unique(np.concatenate([[0], cuts, [n_tasks]]))


class MetaGradient:
    """The mean meta-gradient of a meta-batch, computed in fixed chunks, serially or on threads.

    Use as a context manager around the meta-training loop: it owns the thread pool and keeps BLAS
    single-threaded inside (the previous limits are restored on exit), so threads never multiply
    with BLAS threads and results do not depend on the BLAS thread count.
    """

    def __init__(self, layer_sizes, activation, rule, n_inner_steps, first_order, n_jobs):
        self.layer_sizes = layer_sizes
        self.activation = activation
        # The kernels' adaptation rule; when it learns its step sizes, they are the tail of the
        # parameter vector of each call, after θ.
        self.rule = rule
        self.n_theta = int(n_params(layer_sizes))
        self.n_inner_steps = int(n_inner_steps)
        self.first_order = bool(first_order)
        self.n_threads = resolve_n_jobs(n_jobs)
        self.support_flops, self.query_flops = flops_per_row(layer_sizes, n_inner_steps,
                                                             first_order)
        self._pool = None
        self._limits = None
        # One scratch buffer per chunk (chunks may run at the same time), kept across
        # meta-iterations: re-allocating large buffers every iteration costs page faults.
        self._workspaces = []

    def __enter__(self):
        self._limits = threadpool_limits(limits=1, user_api="blas")
        if self.n_threads > 1:
            self._pool = ThreadPoolExecutor(max_workers=self.n_threads,
                                            thread_name_prefix="skmaml")
        return self

    def __exit__(self, *exc_info):
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._limits.restore_original_limits()
        return False

    def _workspace(self, chunk, theta, s_offsets, q_offsets):
        """Chunk ``chunk``'s scratch buffer, grown (with headroom) when this batch needs more."""
        while len(self._workspaces) <= chunk:
            self._workspaces.append(np.empty(0, dtype=theta.dtype))
        needed = workspace_size(self.layer_sizes, s_offsets, q_offsets, self.n_inner_steps,
                                self.first_order, self.rule)
        workspace = self._workspaces[chunk]
        if workspace.shape[0] < needed or workspace.dtype != theta.dtype:
            workspace = np.empty(needed + needed // 4, dtype=theta.dtype)
            self._workspaces[chunk] = workspace
        return workspace

    def _kernel(self, params, Xs, ys, s_offsets, Xq, yq, q_offsets, grad, task_losses,
                workspace):
        """The kernel on a whole batch or one chunk: its one call site."""
        rule = self.rule
        if rule.learn:
            rule = rule._replace(rates=params[self.n_theta:])
        return meta_batch_grad(params[:self.n_theta], self.layer_sizes, self.activation, Xs, ys,
                               s_offsets, Xq, yq, q_offsets, rule, self.n_inner_steps,
                               self.first_order, grad, task_losses, workspace)

    def _chunk(self, theta, Xs, ys, s_offsets, Xq, yq, q_offsets, t0, t1, grad, task_losses,
               workspace):
        s0, s1 = s_offsets[t0], s_offsets[t1]
        q0, q1 = q_offsets[t0], q_offsets[t1]
        self._kernel(theta, Xs[s0:s1], ys[s0:s1], s_offsets[t0:t1 + 1] - s0, Xq[q0:q1],
                     yq[q0:q1], q_offsets[t0:t1 + 1] - q0, grad, task_losses[t0:t1], workspace)

    def __call__(self, theta, Xs, ys, s_offsets, Xq, yq, q_offsets, grad_out, task_losses):
        """Mean query loss; writes the mean meta-gradient into ``grad_out``.

        ``theta`` is the parameter vector: θ, followed by the step sizes when the rule learns
        them (and ``grad_out`` then has their gradient after θ's)."""
        n_tasks = s_offsets.shape[0] - 1
        # Most batches are far below two chunks of work: decide that from the row totals, in
        # O(1), rather than plan chunks with several NumPy calls at every meta-iteration.
        if is_one_chunk(n_tasks, s_offsets[-1] - s_offsets[0], q_offsets[-1] - q_offsets[0],
                        self.support_flops, self.query_flops, MAX_ONE_CHUNK_FLOPS):
            bounds = np.array([0, n_tasks])
        else:
            bounds = chunk_bounds(s_offsets, q_offsets, self.support_flops, self.query_flops)
        if bounds.shape[0] == 2:
            return self._kernel(theta, Xs, ys, s_offsets, Xq, yq, q_offsets, grad_out,
                                task_losses, self._workspace(0, theta, s_offsets, q_offsets))
        n_chunks = bounds.shape[0] - 1
        grads = np.empty((n_chunks, theta.shape[0]), dtype=theta.dtype)
        args = []
        for c in range(n_chunks):
            t0, t1 = bounds[c], bounds[c + 1]
            workspace = self._workspace(c, theta, s_offsets[t0:t1 + 1] - s_offsets[t0],
                                        q_offsets[t0:t1 + 1] - q_offsets[t0])
            args.append((theta, Xs, ys, s_offsets, Xq, yq, q_offsets, t0, t1, grads[c],
                         task_losses, workspace))
        if self._pool is None:
            for a in args:
                self._chunk(*a)
        else:
            for future in [self._pool.submit(self._chunk, *a) for a in args]:
                future.result()
        # Chunk means back to the batch mean, in chunk order: the same bits for any n_jobs.
        weights = (np.diff(bounds) / n_tasks).astype(theta.dtype)
        np.multiply(grads[0], weights[0], out=grad_out)
        for c in range(1, n_chunks):
            grad_out += weights[c] * grads[c]
        return mean_loss(task_losses[:n_tasks])
