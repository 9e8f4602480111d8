"""Training schemes: how one batch updates the model (``model.scheme``), an extension point.

``standard`` is one loss and one optimiser step (every method that is one objective); ``mcd``
makes three kinds of steps per batch with two optimisers; ``adda`` trains a source model, then a
separate target encoder against it. A new scheme: a ``TrainingScheme``
subclass registered with ``@SCHEMES.register("name")`` (see docs/methods_and_schemes.md).
"""

from dalib.schemes.adda import AdversarialDiscriminativeAdaptation
from dalib.schemes.base import SCHEMES, TrainingScheme
from dalib.schemes.mcd import MaximumClassifierDiscrepancy
from dalib.schemes.standard import Standard

__all__ = [
    "SCHEMES",
    "AdversarialDiscriminativeAdaptation",
    "MaximumClassifierDiscrepancy",
    "Standard",
    "TrainingScheme",
]
