"""dalib: domain adaptation as one objective, ``L = L_s + λ·L_t + γ·D(h(X_s), h(X_t))``."""

from dalib.data import DATASETS, DomainDataModule
from dalib.discrepancy import DISCREPANCIES, Discrepancy
from dalib.errors import DalibError
from dalib.module import DomainAdaptationModule
from dalib.schedules import SCHEDULES
from dalib.target_losses import TARGET_LOSSES

__all__ = [
    "DATASETS",
    "DISCREPANCIES",
    "SCHEDULES",
    "TARGET_LOSSES",
    "DalibError",
    "Discrepancy",
    "DomainAdaptationModule",
    "DomainDataModule",
]
