"""Small estimators and data shared by several test modules (imported like ``naive``)."""

import numpy as np

from skmaml import MAMLClassifier, MAMLRegressor
from skmaml.datasets import make_sinusoid_tasks


def regression_data(n_tasks=12, n_samples=10, random_state=0):
    """Flat sinusoid tasks: X (n, 1), y (n,), groups (n,) of ints."""
    return make_sinusoid_tasks(n_tasks=n_tasks, n_samples=n_samples, flat=True,
                               random_state=random_state)


def classification_data(n_tasks=12, n_per_class=5, n_features=3, random_state=0):
    """Flat binary tasks with shared labels {0, 1}: each task has its own linear boundary."""
    rng = np.random.RandomState(random_state)
    X_parts, y_parts, g_parts = [], [], []
    for t in range(n_tasks):
        w = rng.normal(size=n_features)
        X_t = rng.normal(size=(8 * n_per_class, n_features))
        score = X_t @ w
        # Balanced classes: n_per_class rows on each side of the boundary.
        rows = np.concatenate([np.argsort(score)[:n_per_class], np.argsort(score)[-n_per_class:]])
        rows = rng.permutation(rows)
        X_parts.append(X_t[rows])
        y_parts.append((score[rows] > np.median(score)).astype(np.int64))
        g_parts.append(np.full(rows.shape[0], t))
    return np.concatenate(X_parts), np.concatenate(y_parts), np.concatenate(g_parts)


def small_regressor(**params):
    defaults = dict(hidden_layer_sizes=(8,), n_support=2, meta_batch_size=4, max_iter=15,
                    meta_lr=0.01, random_state=0)
    return MAMLRegressor(**{**defaults, **params})


def small_classifier(**params):
    defaults = dict(hidden_layer_sizes=(8,), n_support=2, meta_batch_size=4, max_iter=15,
                    meta_lr=0.01, inner_lr=0.1, random_state=0)
    return MAMLClassifier(**{**defaults, **params})
