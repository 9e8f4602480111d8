"""Time per training step and peak memory, measured during every run and kept in its record."""

from __future__ import annotations

import contextlib
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback


class StepStats(Callback):
    """Seconds between the starts of consecutive training steps (data fetch included), in wall
    time and in the process's CPU time (all its threads: a measure that other programs on a
    shared machine slow down much less), and the peak memory of training: on a CPU the
    process's largest resident set from the start of training (not the loading of the data
    before it), on a GPU the allocator's peak."""

    def __init__(self, warmup: int = 5) -> None:
        self.warmup = warmup
        self.step_seconds: list[float] = []
        self.step_cpu_seconds: list[float] = []
        self._last_start: tuple[float, float] | None = None
        self._steps_seen = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        reset_peak_rss()

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter(), time.process_time()
        if self._last_start is not None and self._steps_seen > self.warmup:
            self.step_seconds.append(now[0] - self._last_start[0])
            self.step_cpu_seconds.append(now[1] - self._last_start[1])
        self._last_start = now
        self._steps_seen += 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_start = None  # the validation between epochs is not a training step

    def record(self, device: torch.device) -> dict[str, float | None]:
        """``train_step_ms`` and ``train_step_cpu_ms``: median step time after the warm-up;
        ``train_step_mean_ms`` and ``train_step_cpu_mean_ms``: the mean, which also counts the
        occasional slower steps (logging, a mid-epoch checkpoint); ``peak_memory_mib``."""
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device) / 2**20
        else:
            peak = peak_rss_mib()
        return {
            "train_step_ms": median_ms(self.step_seconds),
            "train_step_cpu_ms": median_ms(self.step_cpu_seconds),
            "train_step_mean_ms": mean_ms(self.step_seconds),
            "train_step_cpu_mean_ms": mean_ms(self.step_cpu_seconds),
            "peak_memory_mib": round(peak, 1),
        }


def median_ms(seconds: list[float]) -> float | None:
    return 1e3 * statistics.median(seconds) if seconds else None


def mean_ms(seconds: list[float]) -> float | None:
    return 1e3 * statistics.fmean(seconds) if seconds else None


def reset_peak_rss() -> None:
    """Restart the kernel's count of this process's peak resident set (Linux); elsewhere none."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mib() -> float:
    """The peak resident set since ``reset_peak_rss`` (Linux), else since the process began."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
