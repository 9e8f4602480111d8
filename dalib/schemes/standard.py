"""The default scheme: one loss (the ``Objective``'s), one optimiser step per batch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from dalib.schemes.base import SCHEMES, TrainingScheme, log_terms

if TYPE_CHECKING:
    from dalib.module import DomainAdaptationModule
    from dalib.objective import Batch


@SCHEMES.register("standard")
class Standard(TrainingScheme):
    """``L = L_s + λ(p)·L_t + γ(p)·D + …`` minimised by one SGD over the network's and the
    objective's parameters (``Optimization``), in Lightning's automatic optimisation, the LR
    schedule per step. Every method that is one objective (DANN, CDAN, MDD, BSP, AFN…) uses it.
    """

    def configure_optimizers(self, module: DomainAdaptationModule) -> Any:
        optimizer, scheduler = module.optimization.build(
            module.network, module.objective, module.trainer.estimated_stepping_batches
        )
        if scheduler is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def training_step(
        self, module: DomainAdaptationModule, batch: Batch, batch_idx: int
    ) -> dict[str, torch.Tensor]:
        terms = module.compute_losses(batch, module.progress())
        module.train_source_acc.add(terms.pop("logits_s"), batch["source"][1])
        log_terms(module, terms, batch["source"][0].shape[0])
        # the terms go to on_train_batch_end's outputs: FiniteGuard names them if the loss is NaN
        return {"loss": terms.pop("loss"), **{name: v.detach() for name, v in terms.items()}}
