"""Time per training step and peak memory, measured during every run and kept in its record."""

from __future__ import annotations

import resource
import statistics
import time
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback


class StepStats(Callback):
    """Seconds between the starts of consecutive training steps (data fetch included), and the
    peak memory: the process's maximum resident set on CPU, the allocator's peak on a GPU."""

    def __init__(self, warmup: int = 5) -> None:
        self.warmup = warmup
        self.step_seconds: list[float] = []
        self._last_start: float | None = None
        self._steps_seen = 0

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if self._last_start is not None and self._steps_seen > self.warmup:
            self.step_seconds.append(now - self._last_start)
        self._last_start = now
        self._steps_seen += 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_start = None  # the validation between epochs is not a training step

    def record(self, device: torch.device) -> dict[str, float | None]:
        """``train_step_ms``: median step time after the warm-up; ``peak_memory_mib``."""
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device) / 2**20
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
        step_ms = 1e3 * statistics.median(self.step_seconds) if self.step_seconds else None
        return {"train_step_ms": step_ms, "peak_memory_mib": round(peak, 1)}
