"""skmaml: scikit-learn compatible MAML (Model-Agnostic Meta-Learning) with a compiled numba core."""

from ._classifier import MAMLClassifier
from ._mixture import AveragedModel, MAMLMixture
from ._regressor import MAMLRegressor
from ._scoring import FewShotScorer, adapt

__version__ = "0.1.0.dev0"

__all__ = ["MAMLRegressor", "MAMLClassifier", "MAMLMixture", "AveragedModel", "FewShotScorer",
           "adapt", "__version__"]
