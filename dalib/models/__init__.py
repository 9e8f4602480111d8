"""Backbones (feature extractors) and the layers that follow them."""

from dalib.models.backbones import BACKBONES, MLP, LeNet
from dalib.models.heads import BottleneckOptions, HeadOptions, bottleneck, head, output_layer

__all__ = [
    "BACKBONES",
    "MLP",
    "BottleneckOptions",
    "HeadOptions",
    "LeNet",
    "bottleneck",
    "head",
    "output_layer",
]
