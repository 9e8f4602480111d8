"""Feature extractors, selected by name: ``backbone: {name: mlp, hidden_dims: [...]}``.

Each factory receives the input shape of the data and returns a module with an ``out_features``
attribute, so the bottleneck, head and discrepancy can be sized without a dummy forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from dalib.errors import DalibError
from dalib.registry import Registry

BACKBONES: Registry[nn.Module] = Registry("backbone")


class MLP(nn.Sequential):
    """Fully connected ReLU layers on flattened inputs (toy data, precomputed feature files)."""

    def __init__(self, in_features: int, hidden_dims: Sequence[int], dropout: float = 0.0) -> None:
        if not hidden_dims or any(h <= 0 for h in hidden_dims):
            raise DalibError(f"mlp hidden_dims must be positive widths, got {list(hidden_dims)}")
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for hidden in hidden_dims:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        super().__init__(*layers)
        self.out_features = width


@BACKBONES.register("mlp")
def mlp(
    input_shape: Sequence[int], hidden_dims: Sequence[int] = (64, 64), dropout: float = 0.0
) -> MLP:
    """An MLP on inputs of any shape, flattened."""
    return MLP(math.prod(input_shape), hidden_dims, dropout)
