"""MAMLMixture: k MAML initialisations found by EM, a new task routed by its support rows.

What is checked: the fit forms, routing, adaptation and few-shot scoring work for regression and
both classifier label regimes; the components share the target encoding and train on the tasks
assigned to them; the same random_state gives the same mixture whatever n_jobs; warm_start grows
the memory and unused components are dropped; clean errors. How good the memory is on task
families is measured by benchmarks/task_memory.py, not asserted here.
"""

import pickle
import warnings

import numpy as np
import pytest
import sklearn
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, GroupKFold

from helpers import classification_data
from skmaml import AveragedModel, FewShotScorer, MAMLClassifier, MAMLMixture, MAMLRegressor, adapt
from skmaml.datasets import _flatten, make_family_tasks

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _families(n_tasks=40, random_state=0, n_samples=20):
    return make_family_tasks(n_tasks=n_tasks, n_samples=n_samples,
                             families=("sinusoid", "linear"), random_state=random_state)


def _mixture(**params):
    base = MAMLRegressor(hidden_layer_sizes=(10,), n_support=5, n_query=5, n_inner_steps=2,
                         max_iter=40, meta_batch_size=5, normalize_y=False, random_state=0)
    defaults = dict(n_components=2, n_rounds=2, random_state=0)
    return MAMLMixture(base, **{**defaults, **params})


def _params(est):
    return np.concatenate([np.ravel(a) for a in est.coefs_ + est.intercepts_])


def _assert_same_mixture(a, b):
    assert a.n_components_ == b.n_components_
    np.testing.assert_array_equal(a.labels_, b.labels_)
    for ca, cb in zip(a.estimators_, b.estimators_):
        np.testing.assert_array_equal(_params(ca), _params(cb))


@pytest.fixture(scope="module")
def fitted():
    tasks, families = _families()
    return _mixture().fit(tasks), tasks, families


def test_fit_route_adapt_score(fitted):
    mixture, tasks, _ = fitted
    assert mixture.n_components_ == 2 and len(mixture.estimators_) == 2
    assert mixture.labels_.shape == (40,) and set(mixture.labels_) == {0, 1}
    assert mixture.task_losses_.shape == (40, 2) and np.isfinite(mixture.task_losses_).all()
    # Each task is assigned to the component of its lowest query loss.
    np.testing.assert_array_equal(mixture.labels_, mixture.task_losses_.argmin(axis=1))
    # The components differ (they trained on different tasks) and share the target encoding.
    a, b = mixture.estimators_
    assert not np.array_equal(_params(a), _params(b))
    assert a.n_features_in_ == b.n_features_in_ == mixture.n_features_in_ == 1
    X, y = tasks[3]
    losses = mixture.support_losses(X[:5], y[:5])
    assert losses.shape == (2,) and np.isfinite(losses).all()
    j = mixture.route(X[:5], y[:5])
    assert j in (0, 1)
    model = mixture.adapt(X[:5], y[:5])
    # the adapted model is the routed component adapted to the support rows
    expected = mixture.estimators_[j].adapt(X[:5], y[:5])
    np.testing.assert_array_equal(model.predict(X[5:]), expected.predict(X[5:]))
    # ``support_loss`` routing: the argmin of support_losses
    plain = clone(mixture).set_params(routing="support_loss").fit(tasks)
    assert plain.router_ is None
    assert plain.route(X[:5], y[:5]) == int(np.argmin(plain.support_losses(X[:5], y[:5])))
    X_test, y_test, g_test = _flatten(_families(10, random_state=1)[0])
    score = mixture.score(X_test, y_test, g_test)
    assert -5 < score <= 1
    # FewShotScorer routes and adapts through the mixture; the default metric is score's.
    assert FewShotScorer(n_support=5)(mixture, X_test, y_test, groups=g_test) == pytest.approx(
        score)
    mse = FewShotScorer("neg_mean_squared_error", n_support=5)(mixture, X_test, y_test,
                                                               groups=g_test)
    assert mse < 0


@pytest.mark.bit_identity
def test_same_mixture_for_both_fit_forms_any_n_jobs_and_after_pickling(fitted):
    mixture, tasks, _ = fitted
    X, y, groups = _flatten(tasks)
    _assert_same_mixture(mixture, _mixture().fit(X, y, groups=groups))
    _assert_same_mixture(mixture, _mixture(n_jobs=2).fit(tasks))
    loaded = pickle.loads(pickle.dumps(mixture))
    Xs, ys = tasks[0][0][:5], tasks[0][1][:5]
    np.testing.assert_array_equal(loaded.adapt(Xs, ys).predict(tasks[0][0]),
                                  mixture.adapt(Xs, ys).predict(tasks[0][0]))


@pytest.mark.parametrize("init", ["worst_served", "adaptation", "random"])
def test_initialisations(init):
    tasks, _ = _families(30)
    mixture = _mixture(init=init, n_components=3, n_rounds=1).fit(tasks)
    assert 1 <= mixture.n_components_ <= 3
    assert np.bincount(mixture.labels_).min() >= 1


@pytest.mark.parametrize("init", ["worst_served", "random"])
def test_every_component_trains_max_iter_meta_iterations(init):
    """The initial round is each component's first: a fresh fit trains each for the base
    estimator's max_iter in all (n_rounds + 1 rounds), a warm-started one for max_iter more."""
    tasks, _ = _families(30)
    mixture = _mixture(init=init, n_components=3, n_rounds=2, warm_start=True)
    mixture.set_params(estimator__max_iter=60).fit(tasks)
    assert [c.n_iter_ for c in mixture.estimators_] == [60] * mixture.n_components_
    mixture.fit(tasks)
    assert [c.n_iter_ for c in mixture.estimators_] == [120] * mixture.n_components_


def test_assignment_draws_are_averaged():
    """task_losses_ is the mean over n_assign_draws support draws: with one draw the losses are
    those of one draw (a different mixture), and 0 draws is refused."""
    tasks, _ = _families(30)
    one = _mixture(n_assign_draws=1, n_rounds=1).fit(tasks)
    four = _mixture(n_assign_draws=4, n_rounds=1).fit(tasks)
    assert one.task_losses_.shape == four.task_losses_.shape == (30, one.n_components_)
    assert not np.allclose(one.task_losses_, four.task_losses_)
    with pytest.raises(ValueError, match="n_assign_draws"):
        _mixture(n_assign_draws=0).fit(tasks)


def test_assignments_before_the_last_score_a_sample_of_tasks(monkeypatch):
    """n_assign_tasks: each assignment but the last scores a fresh sample of that many tasks,
    and the round after it trains the components on those tasks only (together, all of them);
    the last scores every task. A sample of at least every task is the full assignment (the same
    mixture as None); the same seed gives the same mixture whatever n_jobs; too small a sample
    is refused."""
    import skmaml._mixture as mixture_module

    tasks, _ = _families(40)
    trained_on = []
    real_train = mixture_module._train_component

    def recording(component, task_set, *args):
        trained_on.append(sorted(task_set.names))
        return real_train(component, task_set, *args)

    monkeypatch.setattr(mixture_module, "_train_component", recording)
    sampled = _mixture(n_assign_tasks=10, n_rounds=3).fit(tasks)
    # The initial MAML (every task), the grown component, then two components per round.
    assert [len(t) for t in trained_on[:2]] == [40, 5]
    rounds = [trained_on[i] + trained_on[i + 1] for i in range(2, 8, 2)]
    assert [len(r) for r in rounds] == [10, 10, 10]
    assert all(len(set(r)) == 10 for r in rounds) and rounds[1] != rounds[2]
    assert sampled.labels_.shape == (40,) and sampled.task_losses_.shape == (40, 2)
    np.testing.assert_array_equal(sampled.labels_, np.argmin(sampled.task_losses_, axis=1))
    monkeypatch.setattr(mixture_module, "_train_component", real_train)

    _assert_same_mixture(_mixture(n_assign_tasks=40).fit(tasks),
                         _mixture(n_assign_tasks=None).fit(tasks))
    _assert_same_mixture(sampled, _mixture(n_assign_tasks=10, n_rounds=3, n_jobs=2).fit(tasks))
    with pytest.raises(ValueError, match="n_assign_tasks=3 leaves fewer than two tasks"):
        _mixture(n_assign_tasks=3).fit(tasks)


def test_ragged_take():
    """The rows of chosen parts of a ragged array (task subsets, a sample's support draws), in
    the order asked, repeated or empty parts included."""
    from skmaml._tasks import ragged_take

    offsets = np.array([0, 3, 3, 7, 9])
    rows, new = ragged_take(offsets, [3, 0, 2, 1, 0])
    np.testing.assert_array_equal(rows, [7, 8, 0, 1, 2, 3, 4, 5, 6, 0, 1, 2])
    np.testing.assert_array_equal(new, [0, 2, 5, 9, 9, 12])
    rows, new = ragged_take(offsets, np.array([], dtype=np.int64))
    assert rows.shape == (0,) and new.tolist() == [0]


def test_initial_labels_are_used_and_checked():
    tasks, families = _families(30)
    labels = (families == "linear").astype(int)
    mixture = _mixture(init=labels, n_rounds=1).fit(tasks)
    assert mixture.n_components_ == 2
    with pytest.raises(ValueError, match="init as labels must be 30 ints in 0..1"):
        _mixture(init=labels[:10]).fit(tasks)


def test_warm_start_grows_the_memory_and_prints(capsys):
    tasks, _ = _families(30)
    mixture = _mixture(warm_start=True, n_rounds=1, verbose=1).fit(tasks)
    first = [_params(c).copy() for c in mixture.estimators_]
    mixture.set_params(n_components=3).fit(tasks)
    out = capsys.readouterr().out
    assert "adding a component" in out
    assert 2 <= mixture.n_components_ <= 3
    # the kept components continued training
    assert not np.array_equal(_params(mixture.estimators_[0]), first[0])


@pytest.mark.filterwarnings("ignore:MAMLMixture. a component's training diverged:UserWarning")
def test_unused_components_are_dropped(capsys):
    """A component no task prefers at the last assignment is dropped, with a note in verbose
    output. Here one component of a fitted memory is broken (its output far off every target),
    so a warm-started round cannot make any task prefer it."""
    tasks, _ = _families(30)
    mixture = _mixture(n_rounds=1, warm_start=True).fit(tasks)
    assert mixture.n_components_ == 2
    mixture.estimators_[1].intercepts_[-1][:] = 1e6
    mixture.set_params(verbose=1).fit(tasks)
    assert "dropping component(s) [1]: no task uses them" in capsys.readouterr().out
    assert mixture.n_components_ == len(mixture.estimators_) == 1
    assert set(mixture.labels_) == {0}
    assert mixture.task_losses_.shape == (30, 1)


@pytest.mark.parametrize("task_labels", ["shared", "per_task"])
def test_classifier_regimes(task_labels):
    X, y, g = classification_data(n_tasks=12)
    base = MAMLClassifier(hidden_layer_sizes=(8,), n_support=2, meta_batch_size=4, max_iter=20,
                          inner_lr=0.3, task_labels=task_labels, random_state=0)
    mixture = MAMLMixture(base, n_components=2, n_rounds=1, random_state=0).fit(X, y, groups=g)
    model = mixture.adapt(X[g == 0], y[g == 0])
    assert set(model.predict(X[g == 0])) <= set(y[g == 0])
    assert 0 <= mixture.score(X, y, g) <= 1
    # Averaged: the components' class probabilities, weighted by the router's.
    mixture.set_params(combine="average")
    averaged = mixture.adapt(X[g == 0], y[g == 0])
    weights = mixture.route_proba(X[g == 0], y[g == 0])
    expected = sum(w * c.adapt(X[g == 0], y[g == 0]).predict_proba(X[g == 0])
                   for w, c in zip(weights, mixture.estimators_))
    np.testing.assert_allclose(averaged.predict_proba(X[g == 0]), expected, rtol=1e-12)
    np.testing.assert_array_equal(averaged.predict(X[g == 0]),
                                  averaged.classes_[np.argmax(expected, axis=1)])
    assert 0 <= mixture.score(X, y, g) <= 1
    log_loss = FewShotScorer("neg_log_loss", n_support=2)(mixture, X, y, groups=g)
    assert np.isfinite(log_loss) and log_loss < 0


def test_averaged_adaptation(fitted):
    """combine="average": every component adapted, predictions weighted by route_proba (which
    sums to 1 and whose argmax is the route); the few-shot score and scorers use the average; a
    component whose adaptation diverges drops out of it; and it needs the learned router."""
    mixture, tasks, _ = fitted
    averaged_mixture = clone(mixture).set_params(combine="average")
    averaged_mixture.__dict__.update({k: v for k, v in vars(mixture).items()
                                      if k.endswith("_")})  # the same fitted memory
    X, y = tasks[3]
    Xs, ys, Xq = X[:5], y[:5], X[5:]
    weights = mixture.route_proba(Xs, ys)
    assert weights.shape == (2,) and weights.sum() == pytest.approx(1)
    assert np.argmax(weights) == mixture.route(Xs, ys) and 0 < weights.min()
    model = averaged_mixture.adapt(Xs, ys)
    assert isinstance(model, AveragedModel) and not hasattr(model, "predict_proba")
    np.testing.assert_allclose(model.weights_, weights)
    expected = sum(w * c.adapt(Xs, ys).predict(Xq) for w, c in zip(weights, mixture.estimators_))
    np.testing.assert_allclose(model.predict(Xq), expected, rtol=1e-12)
    assert model.score(Xq, y[5:]) == pytest.approx(1 - np.sum((y[5:] - expected) ** 2)
                                                   / np.sum((y[5:] - y[5:].mean()) ** 2))
    X_all, y_all, groups = _flatten(tasks)
    assert averaged_mixture.score(X_all, y_all, groups) != mixture.score(X_all, y_all, groups)
    scorer = FewShotScorer("neg_mean_squared_error", n_support=5)
    assert np.isfinite(scorer(averaged_mixture, X_all, y_all, groups=groups))

    # A component that diverges on the task drops out of the average.
    broken = pickle.loads(pickle.dumps(averaged_mixture))
    broken.estimators_[0].inner_lr = 1e300
    with pytest.raises(ValueError, match="Adaptation diverged"):
        broken.estimators_[0].adapt(Xs, ys)
    alone = broken.adapt(Xs, ys)
    assert len(alone.estimators_) == 1 and alone.weights_.tolist() == [1.0]
    np.testing.assert_array_equal(alone.predict(Xq), mixture.estimators_[1].adapt(Xs, ys)
                                  .predict(Xq))
    broken.estimators_[1].inner_lr = 1e300
    with pytest.raises(ValueError, match="diverged for every component"):
        broken.adapt(Xs, ys)
    with pytest.raises(ValueError, match="needs routing='learned'"):
        _mixture(combine="average", routing="support_loss").fit(tasks)
    with pytest.raises(ValueError, match="route_proba needs routing='learned'"):
        broken.set_params(routing="support_loss").route_proba(Xs, ys)


def test_grid_search_tunes_the_base_estimator():
    tasks, _ = _families(30)
    X, y, groups = _flatten(tasks)
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        search = GridSearchCV(_mixture(n_rounds=1), {"estimator__inner_lr": [0.01, 0.05]},
                              scoring=FewShotScorer("neg_mean_squared_error", n_support=5),
                              cv=GroupKFold(2)).fit(X, y, groups=groups)
    assert search.best_params_["estimator__inner_lr"] in (0.01, 0.05)
    assert isinstance(adapt(search.best_estimator_, X[:5], y[:5]), MAMLRegressor)


def test_clear_errors():
    tasks, _ = _families(4)
    with pytest.raises(ValueError, match="n_components=5 is more than the 4 training tasks"):
        _mixture(n_components=5).fit(tasks)
    with pytest.raises(TypeError, match="needs a MAMLRegressor or MAMLClassifier"):
        MAMLMixture(MAMLMixture(MAMLRegressor())).fit(tasks)
    with pytest.raises(ValueError, match="routing"):
        _mixture(routing="nearest").fit(tasks)
    with pytest.raises(sklearn.exceptions.NotFittedError):
        _mixture().route(tasks[0][0][:5], tasks[0][1][:5])


def test_routing_survives_a_component_that_diverges_on_the_task(fitted):
    """A support set on which a component's adaptation overflows is routed elsewhere, not an
    error: that component's routing features and support loss are infinite."""
    mixture, tasks, _ = fitted
    X, y = tasks[0][0][:5], 1e200 * np.ones(5)
    assert np.isfinite(mixture.support_losses(X, np.ones(5))).all()
    with pytest.raises(ValueError, match="Adaptation diverged"):  # what routing must absorb
        mixture.estimators_[0].adapt(X, y, n_inner_steps=10)
    assert np.isposinf(mixture.support_losses(X, y, n_inner_steps=10)).all()
    X_kernel, y_kernel, _ = mixture.estimators_[0]._adapt_input(X, y)
    features = mixture._routing_features(X_kernel, y_kernel, np.array([0, 5]))
    assert np.isfinite(features).all() and features.max() == np.log(1e300)  # a capped value
    assert mixture.route(X, y) in (0, 1)


def test_batched_routing_features_equal_one_adaptation_at_a_time(fitted):
    """The routing features of a batch of support sets (one kernel call per component) are the
    losses of adapting each component to each task by hand: after 0, 1, N and 2N steps, and
    leave one row out."""
    mixture, tasks, _ = fitted
    supports = [(X[:k], y[:k]) for (X, y), k in zip(tasks[:4], (5, 3, 1, 4))]
    first = mixture.estimators_[0]
    Xs = np.vstack([X for X, _ in supports])
    ys = np.vstack([first._adapt_input(X, y)[1] for X, y in supports])
    s_off = np.concatenate([[0], np.cumsum([len(y) for _, y in supports])])
    features = mixture._routing_features(Xs, ys, s_off)
    assert features.shape == (4, 6 * mixture.n_components_)

    def loss(component, steps, X, y, X_eval, y_eval):
        adapted = component.adapt(X, y, n_inner_steps=steps)
        return np.mean((adapted.predict(X_eval) - y_eval) ** 2) / float(component._y_scale[0]) ** 2

    for t, (X, y) in enumerate(supports):
        for j, c in enumerate(mixture.estimators_):
            n = c.n_inner_steps
            expected = [loss(c, steps, X, y, X, y) for steps in (0, 1, n, 2 * n)]
            if len(y) >= 2:
                held_out = [loss(c, n, np.delete(X, i, 0), np.delete(y, i), X[i:i + 1],
                                 y[i:i + 1])
                            for i in range(len(y))]
            else:
                held_out = [expected[2]]
            expected += [np.mean(held_out), np.max(held_out)]
            np.testing.assert_allclose(features[t, 6 * j:6 * j + 6], np.log(expected),
                                       rtol=1e-6, atol=1e-9)
