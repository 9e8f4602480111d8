"""The extension point for how one training batch updates the model: ``TrainingScheme``.

A scheme is chosen by ``model.scheme: {name: mcd, num_k: 4}`` (default ``standard``: one loss,
one optimiser step). The module delegates two hooks to it, ``configure_optimizers`` and
``training_step``; everything else (the network, evaluation, selection, checkpoints, resume,
logging cadence) stays the module's. See docs/methods_and_schemes.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from dalib.errors import DalibError
from dalib.registry import Registry

if TYPE_CHECKING:
    from dalib.module import DomainAdaptationModule
    from dalib.objective import Batch

SCHEMES: Registry[TrainingScheme] = Registry("training scheme", "dalib.schemes")


class TrainingScheme(nn.Module):
    """How a batch updates the parameters: the optimisers, and the step(s) per batch.

    A scheme is an ``nn.Module`` held by the module as ``module.scheme``: parameters it adds
    (MCD's second classifier) are in the checkpoint and restored on resume. Its constructor's
    options are the config's; it may also name ``network`` and ``objective``, which the module
    passes (as the registry passes ``in_features`` to a discrepancy) but which it must not
    keep as attributes (they would be saved twice).

    ``manual = False``: Lightning's automatic optimisation; ``training_step`` returns the loss.
    ``manual = True``: the scheme backpropagates with ``module.manual_backward`` and steps its
    optimisers itself, any number of times per batch, and must count exactly **one** step per
    batch with ``optimizer_step(..., counted=True)``: Lightning counts those as
    ``trainer.global_step``, which must count batches under every scheme for ``max_steps``,
    the progress ``p`` of the schedules, the logging and checkpoint intervals and exact resume
    to mean the same thing. It also steps the LR schedulers (``step_schedulers``).
    """

    manual: ClassVar[bool] = False

    def configure_optimizers(self, module: DomainAdaptationModule) -> Any:
        """What ``LightningModule.configure_optimizers`` returns."""
        raise NotImplementedError

    def training_step(
        self, module: DomainAdaptationModule, batch: Batch, batch_idx: int
    ) -> Mapping[str, torch.Tensor]:
        """Train on one paired batch; the named terms (``loss`` first), for ``FiniteGuard``."""
        raise NotImplementedError


def optimizer_step(module: DomainAdaptationModule, index: int, *, counted: bool) -> None:
    """Step optimiser ``index`` of a manual scheme; ``counted``: through Lightning's wrapper,
    which adds one to ``trainer.global_step`` (once per batch, see ``TrainingScheme``)."""
    optimizers = module.optimizers() if counted else module.optimizers(use_pl_optimizer=False)
    (optimizers[index] if isinstance(optimizers, list) else optimizers).step()


def step_schedulers(module: DomainAdaptationModule) -> None:
    """One step of every LR scheduler (a manual scheme's, once per batch)."""
    schedulers = module.lr_schedulers()
    for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
        if scheduler is not None:
            scheduler.step()


def check_full_precision(module: DomainAdaptationModule, name: str) -> None:
    """A manual scheme's uncounted steps bypass Lightning's precision plugin: no loss scaling."""
    if str(module.trainer.precision) == "16-mixed":
        raise DalibError(
            f"the {name} scheme steps some optimisers outside Lightning's loss scaling; "
            "use trainer.precision 32-true or bf16-mixed, not 16-mixed"
        )


def log_every(module: DomainAdaptationModule) -> bool:
    """Whether this step is one the trainer logs (every ``log_every_n_steps``, and the last)."""
    every = module.trainer.log_every_n_steps
    return (module.global_step + 1) % every == 0 or module.trainer.is_last_batch


def log_terms(
    module: DomainAdaptationModule, terms: Mapping[str, torch.Tensor], batch_size: int
) -> None:
    """Log ``train/<term>``, the base LR (the last group's, before its multiplier) and the
    source accuracy since the last log, on the steps the trainer logs."""
    if not log_every(module):
        return
    # Every trainer.log_every_n_steps steps, not every step: logging costs more than a small
    # model's step. The accuracy is over the steps since the last log.
    logged = {f"train/{name}": value.detach() for name, value in terms.items()}
    optimizers = module.optimizers()
    group = (optimizers[-1] if isinstance(optimizers, list) else optimizers).param_groups[-1]
    logged["lr"] = group["lr"] / group["lr_mult"]
    module.log_dict(logged, batch_size=batch_size)
    module.log("train/source_acc", module.train_source_acc.compute_and_reset(), prog_bar=True)
