"""Feature extractors, selected by name: ``backbone: {name: mlp, hidden_dims: [...]}``.

Each factory receives the input shape of the data and returns a module with an ``out_features``
attribute, so the bottleneck, head and discrepancy can be sized without a dummy forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from dalib.errors import DalibError
from dalib.registry import Registry

BACKBONES: Registry[nn.Module] = Registry("backbone", "dalib.backbones")
#: Batch-norm layers (torch's common base class of these is private).
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


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


class Flat(nn.Flatten):
    """No layers: the inputs, flattened, are the features (cached features, feature files)."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.out_features = in_features


@BACKBONES.register("identity")
def identity(input_shape: Sequence[int]) -> Flat:
    """The inputs themselves as features: heads on precomputed or cached features."""
    return Flat(math.prod(input_shape))


class LeNet(nn.Sequential):
    """The convolutional part of LeNet for 28x28 grey digits.

    conv 5x5 (20) → max-pool → ReLU → conv 5x5 (50) → dropout → max-pool → ReLU → flatten:
    800 features for a 1x28x28 input. With ``fully_connected`` it goes on as the
    Transfer-Learning-Library's digits LeNet does: Linear(800, 500) → ReLU → Dropout(0.5), 500
    features (TLL then adds its 256-d bottleneck: ``bottleneck_dim: 256``).
    """

    def __init__(self, in_channels: int = 1, fully_connected: bool = False) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, 20, kernel_size=5),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Conv2d(20, 50, kernel_size=5),
            nn.Dropout2d(p=0.5),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Flatten(),
        ]
        self.out_features = 50 * 4 * 4
        if fully_connected:
            layers += [nn.Linear(self.out_features, 500), nn.ReLU(), nn.Dropout(p=0.5)]
            self.out_features = 500
        super().__init__(*layers)


def check_digit_shape(name: str, input_shape: Sequence[int]) -> None:
    if len(input_shape) != 3 or tuple(input_shape[1:]) != (28, 28):
        raise DalibError(
            f"{name} takes (channels, 28, 28) images, got inputs of shape {tuple(input_shape)}; "
            "resize the digits to 28x28"
        )


@BACKBONES.register("lenet")
def lenet(input_shape: Sequence[int]) -> LeNet:
    """LeNet's convolutions on (C, 28, 28) images: 800 features."""
    check_digit_shape("lenet", input_shape)
    return LeNet(input_shape[0])


@BACKBONES.register("lenet_fc")
def lenet_fc(input_shape: Sequence[int]) -> LeNet:
    """LeNet with its 500-unit fully connected layer (the Transfer-Learning-Library's digits
    backbone) on (C, 28, 28) images: 500 features."""
    check_digit_shape("lenet_fc", input_shape)
    return LeNet(input_shape[0], fully_connected=True)


class DTN(nn.Sequential):
    """The digits CNN ("DTN") of the SVHN→MNIST experiments of CDAN and its successors.

    Three blocks of conv 5x5 stride 2 padding 2 (64, 128, 256 channels) → BatchNorm → Dropout2d
    (0.1, 0.3, 0.5) → ReLU, flattened: 256·4·4 = 4096 features for a 3x32x32 input. With
    ``fully_connected`` it goes on as the Transfer-Learning-Library's DTN does: Linear(4096, 512)
    → BatchNorm → ReLU → Dropout(0.5), 512 features.
    """

    def __init__(
        self, in_channels: int, height: int, width: int, fully_connected: bool = False
    ) -> None:
        layers: list[nn.Module] = []
        for c_in, c_out, dropout in [(in_channels, 64, 0.1), (64, 128, 0.3), (128, 256, 0.5)]:
            layers += [
                nn.Conv2d(c_in, c_out, kernel_size=5, stride=2, padding=2),
                nn.BatchNorm2d(c_out),
                nn.Dropout2d(dropout),
                nn.ReLU(),
            ]
        layers.append(nn.Flatten())
        # Each block maps a side of n pixels to ceil(n / 2).
        self.out_features = 256 * math.ceil(height / 8) * math.ceil(width / 8)
        if fully_connected:
            layers += [
                nn.Linear(self.out_features, 512),
                nn.BatchNorm1d(512),
                nn.ReLU(),
                nn.Dropout(p=0.5),
            ]
            self.out_features = 512
        super().__init__(*layers)


def check_image_shape(name: str, input_shape: Sequence[int]) -> None:
    if len(input_shape) != 3:
        raise DalibError(
            f"{name} takes images of shape (channels, height, width), got inputs of shape "
            f"{tuple(input_shape)}"
        )


@BACKBONES.register("dtn")
def dtn(input_shape: Sequence[int]) -> DTN:
    """DTN's convolutions on (C, H, W) images, usually 3x32x32 (SVHN, and MNIST resized to 32x32
    in RGB)."""
    check_image_shape("dtn", input_shape)
    return DTN(*input_shape)


@BACKBONES.register("dtn_fc")
def dtn_fc(input_shape: Sequence[int]) -> DTN:
    """DTN with its 512-unit fully connected layer (the Transfer-Learning-Library's SVHN→MNIST
    backbone): 512 features."""
    check_image_shape("dtn_fc", input_shape)
    return DTN(*input_shape, fully_connected=True)


class FeatureExtractor(nn.Module):
    """A classification network without its classifier: images → pooled feature vectors.

    With ``frozen_bn`` every BatchNorm layer stays in eval mode even when the module is put in
    train mode: it normalises with its running (pretrained) statistics and never updates them,
    as small batches and checkpoints with folded BatchNorm need. Its affine weights still train.
    """

    def __init__(self, body: nn.Module, out_features: int, frozen_bn: bool = False) -> None:
        super().__init__()
        self.body = body
        self.out_features = out_features
        self.frozen_bn = frozen_bn
        self.train(self.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def train(self, mode: bool = True) -> FeatureExtractor:
        super().train(mode)
        if self.frozen_bn:
            for module in self.modules():
                if isinstance(module, BATCH_NORMS):
                    module.eval()
        return self


#: torchvision architectures registered under their torchvision names. Each ends in ``fc`` or
#: ``classifier`` (the linear layer(s) after global pooling), which the backbone drops.
TORCHVISION_ARCHITECTURES = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "wide_resnet50_2",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
)
MIN_IMAGE_SIZE = 32  # these networks downsample by 32


def check_rgb_images(name: str, input_shape: Sequence[int]) -> None:
    """ImageNet networks take (3, H, W) images, H and W at least ``MIN_IMAGE_SIZE``."""
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[0] != 3 or min(shape[1:]) < MIN_IMAGE_SIZE:
        raise DalibError(
            f"{name} takes RGB images of shape (3, H, W) with H, W >= {MIN_IMAGE_SIZE}, got inputs "
            f"of shape {shape}; convert the images to 3 channels and resize them"
        )


def one_line(error: BaseException, limit: int = 200) -> str:
    """An exception's type and message on one line, cut to ``limit`` characters."""
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_checkpoint(model: nn.Module, arch: str, checkpoint: str) -> None:
    """Load a local state_dict for the full torchvision ``model``, strictly."""
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise DalibError(
            f"{arch} checkpoint {str(path)!r} does not exist; give the path of a state_dict file"
        )
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # unpickling raises many types; all mean "not a state_dict"
        raise DalibError(
            f"cannot read {arch} checkpoint {str(path)!r} with torch.load(weights_only=True) "
            f"({type(error).__name__}); save a plain state_dict with torch.save(model.state_dict())"
        ) from error
    if not isinstance(state, Mapping):
        raise DalibError(
            f"{arch} checkpoint {str(path)!r} holds a {type(state).__name__}, not a state_dict"
        )
    mismatches = state_dict_mismatches(model.state_dict(), state)
    if mismatches:
        more = f" (and {len(mismatches) - 1} more)" if len(mismatches) > 1 else ""
        raise DalibError(
            f"checkpoint {str(path)!r} does not fit torchvision's {arch}: {mismatches[0]}{more}; "
            f"it must be the state_dict of torchvision.models.{arch}(weights=None)"
        )
    model.load_state_dict(state, strict=True)


def state_dict_mismatches(expected: Mapping[str, Any], given: Mapping[str, Any]) -> list[str]:
    """Missing and unexpected keys and shape mismatches of ``given`` against ``expected``."""
    problems = [f"missing key {key!r}" for key in expected if key not in given]
    problems += [f"unexpected key {key!r}" for key in given if key not in expected]
    for key, tensor in given.items():
        shape = getattr(tensor, "shape", None)
        if key in expected and shape != expected[key].shape:
            problems.append(
                f"{key!r} has shape {tuple(shape or ())} in the file but "
                f"{tuple(expected[key].shape)} in the model"
            )
    return problems


def download_weights(arch: str, weights: str) -> nn.Module:
    """torchvision's ``arch`` with the named pretrained weights, downloaded or from its cache."""
    choices = torchvision.models.get_model_weights(arch).__members__
    if weights not in choices:
        raise DalibError(
            f"unknown weights {weights!r} for {arch}; choose one of: {', '.join(choices)}"
        )
    try:
        return torchvision.models.get_model(arch, weights=choices[weights])
    except (OSError, RuntimeError) as error:  # no network, or a corrupt download
        raise DalibError(
            f"could not download the {weights} weights of {arch} ({one_line(error)}); without "
            f"network, give a local state_dict file as checkpoint: <path> instead"
        ) from error


def torchvision_backbone(
    arch: str,
    input_shape: Sequence[int],
    weights: str | None,
    checkpoint: str | None,
    frozen_bn: bool,
) -> FeatureExtractor:
    """torchvision's ``arch``, random, with downloaded weights or from a checkpoint, headless."""
    check_rgb_images(arch, input_shape)
    if weights is not None and checkpoint is not None:
        raise DalibError(f"{arch} takes weights or checkpoint, not both; drop one of them")
    if weights is not None:
        model = download_weights(arch, weights)
    else:
        model = torchvision.models.get_model(arch, weights=None)
        if checkpoint is not None:
            load_checkpoint(model, arch, checkpoint)
    head_name = "fc" if hasattr(model, "fc") else "classifier"
    head = getattr(model, head_name)
    out_features = next(m for m in head.modules() if isinstance(m, nn.Linear)).in_features
    setattr(model, head_name, nn.Identity())
    return FeatureExtractor(model, out_features, frozen_bn)


def register_torchvision(arch: str) -> None:
    """Register ``arch`` as a backbone with the options weights, checkpoint and frozen_bn."""

    def factory(
        input_shape: Sequence[int],
        weights: str | None = None,
        checkpoint: str | None = None,
        frozen_bn: bool = False,
    ) -> FeatureExtractor:
        return torchvision_backbone(arch, input_shape, weights, checkpoint, frozen_bn)

    factory.__doc__ = (
        f"torchvision's {arch} without its classifier. weights: a torchvision weights name "
        "(downloaded); checkpoint: a local state_dict of the full model; frozen_bn: BatchNorm "
        "always in eval mode."
    )
    BACKBONES.register(arch)(factory)


for _arch in TORCHVISION_ARCHITECTURES:
    register_torchvision(_arch)


@BACKBONES.register("timm")
def timm_backbone(
    input_shape: Sequence[int], model: str, pretrained: bool = False, frozen_bn: bool = False
) -> FeatureExtractor:
    """Any timm model by name, without its classifier (needs ``pip install timm``)."""
    try:
        import timm
    except ImportError:
        raise DalibError("the timm backbone needs the timm package: pip install timm") from None
    check_rgb_images(f"timm model {model!r}", input_shape)
    try:
        net = timm.create_model(model, pretrained=pretrained, num_classes=0)
    except (OSError, RuntimeError) as error:  # unknown name, or pretrained weights unavailable
        raise DalibError(f"timm cannot create {model!r}: {one_line(error)}") from error
    return FeatureExtractor(net, net.num_features, frozen_bn)
