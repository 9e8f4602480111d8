"""How the parameters are optimised: SGD with momentum, learning rates per part, the LR decay.

- ``lr_schedule="inverse"``: the decay ``lr·(1+αp)^-0.75`` of DANN/CDAN/MDD over training
  progress p ∈ [0, 1], α = ``lr_decay_alpha`` (10 as in the DANN paper; tllib decays by
  ``(1+0.001·step)^-0.75``, which is α = 0.001·total steps: 50 for its 50,000-step digits runs).
- ``backbone_lr_mult``: the backbone's learning rate is ``backbone_lr_mult·lr`` (0.1 for a
  pretrained backbone in the Office-31 protocol).
- ``layer_lr_decay``: backbone layer ``i`` of ``L`` (``dalib.transfer.backbone_layers``) at
  ``decay^(L-1-i)`` (discriminative learning rates).
- ``lr_mults``: ``{name pattern: multiplier}``, overriding both for the parameters it names.
- ``l2_sp > 0``: weight decay applies to the parts other than the backbone, which L2-SP pulls
  towards its start instead.

Parameters are named as ``Network`` names them (``backbone.0.weight``, ``head.bias``), and the
objective's own as ``discrepancy.…``: the names ``lr_mults`` patterns match.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from dalib.errors import DalibError
from dalib.models import output_layer
from dalib.network import Network
from dalib.objective import Objective
from dalib.schedules import inverse_decay
from dalib.transfer.layers import backbone_layers, name_matches

Scheduler = torch.optim.lr_scheduler.LambdaLR
NamedParameters = list[tuple[str, nn.Parameter]]


@dataclass(frozen=True)
class Optimization:
    """The optimiser's settings; ``build`` makes the optimiser and LR scheduler of a run."""

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-3
    nesterov: bool = True
    lr_schedule: Literal["inverse", "constant"] = "inverse"
    lr_decay_alpha: float = 10.0
    backbone_lr_mult: float = 1.0
    lr_mults: Mapping[str, float] = field(default_factory=dict)
    layer_lr_decay: float = 1.0
    l2_sp: float = 0.0

    def __post_init__(self) -> None:
        for name, value in [
            ("lr", self.lr),
            ("lr_decay_alpha", self.lr_decay_alpha),
            ("backbone_lr_mult", self.backbone_lr_mult),
            ("layer_lr_decay", self.layer_lr_decay),
            *self.lr_mults.items(),
        ]:
            if not (math.isfinite(value) and value > 0):
                raise DalibError(f"{name} must be a finite number > 0, got {value}")
        if self.lr_schedule not in ("inverse", "constant"):
            raise DalibError(f"lr_schedule must be inverse or constant, got {self.lr_schedule!r}")

    def build(
        self,
        network: Network,
        objective: Objective,
        total_steps: float,
        parameters: NamedParameters | None = None,
    ) -> tuple[torch.optim.SGD, Scheduler | None]:
        """SGD over the network's and the objective's trained parameters (or over ``parameters``,
        named as the network names its own: a training scheme's optimiser of some parts), and
        the per-step LR scheduler (``None`` for a constant rate); ``total_steps`` gives the
        decay's progress."""
        groups = self.parameter_groups(network, objective, parameters)
        for group in groups:
            group["lr"] = self.lr * group["lr_mult"]
        optimizer = torch.optim.SGD(
            groups, lr=self.lr, momentum=self.momentum, nesterov=self.nesterov and self.momentum > 0
        )
        if self.lr_schedule == "constant":
            return optimizer, None
        if not math.isfinite(total_steps):
            raise DalibError("the inverse LR decay needs a finite trainer.max_epochs or max_steps")
        alpha = self.lr_decay_alpha
        scheduler = Scheduler(
            optimizer, lambda step: inverse_decay(min(1.0, step / total_steps), alpha)
        )
        return optimizer, scheduler

    def parameter_groups(
        self, network: Network, objective: Objective, parameters: NamedParameters | None = None
    ) -> list[dict]:
        """Optimiser groups, one per learning-rate multiplier and weight decay, the head's last
        (its rate, multiplier 1, is the base rate that training logs)."""
        groups: dict[tuple[float, float], list[nn.Parameter]] = {}
        if parameters is None:
            parameters = trained_parameters(network, objective)
        for name, p in parameters:
            key = (self.lr_mult(name, network.backbone), self.weight_decay_of(name))
            groups.setdefault(key, []).append(p)
        logits_weight = output_layer(network.head).weight
        order = sorted(groups, key=lambda key: any(p is logits_weight for p in groups[key]))
        return [{"params": groups[k], "lr_mult": k[0], "weight_decay": k[1]} for k in order]

    def lr_mult(self, name: str, backbone: nn.Module) -> float:
        """The learning-rate multiplier of parameter ``name``.

        ``backbone_lr_mult`` for the backbone (and the target's ``unshared`` copy), times
        ``layer_lr_decay`` per backbone layer below the top one; 1 for the rest. The longest
        pattern of ``lr_mults`` that names the parameter (or a module holding it) overrides both.
        """
        patterns = [pattern for pattern in self.lr_mults if name_matches(name, pattern)]
        if patterns:
            return float(self.lr_mults[max(patterns, key=len)])
        part, _, rest = name.partition(".")
        if part not in ("backbone", "target_backbone"):
            return 1.0
        layers = [layer for layer, _ in backbone_layers(backbone)]
        depth = next((i for i, layer in enumerate(layers) if name_matches(rest, layer)), None)
        below_top = 0 if depth is None else len(layers) - 1 - depth
        return self.backbone_lr_mult * self.layer_lr_decay**below_top

    def weight_decay_of(self, name: str) -> float:
        """Weight decay, except where L2-SP pulls the backbone towards its start instead."""
        if self.l2_sp > 0 and name.partition(".")[0] == "backbone":
            return 0.0
        return self.weight_decay

    def check_patterns(self, network: Network, objective: Objective) -> None:
        """Every ``lr_mults`` pattern names at least one parameter: a typo is an error."""
        names = [name for name, _ in trained_parameters(network, objective)]
        for pattern in self.lr_mults:
            if not any(name_matches(name, pattern) for name in names):
                raise DalibError(
                    f"lr_mults pattern {pattern!r} names no parameter; parameters are named like "
                    f"{names[0]!r} (see model.network.named_parameters())"
                )


def trained_parameters(network: Network, objective: Objective) -> NamedParameters:
    """The network's parameters, then the objective's trained ones, by name."""
    return [*network.named_parameters(), *objective.named_trainable_parameters()]
