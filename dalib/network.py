"""The network: backbone → optional bottleneck → classifier head, and reading dalib checkpoints.

``bottleneck_options`` and ``head`` (``dalib.models.heads``) add what reference protocols use:
dropout after the bottleneck, a hidden layer in the head, Gaussian initialisations.

With ``unshared``, the target domain gets its own copy of the backbone (θ_t ≠ θ_s); the bottleneck
and head stay shared. Parameters are named relative to the network (``backbone.0.weight``,
``head.bias``): the names that ``lr_mults``, ``init_modules`` and ``Finetuning`` patterns use.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dalib.errors import DalibError
from dalib.models import BACKBONES, BottleneckOptions, HeadOptions, bottleneck, head
from dalib.models.heads import as_config, options
from dalib.registry import Spec, split_spec

PARTS = ("backbone", "bottleneck", "head", "target_backbone")
# Backbone options that fetch weights (a download, a file): not needed to rebuild a network whose
# weights come from a checkpoint
WEIGHT_OPTIONS = ("weights", "checkpoint", "pretrained")


class Network(nn.Module):
    """Feature extractor → optional bottleneck (Linear, BatchNorm, ReLU) → classifier head."""

    def __init__(
        self,
        num_classes: int,
        input_shape: Sequence[int],
        backbone: Spec = "mlp",
        bottleneck_dim: int | None = None,
        unshared: bool = False,
        bottleneck_options: Mapping[str, Any] | None = None,
        head_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise DalibError(f"num_classes must be >= 2, got {num_classes}")
        if bottleneck_dim is not None and bottleneck_dim < 1:
            raise DalibError(
                f"bottleneck_dim must be >= 1, got {bottleneck_dim}; null means no bottleneck"
            )
        bottleneck_opts = options(BottleneckOptions, bottleneck_options, "bottleneck_options")
        if bottleneck_dim is None and bottleneck_opts != BottleneckOptions():
            raise DalibError("bottleneck_options need a bottleneck: set bottleneck_dim")
        head_opts = options(HeadOptions, head_options, "head_options")
        self.config = {
            "num_classes": num_classes,
            "input_shape": list(input_shape),
            "backbone": backbone,
            "bottleneck_dim": bottleneck_dim,
            "unshared": unshared,
            "bottleneck_options": as_config(bottleneck_opts),
            "head_options": as_config(head_opts),
        }
        self.backbone = BACKBONES.build(backbone, input_shape=tuple(input_shape))
        width = self.backbone.out_features
        self.bottleneck = (
            nn.Identity()
            if bottleneck_dim is None
            else bottleneck(width, bottleneck_dim, bottleneck_opts)
        )
        #: the width of the features (the classifier's input) that the discrepancy aligns
        self.out_features = bottleneck_dim or width
        self.num_classes = num_classes
        self.head = head(self.out_features, num_classes, head_opts)
        self.target_backbone = copy.deepcopy(self.backbone) if unshared else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (of the target network when source and target are ``unshared``)."""
        return self.head(self.features(x))

    def features(self, x: torch.Tensor, domain: str = "target") -> torch.Tensor:
        """The features the discrepancy aligns: backbone (``domain``'s), then bottleneck."""
        return self.bottleneck(self.extractor(domain)(x))

    def extractor(self, domain: str) -> nn.Module:
        """The backbone of ``domain``: the shared one, or the target's own when ``unshared``."""
        if domain == "target" and self.target_backbone is not None:
            return self.target_backbone
        return self.backbone

    def paired_features(self, x_s: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        """Source then target features, as one bottleneck batch (BatchNorm sees both domains)."""
        if self.target_backbone is None:
            h = self.backbone(torch.cat([x_s, x_t]))
        else:
            h = torch.cat([self.backbone(x_s), self.target_backbone(x_t)])
        return self.bottleneck(h)

    def load_parts(self, checkpoint: str | Path, parts: Sequence[str]) -> None:
        """Copy the weights of ``parts`` (``backbone``, ``bottleneck``, ``head``) from a dalib
        checkpoint (``init_from``); an ``unshared`` target backbone then starts as the backbone."""
        load_parts(self, checkpoint, parts)
        if self.target_backbone is not None:
            self.target_backbone.load_state_dict(self.backbone.state_dict())

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, what: str) -> Network:
        """The network of a dalib checkpoint (a distillation teacher, say), with its weights."""
        hparams, state = read_checkpoint(checkpoint, what)
        try:
            network = cls.for_weights(
                {key: hparams[key] for key in ("num_classes", "input_shape", "backbone")}
                | {"bottleneck_dim": hparams.get("bottleneck_dim")}
                | {"bottleneck_options": hparams.get("bottleneck_options")}
                | {"head_options": hparams.get("head_options")}
                | {"unshared": hparams.get("unshared") is not None}
            )
        except KeyError as error:
            raise DalibError(
                f"{what} {str(checkpoint)!r} names no {error} in its hparams"
            ) from None
        network.load_state_dict(state)
        return network

    @classmethod
    def for_weights(cls, config: Mapping[str, Any]) -> Network:
        """A network of ``config``'s architecture whose weights are about to be loaded: no
        pretrained weights are downloaded or read for its backbone."""
        name, options = split_spec(config["backbone"], "backbone")
        options = {k: v for k, v in options.items() if k not in WEIGHT_OPTIONS}
        return cls(**{**config, "backbone": {"name": name, **options}})


def read_checkpoint(
    checkpoint: str | Path, what: str
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A dalib checkpoint's hyperparameters and its network's weights, named relative to the
    network (both the ``network.``-prefixed layout and dalib 0.1's flat one are read).

    ``torch.load(weights_only=True)``: a file from elsewhere cannot run code while it loads. The
    checkpoint is a Lightning ``.ckpt`` written by ``dalib fit``, or a plain ``state_dict``.
    """
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise DalibError(f"{what} {str(path)!r} does not exist; give a dalib .ckpt file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling raises many types; all mean "not a checkpoint"
        raise DalibError(
            f"cannot read {what} {str(path)!r} with torch.load(weights_only=True): "
            f"{type(error).__name__}"
        ) from error
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        raise DalibError(f"{what} {str(path)!r} holds no state_dict")
    hparams = dict(loaded.get("hyper_parameters", {}))
    prefixed = {k[len("network.") :]: v for k, v in state.items() if k.startswith("network.")}
    flat = {k: v for k, v in state.items() if k.partition(".")[0] in PARTS}
    return hparams, prefixed or flat


def load_parts(
    module: nn.Module, checkpoint: str | Path, parts: Sequence[str], what: str = "init_from"
) -> None:
    """Copy the weights of ``module``'s submodules ``parts`` from a dalib checkpoint; each named
    part must exist in both with the same shapes."""
    _, state = read_checkpoint(checkpoint, what)
    for prefix in parts:
        part = getattr(module, prefix, None)
        if not isinstance(part, nn.Module):
            raise DalibError(f"init_modules names {prefix!r}, which the network does not have")
        own = {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}
        try:
            part.load_state_dict(own, strict=True)
        except RuntimeError as error:
            first = str(error).split("\n")[1].strip() if "\n" in str(error) else str(error)
            raise DalibError(
                f"the {prefix} weights in {str(checkpoint)!r} do not fit this model ({first}); "
                f"use the same {prefix} settings as the run that wrote it"
            ) from None
