"""Task memory on multimodal task families: MAMLMixture beside one MAML and a per-family oracle.

Run it from the repository root::

    python benchmarks/task_memory.py                  # 2, 3, 5 families and a k sweep (~22 min)
    python benchmarks/task_memory.py --quick          # smoke run (about a minute)
    python benchmarks/task_memory.py --families 5 --output memory.md
    python benchmarks/task_memory.py --families "" --k-sweep "" --real   # MathAchieve only
    python benchmarks/task_memory.py --k-sweep "" --draws-sweep 1,2,4 --skip-methods  # n_assign_draws

Tasks: :func:`skmaml.datasets.make_family_tasks` (sinusoid, linear, quadratic, tanh, abs on
x in [-5, 5], noise sd 0.3) in equal shares, 20 rows each; meta-training draws K = 5 support and
5 query rows at each visit. Every method gets the same total budget of meta-iterations (``--budget``,
default 15,000) with ``MAMLRegressor(hidden_layer_sizes=(40, 40), inner_lr=0.01, n_inner_steps=5,
n_support=5, n_query=5)`` (the issue's setting: targets standardised by the estimator; second
order, Adam 0.001, meta-batch 25):

* **one MAML** for all tasks, all of the budget;
* **the mixture**, ``MAMLMixture(..., n_components=k)`` with k the number of families, each
  component ``budget / k`` meta-iterations (counted from the initial single MAML it descends
  from), routed (``combine="route"``) and with its components' predictions averaged by the
  router's probabilities (``combine="average"``); and the same mixture assigning tasks by one
  support draw instead of four (``n_assign_draws=1``: cheaper assignments, noisier);
* **oracle**: one MAML per family, ``budget / k`` each, trained on that family's tasks only and
  routed by the true family at test time (what a perfect memory would do).

Test: 200 new tasks per family, adapted on 5 support rows and scored on 100 other rows (query MSE,
mean ± 95% CI, median and worst task, per family and overall). Routing accuracy: the share of test
tasks routed to "their" component, under the best one-to-one matching of components to families
(Hungarian; as clustering is scored up to relabelling), beside the Bayes-optimal accuracy of any
router from 5 noisy points (``benchmarks/routing_bound.py``). Training wall time per method.
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
if REPO not in sys.path:
    sys.path.insert(1, REPO)

from bench_meta_step import Report, accuracy_header, table  # noqa: E402

FAMILIES = ("sinusoid", "linear", "quadratic", "tanh", "abs")
N_SUPPORT, N_TEST_QUERY = 5, 100


def base_estimator(max_iter, seed):
    from skmaml import MAMLRegressor

    return MAMLRegressor(hidden_layer_sizes=(40, 40), inner_lr=0.01, n_inner_steps=5,
                         n_support=N_SUPPORT, n_query=5, max_iter=max_iter,
                         n_iter_no_change=max_iter, random_state=seed)


def fit_kept(estimator, tasks, notes, name):
    """``estimator.fit(tasks)``; if meta-training diverges, the estimator keeps its last finite
    parameters (skmaml's rule), and the table says so rather than the run stopping."""
    try:
        return estimator.fit(tasks)
    except ValueError:
        if getattr(estimator, "stop_reason_", None) != "diverged":
            raise
        notes.append("%s diverged at meta-iteration %d and kept its last finite parameters."
                     % (name, estimator.n_iter_ + 1))
        return estimator


def mean_ci(values):
    from skmaml._stats import mean_confidence_interval

    mean, half = mean_confidence_interval(np.asarray(values, dtype=np.float64))
    return "%.3f ± %.3f" % (mean, half)


def routing_accuracy(routes, truth, n_components, n_families):
    from scipy.optimize import linear_sum_assignment

    counts = np.zeros((n_components, n_families))
    for r, t in zip(routes, truth):
        counts[r, t] += 1
    rows, cols = linear_sum_assignment(-counts)
    return counts[rows, cols].sum() / len(routes)


def routing_purity(routes, truth, n_families):
    """Routing accuracy when each component stands for the family most of its test tasks come
    from (many components may stand for one family): the measure for k other than the number of
    families."""
    counts = np.zeros((max(routes) + 1, n_families))
    for r, t in zip(routes, truth):
        counts[r, t] += 1
    return counts.max(axis=1).sum() / len(routes)


def query_mse(test, predict_task):
    """Each test task's query MSE after adapting on its first N_SUPPORT rows;
    ``predict_task(t, X_support, y_support, X_query)``."""
    return np.array([np.mean((predict_task(t, X[:N_SUPPORT], y[:N_SUPPORT], X[N_SUPPORT:])
                              - y[N_SUPPORT:]) ** 2) for t, (X, y) in enumerate(test)])


def mixture_on(mixture, test):
    """The mixture's query MSE and route of each test task (routed once, then that component
    adapted: what ``mixture.adapt`` does), the query MSE of the component that would have
    served each task best (chosen in hindsight, on the query rows: not attainable, it separates
    what the components can do from what routing picks), and that of the components' predictions
    averaged with the router's probabilities as weights (``combine="average"``)."""
    routes = np.array([mixture.route(X[:N_SUPPORT], y[:N_SUPPORT]) for X, y in test])
    predictions = [np.array([c.adapt(X[:N_SUPPORT], y[:N_SUPPORT]).predict(X[N_SUPPORT:])
                             for c in mixture.estimators_]) for X, y in test]
    every = np.array([np.mean((p - y[N_SUPPORT:]) ** 2, axis=1)
                      for p, (X, y) in zip(predictions, test)])
    averaged = np.array([np.mean((mixture.route_proba(X[:N_SUPPORT], y[:N_SUPPORT]) @ p
                                  - y[N_SUPPORT:]) ** 2) for p, (X, y) in zip(predictions, test)])
    return every[np.arange(len(test)), routes], routes, every.min(axis=1), averaged


def run(report, families, args):
    from skmaml import MAMLMixture
    from skmaml.datasets import make_family_tasks

    k = len(families)
    train, train_fam = make_family_tasks(n_tasks=args.tasks_per_family * k, n_samples=20,
                                         families=families, random_state=args.random_state)
    test, test_fam = make_family_tasks(n_tasks=args.test_per_family * k,
                                       n_samples=N_SUPPORT + N_TEST_QUERY, families=families,
                                       random_state=args.random_state + 1)
    test_codes = np.array([families.index(f) for f in test_fam])
    per_component = args.budget // k
    rows, timings, routing, notes = [], [], {}, []

    def evaluate(name, mse):
        cells = [name, mean_ci(mse), "%.3f" % np.median(mse), "%.2f" % mse.max()]
        cells += ["%.3f" % mse[test_codes == f].mean() for f in range(k)]
        rows.append(cells)
        return mse

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: budgets are fixed on purpose
        t0 = time.perf_counter()
        single = fit_kept(base_estimator(args.budget, args.random_state), train, notes,
                          "one MAML")
        timings.append(("one MAML", args.budget, time.perf_counter() - t0))
        evaluate("one MAML, %d it." % args.budget,
                 query_mse(test, lambda t, Xs, ys, Xq: single.adapt(Xs, ys).predict(Xq)))

        t0 = time.perf_counter()
        mixture = MAMLMixture(base_estimator(per_component, args.random_state), n_components=k,
                              n_rounds=args.n_rounds, random_state=args.random_state,
                              n_jobs=args.n_jobs).fit(train)
        mixture_seconds = time.perf_counter() - t0
        timings.append(("mixture, k = %d" % k, per_component, mixture_seconds))
        if args.n_jobs is None:  # the same fit on 2 workers: its time, and the same model
            t0 = time.perf_counter()
            parallel = MAMLMixture(base_estimator(per_component, args.random_state),
                                   n_components=k, n_rounds=args.n_rounds,
                                   random_state=args.random_state, n_jobs=2).fit(train)
            timings.append(("the same mixture with n_jobs=2", per_component,
                            time.perf_counter() - t0))
            same = np.array_equal(parallel.labels_, mixture.labels_) and all(
                np.array_equal(a.coefs_[0], b.coefs_[0])
                for a, b in zip(parallel.estimators_, mixture.estimators_))
            notes.append("n_jobs=2 gives %s mixture (labels and parameters)."
                         % ("the same" if same else "a DIFFERENT"))
        mse, routes, hindsight, averaged = mixture_on(mixture, test)
        evaluate("mixture, k = %d, %d it. each" % (k, per_component), mse)
        evaluate("  the same, components averaged (combine='average')", averaged)
        evaluate("  its best component per task, in hindsight (not attainable)", hindsight)
        t0 = time.perf_counter()
        one_draw = MAMLMixture(base_estimator(per_component, args.random_state), n_components=k,
                               n_rounds=args.n_rounds, n_assign_draws=1,
                               random_state=args.random_state, n_jobs=args.n_jobs).fit(train)
        one_draw_seconds = time.perf_counter() - t0
        timings.append(("the mixture with n_assign_draws=1", per_component, one_draw_seconds))
        evaluate("mixture, k = %d, assigned by one support draw" % k,
                 mixture_on(one_draw, test)[0])
        routing["mixture, test tasks (5 support rows)"] = routing_accuracy(
            routes, test_codes, mixture.n_components_, k)
        train_codes = np.array([families.index(f) for f in train_fam])
        routing["mixture, training assignment (all rows)"] = routing_accuracy(
            mixture.labels_, train_codes, mixture.n_components_, k)

        t0 = time.perf_counter()
        oracle = [fit_kept(base_estimator(per_component, args.random_state),
                           [task for task, f in zip(train, train_fam) if f == family], notes,
                           "the %s oracle" % family) for family in families]
        oracle_seconds = time.perf_counter() - t0
        timings.append(("oracle (one MAML per family)", per_component, oracle_seconds))
        # One MAML of the per-component budget costs about an oracle model's time.
        notes.append("Training cost: the mixture took %.1f times one MAML of the same "
                     "per-component budget (%d it.; the mean oracle model, %.1f s), %.1f times "
                     "with n_assign_draws=1; the target is at most k + 1 = %d."
                     % (mixture_seconds / (oracle_seconds / k), per_component,
                        oracle_seconds / k, one_draw_seconds / (oracle_seconds / k), k + 1))
        evaluate("oracle: one MAML per family, %d it. each, true family" % per_component,
                 query_mse(test, lambda t, Xs, ys, Xq: oracle[test_codes[t]].adapt(
                     Xs, ys).predict(Xq)))

    report("## %d families: %s" % (k, ", ".join(families)), "")
    report("%d training tasks (%d per family), %d test tasks; total budget %d meta-iterations."
           % (len(train), args.tasks_per_family, len(test), args.budget), "")
    headers = ["method", "query MSE", "median", "worst"] + list(families)
    report(*table(headers, rows, "lrrr" + "r" * k))
    report("")
    report("- Query MSE of new tasks after 5 adaptation steps on 5 support rows (100 query rows): "
           "mean ± 95% CI over test tasks, median and worst task, then the mean per family.")
    for name, value in routing.items():
        report("- Routing accuracy, %s: %.3f (components matched to families one to one)."
               % (name, value))
    for note in notes:
        report("- " + note)
    report("- Training wall time: " + "; ".join("%s %.0f s (%d it. per model)" % (n, s, it)
                                                for n, it, s in timings) + ".")
    report("")


def k_sweep(report, args):
    """The 5-family mixture for several k: query MSE, routing accuracy, and the k a user would
    choose on validation tasks (few-shot MSE of other tasks, never the test tasks)."""
    from skmaml import FewShotScorer, MAMLMixture
    from skmaml.datasets import _flatten, make_family_tasks

    families = FAMILIES
    n_fam = len(families)
    train, _ = make_family_tasks(n_tasks=args.tasks_per_family * n_fam, n_samples=20,
                                 families=families, random_state=args.random_state)
    valid, _ = make_family_tasks(n_tasks=args.test_per_family * n_fam, n_samples=20,
                                 families=families, random_state=args.random_state + 2)
    test, test_fam = make_family_tasks(n_tasks=args.test_per_family * n_fam,
                                       n_samples=N_SUPPORT + N_TEST_QUERY, families=families,
                                       random_state=args.random_state + 1)
    test_codes = np.array([families.index(f) for f in test_fam])
    X_val, y_val, g_val = _flatten(valid)
    scorer = FewShotScorer("neg_mean_squared_error", n_support=N_SUPPORT, random_state=0)
    rows, validation = [], {}
    for k in args.k_values:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            mixture = MAMLMixture(base_estimator(args.budget // k, args.random_state),
                                  n_components=k, n_rounds=args.n_rounds,
                                  random_state=args.random_state, n_jobs=args.n_jobs).fit(train)
            seconds = time.perf_counter() - t0
            validation[k] = -scorer(mixture, X_val, y_val, groups=g_val)
            mse, routes, hindsight, _ = mixture_on(mixture, test)
        accuracy = routing_accuracy(routes, test_codes, max(mixture.n_components_, n_fam),
                                    n_fam)
        rows.append([k, mixture.n_components_, "%.3f" % validation[k], mean_ci(mse),
                     "%.3f" % np.median(mse), "%.2f" % mse.max(), "%.3f" % hindsight.mean(),
                     "%.3f" % accuracy, "%.3f" % routing_purity(routes, test_codes, n_fam),
                     "%.0f" % seconds])
    chosen = min(validation, key=validation.get)
    report("## 5 families, a sweep of k (total budget %d meta-iterations, split over the k "
           "components)" % args.budget, "")
    report(*table(["k", "kept", "validation MSE", "test query MSE", "median", "worst",
                   "best in hindsight", "routing accuracy", "routing purity", "train s"], rows,
                  "rrrrrrrrrr"))
    report("")
    report("- k chosen on %d validation tasks (few-shot MSE, 5 support rows): k = %d."
           % (len(valid), chosen),
           "- Routing accuracy: test tasks routed to their family's component under the best "
           "one-to-one matching (with k < 5 at most k of 5 families can be matched); routing "
           "purity: each component stands for the family most of its test tasks come from (with "
           "k > 5 several components may stand for one family). The best any router can do from "
           "5 points is 0.75 (routing_bound.py).",
           "- Best in hindsight: mean query MSE of the component that serves each test task best "
           "(chosen on its query rows; not attainable).", "")


def draws_sweep(report, args):
    """``n_assign_draws`` over several seeds: the mixture's test query MSE (routed and averaged)
    and training cost for each number of support draws per assignment, on each family count
    (the EM's result moves by about 0.1 between seeds, so one run cannot rank the settings)."""
    from skmaml import MAMLMixture
    from skmaml.datasets import make_family_tasks

    rows = []
    for n in args.families:
        families = FAMILIES[:n]
        train, train_fam = make_family_tasks(n_tasks=args.tasks_per_family * n, n_samples=20,
                                             families=families, random_state=args.random_state)
        test, _ = make_family_tasks(n_tasks=args.test_per_family * n,
                                    n_samples=N_SUPPORT + N_TEST_QUERY, families=families,
                                    random_state=args.random_state + 1)
        first_family = [task for task, f in zip(train, train_fam) if f == families[0]]
        per_component = args.budget // n
        results = {draws: [] for draws in args.draws_values}
        with warnings.catch_warnings():  # compile (or load) the kernels before anything is timed
            warnings.simplefilter("ignore")
            base_estimator(20, 0).fit(first_family[:30])
        for seed in args.seeds:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                base_estimator(per_component, seed).fit(first_family)
                one_maml = time.perf_counter() - t0
                for draws in args.draws_values:
                    t0 = time.perf_counter()
                    mixture = MAMLMixture(base_estimator(per_component, seed), n_components=n,
                                          n_rounds=args.n_rounds, n_assign_draws=draws,
                                          random_state=seed, n_jobs=args.n_jobs).fit(train)
                    cost = (time.perf_counter() - t0) / one_maml
                    mse, _, _, averaged = mixture_on(mixture, test)
                    results[draws].append((mse.mean(), np.median(mse), mse.max(),
                                           averaged.mean(), cost))
        for draws, runs in results.items():
            runs = np.array(runs)
            rows.append([n, draws] + ["%.3f (%s)" % (runs[:, c].mean(),
                                                     ", ".join("%.3f" % v for v in runs[:, c]))
                                      for c in (0, 3)]
                        + ["%.3f" % np.median(runs[:, 1]), "%.1f" % runs[:, 2].max(),
                           "%.1f (%s)" % (runs[:, 4].mean(),
                                          ", ".join("%.1f" % v for v in runs[:, 4]))])
    report("## n_assign_draws over seeds %s (mixture with k = number of families)"
           % ", ".join(str(s) for s in args.seeds), "")
    report(*table(["families", "n_assign_draws", "routed query MSE, mean over seeds (each)",
                   "averaged (combine='average')", "median of the seeds' medians",
                   "worst task of any seed", "cost x one MAML (each)"], rows, "rrlllrr"))
    report("", "- Each seed draws the components' initialisation and episodes (random_state of "
           "the mixture and of its base estimator); the tasks are the same. Cost: the "
           "mixture's training time over that of one MAML of the per-component budget on one "
           "family's tasks, measured in the same run, before the mixtures of that seed.", "")


def real_grouped(report, args):
    """MAMLMixture on MathAchieve (K = 10) with the recipe of ``real_grouped_data.py``'s MAML
    row (its chosen settings), beside that MAML: does a memory help on one real family of tasks?"""
    try:
        import real_grouped_data as rgd

        data = rgd.load_math_achieve()
    except ImportError as exc:
        report("## MathAchieve: skipped (%s; pip install \"skmaml[bench]\")" % exc, "")
        return
    import sklearn
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from skmaml import MAMLMixture, MAMLRegressor, adapt

    X, y, groups = data.X, data.y, data.groups
    train_ids, test_ids = rgd.split_groups(groups, args.random_state)
    train, test = np.isin(groups, train_ids), np.isin(groups, test_ids)
    X_test, y_test = X[test], y[test]
    draws = rgd.episodes(groups[test], 10, args.random_state + 1)
    base = MAMLRegressor(hidden_layer_sizes=(20,), inner_lr=0.01, n_inner_steps=5, n_support=10,
                         max_iter=3000, random_state=args.random_state)
    rows, per_group = [], {}
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, est in [("MAML", base)] + [
                ("mixture, k = %d" % k, MAMLMixture(base, n_components=k,
                                                    random_state=args.random_state))
                for k in (2, 3)]:
            t0 = time.perf_counter()
            model = make_pipeline(StandardScaler(), est).fit(X[train], y[train],
                                                             groups=groups[train])
            seconds = time.perf_counter() - t0
            mse = np.array([np.mean([np.mean((adapt(model, X_test[s], y_test[s]).predict(
                X_test[q]) - y_test[q]) ** 2) for s, q in group_draws])
                for group_draws in draws])
            per_group[name] = mse
            diff = "" if name == "MAML" else mean_ci(mse - per_group["MAML"])
            rows.append([name, mean_ci(mse), "%.2f" % np.median(mse), "%.2f" % mse.max(), diff,
                         "%.0f" % seconds])
    report("## MathAchieve, K = 10 (%d meta-training schools, %d test schools, %d support draws "
           "each)" % (len(train_ids), len(test_ids), len(draws[0])), "")
    report(*table(["method", "test MSE", "median", "worst school", "minus MAML (paired)",
                   "train s"], rows, "lrrrrr"))
    report("", "- The MAML row is real_grouped_data.py's chosen setting (StandardScaler, "
           "hidden_layer_sizes=(20,), inner_lr=0.01, 5 steps); the mixtures wrap it.", "")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 2 families, small budget")
    p.add_argument("--families", default="2,3,5",
                   help="comma-separated numbers of families (the first k of %s)" % (FAMILIES,))
    p.add_argument("--budget", type=int, default=None,
                   help="total meta-iterations per method (default 15000, --quick 600)")
    p.add_argument("--tasks-per-family", type=int, default=None,
                   help="training tasks per family (default 2000, --quick 100)")
    p.add_argument("--test-per-family", type=int, default=None,
                   help="test tasks per family (default 200, --quick 20)")
    p.add_argument("--n-rounds", type=int, default=5, help="EM rounds of the mixture")
    p.add_argument("--n-jobs", type=int, default=None, help="components trained in parallel")
    p.add_argument("--random-state", type=int, default=0)
    p.add_argument("--k-sweep", default="1,2,3,5,8",
                   help="k values of the 5-family sweep ('' to skip; --quick: 1,2)")
    p.add_argument("--draws-sweep", default="",
                   help="comma-separated n_assign_draws values to compare over --seeds on each "
                        "of --families (e.g. '1,2,4'; default: skip)")
    p.add_argument("--seeds", default="0,1,2", help="random states of the --draws-sweep")
    p.add_argument("--skip-methods", action="store_true",
                   help="skip the comparison of methods on --families (run only the studies)")
    p.add_argument("--real", action="store_true",
                   help="also run the mixture on R's MathAchieve (needs the bench extra)")
    p.add_argument("--output", metavar="FILE", help="also write the report (Markdown) to FILE")
    args = p.parse_args(argv)
    args.families = [int(v) for v in ("2" if args.quick else args.families).split(",") if v]
    args.k_values = [int(v) for v in ("1,2" if args.quick else args.k_sweep).split(",") if v]
    args.draws_values = [int(v) for v in args.draws_sweep.split(",") if v]
    args.seeds = [int(v) for v in args.seeds.split(",") if v]
    for name, full, quick in (("budget", 15000, 600), ("tasks_per_family", 2000, 100),
                              ("test_per_family", 200, 20)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    report = Report()
    accuracy_header(report, "Task memory: MAMLMixture on multimodal task families")
    for n in [] if args.skip_methods else args.families:
        run(report, FAMILIES[:n], args)
    if args.k_values:
        k_sweep(report, args)
    if args.draws_values:
        draws_sweep(report, args)
    if args.real:
        real_grouped(report, args)
    report("Total run time of this script: %.0f s." % (time.perf_counter() - start))
    report.write(args.output)


if __name__ == "__main__":
    main()
