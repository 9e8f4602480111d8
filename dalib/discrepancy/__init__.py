"""Discrepancy measures D(f_s, f_t, ...) behind one signature, selected by name from a registry.

Adding a measure: one file here with a ``@DISCREPANCIES.register("name")`` class, one import
line below, one test file (see CONTRIBUTING.md).
"""

from dalib.discrepancy.adversarial import DomainAdversarial, DomainDiscriminator, GradientReversal
from dalib.discrepancy.base import Discrepancy
from dalib.discrepancy.conditional import ConditionalDomainAdversarial
from dalib.discrepancy.coral import CORAL
from dalib.discrepancy.kernels import KERNELS
from dalib.discrepancy.mdd import MarginDisparityDiscrepancy
from dalib.discrepancy.mmd import JointMMD, KernelMMD
from dalib.discrepancy.registry import DISCREPANCIES, builtin_discrepancies
from dalib.discrepancy.wasserstein import (
    DeepJDOT,
    EarthMoverDistance,
    SinkhornDistance,
    SlicedWasserstein,
)
from dalib.discrepancy.wdgrl import WassersteinDistanceGuided

__all__ = [
    "CORAL",
    "DISCREPANCIES",
    "KERNELS",
    "ConditionalDomainAdversarial",
    "DeepJDOT",
    "Discrepancy",
    "DomainAdversarial",
    "DomainDiscriminator",
    "EarthMoverDistance",
    "GradientReversal",
    "JointMMD",
    "KernelMMD",
    "MarginDisparityDiscrepancy",
    "SinkhornDistance",
    "SlicedWasserstein",
    "WassersteinDistanceGuided",
    "builtin_discrepancies",
]
