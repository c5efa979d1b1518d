"""Tests of skmaml.datasets: task generators, task builders, and their docstring examples."""

import doctest
import warnings

import numpy as np
import pytest
from numpy.polynomial import polynomial
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import InvalidParameterError

import skmaml.datasets
from skmaml.datasets import (
    make_episodes,
    make_family_tasks,
    make_linear_tasks,
    make_multimodal_tasks,
    make_polynomial_tasks,
    make_sinusoid_tasks,
    split_classes,
    tasks_from_groups,
)

GENERATORS = [make_sinusoid_tasks, make_linear_tasks, make_polynomial_tasks,
              make_multimodal_tasks, make_family_tasks]


def _tasks_of(generator, **kwargs):
    """The list of tasks of a generator (make_multimodal_tasks and make_family_tasks also return
    the modes or families)."""
    out = generator(**kwargs)
    return out[0] if generator in (make_multimodal_tasks, make_family_tasks) else out


def test_doctests():
    """The Examples sections of skmaml.datasets run and give the documented output."""
    result = doctest.testmod(skmaml.datasets, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


# -------------------------------------------------------------------------------------------------
# Generators
# -------------------------------------------------------------------------------------------------


def test_sinusoid_follows_the_paper_distribution():
    tasks, params = make_sinusoid_tasks(n_tasks=500, n_samples=30, return_params=True,
                                        random_state=0)
    amplitude, phase = params[:, 0], params[:, 1]
    assert amplitude.min() >= 0.1 and amplitude.max() <= 5.0
    assert phase.min() >= 0.0 and phase.max() <= np.pi
    # Spread over the whole ranges, not a corner of them.
    assert amplitude.min() < 0.5 and amplitude.max() > 4.5
    assert phase.min() < 0.3 and phase.max() > np.pi - 0.3
    for (X, y), (a, phi) in zip(tasks, params):
        assert X.shape == (30, 1) and y.shape == (30,)
        assert X.min() >= -5.0 and X.max() <= 5.0
        np.testing.assert_allclose(y, a * np.sin(X[:, 0] - phi))


def test_sinusoid_ranges_and_noise():
    tasks, params = make_sinusoid_tasks(n_tasks=20, n_samples=50, amplitude_range=(1, 1),
                                        phase_range=(0, 0), x_range=(0, 1), noise=0.5,
                                        return_params=True, random_state=0)
    np.testing.assert_array_equal(params, np.tile([1.0, 0.0], (20, 1)))
    residual = np.concatenate([y - np.sin(X[:, 0]) for X, y in tasks])
    assert 0.4 < residual.std() < 0.6


def test_linear_tasks_match_their_parameters():
    tasks, params = make_linear_tasks(n_tasks=30, n_samples=8, n_features=3, slope_range=(-1, 2),
                                      intercept_range=(5, 6), x_range=(0, 1), return_params=True,
                                      random_state=0)
    assert params.shape == (30, 4)
    assert params[:, :3].min() >= -1 and params[:, :3].max() <= 2
    assert params[:, 3].min() >= 5 and params[:, 3].max() <= 6
    for (X, y), p in zip(tasks, params):
        assert X.shape == (8, 3)
        np.testing.assert_allclose(y, X @ p[:3] + p[3])


def test_polynomial_tasks_match_their_coefficients():
    tasks, coefs = make_polynomial_tasks(n_tasks=20, n_samples=10, degree=3, return_params=True,
                                         random_state=0)
    assert coefs.shape == (20, 4)
    assert np.abs(coefs).max() <= 1
    for (X, y), c in zip(tasks, coefs):
        assert X.min() >= -1 and X.max() <= 1
        np.testing.assert_allclose(y, polynomial.polyval(X[:, 0], c))


def test_polynomial_per_power_coef_range():
    _, coefs = make_polynomial_tasks(n_tasks=50, degree=2, coef_range=[(0, 0), (-1, 1), (2, 3)],
                                     return_params=True, random_state=0)
    assert np.all(coefs[:, 0] == 0)
    assert np.abs(coefs[:, 1]).max() <= 1
    assert coefs[:, 2].min() >= 2 and coefs[:, 2].max() <= 3
    with pytest.raises(ValueError, match=r"degree \+ 1, 2\) = \(3, 2\)"):
        make_polynomial_tasks(degree=2, coef_range=[(0, 1), (0, 1)])
    tasks = make_polynomial_tasks(n_tasks=3, degree=0, coef_range=(2, 2), random_state=0)
    np.testing.assert_array_equal(tasks[0][1], np.full(20, 2.0))


def test_multimodal_modes_and_params():
    tasks, modes, params = make_multimodal_tasks(n_tasks=200, n_samples=15, return_params=True,
                                                 random_state=0)
    assert modes.shape == (200,) and set(modes.tolist()) == {"sinusoid", "linear"}
    assert 60 < (modes == "sinusoid").sum() < 140
    for (X, y), mode, (a, b) in zip(tasks, modes, params):
        expected = a * np.sin(X[:, 0] - b) if mode == "sinusoid" else a * X[:, 0] + b
        np.testing.assert_allclose(y, expected)
    linear = params[modes == "linear"]
    assert np.abs(linear).max() <= 3


def test_multimodal_weights():
    _, modes = make_multimodal_tasks(n_tasks=50, weights=[0, 1], random_state=0)
    assert set(modes.tolist()) == {"linear"}
    _, modes = make_multimodal_tasks(n_tasks=50, weights=[3, 0], random_state=0)
    assert set(modes.tolist()) == {"sinusoid"}
    with pytest.raises(ValueError, match="weights must be 2 non-negative"):
        make_multimodal_tasks(weights=[1, -1])
    with pytest.raises(ValueError, match="weights must be 2"):
        make_multimodal_tasks(weights=[1, 1, 1])


@pytest.mark.parametrize("generator", GENERATORS)
def test_flat_is_the_list_of_tasks_concatenated(generator):
    tasks = _tasks_of(generator, n_tasks=7, n_samples=6, random_state=0)
    out = generator(n_tasks=7, n_samples=6, flat=True, random_state=0)
    X, y, groups = out[:3]
    np.testing.assert_array_equal(X, np.concatenate([t[0] for t in tasks]))
    np.testing.assert_array_equal(y, np.concatenate([t[1] for t in tasks]))
    np.testing.assert_array_equal(groups, np.repeat(np.arange(7), 6))


@pytest.mark.parametrize("generator", GENERATORS)
def test_random_state_handling(generator):
    first = _tasks_of(generator, n_tasks=5, n_samples=4, random_state=42)
    again = _tasks_of(generator, n_tasks=5, n_samples=4, random_state=42)
    from_rng = _tasks_of(generator, n_tasks=5, n_samples=4,
                         random_state=np.random.RandomState(42))
    other = _tasks_of(generator, n_tasks=5, n_samples=4, random_state=43)
    for a, b, c in zip(first, again, from_rng):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], c[1])
    assert not np.array_equal(first[0][1], other[0][1])
    # A shared RandomState advances: two calls give different tasks.
    rng = np.random.RandomState(0)
    one = _tasks_of(generator, n_tasks=2, n_samples=4, random_state=rng)
    two = _tasks_of(generator, n_tasks=2, n_samples=4, random_state=rng)
    assert not np.array_equal(one[0][0], two[0][0])


@pytest.mark.parametrize("generator", GENERATORS)
def test_parameter_validation(generator):
    with pytest.raises(InvalidParameterError, match="n_tasks"):
        generator(n_tasks=0)
    with pytest.raises(InvalidParameterError, match="noise"):
        generator(noise=-1.0)
    with pytest.raises(ValueError, match="x_range must be a pair"):
        generator(x_range=(1, 0))


ALL_FAMILIES = ("sinusoid", "linear", "quadratic", "tanh", "abs")


def _family_y(family, p, x):
    """The noiseless targets of a make_family_tasks task, written out from its docstring."""
    if family == "sinusoid":
        return p[0] * np.sin(x - p[1])
    if family == "linear":
        return p[0] * x + p[1]
    if family == "quadratic":
        return p[0] * (x - p[1]) ** 2 + p[2]
    if family == "tanh":
        return p[0] * np.tanh(x - p[1]) + p[2]
    assert family == "abs"
    return p[0] * np.abs(x - p[1]) + p[2]


def test_family_tasks_shapes_and_dtypes():
    tasks, families, params = make_family_tasks(n_tasks=12, n_samples=7, return_params=True,
                                                random_state=0)
    assert isinstance(tasks, list) and len(tasks) == 12
    for X, y in tasks:
        assert X.shape == (7, 1) and y.shape == (7,)
        assert X.dtype == np.float64 and y.dtype == np.float64
        assert X.min() >= -5.0 and X.max() <= 5.0
    assert isinstance(families, np.ndarray) and families.shape == (12,)
    assert families.dtype.kind == "U"
    assert set(families.tolist()) == set(ALL_FAMILIES)
    assert params.shape == (12, 4) and params.dtype == np.float64
    X, y, groups, flat_families = make_family_tasks(n_tasks=12, n_samples=7, flat=True,
                                                    random_state=0)
    assert X.shape == (84, 1) and y.shape == (84,) and groups.shape == (84,)
    np.testing.assert_array_equal(groups, np.repeat(np.arange(12), 7))
    np.testing.assert_array_equal(flat_families, families)
    X, y, groups, _, flat_params = make_family_tasks(n_tasks=12, n_samples=7, flat=True,
                                                     return_params=True, random_state=0)
    np.testing.assert_array_equal(flat_params, params)
    np.testing.assert_array_equal(y, np.concatenate([t[1] for t in tasks]))


@pytest.mark.parametrize("n_tasks, families, expected", [
    (10, ("sinusoid", "linear", "abs"), [4, 3, 3]),
    (10, ("abs", "linear", "sinusoid"), [4, 3, 3]),
    (11, ("tanh", "quadratic", "linear"), [4, 4, 3]),
    (1000, ALL_FAMILIES, [200] * 5),
    (7, ALL_FAMILIES, [2, 2, 1, 1, 1]),
    (2, ALL_FAMILIES, [1, 1, 0, 0, 0]),
    (5, ("quadratic",), [5]),
])
def test_family_tasks_come_in_equal_shares(n_tasks, families, expected):
    """Exactly n_tasks // F of each family, the remainder to the first families in order."""
    _, labels = make_family_tasks(n_tasks=n_tasks, n_samples=3, families=families, random_state=0)
    assert [int((labels == f).sum()) for f in families] == expected
    assert set(labels.tolist()) <= set(families)


def test_family_tasks_are_shuffled():
    _, labels = make_family_tasks(n_tasks=100, n_samples=2, random_state=0)
    in_blocks = np.repeat(np.asarray(ALL_FAMILIES), 20)
    assert not np.array_equal(labels, in_blocks)
    # Every family shows up among the first 20 tasks: not blocks in families order.
    assert set(labels[:20].tolist()) == set(ALL_FAMILIES)
    _, other = make_family_tasks(n_tasks=100, n_samples=2, random_state=1)
    assert not np.array_equal(labels, other)


def test_family_tasks_match_their_formulas_and_ranges():
    tasks, families, params = make_family_tasks(n_tasks=500, n_samples=10, noise=0.0,
                                                return_params=True, random_state=0)
    for (X, y), family, p in zip(tasks, families, params):
        n_params = 2 if family in ("sinusoid", "linear") else 3
        assert np.isfinite(p[:n_params]).all() and np.isnan(p[n_params:]).all()
        np.testing.assert_allclose(y, _family_y(family, p, X[:, 0]), rtol=1e-12, atol=1e-12)
    of = {f: params[families == f] for f in ALL_FAMILIES}
    amplitude, phase = of["sinusoid"][:, 0], of["sinusoid"][:, 1]
    assert amplitude.min() >= 0.1 and amplitude.max() <= 5.0
    assert phase.min() >= 0.0 and phase.max() <= np.pi
    assert np.abs(of["linear"][:, :2]).max() <= 3.0
    curvature = of["quadratic"][:, 0]
    assert np.abs(curvature).min() >= 0.02 and np.abs(curvature).max() <= 0.15
    assert 20 < (curvature > 0).sum() < 80  # a random sign: both, about half each
    assert np.abs(of["quadratic"][:, 1:3]).max() <= 3.0
    assert np.abs(of["tanh"][:, :3]).max() <= 3.0
    assert np.abs(of["abs"][:, 0]).max() <= 1.0 and np.abs(of["abs"][:, 1:3]).max() <= 3.0
    # Spread over the ranges, not a corner of them.
    assert of["tanh"][:, 0].min() < -2.5 and of["tanh"][:, 0].max() > 2.5
    assert of["abs"][:, 0].min() < -0.8 and of["abs"][:, 0].max() > 0.8


def test_family_tasks_x_range():
    tasks = make_family_tasks(n_tasks=10, n_samples=20, x_range=(2, 3), random_state=0)[0]
    X = np.concatenate([t[0] for t in tasks])
    assert X.min() >= 2 and X.max() <= 3


def test_family_tasks_noise():
    """Default noise: Gaussian, sd 0.3, around the noiseless formula of each task's parameters."""
    tasks, families, params = make_family_tasks(n_tasks=300, n_samples=20, return_params=True,
                                                random_state=0)
    residual = np.concatenate([y - _family_y(f, p, X[:, 0])
                               for (X, y), f, p in zip(tasks, families, params)])
    assert residual.shape == (6000,)
    assert 0.27 < residual.std() < 0.33
    assert abs(residual.mean()) < 0.03
    tasks, families, params = make_family_tasks(n_tasks=100, n_samples=20, noise=1.5,
                                                return_params=True, random_state=0)
    residual = np.concatenate([y - _family_y(f, p, X[:, 0])
                               for (X, y), f, p in zip(tasks, families, params)])
    assert 1.35 < residual.std() < 1.65


def test_family_tasks_random_state():
    first = make_family_tasks(n_tasks=20, n_samples=5, return_params=True, random_state=3)
    again = make_family_tasks(n_tasks=20, n_samples=5, return_params=True,
                              random_state=np.random.RandomState(3))
    other = make_family_tasks(n_tasks=20, n_samples=5, return_params=True, random_state=4)
    for (Xa, ya), (Xb, yb) in zip(first[0], again[0]):
        np.testing.assert_array_equal(Xa, Xb)
        np.testing.assert_array_equal(ya, yb)
    np.testing.assert_array_equal(first[1], again[1])
    np.testing.assert_array_equal(first[2], again[2])
    assert not np.array_equal(first[1], other[1])
    assert not np.array_equal(first[0][0][0], other[0][0][0])


def test_family_order_is_fixed_by_the_seed():
    """The families are drawn first: x_range and noise do not change which task is which."""
    _, labels = make_family_tasks(n_tasks=50, n_samples=5, random_state=7)
    for kwargs in [dict(x_range=(0, 1)), dict(noise=0.0), dict(noise=2.0, x_range=(-1, 1)),
                   dict(n_samples=30)]:
        _, again = make_family_tasks(n_tasks=50, **{"n_samples": 5, **kwargs}, random_state=7)
        np.testing.assert_array_equal(again, labels)


def test_family_tasks_accept_any_sequence_of_names():
    for families in [["tanh", "abs"], np.array(["tanh", "abs"]), ("tanh", "abs")]:
        _, labels = make_family_tasks(n_tasks=4, n_samples=3, families=families, random_state=0)
        assert sorted(labels.tolist()) == ["abs", "abs", "tanh", "tanh"]
        assert all(type(f) is np.str_ for f in labels)


def test_family_tasks_errors():
    with pytest.raises(ValueError, match=r"families has unknown names \['cos'\]; the families are"):
        make_family_tasks(families=("sinusoid", "cos"))
    with pytest.raises(ValueError, match=r"unknown names \[3\]"):
        make_family_tasks(families=("sinusoid", 3))
    with pytest.raises(ValueError, match=r"families must be distinct; \['linear'\] appears more "
                                         r"than once in \('linear', 'abs', 'linear'\)"):
        make_family_tasks(families=("linear", "abs", "linear"))
    with pytest.raises(ValueError, match="families must be a non-empty sequence of names"):
        make_family_tasks(families=())
    with pytest.raises(ValueError, match="families must be a non-empty sequence of names"):
        make_family_tasks(families=np.array([["linear", "abs"]]))
    with pytest.raises(ValueError, match="'families' parameter of make_family_tasks must be an "
                                         "array-like. Got 'linear'"):
        make_family_tasks(families="linear")
    with pytest.raises(ValueError, match="'n_tasks' parameter of make_family_tasks must be an int "
                                         r"in the range \[1, inf\)\. Got 0"):
        make_family_tasks(n_tasks=0)
    with pytest.raises(ValueError, match="'noise' parameter of make_family_tasks must be a float "
                                         r"in the range \[0(\.0)?, inf\)\. Got -0.1"):
        make_family_tasks(noise=-0.1)
    with pytest.raises(ValueError, match="x_range must be a pair"):
        make_family_tasks(x_range=(0, np.inf))


def test_sinusoid_first_tasks_do_not_depend_on_n_tasks():
    short = make_sinusoid_tasks(n_tasks=3, random_state=0)
    long = make_sinusoid_tasks(n_tasks=10, random_state=0)
    for a, b in zip(short, long):
        np.testing.assert_array_equal(a[1], b[1])


def _fit_quietly(est, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(*args, **kwargs)


def test_flat_and_list_forms_fit_the_same_model():
    from skmaml import MAMLRegressor

    tasks = make_linear_tasks(n_tasks=12, n_samples=10, n_features=2, random_state=0)
    X, y, groups = make_linear_tasks(n_tasks=12, n_samples=10, n_features=2, flat=True,
                                     random_state=0)
    params = dict(hidden_layer_sizes=(8,), n_support=5, meta_batch_size=4, max_iter=6,
                  random_state=0)
    a = _fit_quietly(MAMLRegressor(**params), tasks)
    b = _fit_quietly(MAMLRegressor(**params), X, y, groups=groups)
    for Wa, Wb in zip(a.coefs_, b.coefs_):
        np.testing.assert_array_equal(Wa, Wb)


# -------------------------------------------------------------------------------------------------
# tasks_from_groups
# -------------------------------------------------------------------------------------------------


def test_tasks_from_groups_order_and_rows():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(40, 3))
    y = rng.normal(size=40)
    groups = rng.choice([7, 3, 11, 5], size=40)
    tasks, labels = tasks_from_groups(X, y, groups, return_groups=True)
    np.testing.assert_array_equal(labels, [3, 5, 7, 11])
    for (X_t, y_t), label in zip(tasks, labels):
        rows = np.flatnonzero(groups == label)  # rows in their original order
        np.testing.assert_array_equal(X_t, X[rows])
        np.testing.assert_array_equal(y_t, y[rows])


def test_tasks_from_groups_min_samples_and_flat():
    X = np.arange(20.0).reshape(10, 2)
    y = np.arange(10.0)
    groups = np.array(["a", "b", "a", "c", "a", "b", "c", "a", "d", "c"])
    tasks, labels = tasks_from_groups(X, y, groups, min_samples=3, return_groups=True)
    assert labels.tolist() == ["a", "c"]
    assert [t[1].tolist() for t in tasks] == [[0, 2, 4, 7], [3, 6, 9]]
    X_flat, y_flat, g_flat = tasks_from_groups(X, y, groups, min_samples=3, flat=True)
    keep = np.isin(groups, ["a", "c"])
    np.testing.assert_array_equal(X_flat, X[keep])
    np.testing.assert_array_equal(y_flat, y[keep])
    np.testing.assert_array_equal(g_flat, groups[keep])
    with pytest.raises(ValueError, match="No group has min_samples=5"):
        tasks_from_groups(X, y, groups, min_samples=5)


def test_tasks_from_groups_errors():
    X = np.zeros((4, 2))
    y = np.zeros(4)
    with pytest.raises(ValueError, match="one value per row"):
        tasks_from_groups(X, y, [0, 1, 2])
    with pytest.raises(ValueError, match="missing values"):
        tasks_from_groups(X, y, [0.0, 1.0, np.nan, 1.0])
    with pytest.raises(ValueError, match="missing values"):
        tasks_from_groups(X, y, np.array(["a", None, "b", "a"], dtype=object))
    with pytest.raises(ValueError, match="needs X to be a pandas DataFrame"):
        tasks_from_groups(X, y, "site")
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        tasks_from_groups(X, y[:3], [0, 0, 1, 1])


def test_tasks_from_groups_feeds_the_estimator_like_groups():
    """fit(tasks_from_groups(X, y, g)) is fit(X, y, groups=g): same task order, same rows."""
    from skmaml import MAMLRegressor

    X, y, _ = make_linear_tasks(n_tasks=10, n_samples=8, flat=True, random_state=0)
    site = np.random.RandomState(1).permutation(np.repeat(np.array(list("jihgfedcba")), 8))
    params = dict(hidden_layer_sizes=(6,), n_support=4, meta_batch_size=3, max_iter=5,
                  random_state=0)
    a = _fit_quietly(MAMLRegressor(**params), tasks_from_groups(X, y, site))
    b = _fit_quietly(MAMLRegressor(**params), X, y, groups=site)
    for Wa, Wb in zip(a.coefs_, b.coefs_):
        np.testing.assert_array_equal(Wa, Wb)


def test_tasks_from_groups_dataframe_columns():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"site": ["b", "a", "b", "a", "a"], "x1": np.arange(5.0),
                       "x2": np.arange(5.0) * 2, "target": np.arange(5.0) + 10})
    tasks, labels = tasks_from_groups(df, "target", "site", return_groups=True)
    assert labels.tolist() == ["a", "b"]
    X_a, y_a = tasks[0]
    assert list(X_a.columns) == ["x1", "x2"]
    np.testing.assert_array_equal(np.asarray(y_a), [11.0, 13.0, 14.0])
    # Arrays for y and groups, DataFrame X: X is split as it is.
    tasks = tasks_from_groups(df[["x1"]], df["target"], df["site"])
    assert list(tasks[1][0].columns) == ["x1"]
    with pytest.raises(ValueError, match="'nope' is not a column"):
        tasks_from_groups(df, "target", "nope")


# -------------------------------------------------------------------------------------------------
# split_classes and make_episodes
# -------------------------------------------------------------------------------------------------


def _labelled(n_classes=8, per_class=12, n_features=3, seed=0):
    rng = np.random.RandomState(seed)
    y = np.repeat(np.arange(n_classes) * 10, per_class)  # labels 0, 10, 20, ...: not 0..n-1
    X = rng.normal(size=(y.shape[0], n_features)) + y[:, None] / 10
    return X, y


def test_split_classes():
    y = np.repeat(["ant", "bee", "cat", "dog", "eel"], 3)
    train, test = split_classes(y, test_size=0.4, random_state=0)
    assert len(train) == 3 and len(test) == 2
    assert sorted(train.tolist() + test.tolist()) == ["ant", "bee", "cat", "dog", "eel"]
    assert list(train) == sorted(train) and list(test) == sorted(test)
    train_int, test_int = split_classes(y, test_size=1, random_state=0)
    assert len(test_int) == 1
    again = split_classes(y, test_size=0.4, random_state=0)
    np.testing.assert_array_equal(again[1], test)
    with pytest.raises(ValueError, match="at least one class must be left"):
        split_classes(y, test_size=5)
    with pytest.raises(ValueError, match="at least 2 classes"):
        split_classes(np.zeros(4), test_size=1)
    with pytest.raises(InvalidParameterError, match="test_size"):
        split_classes(y, test_size=1.5)


def test_make_episodes_shapes_and_labels():
    X, y = _labelled()
    train, test = split_classes(y, test_size=3, random_state=0)
    episodes = make_episodes(X, y, n_way=3, n_support=2, n_query=4, n_episodes=25, classes=train,
                             random_state=0)
    assert len(episodes) == 25
    for X_s, y_s, X_q, y_q in episodes:
        assert X_s.shape == (6, 3) and y_s.shape == (6,)
        assert X_q.shape == (12, 3) and y_q.shape == (12,)
        classes, counts = np.unique(y_s, return_counts=True)
        assert classes.shape == (3,) and np.all(counts == 2)
        np.testing.assert_array_equal(np.unique(y_q, return_counts=True)[1], [4, 4, 4])
        np.testing.assert_array_equal(classes, np.unique(y_q))
        assert np.isin(classes, train).all()  # original labels of the allowed classes only
        # Rows are real rows of the dataset with their own labels, support and query disjoint.
        rows_s = [int(np.flatnonzero((X == row).all(axis=1))[0]) for row in X_s]
        rows_q = [int(np.flatnonzero((X == row).all(axis=1))[0]) for row in X_q]
        np.testing.assert_array_equal(y[rows_s], y_s)
        np.testing.assert_array_equal(y[rows_q], y_q)
        assert not set(rows_s) & set(rows_q)
    used = np.unique(np.concatenate([e[1] for e in episodes]))
    np.testing.assert_array_equal(used, train)  # every train class gets used over 25 episodes
    test_episodes = make_episodes(X, y, n_way=3, n_support=1, n_query=2, n_episodes=5,
                                  classes=test, random_state=0)
    for episode in test_episodes:
        np.testing.assert_array_equal(np.unique(episode[1]), test)


def test_make_episodes_two_tuples_and_flat():
    X, y = _labelled()
    episodes = make_episodes(X, y, n_way=4, n_support=3, n_query=2, n_episodes=6, split=False,
                             random_state=0)
    assert all(len(e) == 2 for e in episodes)
    assert episodes[0][0].shape == (20, 3)
    np.testing.assert_array_equal(np.unique(episodes[0][1], return_counts=True)[1], [5] * 4)
    X_f, y_f, groups = make_episodes(X, y, n_way=4, n_support=3, n_query=2, n_episodes=6,
                                     flat=True, random_state=0)
    assert X_f.shape == (120, 3)
    np.testing.assert_array_equal(groups, np.repeat(np.arange(6), 20))
    split = make_episodes(X, y, n_way=4, n_support=3, n_query=2, n_episodes=6, random_state=0)
    # Same draws whatever the output form: the flat rows are support then query of each episode.
    np.testing.assert_array_equal(X_f[:20], np.concatenate([split[0][0], split[0][2]]))
    np.testing.assert_array_equal(episodes[0][1], np.concatenate([split[0][1], split[0][3]]))
    only_shots = make_episodes(X, y, n_way=2, n_support=3, n_query=0, n_episodes=2, split=False,
                               random_state=0)
    assert only_shots[0][0].shape == (6, 3)


def test_make_episodes_random_state():
    X, y = _labelled()
    a = make_episodes(X, y, n_way=3, n_support=1, n_query=2, n_episodes=4, random_state=3)
    b = make_episodes(X, y, n_way=3, n_support=1, n_query=2, n_episodes=4,
                      random_state=np.random.RandomState(3))
    for ea, eb in zip(a, b):
        for pa, pb in zip(ea, eb):
            np.testing.assert_array_equal(pa, pb)


def test_make_episodes_errors():
    X, y = _labelled(n_classes=4, per_class=5)
    with pytest.raises(ValueError, match="class 0 has 5 rows, but every class needs"):
        make_episodes(X, y, n_way=2, n_support=3, n_query=3)
    with pytest.raises(ValueError, match="only 4 classes are available"):
        make_episodes(X, y, n_way=5, n_support=1, n_query=1)
    with pytest.raises(ValueError, match="only 2 classes are available in classes"):
        make_episodes(X, y, n_way=3, n_support=1, n_query=1, classes=[0, 10])
    with pytest.raises(ValueError, match=r"classes \[5\] do not occur in y"):
        make_episodes(X, y, n_way=2, n_support=1, n_query=1, classes=[0, 5])
    with pytest.raises(ValueError, match="n_query must be at least 1"):
        make_episodes(X, y, n_way=2, n_support=1, n_query=0)
    with pytest.raises(InvalidParameterError, match="n_way"):
        make_episodes(X, y, n_way=1)


def test_make_episodes_dataframe():
    pd = pytest.importorskip("pandas")
    X, y = _labelled()
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    X_s, y_s, X_q, y_q = make_episodes(df, y, n_way=2, n_support=2, n_query=2, n_episodes=1,
                                       random_state=0)[0]
    assert isinstance(X_s, pd.DataFrame) and list(X_s.columns) == ["a", "b", "c"]
    X_f, _, _ = make_episodes(df, y, n_way=2, n_support=2, n_query=2, n_episodes=3, flat=True,
                              random_state=0)
    assert isinstance(X_f, pd.DataFrame) and X_f.shape == (24, 3)


def test_episodes_train_a_per_task_classifier_on_held_out_classes():
    from skmaml import MAMLClassifier

    X, y = _labelled(n_classes=10, per_class=15)
    train, test = split_classes(y, test_size=3, random_state=0)
    episodes = make_episodes(X, y, n_way=3, n_support=2, n_query=5, n_episodes=30, classes=train,
                             random_state=0)
    clf = _fit_quietly(MAMLClassifier(hidden_layer_sizes=(8,), n_support=2,
                                      task_labels="per_task", inner_lr=0.1, max_iter=10,
                                      random_state=0), episodes)
    X_s, y_s, X_q, y_q = make_episodes(X, y, n_way=3, n_support=2, n_query=5, n_episodes=1,
                                       classes=test, random_state=1)[0]
    model = clf.adapt(X_s, y_s)
    np.testing.assert_array_equal(model.classes_, np.unique(y_s))
    assert np.isin(model.predict(X_q), test).all()
