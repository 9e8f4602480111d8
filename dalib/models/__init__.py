"""Backbones (feature extractors) and the layers that follow them."""

from dalib.models.backbones import BACKBONES, MLP, LeNet
from dalib.models.heads import bottleneck

__all__ = ["BACKBONES", "MLP", "LeNet", "bottleneck"]
