"""MAMLMixture: several meta-learned initialisations, a new task routed to the one that serves it.

The MAML description names its own limits: one initialisation serves every task, tasks are not
grouped, no distance between tasks is measured. ``MAMLMixture`` keeps ``n_components``
initialisations (each an ordinary fitted MAML estimator, a copy of ``estimator``), finds the task
families by hard EM and routes a new task by its support rows only.
"""

import copy
import warnings
from numbers import Integral

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import ClassifierTags, RegressorTags, Tags, TargetTags, check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from ._base import N_JOBS_CONSTRAINT, BaseMAML
from ._kernels._config import ACTIVATION_CODES
from ._kernels._maml import adaptation_losses, inner_adapt
from ._tasks import ragged_take

# Seeds of the components' random_state (RandomState takes 32-bit seeds).
_COMPONENT_SEED_HIGH = 2**32 - 1

# What init="adaptation" clusters: the tasks' adapted parameter changes, projected onto this many
# random directions (distances are kept up to a few per cent, and the memory is n_tasks x this,
# not n_tasks x n_params).
_N_PROJECTIONS = 64

# Training tasks (at most) whose support rows the learned router is fitted on: a logistic
# regression on 6 k features needs a few thousand examples, not every task.
_N_ROUTER_TASKS = 2000


def _leave_one_out(s_off):
    """Leave-one-out episodes of a ragged batch of support sets (task ``t``: rows
    ``s_off[t]:s_off[t+1]``): one per row, in row order, whose support is the task's other rows
    and whose query is that row (query offsets ``0, 1, 2, ...`` into the same rows); a task of
    one row keeps it as support. Returns ``(support rows, support offsets, query offsets)``."""
    support = []
    for a, b in zip(s_off[:-1], s_off[1:]):
        rows = np.arange(a, b)
        n = rows.shape[0]
        support.append(np.repeat(rows[None], n, 0)[~np.eye(n, dtype=bool)] if n >= 2 else rows)
    sizes = np.diff(s_off)
    episode_sizes = np.repeat(np.where(sizes >= 2, sizes - 1, sizes), sizes)
    s_offsets = np.concatenate([[0], np.cumsum(episode_sizes)]).astype(np.int64)
    return (np.concatenate(support).astype(np.int64), s_offsets,
            np.arange(s_off[-1] + 1, dtype=np.int64))


def _adapted_losses(component, Xs, ys, s_off, Xq, yq, q_off, n_inner_steps):
    """``component`` adapted by ``n_inner_steps`` steps to each task of a ragged batch (rows as
    in ``adaptation_losses``): ``(support losses at steps 0..n-1 of shape (n_tasks, n), query
    losses after the n steps)``, non-finite (a diverging adaptation) as inf."""
    params, layer_sizes = component._theta()
    theta, rule = component._layout(layer_sizes).kernel_rule(params, component.inner_lr)
    n_tasks = s_off.shape[0] - 1
    support, query = np.empty((n_tasks, int(n_inner_steps))), np.empty(n_tasks)
    adaptation_losses(theta, layer_sizes, ACTIVATION_CODES[component.activation],
                      np.ascontiguousarray(Xs, dtype=theta.dtype), ys, s_off,
                      np.ascontiguousarray(Xq, dtype=theta.dtype), yq, q_off, rule,
                      int(n_inner_steps), support, query)
    return (np.where(np.isfinite(support), support, np.inf),
            np.where(np.isfinite(query), query, np.inf))


def _train_component(component, task_set, hidden, n_outputs, n_query):
    """Meta-train one component on its tasks, warm-started (a joblib task: returns it)."""
    with warnings.catch_warnings():
        # Each round is a slice of the component's budget: not converging in it is the plan; and
        # a component with fewer tasks than meta_batch_size takes them all, as designed.
        warnings.filterwarnings("ignore", message="Maximum meta-iterations")
        warnings.filterwarnings("ignore", message="meta_batch_size=")
        try:
            component._meta_train(task_set, hidden, n_outputs, n_query)
        except ValueError as exc:
            if component.stop_reason_ != "diverged":
                raise
            # The component keeps its last parameters whose loss was finite (see BaseMAML);
            # the next assignment decides what it serves.
            warnings.warn(f"MAMLMixture: a component's training diverged and stopped early: "
                          f"{exc}", UserWarning)
    return component


class MAMLMixture(MetaEstimatorMixin, BaseEstimator):
    """Task memory: ``n_components`` meta-learned initialisations of a MAML estimator, a new task
    routed to the one that serves it.

    One initialisation must compromise between dissimilar families of tasks (sinusoids and lines,
    machines of unrelated kinds). The mixture keeps several, each an ordinary fitted copy of
    ``estimator`` with every option of it (adaptation rule, classifier regime, ``n_jobs``), and
    finds the families without being told them, by hard EM:

    1. **Initialise**: meta-train ``estimator`` on all tasks for one round's budget
       (``estimator.max_iter // (n_rounds + 1)`` meta-iterations). ``init="worst_served"``: add
       components one at a time, each a copy of that model trained for a round on the share of
       tasks the components so far serve worst; ``"adaptation"``: cluster the tasks' adapted
       parameter changes by k-means (TSA-MAML's initialisation, Zhou et al. 2021); ``"random"``;
       or an array of initial task labels.
    2. **Each of** ``n_rounds`` **rounds**: meta-train every component on its tasks,
       warm-started, for an equal share of what is left of its budget (in parallel over
       components, through joblib), then assign tasks to the component with the lowest query
       loss after adapting to their support rows (averaged over ``n_assign_draws`` support
       draws): a fresh random sample of ``n_assign_tasks`` tasks, which the next round trains
       on, and after the last round every task. A component left with fewer than two tasks is
       re-seeded with the worst-served tasks of the largest, so none stays empty or collapses
       onto another. A component whose training diverges keeps its last finite parameters (with
       a warning), and the next assignment decides what it serves.

    Every component thus trains ``estimator.max_iter`` meta-iterations in all, counted from the
    start of the single MAML it descends from (a ``warm_start`` fit: ``max_iter`` more), so a
    mixture of k components costs about k single MAMLs' training, plus the assignments. The
    target encoding (the regressor's scale of y, the classifier's classes) is learned once on all
    tasks and shared, so the components' losses compare.

    A new task is routed by its **support rows only**. ``routing="learned"``: a multinomial
    logistic regression, fitted at the end of ``fit`` on one support draw of every training task
    (of 2,000 drawn at random when there are more), maps what each component makes of the support
    rows (its loss on them after 0, 1, N and 2N adaptation steps and, for regression, its
    leave-one-out losses) to the component that served the task best. ``"support_loss"``: the
    component of the lowest loss on the support rows after adapting to them
    (:meth:`support_losses`, the task-to-memory distance), which prefers components flexible
    enough to fit any few points.

    **Status.** In ``benchmarks/task_memory.py`` (one run, five support rows, the same total
    budget) the mixture's query MSE on new tasks was 37–51% below one MAML's on mixtures of 2, 3
    and 5 families, and 1.4–1.9 times that of one MAML per family routed by the true family (the
    means carry a few badly routed tasks, which ``combine="average"`` bounds; the medians were
    1.2–1.4 times the oracle's). Its
    components serve the tasks well (on five families the best one for each task, chosen in
    hindsight, beats that oracle); routing from five noisy rows is what falls short, and is
    bounded (``benchmarks/routing_bound.py``); see :doc:`/task_memory`.

    Parameters
    ----------
    estimator : MAMLRegressor or MAMLClassifier
        The base estimator; each component is a copy. Its ``max_iter`` is each component's
        budget. Tuned through the mixture as usual (``estimator__inner_lr``).
    n_components : int, default=2
        Number of initialisations k.
    n_rounds : int, default=5
        EM rounds after the initialisation.
    init : {"worst_served", "adaptation", "random"} or array-like of int, default="worst_served"
        How tasks are first assigned (see above).
    n_assign_draws : int, default=4
        Support draws of each task whose adapted query losses are averaged to assign it. One draw
        of a few rows is noisy enough to move a task between components by chance; each draw
        costs an adaptation of every component to every task at every assignment, which is most
        of a fit's time beyond the components' training when tasks are many (see
        :doc:`/task_memory`).
    n_assign_tasks : int or None, default=2000
        Tasks scored by each assignment but the last: a fresh random sample each time (the
        initialisation's and every round's), which the next round trains on, so that an
        assignment's cost does not grow with the number of tasks. The last assignment scores
        every task (``labels_``, ``task_losses_``). None: every task every time. At least
        ``2 * n_components``.
    routing : {"learned", "support_loss"}, default="learned"
        How a new task is routed (see above).
    combine : {"route", "average"}, default="route"
        What :meth:`adapt` returns. ``"route"``: the routed component adapted to the support
        rows. ``"average"``: every component adapted to them, its predictions (regression) or
        class probabilities (classification) averaged with the learned router's probability of
        each component as weight (needs ``routing="learned"``): a task the router is unsure of
        gets a compromise instead of a confident mistake, which bounds the worst tasks' loss
        (:doc:`/task_memory`), for k adaptations per task instead of one.
    warm_start : bool, default=False
        Continue from the fitted components, for another ``estimator.max_iter`` meta-iterations
        each: with a larger ``n_components``, each new component starts as a copy of the one
        serving the worst-served task. A component no task uses at the end of a fit is dropped
        (said with ``verbose``).
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation, every component's training, the support draws of the
        assignments and the router. Same seed, same mixture, whatever ``n_jobs``.
    n_jobs : int, default=None
        Components trained at the same time (joblib, so a ``parallel_config(backend="dask")``
        trains them on a cluster).
    verbose : int, default=0
        Print each round's component sizes, re-seeded and dropped components.

    Attributes
    ----------
    estimators_ : list of estimator
        The fitted components.
    n_components_ : int
        Components kept (fewer than ``n_components`` if some were dropped).
    labels_ : ndarray of shape (n_tasks,)
        The component of each training task (in task order: sorted group ids for
        ``fit(X, y, groups)``) at the last assignment.
    task_losses_ : ndarray of shape ``(n_tasks, n_components_)``
        Each training task's query loss after adapting each component (the training loss, in the
        components' units), at the last assignment.
    router_ : Pipeline or None
        The learned router (``routing="learned"`` and at least two components in use).
    init_estimator_ : estimator
        The single MAML of the initialisation (a ``warm_start`` fit keeps the first one).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        When the tasks' X had column names.

    Examples
    --------
    >>> from skmaml import MAMLMixture, MAMLRegressor
    >>> from skmaml.datasets import make_family_tasks
    >>> tasks, families = make_family_tasks(n_tasks=100, families=("sinusoid", "linear"),
    ...                                     random_state=0)
    >>> mixture = MAMLMixture(MAMLRegressor(hidden_layer_sizes=(20,), max_iter=100),
    ...                       n_components=2, n_rounds=2, random_state=0).fit(tasks)
    >>> X, y = tasks[0]
    >>> mixture.route(X[:5], y[:5]) in (0, 1)
    True
    >>> mixture.adapt(X[:5], y[:5]).predict(X[5:]).shape
    (15,)
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit", "adapt"])],
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "n_rounds": [Interval(Integral, 1, None, closed="left")],
        "init": [StrOptions({"worst_served", "adaptation", "random"}), "array-like"],
        "n_assign_draws": [Interval(Integral, 1, None, closed="left")],
        "n_assign_tasks": [Interval(Integral, 1, None, closed="left"), None],
        "routing": [StrOptions({"learned", "support_loss"})],
        "combine": [StrOptions({"route", "average"})],
        "warm_start": ["boolean"],
        "random_state": ["random_state"],
        "n_jobs": N_JOBS_CONSTRAINT,
        "verbose": ["verbose"],
    }

    __metadata_request__fit = {"groups": True}
    __metadata_request__score = {"groups": True}

    def __init__(self, estimator, n_components=2, *, n_rounds=5, init="worst_served",
                 n_assign_draws=4, n_assign_tasks=2000, routing="learned", combine="route",
                 warm_start=False, random_state=None, n_jobs=None, verbose=0):
        self.estimator = estimator
        self.n_components = n_components
        self.n_rounds = n_rounds
        self.init = init
        self.n_assign_draws = n_assign_draws
        self.n_assign_tasks = n_assign_tasks
        self.routing = routing
        self.combine = combine
        self.warm_start = warm_start
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.verbose = verbose

    # ---------------------------------------------------------------------------------------------
    # Fitting
    # ---------------------------------------------------------------------------------------------

    def fit(self, X, y=None, groups=None):
        """Find the task families and meta-train one initialisation for each.

        Parameters
        ----------
        X : list of tuples, or array-like of shape (n_samples, n_features)
            The tasks, in either form of :meth:`MAMLRegressor.fit`.
        y : array-like, default=None
            Targets, with array ``X``.
        groups : array-like of shape (n_samples,), default=None
            Task id of each row, with array ``X``.

        Returns
        -------
        self : object
        """
        self._validate_params()
        if self.combine == "average" and self.routing != "learned":
            raise ValueError("combine='average' weights the components by the learned router's "
                             "probabilities: it needs routing='learned'.")
        if not isinstance(self.estimator, BaseMAML):
            raise TypeError("MAMLMixture needs a MAMLRegressor or MAMLClassifier as estimator, "
                            f"got {type(self.estimator).__name__}.")
        rng = check_random_state(self.random_state)
        warm = self.warm_start and hasattr(self, "estimators_")
        prototype = copy.deepcopy(self.estimators_[0]) if warm else clone(self.estimator)
        # Each component trains max_iter meta-iterations in all, counted from the single MAML it
        # descends from (a fresh fit) or from where it stood (warm_start): the initialisation's
        # round is the first, and every round after gives each component an equal share of what
        # it has left.
        max_iter = int(self.estimator.max_iter)
        budget = max(1, max_iter // (self.n_rounds + 1))
        prototype.set_params(max_iter=budget, warm_start=True,
                             random_state=int(rng.randint(0, _COMPONENT_SEED_HIGH)))
        hidden, task_set, n_outputs, n_query = prototype._prepare_fit(X, y, groups)
        self.n_features_in_ = prototype.n_features_in_
        if hasattr(prototype, "feature_names_in_"):
            self.feature_names_in_ = prototype.feature_names_in_
        if task_set.n_tasks < self.n_components:
            raise ValueError(f"n_components={self.n_components} is more than the "
                             f"{task_set.n_tasks} training tasks.")
        if self.n_assign_tasks is not None and self.n_assign_tasks < 2 * self.n_components:
            raise ValueError(f"n_assign_tasks={self.n_assign_tasks} leaves fewer than two tasks "
                             f"per component: use at least 2 * n_components = "
                             f"{2 * self.n_components}, or None.")
        # Every assignment of this fit scores the components on the same support draws, so a
        # component's column of losses is computed once per change of it.
        draws = self._assignment_draws(prototype, task_set, rng)
        # The tasks that labels and losses refer to: every task, or a sample (n_assign_tasks).
        sample = np.arange(task_set.n_tasks)
        if warm:
            components = [copy.deepcopy(c) for c in self.estimators_]
            for c in components:  # the encoding learned now on all tasks, shared
                self._share_encoding(prototype, c)
            losses = self._task_losses(components, task_set, draws)
            while len(components) < self.n_components:
                components, losses = self._seed_component(components, losses)
            labels = np.argmin(losses, axis=1)
            targets = [c.n_iter_ + max_iter for c in components]
        else:
            _train_component(prototype, task_set, hidden, n_outputs, n_query)
            self.init_estimator_ = prototype
            if isinstance(self.init, str) and self.init == "worst_served":
                sample = self._assignment_sample(task_set.n_tasks, rng)
                components, losses = self._grow_from_worst_served(
                    prototype, task_set, sample, hidden, n_outputs, n_query, draws, rng)
                labels = np.argmin(losses, axis=1)
            else:
                labels = self._initial_labels(prototype, task_set, rng)
                components = [copy.deepcopy(prototype) for _ in range(self.n_components)]
                losses = np.column_stack([self._task_losses([prototype], task_set, draws)]
                                         * self.n_components)
            targets = [max_iter] * len(components)
        for r in range(self.n_rounds):
            labels = self._reseed_small(labels, losses)
            seeds = rng.randint(0, _COMPONENT_SEED_HIGH, size=len(components), dtype=np.int64)
            jobs, trained = [], []
            for j, component in enumerate(components):
                share = (targets[j] - component.n_iter_) // (self.n_rounds - r)
                if share < 1:
                    continue
                component.set_params(max_iter=share, warm_start=True, random_state=int(seeds[j]))
                jobs.append(delayed(_train_component)(
                    component, task_set.subset(sample[labels == j]), hidden, n_outputs, n_query))
                trained.append(j)
            for j, component in zip(trained, Parallel(n_jobs=self.n_jobs)(jobs)):
                components[j] = component
            # The last assignment scores every task (labels_, task_losses_, the router's labels).
            sample = (np.arange(task_set.n_tasks) if r == self.n_rounds - 1
                      else self._assignment_sample(task_set.n_tasks, rng))
            losses = self._task_losses(components, task_set, draws, sample)
            labels = np.argmin(losses, axis=1)
            if self.verbose:
                scored = ("" if sample.shape[0] == task_set.n_tasks else
                          f" (of {sample.shape[0]} tasks drawn)")
                print(f"MAMLMixture round {r + 1}/{self.n_rounds}: tasks per component{scored} "
                      f"{np.bincount(labels, minlength=len(components)).tolist()}", flush=True)
        used = np.unique(labels)
        if used.shape[0] < len(components):
            if self.verbose:
                dropped = sorted(set(range(len(components))) - set(used.tolist()))
                print(f"MAMLMixture: dropping component(s) {dropped}: no task uses them.",
                      flush=True)
            components = [components[j] for j in used]
            losses = losses[:, used]
            labels = np.searchsorted(used, labels)
        for c in components:
            c.set_params(max_iter=self.estimator.max_iter, warm_start=self.estimator.warm_start,
                         random_state=self.estimator.random_state)
        self.estimators_ = components
        self.router_ = self._fit_router(task_set, labels, rng)
        self.n_components_ = len(components)
        self.labels_ = labels
        self.task_losses_ = losses
        return self

    @staticmethod
    def _share_encoding(source, target):
        """Give ``target`` the target encoding ``source`` learned (scale of y, classes)."""
        for name in ("_y_mean", "_y_scale", "_y_1d", "classes_", "n_outputs_"):
            if hasattr(source, name):
                setattr(target, name, copy.deepcopy(getattr(source, name)))

    def _assignment_draws(self, prototype, task_set, rng):
        """``n_assign_draws`` support draws of every task (support and query row indices into
        ``task_set`` with kernel targets): what every assignment of a fit adapts to."""
        return [prototype._few_shot_episodes(task_set, np.random.RandomState(int(seed)))
                for seed in rng.randint(0, _COMPONENT_SEED_HIGH, size=self.n_assign_draws,
                                        dtype=np.int64)]

    def _assignment_sample(self, n_tasks, rng):
        """The tasks an assignment before the last scores: ``n_assign_tasks`` of them drawn
        without replacement (in task order), or every task."""
        if self.n_assign_tasks is None or self.n_assign_tasks >= n_tasks:
            return np.arange(n_tasks)
        return np.sort(rng.choice(n_tasks, self.n_assign_tasks, replace=False))

    def _task_losses(self, components, task_set, draws, tasks=None):
        """``(len(tasks), len(components))`` query losses after adapting each component to each
        support draw of each of ``tasks`` (default every task), averaged over the draws
        (non-finite as inf); the components in parallel (joblib threads: the kernels release the
        GIL)."""
        if tasks is not None and tasks.shape[0] < task_set.n_tasks:
            draws = [self._draw_of(draw, tasks) for draw in draws]

        def column(component):
            params, layer_sizes = component._theta()
            activation = ACTIVATION_CODES[component.activation]
            losses = np.zeros(draws[0][2].shape[0] - 1)
            for s_rows, ys, s_off, q_rows, yq, q_off in draws:
                losses += component._query_losses(
                    params, layer_sizes, activation,
                    (task_set.X[s_rows], ys, s_off, task_set.X[q_rows], yq, q_off))
            return losses / len(draws)

        columns = Parallel(n_jobs=self.n_jobs, prefer="threads")(
            delayed(column)(c) for c in components)
        losses = np.column_stack(columns)
        return np.where(np.isfinite(losses), losses, np.inf)

    @staticmethod
    def _draw_of(draw, tasks):
        """The support draw of the tasks ``tasks`` only."""
        s_rows, ys, s_off, q_rows, yq, q_off = draw
        s_take, s_new = ragged_take(s_off, tasks)
        q_take, q_new = ragged_take(q_off, tasks)
        return s_rows[s_take], ys[s_take], s_new, q_rows[q_take], yq[q_take], q_new

    def _initial_labels(self, prototype, task_set, rng):
        if self.n_components == 1:
            return np.zeros(task_set.n_tasks, dtype=np.int64)
        if not isinstance(self.init, str):
            labels = np.asarray(self.init, dtype=np.int64)
            if labels.shape != (task_set.n_tasks,) or labels.min() < 0 or (
                    labels.max() >= self.n_components):
                raise ValueError(f"init as labels must be {task_set.n_tasks} ints in "
                                 f"0..{self.n_components - 1}, one per task.")
            return labels
        if self.init == "random":
            return rng.permutation(np.arange(task_set.n_tasks) % self.n_components)
        # TSA-MAML: cluster the tasks by how adaptation moves the parameters.
        params, layer_sizes = prototype._theta()
        theta, rule = prototype._layout(layer_sizes).kernel_rule(params, prototype.inner_lr)
        s_rows, ys, s_off, _, _, _ = prototype._few_shot_episodes(task_set, rng)
        projection = rng.standard_normal((theta.shape[0], _N_PROJECTIONS)) / np.sqrt(_N_PROJECTIONS)
        activation = ACTIVATION_CODES[prototype.activation]
        features = np.empty((task_set.n_tasks, _N_PROJECTIONS))
        steps = max(1, int(prototype.n_inner_steps))
        for t in range(task_set.n_tasks):
            rows = s_rows[s_off[t]:s_off[t + 1]]
            adapted = inner_adapt(theta, layer_sizes, activation, task_set.X[rows],
                                  ys[s_off[t]:s_off[t + 1]], rule, steps)
            features[t] = (adapted - theta) @ projection
        features = np.where(np.isfinite(features), features, 0.0)
        kmeans = KMeans(n_clusters=self.n_components, n_init=10,
                        random_state=rng.randint(0, 2**31 - 1))
        return kmeans.fit_predict(features).astype(np.int64)

    def _grow_from_worst_served(self, prototype, task_set, sample, hidden, n_outputs, n_query,
                                draws, rng):
        """Components one at a time: each new one is a copy of the initialisation trained for one
        round on the share of the tasks ``sample`` that the current components serve worst
        (highest best loss). Returns the components and their ``(len(sample), k)`` losses."""
        components = [prototype]
        losses = self._task_losses(components, task_set, draws, sample)
        while len(components) < self.n_components:
            worst = self._worst_served(losses)[:sample.shape[0] // (len(components) + 1)]
            new = copy.deepcopy(prototype)
            new.set_params(random_state=int(rng.randint(0, _COMPONENT_SEED_HIGH)))
            _train_component(new, task_set.subset(sample[np.sort(worst)]), hidden, n_outputs,
                             n_query)
            components.append(new)
            losses = np.column_stack([losses, self._task_losses([new], task_set, draws, sample)])
        return components, losses

    def _worst_served(self, losses):
        """Task indices, worst-served first (highest best loss)."""
        return np.argsort(-losses.min(axis=1), kind="stable")

    def _reseed_small(self, labels, losses):
        """Give every component with fewer than two tasks the worst-served tasks of the
        largest component (a share of it; ``losses`` are those of the assignment that gave
        ``labels``), so none stays empty or a copy of another."""
        labels = labels.copy()
        n_components = losses.shape[1]
        for j in range(n_components):
            if np.sum(labels == j) >= 2:
                continue
            largest = np.argmax(np.bincount(labels, minlength=n_components))
            members = np.flatnonzero(labels == largest)
            order = members[np.argsort(-losses[members, largest], kind="stable")]
            take = order[:max(2, members.shape[0] // n_components)]
            labels[take] = j
            if self.verbose:
                print(f"MAMLMixture: component {j} had fewer than 2 tasks; re-seeded with the "
                      f"{take.shape[0]} worst-served tasks of component {largest}.", flush=True)
        return labels

    def _seed_component(self, components, losses):
        """A new component (``warm_start`` with a larger ``n_components``): a copy of the
        component serving the worst-served task, with that component's losses."""
        source = int(np.argmin(losses[self._worst_served(losses)[0]]))
        if self.verbose:
            print("MAMLMixture: adding a component, seeded from the worst-served tasks.",
                  flush=True)
        return (components + [copy.deepcopy(components[source])],
                np.column_stack([losses, losses[:, source]]))

    # ---------------------------------------------------------------------------------------------
    # Routing and adaptation
    # ---------------------------------------------------------------------------------------------

    def _routing_features(self, Xs, ys, s_off):
        """What the router sees of each task's support rows (task ``t``: rows
        ``s_off[t]:s_off[t+1]`` of ``Xs`` with kernel targets ``ys``), ``(n_tasks, 6 k)``: for
        every component, the log of its training loss on them after 0, 1, N and 2N adaptation
        steps, and of the mean and largest leave-one-out loss (adapted to all rows but one,
        scored on that one; regression only). A diverging adaptation counts as a huge loss."""
        n_tasks = s_off.shape[0] - 1
        sizes = np.diff(s_off)
        loo = self.estimators_[0]._target_dtype() == "numeric"
        if loo:
            loo_support, loo_s_off, loo_q_off = _leave_one_out(s_off)
            loo_task = np.repeat(np.arange(n_tasks), sizes)
        features = []
        for c in self.estimators_:
            n = max(1, int(c.n_inner_steps))
            trajectory, last = _adapted_losses(c, Xs, ys, s_off, Xs, ys, s_off, 2 * n)
            block = [trajectory[:, 0], trajectory[:, 1], trajectory[:, n], last]
            if loo:
                held_out = _adapted_losses(c, Xs[loo_support], ys[loo_support], loo_s_off, Xs,
                                           ys, loo_q_off, n)[1]
                mean = np.bincount(loo_task, held_out, minlength=n_tasks) / sizes
                worst = np.full(n_tasks, -np.inf)
                np.maximum.at(worst, loo_task, held_out)
                # One row: nothing to hold out; its loss after N steps stands in.
                single = sizes < 2
                mean[single], worst[single] = trajectory[single, n], trajectory[single, n]
            else:  # class labels (a held-out row's class may be missing)
                mean = worst = trajectory[:, n]
            features.append(np.column_stack(block + [mean, worst]))
        features = np.hstack(features)
        return np.log(np.maximum(np.nan_to_num(features, nan=1e300, posinf=1e300), 1e-12))

    def _fit_router(self, task_set, labels, rng):
        """A multinomial logistic regression from the routing features of one support draw of
        each training task (of ``_N_ROUTER_TASKS`` drawn at random, when there are more) to its
        component (the one whose adapted query loss was lowest)."""
        if self.routing != "learned" or np.unique(labels).shape[0] < 2:
            return None
        if task_set.n_tasks > _N_ROUTER_TASKS:
            chosen = np.sort(rng.choice(task_set.n_tasks, _N_ROUTER_TASKS, replace=False))
            task_set, labels = task_set.subset(chosen), labels[chosen]
        s_rows, ys, s_off, _, _, _ = self.estimators_[0]._few_shot_episodes(task_set, rng)
        features = self._routing_features(task_set.X[s_rows], ys, s_off)
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(
            features, labels)

    def support_losses(self, X, y, n_inner_steps=None):
        """Each component's training loss on a task's support rows after adapting to them: the
        distance of the task to each initialisation in the memory.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The task's labelled (support) rows.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
        n_inner_steps : int, default=None
            Adaptation steps; the components' ``n_inner_steps`` if None.

        Returns
        -------
        losses : ndarray of shape ``(n_components_,)``
        """
        check_is_fitted(self)
        if n_inner_steps is not None and (not isinstance(n_inner_steps, Integral)
                                          or n_inner_steps < 0):
            raise ValueError(f"n_inner_steps must be a non-negative int, got {n_inner_steps!r}.")
        X, y_kernel, _ = self.estimators_[0]._adapt_input(X, y)
        one_task = np.array([0, X.shape[0]], dtype=np.int64)
        losses = [_adapted_losses(c, X, y_kernel, one_task, X, y_kernel, one_task,
                                  c.n_inner_steps if n_inner_steps is None else n_inner_steps)[1]
                  for c in self.estimators_]
        return np.concatenate(losses)

    def route(self, X, y, n_inner_steps=None):
        """The component (an int) a task's support rows ``X, y`` are routed to: the learned
        router's choice (``routing="learned"``, whose features use fixed numbers of steps, so
        ``n_inner_steps`` does not change it), or that of the lowest :meth:`support_losses`."""
        check_is_fitted(self)
        if getattr(self, "router_", None) is not None:
            return int(self.router_.predict(self._task_features(X, y))[0])
        losses = self.support_losses(X, y, n_inner_steps)
        return int(np.argmin(np.where(np.isfinite(losses), losses, np.inf)))

    def route_proba(self, X, y):
        """The learned router's probability of each component for a task's support rows
        ``X, y`` (``routing="learned"``): shape ``(n_components_,)``; one component in use has
        probability 1."""
        check_is_fitted(self)
        if self.routing != "learned":
            raise ValueError("route_proba needs routing='learned'; with routing="
                             f"{self.routing!r} see support_losses.")
        proba = np.zeros(self.n_components_)
        if self.router_ is None:
            proba[0] = 1.0
            return proba
        # Components the router never saw as a label (its classes_) get probability 0.
        proba[self.router_.classes_] = self.router_.predict_proba(self._task_features(X, y))[0]
        return proba

    def _task_features(self, X, y):
        """The routing features of one task's support rows ``X, y`` (validated), ``(1, 6 k)``."""
        X, y_kernel, _ = self.estimators_[0]._adapt_input(X, y)
        return self._routing_features(X, y_kernel, np.array([0, X.shape[0]], dtype=np.int64))

    def adapt(self, X, y, n_inner_steps=None):
        """Route a new task by its support rows, then adapt that component to them
        (``combine="route"``), or adapt every component and weight them by the router's
        probabilities (``combine="average"``).

        Returns
        -------
        model : estimator
            ``combine="route"``: the adapted copy of the chosen component (see
            ``estimator.adapt``). ``"average"``: an :class:`AveragedModel` of the adapted
            components.
        """
        if self.combine == "route":
            return self.estimators_[self.route(X, y, n_inner_steps)].adapt(X, y, n_inner_steps)
        weights = self.route_proba(X, y)
        models, kept = [], []
        for j in np.flatnonzero(weights):
            try:
                models.append(self.estimators_[j].adapt(X, y, n_inner_steps))
            except ValueError as exc:
                # A component whose adaptation to these rows diverges drops out of the average
                # (as routing sends such a task elsewhere); if every one diverges, say so.
                if "diverged" not in str(exc):
                    raise
                continue
            kept.append(j)
        if not models:
            raise ValueError("Adaptation diverged for every component with a non-zero routing "
                             "probability: lower the components' inner_lr or n_inner_steps.")
        return AveragedModel(models, weights[kept] / weights[kept].sum())

    # ---------------------------------------------------------------------------------------------
    # Few-shot scoring
    # ---------------------------------------------------------------------------------------------

    def _few_shot_score(self, X, y, groups, sample_weight, *, n_support, n_inner_steps=None,
                        random_state=0, scorer=None, n_repeats=1):
        """Per task: draw ``n_support`` support rows (the first component's sampler), route,
        adapt and score the query rows; the mean over tasks (and ``n_repeats`` draws). The
        protocol of :class:`FewShotScorer` and :meth:`score`."""
        check_is_fitted(self)
        first = self.estimators_[0]
        min_query = first._min_query_rows_to_score if scorer is None else 1
        task_set = first._score_tasks(X, y, groups, n_support, min_query)
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=np.float64).reshape(-1)[task_set.order]
        rng = check_random_state(random_state)
        scores = []
        for _ in range(n_repeats):
            s_rows, ys, s_off, q_rows, yq, q_off = first._few_shot_episodes(task_set, rng)
            for t in range(task_set.n_tasks):
                support, query = s_rows[s_off[t]:s_off[t + 1]], q_rows[q_off[t]:q_off[t + 1]]
                Xs, Xq = task_set.X[support], task_set.X[query]
                yq_kernel = yq[q_off[t]:q_off[t + 1]]
                model = self.adapt(Xs, first._decode_targets(ys[s_off[t]:s_off[t + 1]]),
                                   n_inner_steps)
                w = None if sample_weight is None else sample_weight[query]
                if scorer is not None:
                    kwargs = {} if w is None else {"sample_weight": w}
                    scores.append(scorer(model, Xq, first._decode_targets(yq_kernel), **kwargs))
                    continue
                if isinstance(model, AveragedModel):  # its metric on its averaged outputs
                    scores.append(model.score(Xq, first._decode_targets(yq_kernel), w))
                    continue
                # The components' own metric (R², accuracy) on the adapted parameters.
                params, layer_sizes = model._theta()
                theta = params[:model._layout(layer_sizes).n_theta]
                scores.append(model._task_score(theta, layer_sizes,
                                                ACTIVATION_CODES[model.activation], Xq,
                                                yq_kernel, w))
        return float(np.mean(scores))

    def score(self, X, y, groups=None, sample_weight=None):
        """Few-shot score: per task, route and adapt on ``n_support`` rows, score the rest (R² or
        accuracy of the components' estimator); the mean over tasks."""
        return self._few_shot_score(X, y, groups, sample_weight,
                                    n_support=self.estimators_[0].n_support
                                    if hasattr(self, "estimators_") else 1)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags


class AveragedModel:
    """The components of a :class:`MAMLMixture` adapted to one task, their outputs averaged
    with weights (``MAMLMixture(combine="average").adapt``).

    Regression: ``predict`` is the weighted mean of the adapted components' predictions.
    Classification: ``predict_proba`` is the weighted mean of their class probabilities and
    ``predict`` its most probable class. ``score`` is R² or accuracy, as the components'.

    Attributes
    ----------
    estimators_ : list of estimator
        The adapted components with a non-zero weight.
    weights_ : ndarray of shape ``(len(estimators_),)``
        Their weights (the router's probabilities, renormalised over them), summing to 1.
    classes_ : ndarray
        The classes (classification).
    """

    def __init__(self, estimators, weights):
        self.estimators_ = estimators
        self.weights_ = np.asarray(weights, dtype=np.float64)
        self._classifier = hasattr(estimators[0], "predict_proba")
        if self._classifier:
            self.classes_ = estimators[0].classes_

    @available_if(lambda self: self._classifier)
    def predict_proba(self, X):
        """Weighted mean of the adapted components' class probabilities (classification)."""
        return np.tensordot(self.weights_, [m.predict_proba(X) for m in self.estimators_], 1)

    @available_if(lambda self: self._classifier)
    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba` (classification)."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        """The weighted mean prediction (regression) or the most probable class."""
        if self._classifier:
            return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
        return np.tensordot(self.weights_, [m.predict(X) for m in self.estimators_], 1)

    def score(self, X, y, sample_weight=None):
        """R² (regression) or accuracy (classification) on ``X, y``."""
        metric = accuracy_score if self._classifier else r2_score
        return metric(y, self.predict(X), sample_weight=sample_weight)

    def __sklearn_tags__(self):
        # What scikit-learn's scorers read to call predict or predict_proba.
        classifier = self._classifier
        return Tags(estimator_type="classifier" if classifier else "regressor",
                    target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags() if classifier else None,
                    regressor_tags=None if classifier else RegressorTags())
