"""The one exception type dalib raises for bad input, and the checks that raise it.

Every message is one line that names what is wrong and how to fix it; the command line prints it
as ``dalib: error: <message>`` and exits with status 2.
"""

from __future__ import annotations

import math

import torch


class DalibError(ValueError):
    """Bad input or configuration, reported to the user as one line."""


def check_weight(name: str, value: float) -> float:
    """Return ``value`` as a float if it is a finite, non-negative loss weight."""
    value = float(value)
    if math.isnan(value) or math.isinf(value) or value < 0:
        raise DalibError(f"{name} must be a finite number >= 0, got {value}; fix it in the config")
    return value


def check_instance_weights(name: str, weights: torch.Tensor | None, n: int) -> None:
    """Instance weights must be one finite, non-negative value per sample, not all zero."""
    if weights is None:
        return
    if weights.dim() != 1 or weights.shape[0] != n:
        raise DalibError(
            f"{name} must have shape ({n},), one weight per sample, got {tuple(weights.shape)}"
        )
    if not torch.isfinite(weights).all() or (weights < 0).any():
        raise DalibError(
            f"{name} contains a negative, NaN or infinite weight; weights must be >= 0"
        )
    if not (weights > 0).any():
        raise DalibError(f"{name} are all zero; at least one sample needs a positive weight")
