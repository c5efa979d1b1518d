"""Few-shot classification of unseen digit classes: MAMLClassifier beside simple baselines.

Run it from the repository root::

    python benchmarks/fewshot_classification.py              # full run (about 4 minutes)
    python benchmarks/fewshot_classification.py --quick      # smoke run
    python benchmarks/fewshot_classification.py --output fewshot.md

Data: ``sklearn.datasets.load_digits`` (1,797 images of 8 x 8 pixels, 10 classes; ships with
scikit-learn, no download). Protocol, in the style of the few-shot benchmarks (miniImageNet's
train / validation / test classes):

* ``split_classes`` holds out 3 **test classes**; of the other 7 (the **training classes**),
  another ``split_classes`` holds out 3 **validation classes**, leaving 4 **fit classes**.
* Every choice of hyper-parameters (the grids printed below) is made by training on the fit
  classes and scoring on episodes of the validation classes. The test classes are used once, at
  the end.
* The chosen configurations are then trained again on all 7 training classes (same number of
  meta-iterations) and scored on 3-way episodes of the test classes: 1-shot and 5-shot, 15 query
  rows per class, the same 600 episodes for every method; accuracy as mean +/- the 95% Student-t interval
  over episodes, and each baseline's paired difference to MAML with its 95% CI.
* Pixels are standardised by a ``StandardScaler`` fitted on the rows of the classes used for
  training at that stage (fit classes for validation, training classes for test); inputs float32.

Methods:

MAML
    ``MAMLClassifier(task_labels="per_task")``. A meta-training task is one 3-class combination of
    the training classes with all their rows (4 combinations of the fit classes, 35 of the training
    classes); at every visit the estimator draws K support and 15 query rows per class and a fresh
    assignment of the 3 classes to the outputs. Chosen on validation classes from a small grid:
    activation, hidden layers, inner step size alpha, inner steps N, Adam's meta step size beta,
    the number of meta-iterations (checkpoints of one run) and the number of adaptation steps at
    test time (N or 20). Fixed: second order, meta-batch min(25, number of tasks). A control row
    adapts the same network from its random initialisation, to show what meta-training adds.
Meta-SGD, LSLR, ANIL
    The same, with ``learn_inner_lr="per_parameter"`` (a step size per parameter, learned from
    alpha), ``learn_inner_lr="per_layer_step"`` (one per weight matrix / bias vector and step) or
    ``adapted_layers=1`` (only the output layer adapts). Each is chosen the same way from its own
    candidates (``VARIANT_CONFIGS``: three each, against MAML's six), with the same checkpoints and
    test-time steps. "best variant" is the one of MAML and the three with the highest validation
    accuracy; its test accuracy is that variant's.
logistic regression, 1-nearest neighbour
    Fitted on the K x 3 support rows of the episode alone (they ignore the training classes).
    LogisticRegression's C is tuned on validation classes.
pretrained + head (logistic regression on features)
    An ``MLPClassifier`` trained as an ordinary 4- or 7-class classifier on all rows of the
    training classes (shared labels), the same hidden layers as MAML; per episode, a logistic
    regression on its last hidden layer's activations of the support rows (a new head, body
    frozen; the "Baseline" of Chen et al. 2019). Tuned: C.
pretrained + fine-tune (all layers)
    The same pretrained body with a new all-zero 3-way output layer, then plain gradient steps on
    the support rows' cross-entropy through every layer (the MAML paper's "pretrained" baseline,
    run by ``MAMLClassifier.adapt``). Tuned: step size and number of steps.

Why not ``MAMLClassifier(n_inner_steps=0, task_labels="per_task")`` as the pretrained model: with
a fresh class-to-output assignment at every visit, the best un-adapted prediction is uniform, so
multi-task training without adaptation learns nothing about the classes. Pretraining has to
see the classes under fixed labels, i.e. as an ordinary classifier; its class-specific output layer
is then replaced for a new task.
"""

import argparse
import copy
import itertools
import os
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from bench_meta_step import Report, accuracy_header, table  # noqa: E402  (after the path set-up)

N_WAY = 3
SHOTS = (1, 5)
N_QUERY = 15            # query rows per class, in meta-training and in evaluation episodes
N_TEST_CLASSES = 3
N_VALIDATION_CLASSES = 3
DTYPE = np.float32

META_BATCH = 25
# Candidates for MAML, all second order: (activation, hidden layers, alpha, N, beta). Each is
# scored at every checkpoint (meta-iterations) and with N or 20 adaptation steps at test.
MAML_CONFIGS = (("relu", (64, 64), 0.1, 5, 0.001), ("tanh", (64, 64), 0.1, 5, 0.001),
                ("tanh", (64, 64), 0.3, 5, 0.001), ("tanh", (64, 64), 0.5, 1, 0.001),
                ("tanh", (64, 64), 0.1, 5, 0.0003), ("tanh", (256,), 0.1, 5, 0.001))
# MAML's variants (row name, the MAMLClassifier options that make it) and their candidates, in the
# form of MAML_CONFIGS: each gets the same checkpoints and test-time step counts as MAML, and at most
# as many candidates.
VARIANTS = (("MAML", {}), ("Meta-SGD", {"learn_inner_lr": "per_parameter"}),
            ("LSLR", {"learn_inner_lr": "per_layer_step"}), ("ANIL", {"adapted_layers": 1}))
VARIANT_CONFIGS = {
    "MAML": MAML_CONFIGS,
    # Meta-SGD learns a step size per parameter from alpha; its paper takes one step.
    "Meta-SGD": (("tanh", (64, 64), 0.1, 1, 0.001), ("tanh", (64, 64), 0.1, 5, 0.001),
                 ("relu", (64, 64), 0.1, 5, 0.001)),
    # LSLR learns one step size per layer and step, from alpha.
    "LSLR": (("tanh", (64, 64), 0.1, 5, 0.001), ("tanh", (64, 64), 0.3, 5, 0.001),
             ("relu", (64, 64), 0.1, 5, 0.001)),
    # ANIL adapts the output layer only (fixed alpha): larger steps.
    "ANIL": (("tanh", (64, 64), 0.3, 5, 0.001), ("tanh", (64, 64), 1.0, 5, 0.001),
             ("relu", (64, 64), 0.3, 5, 0.001)),
}
VARIANT_OPTIONS = dict(VARIANTS)
BEST = "best variant (validation)"
MAML_CHECKPOINTS = (100, 200, 500, 1000, 2000)
MAML_TEST_STEPS = 20
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
FINETUNE_LR_GRID = (0.01, 0.03, 0.1, 0.3)
FINETUNE_STEPS_GRID = (5, 20, 50)
PRETRAIN_HIDDEN = (64, 64)
PRETRAIN_ACTIVATIONS = ("relu", "tanh")
CONTROL = "MAML's network, no meta-training"


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

def load_data():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X, y


def standardise(X, y, classes):
    """Pixels scaled by a StandardScaler fitted on the rows of ``classes`` only; float32."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X[np.isin(y, classes)])
    return scaler.transform(X).astype(DTYPE)


def meta_training_tasks(Z, y, classes):
    """One task per ``N_WAY``-class combination of ``classes`` with all their rows (flat form)."""
    parts, labels, groups = [], [], []
    for task, combination in enumerate(itertools.combinations(classes, N_WAY)):
        rows = np.flatnonzero(np.isin(y, combination))
        parts.append(Z[rows])
        labels.append(y[rows])
        groups.append(np.full(rows.shape[0], task))
    return np.concatenate(parts), np.concatenate(labels), np.concatenate(groups)


def episodes(Z, y, classes, n_shot, n_episodes, random_state):
    from skmaml.datasets import make_episodes

    return make_episodes(Z, y, n_way=N_WAY, n_support=n_shot, n_query=N_QUERY,
                         n_episodes=n_episodes, classes=classes, random_state=random_state)


class Stage:
    """The data of one stage: training classes, evaluation episodes per shot."""

    def __init__(self, X, y, train_classes, eval_classes, n_episodes, random_state):
        self.train_classes, self.eval_classes = train_classes, eval_classes
        self.Z = standardise(X, y, train_classes)
        self.y = y
        self.tasks = meta_training_tasks(self.Z, y, train_classes)
        self.n_tasks = int(self.tasks[2].max()) + 1
        train_rows = np.isin(y, train_classes)
        self.Z_train, self.y_train = self.Z[train_rows], y[train_rows]
        self.episodes = {k: episodes(self.Z, y, eval_classes, k, n_episodes, random_state + k)
                         for k in SHOTS}


def accuracies(predict, stage_episodes):
    """Per-episode query accuracy of ``predict(X_support, y_support, X_query)``."""
    return np.array([np.mean(predict(Xs, ys, Xq) == yq) for Xs, ys, Xq, yq in stage_episodes])


def mean_ci(values):
    from skmaml._stats import mean_confidence_interval

    return mean_confidence_interval(values)


# ---------------------------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------------------------

def maml_checkpoints(stage, config, n_shot, checkpoints, random_state, n_jobs, options=None):
    """Meta-train, yielding (meta-iterations, estimator) at each checkpoint; ``options`` make a
    variant (learn_inner_lr, adapted_layers; learned step sizes carry over between legs too).

    Continued with ``warm_start`` (Adam's state carries over); each leg gets its own seed, so the
    legs draw different episodes. The same legs reproduce the same model for the final stage.
    """
    from sklearn.exceptions import ConvergenceWarning

    from skmaml import MAMLClassifier

    activation, hidden, alpha, n_inner_steps, meta_lr = config
    X, y, groups = stage.tasks
    clf = MAMLClassifier(hidden_layer_sizes=hidden, activation=activation, inner_lr=alpha,
                         n_inner_steps=n_inner_steps, meta_lr=meta_lr,
                         meta_batch_size=min(META_BATCH, stage.n_tasks), n_support=n_shot,
                         n_query=N_QUERY, task_labels="per_task", n_iter_no_change=10**9,
                         warm_start=True, n_jobs=n_jobs, **(options or {}))
    done = 0
    for leg, stop in enumerate(checkpoints):
        clf.set_params(max_iter=stop - done, random_state=random_state + leg)
        with warnings.catch_warnings():
            # A fixed budget chosen on validation classes, not convergence, ends training.
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(X, y, groups=groups)
        done = stop
        yield stop, clf


def maml_predict(clf, n_steps):
    return lambda Xs, ys, Xq: clf.adapt(Xs, ys, n_inner_steps=n_steps).predict(Xq)


def logistic_predict(C):
    from sklearn.linear_model import LogisticRegression

    return lambda Xs, ys, Xq: LogisticRegression(C=C, max_iter=1000).fit(Xs, ys).predict(Xq)


def nearest_neighbour_predict(Xs, ys, Xq):
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=1).fit(Xs, ys).predict(Xq)


class Pretrained:
    """An MLPClassifier trained on the training classes under their own labels, as a body."""

    def __init__(self, stage, activation, random_state):
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier

        from skmaml import MAMLClassifier

        self.activation = activation
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.mlp = MLPClassifier(hidden_layer_sizes=PRETRAIN_HIDDEN, activation=activation,
                                     max_iter=500, random_state=random_state).fit(
                                         stage.Z_train, stage.y_train)
        self.fit_seconds = time.perf_counter() - start
        self.train_accuracy = self.mlp.score(stage.Z_train, stage.y_train)
        # A per-task MAMLClassifier of the same architecture serves as the fine-tuning engine
        # (its adapt runs plain gradient steps); its parameters are the pretrained body plus a
        # new all-zero N_WAY-way output layer.
        X, y, groups = stage.tasks
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.net = MAMLClassifier(hidden_layer_sizes=PRETRAIN_HIDDEN, activation=activation,
                                      n_support=1, n_query=1, task_labels="per_task",
                                      max_iter=1, random_state=0).fit(X, y, groups=groups)
        self.net.coefs_ = ([W.astype(DTYPE) for W in self.mlp.coefs_[:-1]]
                           + [np.zeros((PRETRAIN_HIDDEN[-1], N_WAY), dtype=DTYPE)])
        self.net.intercepts_ = ([b.astype(DTYPE) for b in self.mlp.intercepts_[:-1]]
                                + [np.zeros(N_WAY, dtype=DTYPE)])

    def features(self, X):
        """Activations of the last hidden layer."""
        h = X
        for W, b in zip(self.mlp.coefs_[:-1], self.mlp.intercepts_[:-1]):
            h = h @ W + b
            h = np.maximum(h, 0) if self.activation == "relu" else np.tanh(h)
        return h

    def head_predict(self, C):
        fit_predict = logistic_predict(C)
        return lambda Xs, ys, Xq: fit_predict(self.features(Xs), ys, self.features(Xq))

    def finetune_predict(self, lr, n_steps):
        net = copy.copy(self.net).set_params(inner_lr=lr)
        return lambda Xs, ys, Xq: net.adapt(Xs, ys, n_inner_steps=n_steps).predict(Xq)


# ---------------------------------------------------------------------------------------------
# Validation: every choice is made here
# ---------------------------------------------------------------------------------------------

def select(candidates):
    """The candidate with the highest mean validation accuracy: (key, mean)."""
    key = max(candidates, key=lambda k: candidates[k])
    return key, candidates[key]


def validate(stage, args, report):
    """Grids on the validation classes; returns the chosen configuration of each method."""
    chosen = {k: {} for k in SHOTS}
    rs = args.random_state

    report("## Validation (fit classes %s -> validation classes %s)"
           % (stage.train_classes.tolist(), stage.eval_classes.tolist()), "")
    report("Mean accuracy over %d validation episodes per shot (3-way, %d query rows per class)."
           % (len(stage.episodes[SHOTS[0]]), N_QUERY), "")

    # MAML and its variants: configurations x checkpoints x test-time steps.
    rows = []
    for n_shot in SHOTS:
        best_variant = None
        for variant, options in VARIANTS:
            scores = {}
            for config in args.variant_configs[variant]:
                activation, hidden, alpha, n_inner_steps, meta_lr = config
                test_steps = (n_inner_steps, MAML_TEST_STEPS)
                start = time.perf_counter()
                for n_iter, clf in maml_checkpoints(stage, config, n_shot, args.checkpoints, rs,
                                                    args.n_jobs, options):
                    for n_steps in test_steps:
                        acc = accuracies(maml_predict(clf, n_steps),
                                         stage.episodes[n_shot]).mean()
                        scores[config + (n_iter, n_steps)] = acc
                cells = ["%.3f / %.3f" % tuple(scores[config + (it, s)] for s in test_steps)
                         for it in args.checkpoints]
                rows.append(["%d-shot" % n_shot, variant, activation, str(hidden), "%g" % alpha,
                             "%d" % n_inner_steps, "%g" % meta_lr] + cells
                            + ["%.0f" % (time.perf_counter() - start)])
            chosen[n_shot][variant] = select(scores)
            if best_variant is None or chosen[n_shot][variant][1] > chosen[n_shot][best_variant][1]:
                best_variant = variant
        chosen[n_shot][BEST] = (best_variant, chosen[n_shot][best_variant][1])
    report("MAML and its variants (second order, Adam; Meta-SGD: learn_inner_lr=\"per_parameter\", "
           "LSLR: learn_inner_lr=\"per_layer_step\", both starting from alpha; ANIL: "
           "adapted_layers=1); cells: accuracy after N / %d adaptation steps at test, by "
           "meta-iterations; s: seconds for the row (training and scoring):"
           % MAML_TEST_STEPS, "")
    report(*table(["shot", "variant", "activation", "hidden", "alpha", "N", "beta"]
                  + ["%d it." % it for it in args.checkpoints] + ["s"], rows,
                  "lllllrr" + "r" * (len(args.checkpoints) + 1)), "")

    # Logistic regression on the support rows: C.
    rows = []
    for n_shot in SHOTS:
        scores = {C: accuracies(logistic_predict(C), stage.episodes[n_shot]).mean()
                  for C in C_GRID}
        chosen[n_shot]["logistic regression"] = select(scores)
        rows.append(["%d-shot" % n_shot] + ["%.3f" % scores[C] for C in C_GRID])
    report("Logistic regression on the support rows, by C:", "")
    report(*table(["shot"] + ["C=%g" % C for C in C_GRID], rows, "l" + "r" * len(C_GRID)), "")

    # Pretrained body: activation x (head C | fine-tune step size x steps).
    rows_head, rows_ft = [], []
    head = {k: {} for k in SHOTS}
    finetune = {k: {} for k in SHOTS}
    for activation in PRETRAIN_ACTIVATIONS:
        pre = Pretrained(stage, activation, rs)
        for n_shot in SHOTS:
            eps = stage.episodes[n_shot]
            for C in C_GRID:
                head[n_shot][activation, C] = accuracies(pre.head_predict(C), eps).mean()
            for lr in FINETUNE_LR_GRID:
                for n_steps in FINETUNE_STEPS_GRID:
                    finetune[n_shot][activation, lr, n_steps] = accuracies(
                        pre.finetune_predict(lr, n_steps), eps).mean()
            rows_head.append(["%d-shot" % n_shot, activation]
                             + ["%.3f" % head[n_shot][activation, C] for C in C_GRID])
            rows_ft.append(["%d-shot" % n_shot, activation] + [
                " / ".join("%.3f" % finetune[n_shot][activation, lr, s]
                           for s in FINETUNE_STEPS_GRID) for lr in FINETUNE_LR_GRID])
    for n_shot in SHOTS:
        chosen[n_shot]["pretrained + head"] = select(head[n_shot])
        chosen[n_shot]["pretrained + fine-tune"] = select(finetune[n_shot])
    report("Pretrained %s MLP (trained on the fit classes) + logistic-regression head on its "
           "last hidden layer, by C:" % (PRETRAIN_HIDDEN,), "")
    report(*table(["shot", "activation"] + ["C=%g" % C for C in C_GRID], sorted(rows_head),
                  "ll" + "r" * len(C_GRID)), "")
    report("Pretrained MLP + new zero 3-way output layer, all layers fine-tuned; cells: accuracy "
           "after %s steps, by step size:" % " / ".join(map(str, FINETUNE_STEPS_GRID)), "")
    report(*table(["shot", "activation"] + ["step %g" % lr for lr in FINETUNE_LR_GRID],
                  sorted(rows_ft), "ll" + "r" * len(FINETUNE_LR_GRID)), "")

    report("Chosen on the validation classes:", "")
    rows = []
    for n_shot in SHOTS:
        for name, (key, acc) in chosen[n_shot].items():
            rows.append(["%d-shot" % n_shot, name, describe(name, key), "%.3f" % acc])
    rows.append(["both", "1-nearest neighbour", "n_neighbors=1 (not tuned)", ""])
    report(*table(["shot", "method", "configuration", "validation accuracy"], rows, "lllr"), "")
    return chosen


def describe(name, key):
    if name == BEST:
        return "%s (the variant with the highest validation accuracy)" % key
    if name in VARIANT_OPTIONS:
        activation, hidden, alpha, n_inner_steps, meta_lr, n_iter, n_steps = key
        return ("%s %s, alpha=%g, N=%d, beta=%g, %d meta-iterations, %d steps at test"
                % (activation, hidden, alpha, n_inner_steps, meta_lr, n_iter, n_steps))
    if name == "logistic regression":
        return "C=%g" % key
    if name == "pretrained + head":
        return "%s body, C=%g" % key
    return "%s body, step %g, %d steps" % key


# ---------------------------------------------------------------------------------------------
# Test
# ---------------------------------------------------------------------------------------------

def test(stage, chosen, args, report):
    rs = args.random_state
    report("## Test (training classes %s -> held-out test classes %s)"
           % (stage.train_classes.tolist(), stage.eval_classes.tolist()), "")
    report("Chosen configurations retrained on all %d training classes (%d meta-training tasks), "
           "then %d test episodes per shot: 3-way, K support and %d query rows per class, the same "
           "episodes for every method. Accuracy mean ± 95%% CI over episodes; 'vs MAML' is the "
           "method's accuracy minus MAML's on the same episodes (mean ± 95%% CI)."
           % (len(stage.train_classes), stage.n_tasks, len(stage.episodes[SHOTS[0]]), N_QUERY),
           "")
    pretrained = {}
    rows, timing = [], []
    for n_shot in SHOTS:
        eps = stage.episodes[n_shot]
        results = {}
        for variant, options in VARIANTS:
            key, _ = chosen[n_shot][variant]
            config, n_iter, n_steps = key[:5], key[5], key[6]
            start = time.perf_counter()
            legs = tuple(c for c in args.checkpoints if c <= n_iter)
            for _, maml in maml_checkpoints(stage, config, n_shot, legs, rs, args.n_jobs,
                                            options):
                pass
            timing.append(["%s, %d-shot" % (variant, n_shot), "%d meta-iterations" % maml.n_iter_,
                           "%.1f" % (time.perf_counter() - start)])
            results[variant] = accuracies(maml_predict(maml, n_steps), eps)
            if variant == "MAML":
                # Control: the same network and adaptation from its random initialisation (one
                # meta-iteration), to show what meta-training adds.
                for _, untrained in maml_checkpoints(stage, config, n_shot, (1,), rs,
                                                     args.n_jobs):
                    results[CONTROL] = accuracies(maml_predict(untrained, n_steps), eps)
        # Chosen on validation among the variants: its test accuracy is that variant's.
        results[BEST] = results[chosen[n_shot][BEST][0]]
        C = chosen[n_shot]["logistic regression"][0]
        results["logistic regression"] = accuracies(logistic_predict(C), eps)
        results["1-nearest neighbour"] = accuracies(nearest_neighbour_predict, eps)
        for name in ("pretrained + head", "pretrained + fine-tune"):
            key = chosen[n_shot][name][0]
            if key[0] not in pretrained:
                pretrained[key[0]] = Pretrained(stage, key[0], rs)
                timing.append(["pretrained %s MLP" % key[0], "train accuracy %.3f"
                               % pretrained[key[0]].train_accuracy,
                               "%.1f" % pretrained[key[0]].fit_seconds])
            pre = pretrained[key[0]]
            predict = (pre.head_predict(key[1]) if name == "pretrained + head" else
                       pre.finetune_predict(key[1], key[2]))
            results[name] = accuracies(predict, eps)
        for name, acc in results.items():
            diff = "" if name == "MAML" else "%+.3f ± %.3f" % mean_ci(acc - results["MAML"])
            config = ("n_neighbors=1" if name == "1-nearest neighbour" else
                      "as MAML, random init" if name == CONTROL else
                      describe(name, chosen[n_shot][name][0]))
            rows.append(["%d-shot" % n_shot, name, config,
                         "%.3f ± %.3f" % mean_ci(acc), diff])
    report(*table(["shot", "method", "configuration (chosen on validation)", "accuracy",
                   "vs MAML"], rows, "lllrr"), "")
    report("Training time on the %d training classes:" % len(stage.train_classes), "")
    report(*table(["model", "", "wall s"], timing, "llr"), "")


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

def header(report, args):
    accuracy_header(report, "Few-shot classification of unseen digit classes with skmaml")
    report("- run: %s, random_state=%d, n_jobs=%d, dtype float32; %d-way, shots %s, %d query "
           "rows per class" % ("QUICK (smoke run: small grids, few episodes)" if args.quick
                               else "full", args.random_state, args.n_jobs, N_WAY,
                               "/".join(map(str, SHOTS)), N_QUERY))
    report("")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: two MAML configurations and one of each variant, checkpoints "
                        "100/300, 100 episodes")
    p.add_argument("--random-state", type=int, default=0,
                   help="seeds the class splits, episodes and models")
    p.add_argument("--n-jobs", type=int, default=1, help="threads for MAML's meta-gradient")
    p.add_argument("--output", metavar="FILE", help="also write the report (Markdown) to FILE")
    args = p.parse_args(argv)
    if args.quick:
        args.variant_configs = {name: configs[:2] if name == "MAML" else configs[:1]
                                for name, configs in VARIANT_CONFIGS.items()}
        args.checkpoints = (100, 300)
        n_validation, n_test = 100, 100
    else:
        args.variant_configs, args.checkpoints = VARIANT_CONFIGS, MAML_CHECKPOINTS
        n_validation, n_test = 300, 600
    script_start = time.perf_counter()

    from threadpoolctl import threadpool_limits

    from skmaml.datasets import split_classes

    # Tiny problems: BLAS threads only add overhead (MAML's fit limits them itself as well).
    threadpool_limits(1)

    report = Report()
    header(report, args)
    X, y = load_data()
    train_classes, test_classes = split_classes(y, test_size=N_TEST_CLASSES,
                                                random_state=args.random_state)
    fit_classes, validation_classes = split_classes(train_classes,
                                                    test_size=N_VALIDATION_CLASSES,
                                                    random_state=args.random_state)
    report("Classes: fit %s, validation %s, test %s (training = fit + validation)."
           % (fit_classes.tolist(), validation_classes.tolist(), test_classes.tolist()), "")

    validation = Stage(X, y, fit_classes, validation_classes, n_validation,
                       args.random_state + 100)
    chosen = validate(validation, args, report)
    final = Stage(X, y, train_classes, test_classes, n_test, args.random_state + 200)
    test(final, chosen, args, report)

    report("Total run time of this script: %.0f s." % (time.perf_counter() - script_start))
    report.write(args.output)


if __name__ == "__main__":
    main()
