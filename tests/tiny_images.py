"""A tiny digits-like image dataset for tests that need images but not MNIST: configs name it as
the plugin spec ``{name: "tests.tiny_images:tiny_digits"}`` (subprocesses included)."""

from __future__ import annotations

import torch

from dalib.data.digits import DigitImages
from dalib.data.domains import DomainPair


def tiny_digits(samples: int = 120, seed: int = 0) -> DomainPair:
    """Ten classes of 1x28x28 uint8 images, each a class pattern with noise; the target's
    patterns are brighter. ``samples`` per training domain, labels ``i % 10``."""
    generator = torch.Generator().manual_seed(seed)
    patterns = torch.rand(10, 1, 28, 28, generator=generator)

    def domain(n: int, brightness: float) -> DigitImages:
        labels = torch.arange(n) % 10
        noise = torch.rand(n, 1, 28, 28, generator=generator)
        images = (0.7 * patterns[labels] + 0.3 * noise + brightness).clamp(0, 1)
        return DigitImages((255 * images).round().to(torch.uint8), labels)

    return DomainPair(
        benchmark="tiny_digits",
        task="S->T",
        source=domain(samples, 0.0),
        target_train=domain(samples, 0.2),
        target_test=domain(50, 0.2),
        num_classes=10,
    )
