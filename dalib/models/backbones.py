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


class LeNet(nn.Sequential):
    """LeNet for 28x28 grey digits, as the Transfer-Learning-Library's digits protocol uses it.

    conv 5x5 (20) → max-pool → ReLU → conv 5x5 (50) → dropout → max-pool → ReLU → flatten:
    800 features for a 1x28x28 input.
    """

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, 20, kernel_size=5),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Conv2d(20, 50, kernel_size=5),
            nn.Dropout2d(p=0.5),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.out_features = 50 * 4 * 4


@BACKBONES.register("lenet")
def lenet(input_shape: Sequence[int]) -> LeNet:
    """LeNet on (C, 28, 28) images."""
    if len(input_shape) != 3 or tuple(input_shape[1:]) != (28, 28):
        raise DalibError(
            f"lenet takes (channels, 28, 28) images, got inputs of shape {tuple(input_shape)}; "
            "resize the digits to 28x28"
        )
    return LeNet(input_shape[0])
