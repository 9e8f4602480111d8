"""Schedules over training progress ``p`` in [0, 1] for the loss weights λ(t), γ(t) and the LR.

A schedule is a plain callable object: the module evaluates it at ``global_step / max_steps``, so
the current weight is never hidden inside a layer and a resumed run continues at the same point.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dalib.errors import DalibError, check_weight
from dalib.registry import Registry

SCHEDULES: Registry[Schedule] = Registry("schedule", "dalib.schedules")


class Schedule:
    """A loss weight as a function of training progress ``p`` in [0, 1]."""

    def __call__(self, progress: float) -> float:
        raise NotImplementedError


@SCHEDULES.register("constant")
@dataclass(frozen=True)
class Constant(Schedule):
    """The same weight throughout training."""

    value: float

    def __post_init__(self) -> None:
        check_weight("constant schedule value", self.value)

    def __call__(self, progress: float) -> float:
        return self.value


@SCHEDULES.register("dann_ramp")
@dataclass(frozen=True)
class DannRamp(Schedule):
    """``max_value·(2/(1+exp(-alpha·p)) - 1)``: 0 at the start, near ``max_value`` by p≈0.5.

    The adaptation-factor schedule of Ganin et al., "Domain-Adversarial Training of Neural
    Networks" (JMLR 2016), with alpha = 10; it keeps the noisy early discrepancy from swamping
    the classifier.
    """

    max_value: float = 1.0
    alpha: float = 10.0

    def __post_init__(self) -> None:
        check_weight("dann_ramp max_value", self.max_value)
        check_weight("dann_ramp alpha", self.alpha)

    def __call__(self, progress: float) -> float:
        return self.max_value * (2.0 / (1.0 + math.exp(-self.alpha * progress)) - 1.0)


@SCHEDULES.register("linear_warmup")
@dataclass(frozen=True)
class LinearWarmup(Schedule):
    """Rises linearly from 0 to ``max_value`` over the first ``warmup`` fraction of training."""

    max_value: float = 1.0
    warmup: float = 0.1

    def __post_init__(self) -> None:
        check_weight("linear_warmup max_value", self.max_value)
        if not 0.0 < self.warmup <= 1.0:
            raise DalibError(f"linear_warmup warmup must be in (0, 1], got {self.warmup}")

    def __call__(self, progress: float) -> float:
        return self.max_value * min(1.0, progress / self.warmup)


def make_schedule(spec: float | str | Mapping[str, Any] | Schedule, what: str) -> Schedule:
    """A number is a constant weight; a name or ``{name: ..., options}`` picks a schedule."""
    if isinstance(spec, Schedule):
        return spec
    if isinstance(spec, bool):
        raise DalibError(f"{what} must be a number or a schedule, got {spec!r}")
    if isinstance(spec, str):
        with contextlib.suppress(ValueError):  # a number from the command line: ``nan``, ``1e-2``
            spec = float(spec)
    if isinstance(spec, int | float):
        return Constant(check_weight(what, spec))
    return SCHEDULES.build(spec)


def inverse_decay(progress: float, alpha: float = 10.0, power: float = 0.75) -> float:
    """The LR factor ``(1 + alpha·p)^-power`` used by DANN, CDAN, MDD and tllib."""
    return (1.0 + alpha * progress) ** (-power)
