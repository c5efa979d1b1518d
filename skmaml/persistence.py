"""Saving and sharing fitted models with :mod:`skops.io`, the scikit-learn ecosystem's safe format.

``skops.io.load`` builds only the types it trusts: NumPy's, scikit-learn's estimators and plain
Python values by default, and those named in its ``trusted=`` argument. :func:`trusted_types` names
skmaml's own. This module does not import skops (an optional dependency); it only names types.
See :doc:`/persistence`.
"""

from ._classifier import MAMLClassifier
from ._optim import AdamOptimizer, SGDOptimizer
from ._regressor import MAMLRegressor
from ._scoring import FewShotScorer

# Every skmaml type a persisted object can hold: the estimators (fitted, adapted or not, alone or in
# a Pipeline or a search), the meta-optimiser a fitted estimator keeps for warm_start, and the
# scorer a search keeps. Each is rebuilt by skops from plain data (__new__, then its attributes).
_PERSISTED_TYPES = (MAMLRegressor, MAMLClassifier, AdamOptimizer, SGDOptimizer, FewShotScorer)


def trusted_types():
    """The fully qualified names of skmaml's types, for ``trusted=`` of :func:`skops.io.load`.

    A file of a fitted (or adapted) :class:`~skmaml.MAMLRegressor` or
    :class:`~skmaml.MAMLClassifier`, or of a Pipeline ending in one, holds no other types that
    skops does not trust by default, so ``skops.io.load(file, trusted=trusted_types())`` loads it.
    Only skmaml's types are listed: a file that holds anything else still fails to load, with
    :class:`skops.io.exceptions.UntrustedTypesFoundException`, until that type is trusted too (for
    example a cross-validation splitter kept by a search). :func:`skops.io.get_untrusted_types`
    lists what a file needs.

    Returns
    -------
    names : list of str
        Sorted, in the form that :func:`skops.io.get_untrusted_types` returns; a new list at each
        call, so it can be extended.

    Examples
    --------
    >>> from skmaml.persistence import trusted_types
    >>> trusted_types()  # doctest: +NORMALIZE_WHITESPACE
    ['skmaml._classifier.MAMLClassifier', 'skmaml._optim.AdamOptimizer',
     'skmaml._optim.SGDOptimizer', 'skmaml._regressor.MAMLRegressor',
     'skmaml._scoring.FewShotScorer']
    """
    # Named from the classes themselves, as skops names them in a file (module and class name),
    # so the list follows the code if a class moves.
    return sorted(f"{cls.__module__}.{cls.__name__}" for cls in _PERSISTED_TYPES)
