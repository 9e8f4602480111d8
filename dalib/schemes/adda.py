"""ADDA: Adversarial Discriminative Domain Adaptation (Tzeng, Hoffman, Saenko and Darrell,
CVPR 2017)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from dalib.errors import DalibError
from dalib.network import Network
from dalib.objective import Objective, weighted_cross_entropy
from dalib.schemes.base import SCHEMES, log_terms
from dalib.schemes.standard import Standard

if TYPE_CHECKING:
    from dalib.module import DomainAdaptationModule
    from dalib.objective import Batch

SOURCE_PARTS = ("backbone", "bottleneck", "head")
Adversary = Literal["inverted_labels", "reversal"]
ADVERSARIES = get_args(Adversary)


@SCHEMES.register("adda")
class AdversarialDiscriminativeAdaptation(Standard):
    """ADDA (Tzeng et al., CVPR 2017): a source model, then a target encoder trained against it.

    Two phases in one run, switched at ``source_fraction`` of the training steps:

    1. **Source model**: the source encoder (``backbone`` → ``bottleneck``) and the classifier
       ``head`` minimise the source cross-entropy; the target encoder (the network's
       ``unshared`` ``target_backbone``) is kept a copy of the source backbone.
    2. **Adaptation**: at the switch the target encoder starts from the source backbone; the
       source encoder and the classifier are then frozen (no gradient, BatchNorm in eval mode),
       and the discriminator of the ``discrepancy`` (``dann``) learns to separate ``f_s``, from
       the frozen source encoder, and ``f_t = bottleneck(target_backbone(x_t))``, while the
       target encoder learns to make it call ``f_t`` source. Target samples are then
       classified by the frozen head on ``f_t``.

    ``source_fraction: 0`` skips phase 1, for a model whose source parts come from
    ``init_from`` (a source-only run's checkpoint, ``init_modules: [backbone, bottleneck,
    head]``). The phase follows from the global step, so a resumed run is in the same phase.
    ADDA's losses have no weight: ``gamma`` is not used. One SGD trains the target encoder and
    the discriminator, on one of two adversaries:

    - ``adversary: inverted_labels`` (the paper's "GAN" form, :meth:`adversarial_losses`): the
      discriminator and the encoder each minimise a loss of their own.
    - ``adversary: reversal`` (the Transfer-Learning-Library's, ``examples/domain_adaptation/
      image_classification/adda.py:124-125`` at c4aa59e): DANN's loss through its
      gradient-reversal layer, whose coefficient warms up from 0 over the adaptation steps
      (:meth:`warm_start`, ``warm_up_steps`` and ``reversal_max`` as its ``max_iters=1000`` and
      ``hi=2``). On digits in the CPU setting the inverted labels drove the target accuracy far
      below source-only, the reversal kept it near source-only (docs/methods_and_schemes.md).

    Unlike both references, the bottleneck is shared and frozen: only the backbone is the
    target's own.
    """

    def __init__(
        self,
        network: Network,
        objective: Objective,
        source_fraction: float = 0.5,
        adversary: Adversary = "inverted_labels",
        warm_up_steps: int = 1000,
        reversal_max: float = 2.0,
    ):
        super().__init__()
        if not (math.isfinite(source_fraction) and 0 <= source_fraction < 1):
            raise DalibError(f"adda's source_fraction must be in [0, 1), got {source_fraction}")
        if adversary not in ADVERSARIES:
            raise DalibError(f"adda's adversary must be one of {ADVERSARIES}, got {adversary!r}")
        if not (warm_up_steps > 0 and math.isfinite(reversal_max) and reversal_max > 0):
            raise DalibError("adda's warm_up_steps and reversal_max must be > 0")
        if network.target_backbone is None:
            raise DalibError("adda trains a target encoder of its own: set model.unshared: 0.0")
        if not isinstance(getattr(objective.discrepancy, "discriminator", None), nn.Module):
            raise DalibError("adda needs a domain discriminator: set model.discrepancy: dann")
        if adversary == "reversal" and not hasattr(objective.discrepancy, "grl"):
            raise DalibError("adda's reversal adversary needs model.discrepancy: dann")
        extras = {
            "target_loss": objective.target_loss,
            "regularisers": len(objective.regularisers) or None,
            "l2_sp": objective.start_weights,
            "distillation": objective.distillation,
        }
        used = [name for name, value in extras.items() if value is not None]
        if used:
            raise DalibError(f"the adda scheme would ignore model.{used[0]}; remove it")
        self.source_fraction = float(source_fraction)
        self.adversary = adversary
        self.warm_up_steps, self.reversal_max = int(warm_up_steps), float(reversal_max)

    @staticmethod
    def warm_start(step: int, warm_up_steps: int, high: float) -> float:
        """The reversal coefficient ``2·hi / (1 + exp(-i/N)) − hi`` at adaptation step ``i``: 0
        at the switch, rising towards ``hi`` (Transfer-Learning-Library
        ``tllib/modules/grl.py:71-74``, ``WarmStartGradientReverseLayer`` with ``lo=0``,
        ``alpha=1``)."""
        return 2.0 * high / (1.0 + math.exp(-step / warm_up_steps)) - high

    @staticmethod
    def adversarial_losses(
        adversarial: nn.Module, f_s: torch.Tensor, f_t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ADDA's two losses (Tzeng et al. 2017, eq. 8-9, the "GAN" inverted-label form):
        the discriminator's ``½[BCE(d(f_s), 1) + BCE(d(f_t), 0)]`` on detached features (it
        trains only ``d``), and the target encoder's ``BCE(d(f_t), 1)`` through a copy of
        ``d``'s parameters without gradient (it trains only the encoder).

        Both see ``d`` on the same batch, source and target together, as the critic's does: the
        discriminator's BatchNorm normalises with that batch's statistics, and on a batch of
        target features alone it would remove the very offset between the domains that the
        critic learnt to see, leaving the encoder a gradient that drives ``f_t`` away from the
        source (target accuracy fell with every step on digits). The second pass updates no
        running statistics (it gets copies of ``d``'s buffers)."""
        d = adversarial.discriminator
        critic = adversarial(f_s.detach(), f_t.detach())
        frozen = {name: p.detach() for name, p in d.named_parameters()}
        frozen |= {name: b.clone() for name, b in d.named_buffers()}
        both = torch.cat([f_s.detach(), f_t])
        logits = torch.func.functional_call(d, frozen, (both,)).squeeze(1)[len(f_s) :]
        encoder = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        return critic, encoder

    def switch_step(self, module: DomainAdaptationModule) -> int:
        """The first step of phase 2."""
        return round(self.source_fraction * module.trainer.estimated_stepping_batches)

    def training_step(
        self, module: DomainAdaptationModule, batch: Batch, batch_idx: int
    ) -> dict[str, torch.Tensor]:
        network, (x_s, y_s) = module.network, batch["source"][:2]
        switch = self.switch_step(module)
        if module.global_step <= switch:  # phase 1, and the switch: the target encoder follows
            network.target_backbone.load_state_dict(network.backbone.state_dict())
        if module.global_step < switch:
            logits_s = network.head(network.features(x_s, "source"))
            w_s = module.objective.batch_source_weights(batch)
            terms = {"loss": weighted_cross_entropy(logits_s, y_s, w_s)}
            terms["source_ce"] = terms["loss"]
        else:
            for part in SOURCE_PARTS:
                getattr(network, part).eval().requires_grad_(False)
            with torch.no_grad():
                f_s = network.features(x_s, "source")
                logits_s = network.head(f_s)
            f_t = network.features(batch["target"][0], "target")
            adversarial = module.objective.discrepancy
            if self.adversary == "reversal":
                scale = self.warm_start(
                    module.global_step - switch, self.warm_up_steps, self.reversal_max
                )
                adversarial.grl.scale = scale
                critic = adversarial(f_s, f_t)
                terms = {"loss": critic, "discrepancy": critic, "reversal": torch.tensor(scale)}
            else:
                critic, encoder = self.adversarial_losses(adversarial, f_s, f_t)
                terms = {"loss": critic + encoder, "discrepancy": critic, "encoder_loss": encoder}
            # the frozen classifier's source loss: logged in both phases, so that a run resumed
            # in phase 2 logs the same terms as one that went through phase 1
            terms["source_ce"] = F.cross_entropy(logits_s, y_s)
        module.train_source_acc.add(logits_s.detach(), y_s)
        log_terms(module, {name: v.detach() for name, v in terms.items()}, len(x_s))
        return {"loss": terms.pop("loss"), **{name: v.detach() for name, v in terms.items()}}
