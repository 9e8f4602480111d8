"""Instance-based transfer: density-ratio weights and sample selection."""

from dalib.weighting.callback import ImportanceWeighting
from dalib.weighting.density_ratio import (
    ESTIMATORS,
    KLIEP,
    KMM,
    ULSIF,
    ClassifierRatio,
    DensityRatioEstimator,
)

__all__ = [
    "ESTIMATORS",
    "KLIEP",
    "KMM",
    "ULSIF",
    "ClassifierRatio",
    "DensityRatioEstimator",
    "ImportanceWeighting",
]
