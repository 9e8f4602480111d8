"""The source accuracy that training logs: over the steps since the last log, cheap per step,
and carried across a resume."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy


class TrainingAccuracy(nn.Module):
    """Accuracy of the training source batches since the last ``compute_and_reset``.

    A step only keeps its (predicted class, label) pair; the metric sees them at each log, or
    every ``pending_limit`` steps (bounded memory when logs are far apart), as its update costs
    more than an argmax. ``state``/``restore`` carry the counts so far through a checkpoint, so a
    run resumed between two logs logs the accuracy an uninterrupted run logs. Under several
    processes the checkpoint holds rank 0's counts, which every process resumes with.
    """

    def __init__(self, num_classes: int, pending_limit: int = 100) -> None:
        super().__init__()
        self.metric = MulticlassAccuracy(num_classes, average="micro")
        self.pending_limit = pending_limit
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Keep one batch's predictions (``logits`` may be detached)."""
        self.pending.append((logits.argmax(1), labels))
        if len(self.pending) == self.pending_limit:
            self.flush()

    def flush(self) -> None:
        """Give the kept predictions to the metric."""
        if self.pending:
            predicted, labels = map(torch.cat, zip(*self.pending, strict=True))
            self.pending.clear()
            self.metric.update(predicted, labels)

    def compute_and_reset(self) -> torch.Tensor:
        """The accuracy since the last call (synchronised across processes by torchmetrics)."""
        self.flush()
        value = self.metric.compute()
        self.metric.reset()
        return value

    def state(self) -> dict[str, Any]:
        """The counts since the last ``compute_and_reset``, pending predictions included."""
        self.flush()
        return {name: value.clone() for name, value in self.metric.metric_state.items()}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (of ``state``)."""
        self.pending.clear()
        self.metric.reset()
        self.metric.merge_state(state)
