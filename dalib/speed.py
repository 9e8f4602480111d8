"""Speed switches that change how the network runs, not what it computes: a config callback.

``trainer.callbacks: [{class_path: dalib.speed.SpeedOptions, init_args: {compile: true}}]``
(or ``channels_last: true``). The others are Lightning's and the data module's own settings:
``trainer.precision: bf16-mixed`` (mixed precision), ``data.num_workers``, ``data.pin_memory``.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

COMPILED_PARTS = ("backbone", "bottleneck", "head")


class SpeedOptions(Callback):
    """``compile``: ``torch.compile`` the backbone, bottleneck and classifier in place (their
    parameters and checkpoint keys stay as they are; the first steps pay the compilation).
    ``channels_last``: keep the model's 4-D weights in channels-last memory format, which
    convolutions on recent GPUs (and oneDNN on CPUs) run faster; the inputs follow the weights.
    """

    def __init__(self, compile: bool = False, channels_last: bool = False) -> None:
        self.compile = compile
        self.channels_last = channels_last

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.channels_last:
            pl_module.to(memory_format=torch.channels_last)
        if self.compile:
            for name in COMPILED_PARTS:
                getattr(pl_module.network, name).compile()
