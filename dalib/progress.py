"""A progress bar that costs nothing per step: redrawn by the clock, not at every batch."""

from __future__ import annotations

import math
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar


class ThrottledProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, redrawn during training at most every ``min_interval_s`` seconds
    and at the epoch's last batch.

    The stock bar redraws and formats every metric after every batch (``refresh_rate: 1``),
    which costs a few percent of a small model's step on a CPU; people read a bar a few times a
    second at most. Skipping the stock ``on_train_batch_end`` loses nothing: its next call sets
    the bar to that batch's count.
    """

    def __init__(self, min_interval_s: float = 0.25, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.min_interval_s = min_interval_s
        self.last_draw = -math.inf

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        now = time.monotonic()
        last = batch_idx + 1 == self.total_train_batches
        if last or now - self.last_draw >= self.min_interval_s:
            self.last_draw = now
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
