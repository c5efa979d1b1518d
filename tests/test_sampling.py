"""Tests of the kernel random generator (skmaml._kernels._random) and of episode sampling
(skmaml._kernels._sampling).

Statistical checks use fixed seeds, so they are deterministic; their thresholds are chi-square
critical values at the 0.999 level, loose enough never to flag a correct generator at these seeds
and tight enough to catch a biased draw (each bias test below fails by a wide margin without the
rejection step it guards).

Episode data: the rows of every test dataset carry their global row id in column 0 of X (and
derived values in the other columns and in the targets), so any sampled row can be traced back to
its source row and checked for coherence (X row, target and label must come from the same row).
"""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skmaml._kernels._random import (
    choice_without_replacement,
    partial_shuffle,
    rng_init,
    rng_integers,
    rng_next_u64,
    rng_seed,
    rng_uniform,
    shuffle_inplace,
)
from skmaml._kernels._sampling import sample_classification_episodes as _sample_classification
from skmaml._kernels._sampling import sample_regression_episodes as _sample_regression
from skmaml._kernels._sampling import task_class_summary


def _support_sizes(n_support, offsets):
    """The kernels take support rows per task; most tests give every task the same number."""
    if np.ndim(n_support) == 0:
        return np.full(offsets.shape[0] - 1, n_support, dtype=np.int64)
    return np.asarray(n_support, dtype=np.int64)


def sample_regression_episodes(X, Y, offsets, fixed, batch, seeds, n_support, n_query):
    return _sample_regression(X, Y, offsets, fixed, batch, seeds,
                              _support_sizes(n_support, offsets), n_query)


def sample_classification_episodes(X, y, offsets, fixed, batch, seeds, n_support, n_query,
                                   n_classes, relabel):
    return _sample_classification(X, y, offsets, fixed, batch, seeds,
                                  _support_sizes(n_support, offsets), n_query, n_classes, relabel)

# chi-square critical values at 0.999 by degrees of freedom
CHI2_999 = {1: 10.83, 2: 13.82, 5: 20.52, 6: 22.46, 9: 27.88, 19: 43.82}


def chi_square(observed, expected):
    observed = np.asarray(observed, dtype=np.float64)
    expected = np.broadcast_to(np.asarray(expected, dtype=np.float64), observed.shape)
    return float(np.sum((observed - expected) ** 2 / expected))


# ---------------------------------------------------------------------------
# pure-Python reference of SplitMix64 seeding + xoshiro256**
# ---------------------------------------------------------------------------

MASK64 = (1 << 64) - 1


def ref_seed(seed):
    state, counter = [], seed & MASK64
    for _ in range(4):
        counter = (counter + 0x9E3779B97F4A7C15) & MASK64
        z = counter
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        state.append(z ^ (z >> 31))
    return state


def ref_rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & MASK64


def ref_next(s):
    result = (ref_rotl((s[1] * 5) & MASK64, 7) * 9) & MASK64
    t = (s[1] << 17) & MASK64
    s[2] ^= s[0]
    s[3] ^= s[1]
    s[1] ^= s[2]
    s[0] ^= s[3]
    s[2] ^= t
    s[3] = ref_rotl(s[3], 45)
    return result


# ---------------------------------------------------------------------------
# generator
# ---------------------------------------------------------------------------


def test_seeding_matches_published_splitmix64_outputs():
    # First outputs of the reference splitmix64.c for seed 1234567.
    expected = [6457827717110365317, 3203168211198807973, 9817491932198370423, 4593380528125082431]
    state = rng_init(1234567)
    assert state.dtype == np.uint64 and state.shape == (4,)
    assert [int(s) for s in state] == expected


@pytest.mark.parametrize("seed", [0, 1, 42, 2**32 + 7, 2**63 - 1])
def test_stream_matches_python_reference(seed):
    state = rng_init(seed)
    ref = ref_seed(seed)
    assert [int(s) for s in state] == ref
    assert [int(rng_next_u64(state)) for _ in range(50)] == [ref_next(ref) for _ in range(50)]


def test_same_seed_same_stream_different_seeds_differ():
    a, b, c = rng_init(7), rng_init(7), rng_init(8)
    draws_a = [int(rng_next_u64(a)) for _ in range(10)]
    assert draws_a == [int(rng_next_u64(b)) for _ in range(10)]
    assert draws_a != [int(rng_next_u64(c)) for _ in range(10)]
    # rng_seed reseeds in place to the same stream as rng_init
    rng_seed(a, 7)
    assert draws_a == [int(rng_next_u64(a)) for _ in range(10)]
    # int64 and uint64 seeds of the same value give the same stream
    assert np.array_equal(rng_init(np.int64(99)), rng_init(np.uint64(99)))


def test_uniform_range_and_chi_square():
    state = rng_init(2024)
    draws = np.array([rng_uniform(state) for _ in range(20000)])
    assert draws.min() >= 0.0 and draws.max() < 1.0
    assert abs(draws.mean() - 0.5) < 0.01
    counts = np.bincount((draws * 20).astype(np.int64), minlength=20)
    assert chi_square(counts, 1000.0) < CHI2_999[19]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 1000, 2**32 - 1, 2**32, 2**32 + 1, 2**40, 2**62 + 12345])
def test_integers_in_range(n):
    state = rng_init(n)
    draws = [rng_integers(state, n) for _ in range(2000)]
    assert min(draws) >= 0 and max(draws) < n
    if n == 1:
        assert set(draws) == {0}
    elif n >= 1000:
        # not stuck in a corner of the range
        assert 0.4 < np.mean(np.array(draws, dtype=np.float64) < n / 2) < 0.6


def test_integers_small_n_chi_square():
    state = rng_init(5)
    draws = np.array([rng_integers(state, 7) for _ in range(14000)])
    assert chi_square(np.bincount(draws, minlength=7), 2000.0) < CHI2_999[6]


@pytest.mark.parametrize(
    "n, event, p_unbiased, p_naive",
    [
        # 32-bit path (Lemire): without rejection, floor(r * n / 2**32) with n = 3 * 2**30 maps two
        # values of r to every k divisible by 3 and one to the others.
        (3 * 2**30, lambda k: k % 3 == 0, 1 / 3, 1 / 2),
        # 64-bit path: without rejection, x % n with n = 3 * 2**61 hits [0, 2**62) from three values of
        # x and the rest of the range from two.
        (3 * 2**61, lambda k: k < 2**62, 2 / 3, 3 / 4),
    ],
)
def test_integers_unbiased_where_naive_methods_are_badly_biased(n, event, p_unbiased, p_naive):
    state = rng_init(11)
    n_draws = 9000
    hits = sum(1 for _ in range(n_draws) if event(rng_integers(state, n)))
    # sd of hits is below 50; the naive method's mean is at least 750 away
    assert abs(hits - n_draws * p_unbiased) < 250 < abs(hits - n_draws * p_naive)


def test_shuffle_is_uniform_over_permutations():
    state = rng_init(3)
    perms = list(itertools.permutations(range(3)))
    counts = np.zeros(len(perms))
    for _ in range(6000):
        arr = np.arange(3, dtype=np.int64)
        shuffle_inplace(state, arr)
        counts[perms.index(tuple(arr))] += 1
    assert chi_square(counts, 1000.0) < CHI2_999[5]


def test_shuffle_any_dtype_is_a_permutation():
    state = rng_init(4)
    arr = np.arange(50, dtype=np.float32)
    shuffle_inplace(state, arr)
    assert arr.dtype == np.float32
    assert not np.array_equal(arr, np.arange(50))
    assert np.array_equal(np.sort(arr), np.arange(50, dtype=np.float32))
    empty = np.empty(0, dtype=np.int64)
    shuffle_inplace(state, empty)  # no-op, no error


def test_partial_shuffle_consumes_no_draw_for_last_step():
    # k = n - 1 and k = n are the same full shuffle (the last Fisher-Yates step is trivial)
    a, b = np.arange(9), np.arange(9)
    partial_shuffle(rng_init(1), a, 8)
    partial_shuffle(rng_init(1), b, 9)
    assert np.array_equal(a, b)


def test_choice_without_replacement():
    state = rng_init(6)
    assert choice_without_replacement(state, 10, 0).shape == (0,)
    full = choice_without_replacement(state, 10, 10)
    assert np.array_equal(np.sort(full), np.arange(10))
    inclusion = np.zeros(10)
    for _ in range(3000):
        sample = choice_without_replacement(state, 10, 3)
        assert sample.dtype == np.int64 and sample.shape == (3,)
        assert len(set(sample.tolist())) == 3 and sample.min() >= 0 and sample.max() < 10
        inclusion[sample] += 1
    assert chi_square(inclusion, 900.0) < CHI2_999[9]


# ---------------------------------------------------------------------------
# test data
# ---------------------------------------------------------------------------


def make_regression_data(sizes, dtype=np.float64, n_features=3, n_outputs=2):
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    ids = np.arange(offsets[-1], dtype=np.float64)
    X = np.ascontiguousarray(ids[:, None] + np.arange(n_features) / 10.0, dtype=dtype)
    Y = np.ascontiguousarray(-ids[:, None] - np.arange(n_outputs) / 10.0, dtype=dtype)
    return X, Y, offsets


def row_ids(X_part):
    return np.rint(X_part[:, 0]).astype(np.int64)


def check_regression_batch(X, Y, offsets, fixed, batch, n_support, n_query, out):
    Xs, Ys, s_off, Xq, Yq, q_off = out
    n_batch = len(batch)
    assert Xs.dtype == X.dtype and Xq.dtype == X.dtype and Ys.dtype == Y.dtype and Yq.dtype == Y.dtype
    assert s_off.dtype == np.int64 and q_off.dtype == np.int64
    assert s_off.shape == (n_batch + 1,) and q_off.shape == (n_batch + 1,)
    assert s_off[0] == 0 and q_off[0] == 0
    assert Xs.shape == (s_off[-1], X.shape[1]) and Ys.shape == (s_off[-1], Y.shape[1])
    assert Xq.shape == (q_off[-1], X.shape[1]) and Yq.shape == (q_off[-1], Y.shape[1])
    # whole rows, coherent between X and Y
    for part_X, part_Y in ((Xs, Ys), (Xq, Yq)):
        ids = row_ids(part_X)
        assert np.array_equal(part_X, X[ids]) and np.array_equal(part_Y, Y[ids])
    for b, t in enumerate(batch):
        first, last = offsets[t], offsets[t + 1]
        support = row_ids(Xs[s_off[b]:s_off[b + 1]])
        query = row_ids(Xq[q_off[b]:q_off[b + 1]])
        if fixed[t] >= 0:
            assert np.array_equal(support, np.arange(first, first + fixed[t]))
            assert np.array_equal(query, np.arange(first + fixed[t], last))
            continue
        assert len(support) == n_support
        assert len(query) == (n_query if n_query >= 0 else last - first - n_support)
        both = np.concatenate([support, query])
        assert np.all((both >= first) & (both < last)), "row from another task"
        assert len(np.unique(both)) == len(both), "support and query overlap or repeat"
        if n_query < 0:
            assert np.array_equal(np.sort(both), np.arange(first, last))


REG_SIZES = [12, 20, 7, 30, 9]
REG_FIXED = np.array([-1, -1, 4, -1, 9], dtype=np.int64)  # task 4: all support, empty query
REG_BATCH = np.array([0, 1, 2, 3, 0, 4, 3], dtype=np.int64)


# ---------------------------------------------------------------------------
# regression episodes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_query", [3, -1])
def test_regression_episode_invariants(dtype, n_query):
    X, Y, offsets = make_regression_data(REG_SIZES, dtype)
    seeds = np.arange(100, 100 + len(REG_BATCH), dtype=np.int64)
    out = sample_regression_episodes(X, Y, offsets, REG_FIXED, REG_BATCH, seeds, 5, n_query)
    check_regression_batch(X, Y, offsets, REG_FIXED, REG_BATCH, 5, n_query, out)


def test_regression_repeated_task_gets_fresh_split():
    X, Y, offsets = make_regression_data(REG_SIZES)
    seeds = np.arange(len(REG_BATCH), dtype=np.uint64)
    Xs, _, s_off, _, _, _ = sample_regression_episodes(X, Y, offsets, REG_FIXED, REG_BATCH, seeds, 5, -1)
    # entries 0 and 4 are both task 0
    assert not np.array_equal(Xs[s_off[0]:s_off[1]], Xs[s_off[4]:s_off[5]])


def test_regression_same_seeds_identical_different_seeds_differ():
    X, Y, offsets = make_regression_data(REG_SIZES)
    seeds = np.array([5, 6, 7, 8, 9, 10, 11], dtype=np.int64)
    first = sample_regression_episodes(X, Y, offsets, REG_FIXED, REG_BATCH, seeds, 5, 3)
    again = sample_regression_episodes(X, Y, offsets, REG_FIXED, REG_BATCH, seeds.copy(), 5, 3)
    other = sample_regression_episodes(X, Y, offsets, REG_FIXED, REG_BATCH, seeds + 1000, 5, 3)
    for a, b in zip(first, again):
        assert np.array_equal(a, b)
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[3], other[3])
    # fixed tasks ignore the seed
    s_off = first[2]
    assert np.array_equal(first[0][s_off[2]:s_off[3]], other[0][s_off[2]:s_off[3]])


def test_regression_episode_depends_only_on_its_task_and_seed():
    # What makes results independent of how a meta-batch is chunked across threads.
    X, Y, offsets = make_regression_data(REG_SIZES)
    seeds = np.arange(20, 20 + len(REG_BATCH), dtype=np.int64)
    whole = sample_regression_episodes(X, Y, offsets, REG_FIXED, REG_BATCH, seeds, 5, 3)
    for b in range(len(REG_BATCH)):
        alone = sample_regression_episodes(X, Y, offsets, REG_FIXED, REG_BATCH[b:b + 1], seeds[b:b + 1], 5, 3)
        assert np.array_equal(alone[0], whole[0][whole[2][b]:whole[2][b + 1]])
        assert np.array_equal(alone[4], whole[4][whole[5][b]:whole[5][b + 1]])


def test_regression_split_is_uniform():
    # 5 rows, 2 support + 1 query: each of the 10 support pairs and each ordered first support row
    # must be equally likely.
    X, Y, offsets = make_regression_data([5])
    n_batch = 3000
    batch = np.zeros(n_batch, dtype=np.int64)
    seeds = np.arange(n_batch, dtype=np.int64)
    Xs, _, _, Xq, _, _ = sample_regression_episodes(X, Y, offsets, np.array([-1]), batch, seeds, 2, 1)
    support = row_ids(Xs).reshape(n_batch, 2)
    pairs = list(itertools.combinations(range(5), 2))
    pair_counts = np.zeros(len(pairs))
    for a, b in support:
        pair_counts[pairs.index((min(a, b), max(a, b)))] += 1
    assert chi_square(pair_counts, n_batch / 10) < CHI2_999[9]
    assert chi_square(np.bincount(support[:, 0], minlength=5), n_batch / 5) < 18.47  # 4 dof
    assert chi_square(np.bincount(row_ids(Xq), minlength=5), n_batch / 5) < 18.47


def test_regression_empty_batch():
    X, Y, offsets = make_regression_data(REG_SIZES)
    empty = np.empty(0, dtype=np.int64)
    Xs, Ys, s_off, Xq, Yq, q_off = sample_regression_episodes(X, Y, offsets, REG_FIXED, empty, empty, 5, 3)
    assert Xs.shape == (0, 3) and Yq.shape == (0, 2)
    assert np.array_equal(s_off, [0]) and np.array_equal(q_off, [0])


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_regression_invariants_random_layouts(data):
    n_support = data.draw(st.integers(1, 4))
    n_query = data.draw(st.sampled_from([-1, 0, 1, 3]))
    need = n_support + max(n_query, 0)
    sizes = data.draw(st.lists(st.integers(need, need + 6), min_size=1, max_size=6))
    fixed = np.array([data.draw(st.sampled_from([-1, 1, size])) for size in sizes], dtype=np.int64)
    batch = np.array(data.draw(st.lists(st.integers(0, len(sizes) - 1), max_size=8)), dtype=np.int64)
    seeds = np.array(data.draw(st.lists(st.integers(0, 2**63 - 1), min_size=len(batch), max_size=len(batch))),
                     dtype=np.int64)
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    X, Y, offsets = make_regression_data(sizes, dtype)
    out = sample_regression_episodes(X, Y, offsets, fixed, batch, seeds, n_support, n_query)
    check_regression_batch(X, Y, offsets, fixed, batch, n_support, n_query, out)


# ---------------------------------------------------------------------------
# classification episodes
# ---------------------------------------------------------------------------

N_CLASSES = 8
# per task: {class: rows}; task 2 is fixed with its first 4 rows as support
CLS_TASKS = [
    {0: 4, 2: 6, 5: 5},
    {1: 7, 3: 4},
    {0: 3, 1: 3},
    {2: 3, 3: 4, 4: 5, 6: 3},
    {7: 9, 0: 3, 5: 4},
]
CLS_FIXED = np.array([-1, -1, 4, -1, -1], dtype=np.int64)
CLS_BATCH = np.array([0, 1, 2, 3, 4, 0, 3], dtype=np.int64)


def make_classification_data(dtype=np.float64, seed=0):
    """Rows of each task in a shuffled (interleaved) class order; X[:, 0] is the row id."""
    rng = np.random.default_rng(seed)
    labels, sizes = [], []
    for task in CLS_TASKS:
        task_labels = np.concatenate([np.full(n, c) for c, n in task.items()])
        labels.append(rng.permutation(task_labels))
        sizes.append(len(task_labels))
    y = np.concatenate(labels).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    ids = np.arange(len(y), dtype=np.float64)
    X = np.ascontiguousarray(ids[:, None] + np.array([0.0, 0.25]), dtype=dtype)
    return X, y, offsets


def sample_cls(X, y, offsets, seeds, n_support=2, n_query=1, relabel=False, batch=CLS_BATCH, fixed=CLS_FIXED):
    return sample_classification_episodes(
        X, y, offsets, fixed, batch, seeds, n_support, n_query, N_CLASSES, relabel
    )


def entry_parts(out, b):
    Xs, ys, s_off, Xq, yq, q_off = out
    return (row_ids(Xs[s_off[b]:s_off[b + 1]]), ys[s_off[b]:s_off[b + 1]],
            row_ids(Xq[q_off[b]:q_off[b + 1]]), yq[q_off[b]:q_off[b + 1]])


def label_map(y, ids, labels):
    """{original class: returned label} of one entry, asserting it is a function."""
    mapping = {}
    for original, returned in zip(y[ids], labels):
        assert mapping.setdefault(int(original), int(returned)) == int(returned), "inconsistent relabelling"
    return mapping


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_query", [1, -1])
@pytest.mark.parametrize("relabel", [False, True])
def test_classification_episode_invariants(dtype, n_query, relabel):
    X, y, offsets = make_classification_data(dtype)
    n_support = 2
    seeds = np.arange(50, 50 + len(CLS_BATCH), dtype=np.int64)
    out = sample_cls(X, y, offsets, seeds, n_support, n_query, relabel)
    Xs, ys, s_off, Xq, yq, q_off = out
    assert Xs.dtype == dtype and Xq.dtype == dtype
    assert ys.dtype == np.int64 and yq.dtype == np.int64 and s_off.dtype == np.int64
    assert np.array_equal(Xs, X[row_ids(Xs)]) and np.array_equal(Xq, X[row_ids(Xq)])
    for b, t in enumerate(CLS_BATCH):
        first, last = offsets[t], offsets[t + 1]
        support, ys_b, query, yq_b = entry_parts(out, b)
        both = np.concatenate([support, query])
        assert np.all((both >= first) & (both < last)), "row from another task"
        assert len(np.unique(both)) == len(both), "support and query overlap or repeat"
        task_classes = np.unique(y[first:last])
        if CLS_FIXED[t] >= 0:
            assert np.array_equal(support, np.arange(first, first + CLS_FIXED[t]))
            assert np.array_equal(query, np.arange(first + CLS_FIXED[t], last))
        else:
            # stratified: exactly n_support per class, n_query per class (or all the rest)
            support_counts = np.bincount(y[support], minlength=N_CLASSES)[task_classes]
            assert np.all(support_counts == n_support)
            if n_query >= 0:
                assert np.all(np.bincount(y[query], minlength=N_CLASSES)[task_classes] == n_query)
            else:
                assert np.array_equal(np.sort(both), np.arange(first, last))
        if relabel:
            mapping = label_map(y, np.concatenate([support, query]), np.concatenate([ys_b, yq_b]))
            assert sorted(mapping) == task_classes.tolist()
            assert sorted(mapping.values()) == list(range(len(task_classes))), "not a bijection to 0..n_way-1"
        else:
            assert np.array_equal(ys_b, y[support]) and np.array_equal(yq_b, y[query])


def test_classification_rows_are_not_grouped_by_class():
    # the support of a task comes in random order, not class by class
    X, y, offsets = make_classification_data()
    batch = np.zeros(200, dtype=np.int64)
    out = sample_cls(X, y, offsets, np.arange(200, dtype=np.int64), batch=batch)
    orders = {tuple(entry_parts(out, b)[1]) for b in range(200)}
    assert len(orders) > 20


def test_classification_same_seeds_identical_different_seeds_differ():
    X, y, offsets = make_classification_data()
    seeds = np.arange(7, 7 + len(CLS_BATCH), dtype=np.int64)
    for relabel in (False, True):
        first = sample_cls(X, y, offsets, seeds, relabel=relabel)
        again = sample_cls(X, y, offsets, seeds.copy(), relabel=relabel)
        other = sample_cls(X, y, offsets, seeds + 1, relabel=relabel)
        for a, b in zip(first, again):
            assert np.array_equal(a, b)
        assert not np.array_equal(first[0], other[0])


def test_classification_relabel_changes_labels_only():
    X, y, offsets = make_classification_data()
    seeds = np.arange(300, 300 + len(CLS_BATCH), dtype=np.int64)
    shared = sample_cls(X, y, offsets, seeds, relabel=False)
    per_task = sample_cls(X, y, offsets, seeds, relabel=True)
    for i in (0, 2, 3, 5):  # Xs, s_offsets, Xq, q_offsets
        assert np.array_equal(shared[i], per_task[i])


def test_classification_episode_depends_only_on_its_task_and_seed():
    X, y, offsets = make_classification_data()
    seeds = np.arange(900, 900 + len(CLS_BATCH), dtype=np.int64)
    whole = sample_cls(X, y, offsets, seeds, relabel=True)
    for b in range(len(CLS_BATCH)):
        alone = sample_cls(X, y, offsets, seeds[b:b + 1], relabel=True, batch=CLS_BATCH[b:b + 1])
        for got, expected in zip(entry_parts(alone, 0), entry_parts(whole, b)):
            assert np.array_equal(got, expected)


@pytest.mark.parametrize("task", [0, 2])  # a random-split task and a fixed task, both 3-way / 2-way
def test_relabel_bijection_is_uniform_and_fresh_per_visit(task):
    X, y, offsets = make_classification_data()
    n_batch = 1200
    batch = np.full(n_batch, task, dtype=np.int64)
    out = sample_cls(X, y, offsets, np.arange(n_batch, dtype=np.int64), relabel=True, batch=batch)
    first, last = offsets[task], offsets[task + 1]
    classes = np.unique(y[first:last]).tolist()
    n_way = len(classes)
    bijections = list(itertools.permutations(range(n_way)))
    counts = np.zeros(len(bijections))
    for b in range(n_batch):
        support, ys_b, query, yq_b = entry_parts(out, b)
        mapping = label_map(y, np.concatenate([support, query]), np.concatenate([ys_b, yq_b]))
        counts[bijections.index(tuple(mapping[c] for c in classes))] += 1
    assert chi_square(counts, n_batch / len(bijections)) < CHI2_999[len(bijections) - 1]


def test_classification_stratified_shots_are_uniform_within_class():
    # task 0, class 2 has 6 rows; with 2 shots each row is in the support with probability 1/3
    X, y, offsets = make_classification_data()
    n_batch = 1500
    out = sample_cls(X, y, offsets, np.arange(n_batch, dtype=np.int64), batch=np.zeros(n_batch, np.int64))
    class_rows = np.flatnonzero(y[offsets[0]:offsets[1]] == 2) + offsets[0]
    support_ids = row_ids(out[0])
    hits = np.array([np.sum(support_ids == r) for r in class_rows])
    assert chi_square(hits, n_batch / 3) < 20.52  # 5 dof


def test_task_class_summary():
    X, y, offsets = make_classification_data()
    # append an empty task
    offsets = np.append(offsets, offsets[-1])
    for t in range(len(offsets) - 1):
        counts = np.bincount(y[offsets[t]:offsets[t + 1]], minlength=N_CLASSES)
        n_way, min_rows = task_class_summary(y, offsets, N_CLASSES)
        assert n_way[t] == (counts > 0).sum()
        assert min_rows[t] == (counts[counts > 0].min() if counts.any() else 0)
    n_way, min_rows = task_class_summary(y, offsets, N_CLASSES)
    assert np.array_equal(n_way, [len(task) for task in CLS_TASKS] + [0])
    assert np.array_equal(min_rows, [min(task.values()) for task in CLS_TASKS] + [0])


def test_support_sizes_per_task():
    """Each random-split task takes its own number of support rows (per class for
    classification); fixed tasks keep their split; the rest of a task is its query."""
    X, Y, offsets = make_regression_data(REG_SIZES)
    sizes = np.arange(1, len(REG_SIZES) + 1)
    seeds = np.arange(len(REG_BATCH), dtype=np.int64)
    _, _, s_off, _, _, q_off = sample_regression_episodes(X, Y, offsets, REG_FIXED, REG_BATCH,
                                                          seeds, sizes, -1)
    task_rows = np.diff(offsets)[REG_BATCH]
    expected_support = np.where(REG_FIXED[REG_BATCH] >= 0, REG_FIXED[REG_BATCH],
                                sizes[REG_BATCH])
    np.testing.assert_array_equal(np.diff(s_off), expected_support)
    np.testing.assert_array_equal(np.diff(q_off), task_rows - expected_support)

    X, y, offsets = make_classification_data()
    shots = np.array([1, 2, 3, 2, 1])
    out = sample_cls(X, y, offsets, np.arange(len(CLS_BATCH)), n_support=shots, n_query=-1)
    for b, t in enumerate(CLS_BATCH):
        support, support_labels, query, _ = entry_parts(out, b)
        if CLS_FIXED[t] >= 0:
            assert support.shape[0] == CLS_FIXED[t]
            continue
        assert sorted(np.unique(support_labels, return_counts=True)[1]) == [shots[t]] * len(
            CLS_TASKS[t])
        assert support.shape[0] + query.shape[0] == sum(CLS_TASKS[t].values())


@pytest.mark.parametrize("n_columns", [1, 2, 5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gather_rows_is_numpys_row_gather(n_columns, dtype):
    """gather_rows (with its one-column path) gives source[rows]: repeated, unsorted, no rows."""
    from skmaml._kernels._sampling import gather_rows

    rng = np.random.default_rng(n_columns)
    source = rng.standard_normal((50, n_columns)).astype(dtype)
    for rows in (rng.integers(0, 50, 250), np.array([49, 0, 0, 7]), np.zeros(0, np.int64)):
        rows = rows.astype(np.int64)
        gathered = gather_rows(source, rows)
        assert gathered.dtype == dtype and gathered.flags.c_contiguous
        np.testing.assert_array_equal(gathered, source[rows])
