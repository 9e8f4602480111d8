"""Digits through ``torchvision.datasets``: MNIST, USPS and SVHN under the standard DA protocols.

- MNIST↔USPS: 28x28 grey; USPS (16x16) is resized to 28x28 (the Transfer-Learning-Library
  protocol for LeNet).
- SVHN→MNIST: 32x32 with three channels; MNIST is resized to 32x32 and its grey channel
  repeated (the DTN protocol).

Full training splits for training (target labels hidden by the data module); the target's test
split for evaluation. Images are decoded once into uint8 tensors and normalised per item to
[-1, 1] (a batch at once), so loading costs next to nothing. No augmentation, except the weak
and strong target views of ``data.target_views`` (``DigitImages.views``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.transforms import v2

from dalib.data.batched import BatchedTensorDataset
from dalib.data.domains import DATASETS, DomainPair
from dalib.data.roots import data_root, where_from
from dalib.data.views import ImageViews, ViewOptions, compose
from dalib.errors import DalibError

DIGITS: dict[str, Callable[..., Dataset]] = {
    "MNIST": lambda root, train, download: datasets.MNIST(root, train=train, download=download),
    "USPS": lambda root, train, download: datasets.USPS(root, train=train, download=download),
    "SVHN": lambda root, train, download: datasets.SVHN(
        root, split="train" if train else "test", download=download
    ),
}
TASKS = {("MNIST", "USPS"): (1, 28), ("USPS", "MNIST"): (1, 28), ("SVHN", "MNIST"): (3, 32)}
DIGIT_SHIFT = 0.125  # FixMatch's weak shift, 4 pixels of 32 (libml/augment.py:351)


class DigitImages(Dataset):
    """uint8 images (n, C, H, W) and labels, returned as floats in [-1, 1]."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.targets = images, labels

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return to_unit_range(self.images[index]), int(self.targets[index])

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        """The samples at ``indices``, normalised as one batch (``dalib.data.batched``)."""
        images = to_unit_range(self.images[indices])
        return list(zip(images.unbind(0), self.targets[indices].tolist(), strict=True))

    def views(self, options: ViewOptions) -> ImageViews:
        """FixMatch's weak and strong views of these images (``dalib.data.views``): a
        reflect-padded shift by up to ``options.shift`` of the side (no flip: digits are not
        mirror-symmetric); the strong view adds RandAugment (on the uint8 pixels) and Cutout."""
        size = self.images.shape[-1]
        pad = round((DIGIT_SHIFT if options.shift is None else options.shift) * size)
        shift = v2.RandomCrop(size, padding=pad, padding_mode="reflect") if pad > 0 else None
        return ImageViews(
            images=BatchedTensorDataset(self.images, self.targets),
            weak=compose(shift, to_unit_range),
            strong=compose(shift, options.randaugment(), to_unit_range, options.cutout_step()),
        )


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels as floats in [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def load_digits(
    name: str, train: bool, channels: int, size: int, root: str | os.PathLike | None,
    download: bool,
) -> DigitImages:  # fmt: skip
    """One split of a digits dataset as ``channels`` x ``size`` x ``size`` uint8 tensors."""
    folder = data_root(root)
    images, labels = decoded_digits(name, train, channels, size, folder, root, download)
    return DigitImages(images, labels)


@functools.lru_cache(maxsize=8)
def decoded_digits(
    name: str, train: bool, channels: int, size: int, folder: Path,
    root: str | os.PathLike | None, download: bool,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Decoded and resized images and labels, kept for the process: a sweep's runs or a test
    session load each split once (USPS is a bz2 text file, slow to parse)."""
    try:
        raw = DIGITS[name](str(folder), train, download)
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted ..."
        if "not found" not in str(error):
            raise unreadable(name, folder, root, error) from None
        raise DalibError(
            f"{name} not found under {folder} (data folder from {where_from(root)}): {error}; "
            "set data.dataset.download: true to fetch it with torchvision"
        ) from None
    except (EOFError, OSError, ValueError) as error:  # a truncated or corrupt (bz2) file
        raise unreadable(name, folder, root, error) from None
    if name == "SVHN":
        images = torch.as_tensor(raw.data)  # (n, 3, 32, 32) uint8
        labels = torch.as_tensor(raw.labels)  # torchvision already maps the label 10 to 0
    elif name == "USPS":
        images = torch.as_tensor(np.asarray(raw.data, dtype=np.uint8)).unsqueeze(1)
        labels = torch.as_tensor(raw.targets)
    else:
        images, labels = raw.data.unsqueeze(1), raw.targets
    if images.shape[-1] != size:
        images = TF.resize(images, [size, size], antialias=True)
    if images.shape[1] != channels:
        images = images.expand(-1, channels, -1, -1).contiguous()
    return images, labels.long()


def unreadable(name: str, folder: Path, root: str | os.PathLike | None, error: Exception):
    """The error for a dataset whose files are there but cannot be decoded."""
    return DalibError(
        f"{name} under {folder} (data folder from {where_from(root)}) could not be read, a "
        f"truncated or corrupt file? ({error}); delete its files and fetch them again "
        "(data.dataset.download: true)"
    )


@DATASETS.register("digits")
def digits(
    source: str = "MNIST",
    target: str = "USPS",
    root: str | None = None,
    download: bool = False,
) -> DomainPair:
    """A digits task: MNIST→USPS, USPS→MNIST or SVHN→MNIST, tested on the target's test split.

    Args:
        source: the source digits: MNIST, USPS or SVHN (all its training split, labelled).
        target: the target digits, adapted to on its training split (labels hidden).
        root: the data folder (default ``$DALIB_DATA``, else ``~/.cache/dalib``).
        download: fetch missing files with torchvision.
    """
    s, t = source.upper(), target.upper()
    if (s, t) not in TASKS:
        tasks = ", ".join(f"{a}->{b}" for a, b in TASKS)
        raise DalibError(f"unknown digits task {source}->{target}; choose one of {tasks}")
    channels, size = TASKS[s, t]
    return DomainPair(
        benchmark="digits",
        task=f"{s}->{t}",
        source=load_digits(s, True, channels, size, root, download),
        target_train=load_digits(t, True, channels, size, root, download),
        target_test=load_digits(t, False, channels, size, root, download),
        num_classes=10,
        target_test_origin=f"{t} test split",
    )
