"""A progress bar that costs nothing per step: redrawn by the clock, not at every batch."""

from __future__ import annotations

import math
import time

from pytorch_lightning.callbacks import TQDMProgressBar


class ThrottledProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, redrawn at most every ``min_interval_s`` seconds and at the end.

    The stock bar redraws and formats every metric after every batch (``refresh_rate: 1``),
    which costs a few percent of a small model's step on a CPU; people read a bar a few times a
    second at most.
    """

    def __init__(self, min_interval_s: float = 0.25, **kwargs) -> None:
        super().__init__(**kwargs)
        self.min_interval_s = min_interval_s
        self._last_draw = -math.inf

    def _should_update(self, current: int, total: int) -> bool:
        if not super()._should_update(current, total):
            return False
        now = time.monotonic()
        if current != total and now - self._last_draw < self.min_interval_s:
            return False
        self._last_draw = now
        return True
