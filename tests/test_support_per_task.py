"""``MAMLClassifier(support_per="task")``: ``n_support`` counts rows of a task ("5 labelled rows per
district") instead of rows per class; ``skmaml.datasets.small_tasks`` and
``tasks_from_groups(min_samples_per_class=...)`` tell and drop the groups too small for an episode,
in exact agreement with the estimator; the small-task messages count in good English.
"""

import re
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from helpers import small_classifier
from skmaml import FewShotScorer, MAMLClassifier, MAMLRegressor
from skmaml._kernels._config import ALL_OTHER_ROWS, RANDOM_SPLIT
from skmaml._kernels._sampling import regression_episode_rows
from skmaml._tasks import tasks_from_groups as task_set_from_groups
from skmaml.datasets import make_episodes, small_tasks, tasks_from_groups
from skmaml.plotting import _support_query_splits

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

SEED_HIGH = np.iinfo(np.int64).max
SHRINK = "is more than"  # the warning of a task too small for n_support


def rare_class_data(n_tasks=8, n_rows=20, n_features=3, random_state=0):
    """Flat binary tasks with shared labels {0, 1}; in the even tasks class 1 has a single row."""
    rng = np.random.RandomState(random_state)
    X = rng.normal(size=(n_tasks * n_rows, n_features))
    y = np.empty(n_tasks * n_rows, dtype=np.int64)
    for t in range(n_tasks):
        rows = slice(t * n_rows, (t + 1) * n_rows)
        y[rows] = X[rows] @ rng.normal(size=n_features) > 0
        if t % 2 == 0:
            y[rows] = 0
            y[t * n_rows + rng.randint(n_rows)] = 1
    return X, y, np.repeat(np.arange(n_tasks), n_rows)


def task_classifier(**params):
    return small_classifier(**{"support_per": "task", "n_support": 4, **params})


def fit_quietly(est, *args, **kwargs):
    """Fit with every UserWarning an error (so "no warning" is asserted)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(*args, **kwargs)


def assert_same_model(a, b):
    for W_a, W_b in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        assert W_a.dtype == W_b.dtype and W_a.tobytes() == W_b.tobytes()
    assert a.loss_curve_ == b.loss_curve_


def score_seeds(n_tasks, random_state=0):
    """The per-task seeds of score / FewShotScorer / early stopping (BaseMAML._few_shot_episodes)."""
    return np.random.RandomState(random_state).randint(0, SEED_HIGH, size=n_tasks,
                                                       dtype=np.int64)


# -------------------------------------------------------------------------------------------------
# Episodes: n_support and n_query count rows of the task
# -------------------------------------------------------------------------------------------------


def test_task_episodes_have_n_support_rows_of_the_task():
    X, y, g = rare_class_data()
    est = fit_quietly(task_classifier(n_query=3), X, y, groups=g)
    task_set = task_set_from_groups(X, y, g)
    codes = est._encode_score_targets(task_set)
    n_tasks, sizes = task_set.n_tasks, task_set.sizes()
    support_sizes = np.full(n_tasks, 4, dtype=np.int64)
    batch = np.r_[np.arange(n_tasks), np.arange(n_tasks)]  # each task visited twice
    seeds = np.arange(batch.shape[0], dtype=np.int64) + 7

    # Training: 4 support rows and n_query=3 query rows per task, whatever the classes.
    Xs, ys, s_off, Xq, yq, q_off = est._episode_sampler(codes)(
        task_set.X, codes, task_set.offsets, task_set.fixed_support, batch, seeds, support_sizes,
        3)
    np.testing.assert_array_equal(np.diff(s_off), 4)
    np.testing.assert_array_equal(np.diff(q_off), 3)
    # The compiled sampler and the row indices of scoring draw the same rows: the regression
    # sampler's, labels unchanged.
    s_rows, ys_rows, s_off_rows, q_rows, yq_rows, q_off_rows = est._episode_rows(codes)(
        task_set.offsets, task_set.fixed_support, batch, seeds, support_sizes, 3)
    expected = regression_episode_rows(task_set.offsets, task_set.fixed_support, batch, seeds,
                                       support_sizes, 3)
    np.testing.assert_array_equal(s_rows, expected[0])
    np.testing.assert_array_equal(q_rows, expected[2])
    np.testing.assert_array_equal(Xs, task_set.X[s_rows])
    np.testing.assert_array_equal(Xq, task_set.X[q_rows])
    np.testing.assert_array_equal(ys, codes[s_rows])
    np.testing.assert_array_equal(ys_rows, ys)
    np.testing.assert_array_equal(yq, yq_rows)
    for b, t in enumerate(batch):
        support = s_rows[s_off_rows[b]:s_off_rows[b + 1]]
        query = q_rows[q_off_rows[b]:q_off_rows[b + 1]]
        assert np.all((support >= task_set.offsets[t]) & (support < task_set.offsets[t + 1]))
        assert np.intersect1d(support, query).size == 0

    # Scoring (n_query=None): n_support rows of each task, all the others are its query.
    scored = est._score_tasks(X, y, g, 4, 1)
    np.testing.assert_array_equal(scored.support_sizes, 4)
    s_rows, _, s_off, q_rows, _, q_off = est._few_shot_episodes(scored, 0)
    np.testing.assert_array_equal(np.diff(s_off), 4)
    np.testing.assert_array_equal(np.diff(q_off), sizes - 4)
    assert np.unique(np.r_[s_rows, q_rows]).shape[0] == X.shape[0]


def test_task_support_sets_are_not_stratified():
    """A one-row class is in a support set of 4 of 20 rows in about 1 draw in 5, not always."""
    X, y, g = rare_class_data(n_tasks=1)
    est = fit_quietly(task_classifier(meta_batch_size=1), X, y, groups=g)
    codes = est._encode_score_targets(task_set_from_groups(X, y, g))
    n = 2000
    s_rows, ys, _, _, _, _ = est._episode_rows(codes)(
        np.array([0, 20]), np.array([RANDOM_SPLIT]), np.zeros(n, dtype=np.int64),
        np.arange(n, dtype=np.int64), np.array([4]), ALL_OTHER_ROWS)
    with_rare_class = (ys.reshape(n, 4) == 1).any(axis=1).mean()
    assert abs(with_rare_class - 4 / 20) < 0.03
    stratified = clone(est).set_params(support_per="class")._episode_rows(codes)(
        np.array([0, 20]), np.array([RANDOM_SPLIT]), np.zeros(3, dtype=np.int64),
        np.arange(3, dtype=np.int64), np.array([1]), ALL_OTHER_ROWS)
    assert sorted(stratified[1].tolist()) == [0, 0, 0, 1, 1, 1]  # one shot of each class


def test_shared_fit_on_tasks_where_a_class_has_one_row():
    X, y, g = rare_class_data()
    est = fit_quietly(task_classifier(), X, y, groups=g)  # no small-task warning
    assert est.n_iter_ == 15 and np.isfinite(est.loss_curve_).all()
    assert set(est.classes_) == {0, 1}
    # Per class, the same tasks can give 1 shot of each class only.
    with pytest.warns(UserWarning, match=r"n_support=4 per class is more than 4 of 8 tasks can "
                      r"give.*group 0 has 1 row of class 1, its smallest, and 20 in all, so it "
                      r"uses 1\)"):
        clone(est).set_params(support_per="class").fit(X, y, groups=g)


def test_task_too_small_shrinks_or_fails_with_a_message_per_task():
    X, y, g = rare_class_data(n_tasks=4, n_rows=6)
    with pytest.warns(UserWarning, match=r"^n_support=6 is more than 4 of 4 tasks can give "
                      r"while keeping at least one query row; each of them uses .*\(group 0 has "
                      r"6 rows, so it uses 5\)"):
        task_classifier(n_support=6).fit(X, y, groups=g)
    with pytest.raises(ValueError, match=r"^group 0 has 6 rows: too few for one support row and "
                       r"n_query=6 query rows \(4 tasks are too small\)"):
        task_classifier(n_query=6).fit(X, y, groups=g)


@pytest.mark.bit_identity
def test_same_model_for_any_n_jobs():
    """Tasks heavy enough that a meta-batch is cut into chunks (as test_parallel's)."""
    rng = np.random.RandomState(0)
    tasks = []
    for t in range(12):
        X = rng.normal(size=(120, 5))
        y = (X @ rng.normal(size=5) > 0).astype(int)
        if t % 3 == 0:
            y[:] = 0
            y[rng.randint(120)] = 1
        tasks.append((X, y))
    params = dict(hidden_layer_sizes=(64, 64), n_inner_steps=2, n_support=60, meta_batch_size=12,
                  max_iter=4, random_state=0, support_per="task")
    fitted = [fit_quietly(MAMLClassifier(n_jobs=n_jobs, **params), tasks) for n_jobs in (1, 2, -1)]
    for other in fitted[1:]:
        assert_same_model(fitted[0], other)


@pytest.mark.bit_identity
def test_both_fit_forms_give_the_same_model():
    X, y, g = rare_class_data()
    rows = np.random.RandomState(1).permutation(X.shape[0])
    X, y, g = X[rows], y[rows], np.array([f"district-{c}" for c in "hgfedcba"])[g[rows]]
    from_groups = fit_quietly(task_classifier(), X, y, groups=g)
    from_tasks = fit_quietly(task_classifier(), tasks_from_groups(X, y, g))
    assert_same_model(from_groups, from_tasks)
    assert from_groups.score(X, y, groups=g) == from_tasks.score(X, y, groups=g)


@pytest.mark.bit_identity
def test_fixed_split_tasks_are_unchanged():
    """4-tuple tasks keep their given split: the model is the one of support_per="class"."""
    X, y, g = rare_class_data()
    tasks = [(X[g == t][:6], y[g == t][:6], X[g == t][6:], y[g == t][6:]) for t in range(8)]
    assert_same_model(fit_quietly(task_classifier(), tasks),
                      fit_quietly(task_classifier(support_per="class"), tasks))
    # Mixed with (X, y) tasks, a fixed task's episode is its given split, in order.
    est = fit_quietly(task_classifier(), tasks[:4] + [(X[g == t], y[g == t]) for t in range(4, 8)])
    offsets = np.arange(0, 161, 20)
    fixed = np.r_[np.full(4, 6), np.full(4, RANDOM_SPLIT)]
    s_rows, _, s_off, q_rows, _, q_off = est._episode_rows(np.zeros(160, dtype=np.int64))(
        offsets, fixed, np.arange(8), np.arange(8), np.full(8, 4), ALL_OTHER_ROWS)
    np.testing.assert_array_equal(s_rows[:24], np.concatenate([np.arange(o, o + 6)
                                                               for o in offsets[:4]]))
    np.testing.assert_array_equal(np.diff(s_off), np.r_[np.full(4, 6), np.full(4, 4)])
    np.testing.assert_array_equal(np.diff(q_off), np.r_[np.full(4, 14), np.full(4, 16)])


# -------------------------------------------------------------------------------------------------
# score, FewShotScorer, early stopping and the displays count rows of the task too
# -------------------------------------------------------------------------------------------------


def manual_few_shot_accuracy(est, X, y, g, n_support, random_state=0):
    """Per task: adapt on the n_support rows the uniform sampler draws, accuracy on the rest."""
    task_set = task_set_from_groups(X, y, g)
    n_tasks = task_set.n_tasks
    s_rows, s_off, q_rows, q_off = regression_episode_rows(
        task_set.offsets, task_set.fixed_support, np.arange(n_tasks), score_seeds(n_tasks,
                                                                                  random_state),
        np.full(n_tasks, n_support), ALL_OTHER_ROWS)
    scores = []
    for t in range(n_tasks):
        support, query = s_rows[s_off[t]:s_off[t + 1]], q_rows[q_off[t]:q_off[t + 1]]
        assert support.shape[0] == n_support
        model = est.adapt(task_set.X[support], task_set.y[support])
        scores.append(np.mean(model.predict(task_set.X[query]) == task_set.y[query]))
    return float(np.mean(scores))


def test_score_and_few_shot_scorer_adapt_on_n_support_rows_of_each_task():
    X, y, g = rare_class_data()
    est = fit_quietly(task_classifier(), X, y, groups=g)
    assert est.score(X, y, groups=g) == pytest.approx(manual_few_shot_accuracy(est, X, y, g, 4),
                                                      abs=1e-12)
    expected = manual_few_shot_accuracy(est, X, y, g, 2, random_state=3)
    assert FewShotScorer(n_support=2, random_state=3)(est, X, y, groups=g) == pytest.approx(
        expected, abs=1e-12)
    # The metric path adapts public copies (adapt on all given rows) on the same rows.
    assert FewShotScorer("accuracy", n_support=2, random_state=3)(
        est, X, y, groups=g) == pytest.approx(expected, abs=1e-12)
    # The displays draw the same support sets.
    splits = _support_query_splits(est, [(X[g == t], y[g == t]) for t in range(8)], 2, 3)
    assert [split[0].shape[0] for split in splits] == [2] * 8


def test_early_stopping_validates_on_n_support_rows_of_each_task():
    X, y, g = rare_class_data(n_tasks=10)
    est = fit_quietly(task_classifier(early_stopping=True, validation_fraction=0.3), X, y,
                      groups=g)
    assert len(est.validation_scores_) >= 1
    task_set = task_set_from_groups(X, y, g)
    task_set.targets = est._encode_score_targets(task_set)
    task_set.support_sizes = np.full(10, 4)
    _, valid = est._training_and_validation_tasks(task_set, None, np.random.RandomState(0))
    np.testing.assert_array_equal(valid.support_sizes, 4)
    # Validation tasks of one's own, with a class of one row, need no shrinking either.
    X_val, y_val, g_val = rare_class_data(n_tasks=2, random_state=1)
    fit_quietly(task_classifier(early_stopping=True), X, y, groups=g, X_val=X_val, y_val=y_val,
                groups_val=g_val)


# -------------------------------------------------------------------------------------------------
# The helpers agree with the estimator
# -------------------------------------------------------------------------------------------------


def random_grouped_labels(rng, n_groups=6):
    sizes = rng.randint(1, 13, size=n_groups)
    groups = np.repeat(np.arange(n_groups) * 10, sizes)
    y = rng.choice(["a", "b", "c"], p=[0.6, 0.3, 0.1], size=groups.shape[0])
    y[:3] = ["a", "b", "c"]
    return y, groups


def estimator_verdicts(est, X, y, groups):
    """Per group label: "ok", "shrunk to s" or "rejected", as fit says it (its warning or error
    names the first such group, so each group is fitted beside one large enough for any setting
    of the tests, group -1)."""
    anchor_y = np.repeat(np.unique(y), 20) if y.dtype.kind in "US" else np.arange(60.0)
    anchor_X = np.zeros((anchor_y.shape[0], X.shape[1]))
    verdicts = {}
    for label in np.unique(groups):
        rows = groups == label
        try:
            with warnings.catch_warnings(record=True) as records:
                warnings.simplefilter("always")
                clone(est).fit(np.r_[anchor_X, X[rows]], np.r_[anchor_y, y[rows]],
                               groups=np.r_[np.full(anchor_y.shape[0], -1), groups[rows]])
        except ValueError as exc:
            assert re.match(rf"group {label} has .*: too few", str(exc)), exc
            verdicts[label] = "rejected"
            continue
        shrunk = [str(r.message) for r in records if SHRINK in str(r.message)]
        if shrunk:
            uses = re.search(r"so it uses (-?\d+)", shrunk[0]).group(1)
            verdicts[label] = f"shrunk to {uses}"
        else:
            verdicts[label] = "ok"
    return verdicts


@pytest.mark.parametrize("support_per", ["class", "task"])
@pytest.mark.parametrize("n_query", [None, 1, 2])
def test_small_tasks_reports_exactly_what_the_estimator_rejects_or_shrinks(support_per, n_query):
    rng = np.random.RandomState(0)
    for n_support in (1, 2, 4):
        y, groups = random_grouped_labels(rng)
        X = rng.normal(size=(y.shape[0], 2))
        est = MAMLClassifier(hidden_layer_sizes=(), max_iter=1, meta_batch_size=1,
                             n_support=n_support, n_query=n_query, support_per=support_per,
                             random_state=0)
        report = small_tasks(y, groups, n_support=n_support, n_query=n_query,
                             support_per=support_per)
        expected = {label: "ok" for label in np.unique(groups)}
        for label, largest in zip(report.groups, report.max_n_support):
            expected[label] = "rejected" if largest == 0 else f"shrunk to {largest}"
        assert estimator_verdicts(est, X, y, groups) == expected
        # The reasons are the estimator's words about the group.
        for label, reason in zip(report.groups, report.reasons):
            assert reason.startswith(f"group {label} has ")
        # Dropping the reported groups leaves data the estimator fits as asked.
        keep = ~np.isin(groups, report.groups)
        if keep.any() and np.unique(y[keep]).shape[0] > 1:
            fit_quietly(clone(est).set_params(meta_batch_size=1), X[keep], y[keep],
                        groups=groups[keep])
        if n_query is not None:
            # With n_query given, the rows-per-class (or rows) minimum is the same rule.
            kwargs = ({"min_samples_per_class": n_support + n_query} if support_per == "class"
                      else {"min_samples": n_support + n_query})
            try:
                _, kept = tasks_from_groups(X, y, groups, return_groups=True, **kwargs)
            except ValueError:
                kept = np.array([])
            np.testing.assert_array_equal(kept, np.setdiff1d(np.unique(groups), report.groups))


def test_small_tasks_is_the_rule_of_score_and_of_the_regressor():
    y, groups = random_grouped_labels(np.random.RandomState(1))
    X = np.random.RandomState(2).normal(size=(y.shape[0], 2))
    big = np.isin(groups, small_tasks(y, groups, n_support=1).groups, invert=True)
    est = fit_quietly(MAMLClassifier(hidden_layer_sizes=(), max_iter=1, meta_batch_size=1,
                                     n_support=1), X[big], y[big], groups=groups[big])
    for n_support in (1, 2, 3):
        report = small_tasks(y[big], groups[big], n_support=n_support)
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always")
            FewShotScorer(n_support=n_support)(est, X[big], y[big], groups=groups[big])
        shrunk = [str(r.message) for r in records if SHRINK in str(r.message)]
        assert bool(shrunk) == bool(report.groups.size)
        if shrunk:
            assert f"more than {report.groups.size} of" in shrunk[0]
            assert report.reasons[0] in shrunk[0]
    # support_per="task" is MAMLRegressor.fit's rule.
    y_reg = np.random.RandomState(3).normal(size=y.shape[0])
    for n_support in (3, 6):
        report = small_tasks(y_reg, groups, n_support=n_support, support_per="task")
        expected = {label: "ok" for label in np.unique(groups)}
        for label, largest in zip(report.groups, report.max_n_support):
            expected[label] = "rejected" if largest == 0 else f"shrunk to {largest}"
        regressor = MAMLRegressor(hidden_layer_sizes=(), max_iter=1, meta_batch_size=1,
                                  n_support=n_support)
        assert estimator_verdicts(regressor, X, y_reg, groups) == expected


def test_small_tasks_report():
    district = np.repeat(["north", "south", "west"], [30, 31, 2])
    y = np.r_[np.zeros(15), np.ones(15), np.zeros(30), 1, 0, 1].astype(int)
    report = small_tasks(y, district, n_support=5)
    assert report.groups.tolist() == ["south", "west"]
    assert report.max_n_support.tolist() == [1, 0]
    assert report.reasons == ["group 'south' has 1 row of class 1, its smallest, and 31 in all",
                              "group 'west' has 1 row of class 0, its smallest, and 2 in all"]
    report = small_tasks(y, district, n_support=5, support_per="task")
    assert report.groups.tolist() == ["west"] and report.reasons == ["group 'west' has 2 rows"]
    assert small_tasks(y, district, n_support=1, support_per="task").groups.size == 0
    assert small_tasks(y, district, n_support=5, n_query=11).max_n_support.tolist() == [4, 0, 0]


def test_tasks_from_groups_min_samples_per_class():
    X = np.arange(16.0).reshape(8, 2)
    y = np.array(["x", "y", "x", "x", "y", "y", "x", "x"])
    site = np.array([1, 1, 2, 2, 2, 3, 3, 3])  # every site has one row of some class
    _, labels = tasks_from_groups(X, y, site, min_samples_per_class=1, return_groups=True)
    assert labels.tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match=r"No group has min_samples_per_class=2 rows or more of "
                                         r"each of its classes \(the best has 1 of its smallest\)"):
        tasks_from_groups(X, y, site, min_samples_per_class=2)
    y = np.where(site == 1, "x", y)  # site 1: two rows, both "x"
    tasks, labels = tasks_from_groups(X, y, site, min_samples_per_class=2, return_groups=True)
    assert labels.tolist() == [1]  # a class absent from a group is no limit
    np.testing.assert_array_equal(tasks[0][0], X[:2])
    X_flat, y_flat, g_flat = tasks_from_groups(X, y, site, min_samples_per_class=2, flat=True)
    np.testing.assert_array_equal(g_flat, [1, 1])
    np.testing.assert_array_equal(X_flat, X[:2])
    # Both minimums apply.
    _, labels = tasks_from_groups(X, y, site, min_samples=3, min_samples_per_class=1,
                                  return_groups=True)
    assert labels.tolist() == [2, 3]
    with pytest.raises(ValueError, match=r"No group has min_samples=3 rows or more \(the largest "
                                         r"has 3\) and min_samples_per_class=2"):
        tasks_from_groups(X, y, site, min_samples=3, min_samples_per_class=2)
    with pytest.raises(ValueError, match="Unknown label type"):
        tasks_from_groups(X, np.linspace(0, 1, 8), site, min_samples_per_class=2)


# -------------------------------------------------------------------------------------------------
# Messages, parameter validation, sklearn's common checks
# -------------------------------------------------------------------------------------------------


def test_small_task_messages_count_in_good_english():
    X, y, g = rare_class_data(n_tasks=3, n_rows=2)
    y[:] = [0, 1, 0, 1, 1, 1]  # groups 0 and 1 have 1 row of each class
    with pytest.raises(ValueError, match=r"^group 0 has 1 row of class 0, its smallest, and 2 in "
                                         r"all: too few for one support row per class and at least "
                                         r"one query row \(1 task is too small\)"):
        small_classifier(n_support=1).fit(X[g != 1], y[g != 1], groups=g[g != 1])
    with pytest.warns(UserWarning, match=r"more than 1 of 1 task can give .*; it uses the largest "
                                         r"support set it can \(group 1 has 2 rows, so it uses 1\)"):
        task_classifier(meta_batch_size=1).fit(X[g == 1], y[g == 1], groups=g[g == 1])
    with pytest.raises(ValueError, match=r"class 1 has 1 row, but every class needs n_support \+ "
                                         r"n_query = 2; 1 class is too small"):
        make_episodes(X[:3], np.r_[0, 0, 1], n_way=2, n_support=1, n_query=1)
    # Labels of an object array (a pandas column of strings) are named too.
    labels = np.array(["ok", "fault", "fault", "ok", "ok", "ok"], dtype=object)
    with pytest.raises(ValueError, match=r"group 1 has 1 row of class 'fault', its smallest"):
        small_classifier(n_support=1).fit(X[2:], labels[2:], groups=g[2:])
    with pytest.raises(ValueError, match=r"class 'fault' has 1 row, but"):
        make_episodes(X[2:5], labels[2:5], n_way=2, n_support=1, n_query=1)
    X = np.random.RandomState(0).normal(size=(12, 2))
    y, g = np.r_[0, 0, 1, 1, 2, 2, 3, 3, 7, 7, 7, 7], np.repeat([0, 1, 2], 4)
    with pytest.raises(ValueError, match=r"group 2 has 1 class, expected 2"):
        small_classifier(task_labels="per_task", n_support=1).fit(X, y, groups=g)
    est = small_classifier(task_labels="per_task", n_support=1, meta_batch_size=2).fit(
        X[:8], y[:8], groups=g[:8])
    with pytest.raises(ValueError, match=r"adapt got 1 class but"):
        est.adapt(X[:2], [0, 0])


def test_invalid_support_per_is_rejected():
    X, y, g = rare_class_data(n_tasks=2)
    for bad in ("rows", "per_class", None, 1):
        with pytest.raises(InvalidParameterError, match="support_per"):
            task_classifier(support_per=bad).fit(X, y, groups=g)
    with pytest.raises(InvalidParameterError, match="support_per"):
        small_tasks(y, g, n_support=2, support_per="rows")
    with pytest.raises(InvalidParameterError, match="n_support"):
        small_tasks(y, g, n_support=0)
    with pytest.raises(ValueError, match="Unknown label type"):
        small_tasks(np.linspace(0, 1, y.shape[0]), g, n_support=2)
    message = r"support_per='task' .* with task_labels='per_task'"
    with pytest.raises(ValueError, match=message):
        task_classifier(task_labels="per_task").fit(X, y, groups=g)
    per_task = small_classifier(task_labels="per_task", n_support=1, meta_batch_size=2).fit(
        X, np.r_[y[:20], y[20:] + 2], groups=g)
    with pytest.raises(ValueError, match=message):
        per_task.set_params(support_per="task").score(X, y, groups=g)


# As tests/test_sklearn_integration.py runs them for the default support_per="class": the default
# instance, and a small one that fits the checks' single task well.
@pytest.mark.filterwarnings("ignore:.*without groups:UserWarning")
@pytest.mark.filterwarnings("ignore:n_support=.* is more than:UserWarning")
@pytest.mark.filterwarnings("ignore:meta_batch_size=.* is larger:UserWarning")
@parametrize_with_checks([
    MAMLClassifier(support_per="task"),
    MAMLClassifier(support_per="task", hidden_layer_sizes=(8,), n_support=2, meta_batch_size=1,
                   max_iter=100, meta_lr=0.01, random_state=0),
])
def test_sklearn_common_checks_with_rows_per_task(estimator, check):
    check(estimator)
