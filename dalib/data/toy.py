"""Embedded default data with a real domain shift, generated on the fly and seeded.

No download and no files: a fresh install can train and test on these.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.datasets import make_blobs, make_moons

from dalib.data.batched import BatchedTensorDataset
from dalib.data.domains import DATASETS, DomainPair
from dalib.errors import DalibError


def _tensors(x: np.ndarray, y: np.ndarray) -> BatchedTensorDataset:
    return BatchedTensorDataset(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y))


def _check_sizes(**sizes: int) -> None:
    for name, size in sizes.items():
        if size < 2:
            raise DalibError(f"{name} must be at least 2 samples, got {size}")


def rotate(x: np.ndarray, degrees: float, centre: np.ndarray) -> np.ndarray:
    """Rotate 2-d points counter-clockwise by ``degrees`` around ``centre``."""
    a = math.radians(degrees)
    rotation = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return (x - centre) @ rotation.T + centre


@DATASETS.register("moons")
def rotated_moons(
    angle: float = 35.0,
    n_source: int = 300,
    n_target: int = 300,
    n_test: int = 1000,
    noise: float = 0.1,
    seed: int = 0,
) -> DomainPair:
    """Two interleaving moons; the target is the same distribution rotated by ``angle`` degrees.

    The toy problem of Ganin et al., "Domain-Adversarial Training of Neural Networks" (JMLR 2016,
    Sec. 5.1.1: 150 samples per class and domain, 35° rotation). Rotation is about the centre of
    the two moons, (0.5, 0.25).
    """
    _check_sizes(n_source=n_source, n_target=n_target, n_test=n_test)
    centre = np.array([0.5, 0.25])
    rng = np.random.RandomState(seed)
    x_s, y_s = make_moons(n_source, noise=noise, random_state=rng)
    x_t, y_t = make_moons(n_target + n_test, noise=noise, random_state=rng)
    x_t = rotate(x_t, angle, centre)
    return DomainPair(
        benchmark="moons",
        task=f"moons->moons rotated {angle:g}°",
        source=_tensors(x_s, y_s),
        target_train=_tensors(x_t[:n_target], y_t[:n_target]),
        target_test=_tensors(x_t[n_target:], y_t[n_target:]),
        num_classes=2,
        target_test_origin=f"{n_test} target samples drawn apart from the training ones",
    )


@DATASETS.register("blobs")
def shifted_blobs(
    num_classes: int = 3,
    num_features: int = 2,
    shift: float = 3.0,
    scale: float = 1.5,
    n_source: int = 600,
    n_target: int = 600,
    n_test: int = 1500,
    cluster_std: float = 1.0,
    seed: int = 0,
) -> DomainPair:
    """Gaussian blobs; the target moves every point by ``shift`` along the first axis and
    stretches it by ``scale`` about the origin, so a source-trained boundary misplaces it."""
    _check_sizes(n_source=n_source, n_target=n_target, n_test=n_test)
    if num_classes < 2 or num_features < 1:
        raise DalibError("blobs need num_classes >= 2 and num_features >= 1")
    rng = np.random.RandomState(seed)
    centres = rng.uniform(-5.0, 5.0, size=(num_classes, num_features))
    x_s, y_s = make_blobs(n_source, centers=centres, cluster_std=cluster_std, random_state=rng)
    x_t, y_t = make_blobs(
        n_target + n_test, centers=centres, cluster_std=cluster_std, random_state=rng
    )
    x_t = x_t * scale
    x_t[:, 0] += shift
    return DomainPair(
        benchmark="blobs",
        task=f"blobs->blobs shifted {shift:g}, scaled {scale:g}",
        source=_tensors(x_s, y_s),
        target_train=_tensors(x_t[:n_target], y_t[:n_target]),
        target_test=_tensors(x_t[n_target:], y_t[n_target:]),
        num_classes=num_classes,
        target_test_origin=f"{n_test} target samples drawn apart from the training ones",
    )
