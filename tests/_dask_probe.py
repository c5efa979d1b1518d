"""A MAMLRegressor that records where its episode sampler runs, for tests/test_dask.py.

In a module of its own so that Dask workers can import it (the test uploads this file to them)
and unpickle the estimators they are sent.
"""

import os
import threading

from skmaml import MAMLRegressor


class ThreadProbeRegressor(MAMLRegressor):
    """Records, while meta-training, the process and the threads alive at each batch sampling."""

    def _episode_sampler(self, y_kernel):
        sample = super()._episode_sampler(y_kernel)
        if not hasattr(self, "probe_pids_"):  # score() builds a sampler too: keep fit's records
            self.probe_pids_, self.probe_threads_ = set(), set()

        def probed(*args):
            self.probe_pids_.add(os.getpid())
            self.probe_threads_.update(t.name for t in threading.enumerate())
            return sample(*args)

        return probed
