"""Progress display of meta-training (``verbose``): cheap enough to leave on.

A tqdm bar when tqdm is installed (an optional extra), else one printed line at most once a second.
The training loop calls :meth:`Progress.tick` after every meta-iteration or run of them, which
looks at the clock only every 64 of them, and :meth:`Progress.close` at the end; updates are
further throttled by time, so the display costs nothing measurable.
"""

import time

_MIN_INTERVAL = {"bar": 0.2, "lines": 1.0}


class Progress:
    """Shows meta-iterations done out of ``total`` and the recent query loss after adaptation."""

    CHECK_EVERY = 64  # a power of two: ``tick`` tests ``n_done & (CHECK_EVERY - 1)``

    def __init__(self, total, verbose):
        self.enabled = bool(verbose)
        self._bar = None
        self._last = time.monotonic()
        self._done = 0
        if not self.enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            self._mode = "lines"
        else:
            self._mode = "bar"
            self._bar = tqdm(total=total, desc="meta-training", unit="it", leave=True)

    def tick(self, n_done, loss, validation_scores, n_new=1):
        """After meta-iterations (``n_new`` of them, the last ending at ``n_done``): an
        :meth:`update` when they reach a multiple of ``CHECK_EVERY``.

        ``validation_scores`` is the list so far (or None); it is read only when shown.
        """
        if self.enabled and (n_done // self.CHECK_EVERY) > ((n_done - n_new) // self.CHECK_EVERY):
            self.update(n_done, loss, validation_scores[-1] if validation_scores else None)

    def update(self, n_done, loss, validation_score=None, force=False):
        """Report ``n_done`` meta-iterations of this fit and the latest loss."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < _MIN_INTERVAL[self._mode]:
            return
        self._last = now
        if self._bar is not None:
            self._bar.update(n_done - self._done)
            postfix = {"query loss": f"{loss:.4g}"}
            if validation_score is not None:
                postfix["validation"] = f"{validation_score:.4g}"
            self._bar.set_postfix(postfix, refresh=False)
        else:
            line = f"Meta-iteration {n_done}, query loss after adaptation = {loss:.6g}"
            if validation_score is not None:
                line += f", validation score = {validation_score:.6g}"
            print(line, flush=True)
        self._done = n_done

    def close(self, n_done, loss, validation_score=None):
        self.update(n_done, loss, validation_score, force=True)
        if self._bar is not None:
            self._bar.close()
