"""Jit options and integer codes shared by every kernel: the one place these facts live.

Losses have no code: a kernel chooses the loss from the *type* of the targets it is given
(floating 2-D targets -> squared error, integer 1-D targets -> softmax cross-entropy), so targets and
loss can never disagree.
"""

# ``cache=True`` keeps ``import skmaml`` and the first fit fast after the first-ever compile.
# ``nogil=True`` lets joblib threads run kernels side by side. No ``fastmath``: flags such as
# ``nnan``/``ninf`` would let a diverging meta-training produce NaN that is never seen.
# numba's parallel mode is never used: it must not be combined with the on-disk cache.
# ``error_model="numpy"``: division by zero gives inf/NaN (still detected by the estimator) instead of
# a per-division zero check that stops loops from vectorising (e.g. the Adam update).
JIT_OPTIONS = {"nogil": True, "cache": True, "error_model": "numpy"}

IDENTITY = 0
LOGISTIC = 1
TANH = 2
RELU = 3

ACTIVATION_CODES = {"identity": IDENTITY, "logistic": LOGISTIC, "tanh": TANH, "relu": RELU}
