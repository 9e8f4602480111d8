"""Freezing and scheduled unfreezing of a module's parts during training (a Lightning callback).

Why not Lightning's ``BaseFinetuning``/``BackboneFinetuning``: they (1) freeze BatchNorm by
``track_running_stats = False``, which in train mode normalises with the batch statistics (what a
frozen pretrained BN must not do), (2) add a new optimiser group when they unfreeze, which the
module's LambdaLR decay cannot follow (torch 2.14's scheduler stops at its next step with a length
mismatch between its rates and the groups) and (3) act at epoch starts only. Here every parameter
stays in its optimiser group from the start: a frozen one has ``requires_grad = False``, so it gets
no gradient and SGD (momentum, weight decay included) skips it; unfreezing only turns the gradient
on, so the LR schedule and exact resume hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import pytorch_lightning as pl
from torch import nn

from dalib.errors import DalibError
from dalib.models.backbones import BATCH_NORMS
from dalib.transfer.layers import backbone_layers, modules_matching


class Finetuning(pl.Callback):
    """Freeze parts of the module's network, then unfreeze them on a schedule.

    - ``freeze``: module-name patterns: ``backbone``, ``backbone.body.features.1*``, ``bottleneck``.
    - ``freeze_depth``: also freeze the first ``freeze_depth`` layers of the backbone (see
      ``backbone_layers``); ``-1`` freezes all of them.
    - ``unfreeze_at``: ``{time: [patterns]}``, unfreeze those modules from that epoch or step on
      (``interval``): the update of step ``k`` is the first to change them.
    - ``unfreeze_every``: gradual unfreezing (ULMFiT): every ``unfreeze_every`` epochs or steps,
      the top-most still-frozen backbone layer is unfrozen.
    - ``train_bn``: let a frozen BatchNorm use batch statistics and update its running ones; by
      default it stays in eval mode (its pretrained statistics) while its parameters are frozen.

    The state follows from the epoch or step alone, so a resumed run freezes exactly as the
    uninterrupted one did.
    """

    def __init__(
        self,
        freeze: Sequence[str] = (),
        freeze_depth: int = 0,
        unfreeze_at: Mapping[int, Sequence[str]] | None = None,
        unfreeze_every: int | None = None,
        interval: Literal["epoch", "step"] = "epoch",
        train_bn: bool = False,
    ) -> None:
        if not freeze and freeze_depth == 0:
            raise DalibError("Finetuning needs something to freeze: set freeze or freeze_depth")
        if freeze_depth < -1:
            raise DalibError(f"freeze_depth must be >= 0, or -1 for all layers, got {freeze_depth}")
        if unfreeze_every is not None and unfreeze_every < 1:
            raise DalibError(f"unfreeze_every must be >= 1, got {unfreeze_every}")
        if interval not in ("epoch", "step"):
            raise DalibError(f"interval must be 'epoch' or 'step', got {interval!r}")
        self.freeze = list(freeze)
        self.freeze_depth = freeze_depth
        self.unfreeze_at = {int(t): list(p) for t, p in (unfreeze_at or {}).items()}
        self.unfreeze_every = unfreeze_every
        self.interval = interval
        self.train_bn = train_bn
        self._frozen: list[nn.Module] = []  # every module frozen at the start
        self._schedule: list[tuple[int, list[nn.Module]]] = []  # (time, modules it unfreezes)
        self._applied_at: int | None = None
        self._frozen_bn: list[nn.Module] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if trainer.world_size > 1 and (self.unfreeze_at or self.unfreeze_every):
            raise DalibError(
                "unfreezing during training is not supported under data-parallel training (DDP "
                "registers only the trainable parameters at the start); freeze without a schedule"
            )
        layers = [module for _, module in backbone_layers(pl_module.network.backbone)]
        depth = len(layers) if self.freeze_depth == -1 else self.freeze_depth
        if depth > len(layers):
            raise DalibError(
                f"freeze_depth {depth} exceeds the backbone's {len(layers)} layers; "
                f"use -1 to freeze all of them"
            )
        frozen = {
            id(m): m for m in [*modules_matching(pl_module.network, self.freeze), *layers[:depth]]
        }
        self._frozen = list(frozen.values())
        self._schedule = sorted(
            (time, modules_matching(pl_module.network, patterns))
            for time, patterns in self.unfreeze_at.items()
        ) if self.unfreeze_at else []  # fmt: skip
        if self.unfreeze_every is not None:
            frozen_layers = [m for m in layers if id(m) in frozen]
            for k, layer in enumerate(reversed(frozen_layers), start=1):
                self._schedule.append((k * self.unfreeze_every, [layer]))
        self._applied_at = None
        self.apply(pl_module, 0)  # before the optimiser is built and before the sanity check

    def now(self, trainer: pl.Trainer) -> int:
        return trainer.current_epoch if self.interval == "epoch" else trainer.global_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self.apply(pl_module, self.now(trainer))

    def apply(self, pl_module: pl.LightningModule, time: int) -> None:
        """Set ``requires_grad`` and the BatchNorm modes for the state at ``time``."""
        if time != self._applied_at:
            self._applied_at = time
            unfrozen = {
                id(m) for t, modules in self._schedule if t <= time for u in modules
                for m in u.modules()
            }  # fmt: skip
            self._frozen_bn = []
            for module in self.ever_frozen():
                frozen = id(module) not in unfrozen
                for p in module.parameters(recurse=False):
                    p.requires_grad_(not frozen)
                if isinstance(module, BATCH_NORMS):
                    module.train(pl_module.training and not (frozen and not self.train_bn))
                    if frozen and not self.train_bn:
                        self._frozen_bn.append(module)
        for module in self._frozen_bn:  # Lightning puts the module in train mode every epoch
            module.eval()

    def ever_frozen(self) -> list[nn.Module]:
        """Every module frozen at the start, each once, children included."""
        return list({id(m): m for f in self._frozen for m in f.modules()}.values())
