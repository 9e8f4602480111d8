"""The one exception type dalib raises for bad input, and the checks that raise it.

Every message is one line that names what is wrong and how to fix it; the command line prints it
as ``dalib: error: <message>`` and exits with status 2. Input that runs, but likely not as meant,
is a ``DalibWarning``, printed as ``dalib: warning: <message>``.
"""

from __future__ import annotations

import math
import warnings

import torch


class DalibError(ValueError):
    """Bad input or configuration, reported to the user as one line."""


class DalibWarning(UserWarning):
    """Input that runs but likely not as meant (say, classes that never occur)."""


def show_warnings_on_one_line() -> None:
    """Print each ``DalibWarning`` as the one line ``dalib: warning: <message>``.

    Python's format adds the file, line and source of the ``warn`` call, which say nothing to
    the user. Other warnings keep the format installed before (Lightning's, or Python's).
    """
    previous = warnings.formatwarning
    if getattr(previous, "dalib_one_line", False):
        return

    def format_warning(message, category, filename, lineno, line=None) -> str:
        if issubclass(category, DalibWarning):
            return f"dalib: warning: {message}\n"
        return previous(message, category, filename, lineno, line)

    format_warning.dalib_one_line = True
    warnings.formatwarning = format_warning


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
