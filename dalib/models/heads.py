"""The parts after the feature extractor: an optional bottleneck and the classifier head."""

from __future__ import annotations

from torch import nn


def bottleneck(in_features: int, out_features: int) -> nn.Sequential:
    """Linear → BatchNorm → ReLU, the 256-d bottleneck of the Office-31 protocol (DAN, CDAN)."""
    return nn.Sequential(
        nn.Linear(in_features, out_features), nn.BatchNorm1d(out_features), nn.ReLU()
    )
