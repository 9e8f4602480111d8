"""Lightning's own share: the bare loop's training (``benchmarks/bare_loop.py``: same network,
objective, optimiser and batches) as the smallest LightningModule a user would write, with no
dalib, callbacks, logger, checkpoints, progress bar or validation.

Automatic optimisation (``training_step`` returns the loss; Lightning runs backward, the
optimiser step and the per-step LR schedule), as dalib's module does, and a ``CombinedLoader`` of
the two domains' loaders: what is left over the bare loop is the cost of Lightning's training
loop itself, below which ``dalib fit`` cannot go.
"""

from __future__ import annotations

import time
import warnings

import pytorch_lightning as pl
import torch
from bare_loop import build, objective, sampled_loader, step_times
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import Dataset


class MinimalModule(pl.LightningModule):
    def __init__(self, steps: int, dann: bool, lr: float, bottleneck: int, fully_connected: bool):
        super().__init__()
        self.steps = steps
        self.net, self.optimizer, self.scheduler = build(
            steps, dann, lr, bottleneck, fully_connected
        )
        self.starts: list[tuple[float, float]] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.starts.append((time.perf_counter(), time.process_time()))
        (x_s, y_s), (x_t, _) = batch["source"], batch["target"]
        return objective(self.net, x_s, y_s, x_t, batch_idx / self.steps)

    def configure_optimizers(self):
        return {
            "optimizer": self.optimizer,
            "lr_scheduler": {"scheduler": self.scheduler, "interval": "step"},
        }


def train_lightning(
    source: Dataset, target: Dataset, steps: int, dann: bool, batch_size: int = 32,
    lr: float = 0.01, bottleneck: int = 500, fully_connected: bool = False,
) -> dict[str, list[float]]:  # fmt: skip
    """Train ``steps`` steps under a bare ``Trainer``; each step's seconds, as ``bare_loop.train``
    gives them (from one ``training_step`` start to the next)."""
    module = MinimalModule(steps, dann, lr, bottleneck, fully_connected)
    loaders = CombinedLoader(
        {
            "source": sampled_loader(source, batch_size, steps),
            "target": sampled_loader(target, batch_size, steps),
        },
        mode="min_size",
    )
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, train_dataloaders=loaders)
    return step_times(module.starts)
