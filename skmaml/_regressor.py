"""MAMLRegressor: MAML with squared error."""

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.metrics import r2_score

from ._base import BaseMAML
from ._kernels._config import REGRESSION_EPISODES
from ._kernels._mlp import forward
from ._kernels._sampling import regression_episode_rows
from ._messages import counted


class MAMLRegressor(RegressorMixin, BaseMAML):
    """Model-Agnostic Meta-Learning (MAML) for regression with a multilayer perceptron.

    Meta-training learns initial parameters θ of an MLP such that, on a new task, a few plain
    gradient steps on a handful of labelled rows give a good model (Finn, Abbeel & Levine, 2017).
    Each meta-iteration takes ``meta_batch_size`` tasks; for each, starting from θ, it runs
    ``n_inner_steps`` (N) gradient steps of size ``inner_lr`` (α) on the loss of ``n_support`` (K)
    rows (the support set), measures the loss of the adapted network on the task's other rows (the
    query set), and moves θ by ``meta_lr`` (β) along the gradient of that query loss with respect to
    θ, differentiated through the N inner steps (exact second order) or not (``first_order=True``).
    The meta-gradient is the **mean** over the meta-batch (the paper's sum with 1/B folded into β).

    The loss is the mean squared error over rows and targets (no factor 1/2, as in the paper). By
    default (``normalize_y=True``) it is the loss of the **standardised** targets: ``fit`` learns
    each target column's mean and standard deviation over all training rows and the network
    predicts ``(y - mean) / std``, so ``inner_lr`` and ``meta_lr`` mean the same on any target
    scale (e.g. a maths score out of 25 or a price in dollars); ``predict``, ``adapt`` and
    ``score`` speak the original units.

    Parameters
    ----------
    hidden_layer_sizes : array-like of shape (n_layers - 2,) or int, default=(40, 40)
        Width of each hidden layer (an int: one hidden layer); ``()`` gives a linear model.
    activation : {"relu", "tanh", "logistic", "identity"}, default="relu"
        Hidden-layer activation.
    weight_init : {"uniform_fan_in", "glorot_uniform"}, default="uniform_fan_in"
        How the initial θ is drawn (from ``random_state``). ``"uniform_fan_in"``: each weight
        and bias of a layer with ``fan_in`` inputs from U(±1/√fan_in), PyTorch's ``nn.Linear``
        default and so the initialisation of the MAML reference implementations; on the paper's
        sinusoid problem it gives their 10-step results, where ``"glorot_uniform"``
        (``MLPRegressor``'s, bound √(6 / (fan_in + fan_out)), √2 for logistic) leaves a heavy
        tail of badly adapted tasks (``docs/benchmarks.rst``).
    inner_lr : float, default=0.01
        α, the step size of the inner (adaptation) gradient steps.
    n_inner_steps : int, default=1
        N, the number of inner steps during meta-training and, by default, in :meth:`adapt`.
    learn_inner_lr : {None, "per_parameter", "per_layer_step"}, default=None
        Meta-learn the inner step sizes with θ (by the same meta-optimiser, through the same
        exact meta-gradient), starting from ``inner_lr``. ``None``: one fixed step size
        ``inner_lr`` (MAML). ``"per_parameter"``: one step size per parameter, the same at every
        step (Meta-SGD; Li et al., 2017). ``"per_layer_step"``: one per weight matrix, one per
        bias vector, and per inner step (MAML++'s LSLR; Antoniou et al., 2019); an ``adapt``
        with more steps than were learned reuses the last step's sizes. The learned sizes are
        ``inner_lr_coefs_`` and ``inner_lr_intercepts_``, used by :meth:`adapt`,
        :meth:`score` and :class:`FewShotScorer`. They are not constrained to be positive, as in
        both papers. See "Adaptation rules" in the user guide.
    adapted_layers : "all" or int, default="all"
        Which layers the inner loop adapts: all, or the last ``k`` weight layers (``1``: the
        output layer only, ANIL; Raghu et al., 2020). The other layers (the body) are still
        meta-learned, through the query loss, but stay fixed during adaptation, and their
        forward pass over a task's support rows is computed once, not at every inner step. At
        most the number of weight layers (``len(hidden_layer_sizes) + 1``).
    meta_lr : float, default=0.001
        β, the meta step size.
    meta_optimizer : {"adam", "sgd"}, default="adam"
        ``"sgd"`` applies exactly θ ← θ − β · mean meta-gradient; ``"adam"`` uses Adam as the paper.
    first_order : bool, default=False
        First-order MAML: use the query gradient at the adapted parameters and skip the
        second-order terms (cheaper, usually a little less accurate).
    meta_batch_size : int, default=25
        Tasks per meta-iteration. Meta-batches walk the tasks in shuffled epochs without
        replacement.
    n_support : int, default=10
        K, support rows per task and visit (drawn afresh at each visit of a ``(X, y)`` task).
    n_query : int, default=None
        Query rows per task and visit; ``None`` uses all rows not in the support.
    normalize_y : bool, default=True
        Standardise the targets inside the estimator (see above), as ``normalize_y`` of
        :class:`~sklearn.gaussian_process.GaussianProcessRegressor`. The mean and standard
        deviation are those of the first fit; ``warm_start`` keeps them. ``loss_curve_`` and
        ``best_loss_`` are in standardised units (a loss of 1 is that of predicting the mean).
        ``False`` trains on ``y`` as given.
    max_iter : int, default=1000
        Maximum number of meta-iterations (outer updates; the paper's sinusoid run uses 70,000).
    tol : float, default=1e-4
        Improvement needed to count as progress: of the mean query loss of the last
        ``n_iter_no_change`` checks over that of the ``n_iter_no_change`` checks before them, or
        of the validation score over its best with ``early_stopping``.
    n_iter_no_change : int, default=10
        Counted in **checks**, not meta-iterations (which ``max_iter`` counts). Without
        ``early_stopping`` a check comes at the end of a pass over the tasks (``ceil(n_tasks /
        meta_batch_size)`` meta-iterations) once at least 50 meta-iterations have passed since
        the last one, and training stops when the mean query loss of the last
        ``n_iter_no_change`` checks is not ``tol`` lower than that of the ``n_iter_no_change``
        checks before (so not before ``2 * n_iter_no_change`` checks, 1000 meta-iterations by
        default). The query loss is noisy, all the more with few tasks, whose passes are a few
        meta-iterations; comparing one pass with the best so far would stop training by chance
        while the loss still falls. With ``early_stopping`` a check is every pass, and training
        stops after ``n_iter_no_change`` passes without a validation score ``tol`` above the
        best. ``stop_reason_`` says which rule stopped a fit.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the **tasks** (or use the validation tasks given to
        ``fit`` as ``X_val``), score them few-shot after each pass over the training tasks, stop
        when that score stops improving and restore the best θ.
    validation_fraction : float, default=0.1
        Fraction of tasks held out with ``early_stopping`` (of classes, for
        ``MAMLClassifier(task_labels="per_task")``).
    warm_start : bool, default=False
        Continue from the current ``coefs_``/``intercepts_`` (also ones set by hand).
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, task order and every support/query draw.
    n_jobs : int, default=None
        Threads for the meta-gradient of each meta-batch. A meta-batch is cut into chunks of
        tasks by its estimated work (independently of ``n_jobs``), so the model is bit-identical
        for any ``n_jobs``; a batch too small to gain from threads is one chunk and runs directly.
        ``None`` means 1 unless in a ``joblib.parallel_config(n_jobs=...)`` context, ``-1`` all
        cores (always threads of this process, whatever the joblib backend). BLAS stays
        single-threaded during ``fit``.
    verbose : int, default=0
        Show progress: a tqdm bar when tqdm is installed (``pip install "skmaml[progress]"``),
        otherwise a printed line at most once a second. Either costs nothing measurable.

    Attributes
    ----------
    coefs_ : list of ndarray
        Meta-learned weight matrices; ``coefs_[i]`` maps layer i to layer i + 1.
    intercepts_ : list of ndarray
        Meta-learned bias vectors.
    inner_lr_coefs_, inner_lr_intercepts_ : list of ndarray or None
        The learned inner step sizes (``learn_inner_lr``), one array per layer:
        ``"per_parameter"``: shaped like ``coefs_[i]`` / ``intercepts_[i]``;
        ``"per_layer_step"``: of shape ``(n_inner_steps,)``, the size of that layer's weights /
        biases at each step. Layers not adapted (``adapted_layers``) have size 0. None when the
        step size is the fixed ``inner_lr``.
    n_iter_ : int
        Meta-iterations run.
    stop_reason_ : str
        Why the last fit stopped: ``"max_iter"``, ``"loss_plateau"`` (the rule of
        ``n_iter_no_change``), ``"validation_plateau"`` (``early_stopping``), ``"interrupted"``
        (KeyboardInterrupt) or ``"diverged"`` (the divergence error was raised: a query loss,
        gradient or update not finite, or a query loss after adaptation more than 1e8 times
        that of a constant prediction and of the starting θ, a run-away while numbers stay
        finite). With ``verbose``, the reason is printed in words.
    loss_curve_ : list of float
        Mean query loss after adaptation at each meta-iteration.
    best_loss_ : float or None
        Lowest mean query loss over a pass through the tasks (None with ``early_stopping``).
    validation_scores_ : list of float or None
        Few-shot R² on the held-out tasks after each pass (``early_stopping`` only).
    best_validation_score_ : float or None
        Best of ``validation_scores_``.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Defined when X has string column names.
    n_layers_ : int
    n_outputs_ : int

    See Also
    --------
    MAMLClassifier : The same for classification.
    FewShotScorer : A fixed few-shot evaluation protocol for model selection.

    Examples
    --------
    >>> from skmaml import MAMLRegressor
    >>> from skmaml.datasets import make_sinusoid_tasks
    >>> tasks = make_sinusoid_tasks(n_tasks=200, n_samples=20, random_state=0)
    >>> est = MAMLRegressor(max_iter=200, random_state=0).fit(tasks)
    >>> X_new, y_new = make_sinusoid_tasks(n_tasks=1, n_samples=20, random_state=1)[0]
    >>> model = est.adapt(X_new[:10], y_new[:10])
    >>> model.predict(X_new[10:]).shape
    (10,)
    """

    def __init__(self, hidden_layer_sizes=(40, 40), activation="relu", *,
                 weight_init="uniform_fan_in", inner_lr=0.01, n_inner_steps=1,
                 learn_inner_lr=None, adapted_layers="all", meta_lr=0.001,
                 meta_optimizer="adam", first_order=False,
                 meta_batch_size=25, n_support=10, n_query=None, normalize_y=True,
                 max_iter=1000, tol=1e-4,
                 n_iter_no_change=10, early_stopping=False, validation_fraction=0.1,
                 warm_start=False, random_state=None, n_jobs=None, verbose=0):
        super().__init__(
            hidden_layer_sizes, activation, weight_init=weight_init, inner_lr=inner_lr,
            n_inner_steps=n_inner_steps, learn_inner_lr=learn_inner_lr,
            adapted_layers=adapted_layers, meta_lr=meta_lr, meta_optimizer=meta_optimizer,
            first_order=first_order, meta_batch_size=meta_batch_size, n_support=n_support,
            n_query=n_query, max_iter=max_iter, tol=tol, n_iter_no_change=n_iter_no_change,
            early_stopping=early_stopping, validation_fraction=validation_fraction,
            warm_start=warm_start, random_state=random_state, n_jobs=n_jobs, verbose=verbose)
        self.normalize_y = normalize_y

    _parameter_constraints: dict = {
        **BaseMAML._parameter_constraints,
        "normalize_y": ["boolean"],
    }

    # The mixin's score (plain R² / accuracy on all rows) would shadow the few-shot score.
    score = BaseMAML.score

    def _target_dtype(self):
        return "numeric"

    def _as_targets(self, y, dtype):
        """Targets as a C-contiguous 2-D array in the kernels' units (standardised with the fitted
        mean and scale)."""
        Y = np.asarray(y, dtype=np.float64)
        Y = Y.reshape(-1, 1) if Y.ndim == 1 else Y
        return np.ascontiguousarray((Y - self._y_mean) / self._y_scale, dtype=dtype)

    def _from_kernel_units(self, Y):
        Y = Y * self._y_scale.astype(Y.dtype) + self._y_mean.astype(Y.dtype)
        return Y[:, 0] if self._y_1d else Y

    def _encode_fit_targets(self, task_set):
        Y = np.asarray(task_set.y, dtype=np.float64)
        Y = Y.reshape(-1, 1) if Y.ndim == 1 else Y
        keep = (self.warm_start and hasattr(self, "coefs_") and hasattr(self, "_y_mean")
                and self._y_mean.shape[0] == Y.shape[1])
        if not keep:
            if self.normalize_y:
                self._y_mean, scale = Y.mean(axis=0), Y.std(axis=0)
                if not (np.isfinite(self._y_mean).all() and np.isfinite(scale).all()):
                    # Targets near the float range (1e300) overflow when summed or squared:
                    # the same statistics of the targets divided by each column's peak.
                    peak = np.max(np.abs(Y), axis=0)
                    peak = np.where(peak > 0, peak, 1.0)
                    self._y_mean = (Y / peak).mean(axis=0) * peak
                    scale = (Y / peak).std(axis=0) * peak
                # As StandardScaler: a constant column is centred, not divided by (nearly) zero.
                self._y_scale = np.where(scale < 10 * np.finfo(np.float64).eps, 1.0, scale)
            else:
                self._y_mean, self._y_scale = np.zeros(Y.shape[1]), np.ones(Y.shape[1])
        self._y_1d = task_set.y.ndim == 1
        Y = self._as_targets(Y, task_set.X.dtype)
        return Y, Y.shape[1]

    def _encode_score_targets(self, task_set):
        self._check_n_targets(np.asarray(task_set.y))
        return self._as_targets(task_set.y, task_set.X.dtype)

    def _check_n_targets(self, y):
        n_targets = 1 if y.ndim == 1 else y.shape[1]
        if n_targets != self.n_outputs_:
            raise ValueError(f"y has {n_targets} target columns but the model was fitted with "
                             f"{self.n_outputs_}.")

    # R² is undefined on one row.
    _min_query_rows_to_score = 2

    def _largest_supports(self, task_set, y_kernel, n_query, min_query):
        return task_set.sizes() - (n_query if n_query > 0 else min_query)

    def _small_task_facts(self, task_set, y_kernel, t):
        n_rows = task_set.sizes()[t]
        return f"{task_set.names[t]} has {counted(n_rows, 'row')}"

    def _sampler_spec(self, y_kernel):
        return REGRESSION_EPISODES, 0, False

    def _episode_rows(self, y_kernel):
        def rows(offsets, fixed_support, batch, seeds, support_sizes, n_query):
            s_rows, s_off, q_rows, q_off = regression_episode_rows(
                offsets, fixed_support, batch, seeds, support_sizes, n_query)
            return s_rows, y_kernel[s_rows], s_off, q_rows, y_kernel[q_rows], q_off

        return rows

    def _encode_adapt_targets(self, y):
        self._check_n_targets(np.asarray(y))
        return self._as_targets(y, self.coefs_[0].dtype), {}

    def _decode_targets(self, y_kernel):
        return self._from_kernel_units(y_kernel)

    def _null_loss(self, y_kernel):
        return float(np.mean(np.square(y_kernel, dtype=np.float64)))

    def _task_score(self, theta, layer_sizes, activation, X_query, y_query, sample_weight):
        prediction = forward(theta, layer_sizes, activation, X_query)
        return r2_score(y_query, prediction, sample_weight=sample_weight)

    def predict(self, X):
        """Predict with the current parameters (meta-learned θ, or adapted after :meth:`adapt`).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_targets)
        """
        return self._from_kernel_units(self._raw_output(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
