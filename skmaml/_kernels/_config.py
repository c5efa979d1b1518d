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

# Episode layout codes. ``n_query`` of the samplers: every row of a task not in its support is a
# query row (the estimators' ``n_query=None``).
ALL_OTHER_ROWS = -1
# ``fixed_support`` of a task whose support/query split is drawn afresh at each visit (a 2-tuple
# task); ``s >= 0`` is a given split's number of support rows (a 4-tuple task).
RANDOM_SPLIT = -1

# How the inner step sizes of an adaptation rule are shared (``_rules.Rule.sharing``): one step
# size for all adapted parameters (plain MAML's α, or one per step), one per weight matrix and per
# bias vector (MAML++'s LSLR, with one set per step), or one per parameter (Meta-SGD).
ONE_RATE = 0
PER_LAYER = 1
PER_PARAMETER = 2

# Episode samplers of the compiled training loop (``_train.meta_train_run``): the regression
# sampler, the stratified classification sampler (``support_per="class"``) and the unstratified
# one (``support_per="task"``).
REGRESSION_EPISODES = 0
STRATIFIED_EPISODES = 1
UNSTRATIFIED_EPISODES = 2

# Meta-optimisers of the compiled training loop (``_optim`` holds their hyper-parameters and state).
SGD = 0
ADAM = 1
