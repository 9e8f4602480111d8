"""The yardstick: source-only and DANN training on digits in plain PyTorch (no Lightning, no dalib).

The same network as dalib's ``backbone: lenet`` with a bottleneck (LeNet → Linear-BN-ReLU →
Linear; with ``fully_connected``, ``backbone: lenet_fc``, which adds LeNet's 500-unit layer)
and, for DANN, the same discriminator (two hidden layers of 1024 with BN and ReLU) behind a
gradient-reversal layer; SGD with Nesterov momentum 0.9, weight decay 1e-3 and the inverse
decay ``lr·(1+10p)^-0.75``; one source and one target batch per step, each drawn by a
``RandomSampler``. Only the datasets (the same tensors for both contenders) and the memory
probe come from dalib.
"""

from __future__ import annotations

import itertools
import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

from dalib.step_stats import peak_rss_mib, reset_peak_rss


class ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return -grad


def lenet_classifier(
    num_classes: int = 10, bottleneck: int = 500, fully_connected: bool = False
) -> tuple[nn.Module, nn.Module]:
    """LeNet's convolutions (with ``fully_connected``, its 500-unit layer as well), then the
    bottleneck; and the classifier head."""
    layers = [
        nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(20, 50, 5), nn.Dropout2d(0.5), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(),
    ]  # fmt: skip
    width = 800
    if fully_connected:
        layers += [nn.Linear(800, 500), nn.ReLU(), nn.Dropout(0.5)]
        width = 500
    layers += [nn.Linear(width, bottleneck), nn.BatchNorm1d(bottleneck), nn.ReLU()]
    return nn.Sequential(*layers), nn.Linear(bottleneck, num_classes)


def discriminator(width: int = 500, hidden: int = 1024) -> nn.Module:
    return nn.Sequential(
        nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
        nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
        nn.Linear(hidden, 1),
    )  # fmt: skip


def sampled_loader(dataset: Dataset, batch_size: int, steps: int) -> DataLoader:
    """``steps`` batches of ``dataset``, drawn by a ``RandomSampler``."""
    sampler = RandomSampler(dataset, num_samples=steps * batch_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True)


def build(
    steps: int, dann: bool, lr: float, bottleneck: int, fully_connected: bool
) -> tuple[nn.ModuleList, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The network (features, head and, for DANN, the discriminator), its optimiser and LR
    schedule."""
    features, head = lenet_classifier(bottleneck=bottleneck, fully_connected=fully_connected)
    modules = nn.ModuleList([features, head] + ([discriminator(bottleneck)] if dann else []))
    optimizer = torch.optim.SGD(modules.parameters(), lr=lr, momentum=0.9, weight_decay=1e-3,
                                nesterov=True)  # fmt: skip
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: (1 + 10 * min(1.0, step / steps)) ** -0.75
    )
    return modules, optimizer, scheduler


def objective(
    modules: nn.ModuleList, x_s: torch.Tensor, y_s: torch.Tensor, x_t: torch.Tensor,
    progress: float,
) -> torch.Tensor:  # fmt: skip
    """Source cross-entropy, plus for DANN γ(p)·the discriminator's loss through the reversal."""
    features, head = modules[0], modules[1]
    if len(modules) == 2:
        return F.cross_entropy(head(features(x_s)), y_s)
    f = features(torch.cat([x_s, x_t]))
    logits = head(f[: len(x_s)])
    gamma = 2 / (1 + math.exp(-10 * progress)) - 1
    d = modules[2](ReverseGradient.apply(f)).squeeze(1)
    d_s, d_t = d[: len(x_s)], d[len(x_s) :]
    loss_d = 0.5 * (
        F.binary_cross_entropy_with_logits(d_s, torch.ones_like(d_s))
        + F.binary_cross_entropy_with_logits(d_t, torch.zeros_like(d_t))
    )
    return F.cross_entropy(logits, y_s) + gamma * loss_d


def step_times(starts: list[tuple[float, float]]) -> dict[str, list[float]]:
    """Seconds between consecutive (wall, CPU) step starts."""
    pairs = list(itertools.pairwise(starts))
    return {"wall": [b[0] - a[0] for a, b in pairs], "cpu": [b[1] - a[1] for a, b in pairs]}


def train(
    source: Dataset, target: Dataset, steps: int, dann: bool, batch_size: int = 32,
    lr: float = 0.01, bottleneck: int = 500, fully_connected: bool = False,
) -> dict[str, list[float] | float]:  # fmt: skip
    """Train ``steps`` steps; return each step's seconds (``wall``, and the process's ``cpu``
    time), from the start of one step to the start of the next (fetch both batches, forward,
    backward, optimiser and scheduler step), and the process's peak resident set during
    training (``peak_mib``, as dalib's ``StepStats`` measures it on a CPU)."""
    modules, optimizer, scheduler = build(steps, dann, lr, bottleneck, fully_connected)
    modules.train()
    source_batches = iter(sampled_loader(source, batch_size, steps))
    target_batches = iter(sampled_loader(target, batch_size, steps))
    starts = []
    reset_peak_rss()
    for step in range(steps):
        starts.append((time.perf_counter(), time.process_time()))
        x_s, y_s = next(source_batches)
        x_t, _ = next(target_batches)
        loss = objective(modules, x_s, y_s, x_t, step / steps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    starts.append((time.perf_counter(), time.process_time()))
    return {**step_times(starts), "peak_mib": peak_rss_mib()}
