"""The parts after the feature extractor: an optional bottleneck and the classifier head.

Both take the options that reference protocols set (``HeadOptions``, ``BottleneckOptions``): a
dropout after the bottleneck, a hidden layer in the head, and a Gaussian initialisation of their
Linear layers. By default they are a plain Linear → BatchNorm → ReLU bottleneck and one Linear
head with PyTorch's default initialisation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from torch import nn

from dalib.errors import DalibError


@dataclass(frozen=True)
class LinearInit:
    """Linear weights from N(0, ``init_std``²) and biases ``init_bias``; ``init_std=None`` keeps
    PyTorch's default (uniform, fan-in scaled) for both."""

    init_std: float | None = None
    init_bias: float = 0.0

    def check(self, what: str) -> None:
        if self.init_std is not None and not (math.isfinite(self.init_std) and self.init_std > 0):
            raise DalibError(f"{what}.init_std must be a finite number > 0, got {self.init_std}")
        if not math.isfinite(self.init_bias):
            raise DalibError(f"{what}.init_bias must be a finite number, got {self.init_bias}")

    def apply(self, layer: nn.Linear) -> None:
        if self.init_std is not None:
            nn.init.normal_(layer.weight, 0.0, self.init_std)
            nn.init.constant_(layer.bias, self.init_bias)


def check_dropout(what: str, p: float) -> None:
    if not 0.0 <= p < 1.0:
        raise DalibError(f"{what}.dropout must be in [0, 1), got {p}")


@dataclass(frozen=True)
class BottleneckOptions(LinearInit):
    """``dropout`` after the bottleneck's ReLU, and its Linear layer's initialisation.

    The Transfer-Learning-Library's MDD bottleneck: ``dropout: 0.5, init_std: 0.005,
    init_bias: 0.1`` (tllib/alignment/mdd.py:332-340).
    """

    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.check("bottleneck_options")
        check_dropout("bottleneck_options", self.dropout)


@dataclass(frozen=True)
class HeadOptions(LinearInit):
    """``hidden_dim``: a hidden layer (Linear → ReLU → Dropout(``dropout``)) before the output
    Linear; ``None``, one Linear. The initialisation applies to every Linear of the head.

    The Transfer-Learning-Library's MDD head: ``hidden_dim: 1024, dropout: 0.5, init_std: 0.01``
    (tllib/alignment/mdd.py:343-360).
    """

    hidden_dim: int | None = None
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.check("head_options")
        check_dropout("head_options", self.dropout)
        if self.hidden_dim is not None and self.hidden_dim < 1:
            raise DalibError(
                f"head_options.hidden_dim must be >= 1 (or null), got {self.hidden_dim}"
            )
        if self.hidden_dim is None and self.dropout > 0:
            raise DalibError(
                "head_options.dropout needs head_options.hidden_dim: the dropout follows that layer"
            )


def options(cls: type, spec: Mapping[str, Any] | None, what: str):
    """``cls`` from a config mapping (``None``: the defaults), naming unknown keys."""
    spec = dict(spec or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise DalibError(f"unknown {what} option(s) {unknown}; choose from {sorted(known)}")
    return cls(**spec)


def as_config(value: BottleneckOptions | HeadOptions) -> dict[str, Any] | None:
    """The options as a config mapping, ``None`` when they are all defaults."""
    return asdict(value) if value != type(value)() else None


def bottleneck(
    in_features: int, out_features: int, opts: BottleneckOptions | None = None
) -> nn.Sequential:
    """Linear → BatchNorm → ReLU (→ Dropout), the bottleneck of the Office-31 protocol (DAN,
    CDAN) and, with dropout and its init, of MDD."""
    opts = opts or BottleneckOptions()
    linear = nn.Linear(in_features, out_features)
    opts.apply(linear)
    layers: list[nn.Module] = [linear, nn.BatchNorm1d(out_features), nn.ReLU()]
    if opts.dropout > 0:
        layers.append(nn.Dropout(opts.dropout))
    return nn.Sequential(*layers)


def head(in_features: int, num_classes: int, opts: HeadOptions | None = None) -> nn.Module:
    """The classifier: one Linear, or Linear → ReLU → Dropout → Linear with ``hidden_dim``."""
    opts = opts or HeadOptions()
    if opts.hidden_dim is None:
        layer = nn.Linear(in_features, num_classes)
        opts.apply(layer)
        return layer
    layers = [nn.Linear(in_features, opts.hidden_dim), nn.Linear(opts.hidden_dim, num_classes)]
    for layer in layers:
        opts.apply(layer)
    return nn.Sequential(layers[0], nn.ReLU(), nn.Dropout(opts.dropout), layers[1])


def output_layer(module: nn.Module) -> nn.Linear:
    """The head's last Linear layer, the one that outputs the class logits."""
    return module if isinstance(module, nn.Linear) else module[-1]
