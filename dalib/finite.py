"""Training stops at a non-finite loss, and no checkpoint ever holds a non-finite weight."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from dalib.errors import DalibError


class NonFiniteLossError(DalibError):
    """The training loss, or a weight about to be checkpointed, became NaN or infinite."""


class FiniteGuard(Callback):
    """Stops training with ``NonFiniteLossError`` when the loss (the ``"loss"`` of what
    ``training_step`` returns, with the other terms it returns in the message) is NaN or
    infinite, and refuses to write a checkpoint of non-finite weights, naming the first one
    (a huge learning rate can make the weights infinite while the step's loss was finite).
    The earlier checkpoints stay as they were.

    The loss is checked after every step on a CPU, where the check is free; on an accelerator,
    where it waits for the step's kernels, at the logging steps and the epoch's last batch.
    Lightning runs checkpoint callbacks after this one: a failed step's checkpoint is not written.
    """

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        if not isinstance(outputs, Mapping) or "loss" not in outputs:
            return
        logged = trainer.global_step % trainer.log_every_n_steps == 0 or trainer.is_last_batch
        if pl_module.device.type != "cpu" and not logged:
            return
        if not torch.isfinite(outputs["loss"]):
            values = ", ".join(
                f"{name}={float(value):.4g}"
                for name, value in outputs.items()
                if isinstance(value, torch.Tensor) and value.dim() == 0
            )
            step = trainer.global_step - 1  # the step that just ended
            when = "at" if pl_module.device.type == "cpu" else "by"
            raise NonFiniteLossError(
                f"the training loss became non-finite {when} step {step} ({values}); lower lr or "
                "gamma, or check the data for NaN/inf; earlier checkpoints are kept"
            )

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        params = dict(pl_module.named_parameters())
        finite = torch.stack([torch.isfinite(p).all() for p in params.values()])
        if not finite.all():
            name = list(params)[int((~finite).nonzero()[0])]
            raise NonFiniteLossError(
                f"parameter {name} became non-finite by step {trainer.global_step}, so no "
                "checkpoint is written (earlier ones are kept); lower lr or gamma, or check the "
                "data for NaN/inf"
            )
