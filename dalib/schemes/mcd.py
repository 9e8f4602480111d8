"""MCD: Maximum Classifier Discrepancy (Saito, Watanabe, Ushiku and Harada, CVPR 2018)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from dalib.errors import DalibError
from dalib.network import Network
from dalib.objective import Objective, weighted_cross_entropy
from dalib.schemes.base import (
    SCHEMES,
    TrainingScheme,
    check_full_precision,
    log_terms,
    optimizer_step,
    step_schedulers,
)

if TYPE_CHECKING:
    from dalib.module import DomainAdaptationModule
    from dalib.objective import Batch

FEATURES, CLASSIFIERS = 0, 1  # the indices of MCD's two optimisers


def classifier_discrepancy(p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
    """``d(p₁, p₂) = mean_i (1/K)·Σ_k |p₁ᵢₖ − p₂ᵢₖ|`` between two (n, K) probability batches:
    MCD's discrepancy (Saito et al. 2018, eq. 1; ``tllib/alignment/mcd.py:10-25``)."""
    return (p1 - p2).abs().mean()


def mean_prediction_entropy(p: torch.Tensor) -> torch.Tensor:
    """``−(1/K)·Σ_k log(mean_i pᵢₖ + 1e-6)``: the Transfer-Learning-Library's MCD "entropy"
    (``tllib/alignment/mcd.py:28-43``), the cross-entropy of the batch's mean prediction to the
    uniform distribution; small when the batch predicts every class equally often."""
    return -torch.log(p.mean(dim=0) + 1e-6).mean()


def zero_grad(*optimizers) -> None:
    for optimizer in optimizers:
        optimizer.zero_grad()


@SCHEMES.register("mcd")
class MaximumClassifierDiscrepancy(TrainingScheme):
    """MCD: a feature generator G (backbone and bottleneck) and two classifiers F₁ (the
    network's ``head``, which evaluation uses) and F₂ (``scheme.head2``), with ``d`` of
    :func:`classifier_discrepancy` on their target softmax outputs. Per batch:

    - **A**, all parts: minimise ``CE(F₁(G(x_s)), y) + CE(F₂(G(x_s)), y) + e·(H̄(p₁ₜ) + H̄(p₂ₜ))``;
    - **B**, classifiers only, the features fixed (computed without gradient): minimise the A
      loss ``− trade_off·d(p₁ₜ, p₂ₜ)``, i.e. maximise the discrepancy on the target;
    - **C**, features only (classifiers frozen), ``num_k`` times: minimise ``trade_off·d``.

    ``e`` = ``entropy_weight`` (:func:`mean_prediction_entropy`, not in the paper; 0 by default,
    0.03 in the Transfer-Learning-Library's digits runs). Two SGD optimisers (G; F₁ and F₂) with
    the model's settings and LR decay, as ``examples/.../mcd.py:181-224`` of the
    Transfer-Learning-Library (``optimizer_g``, ``optimizer_f``). The classifiers are Linear
    heads on dalib's bottleneck, where the paper's and tllib's are 3-layer MLPs.
    """

    manual = True

    def __init__(
        self,
        network: Network,
        objective: Objective,
        num_k: int = 4,
        trade_off: float = 1.0,
        entropy_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if isinstance(num_k, bool) or not isinstance(num_k, int) or num_k < 1:
            raise DalibError(f"mcd's num_k (step C repeats) must be an integer >= 1, got {num_k}")
        for name, value in [("trade_off", trade_off), ("entropy_weight", entropy_weight)]:
            if not (math.isfinite(value) and value >= 0):
                raise DalibError(f"mcd's {name} must be a finite number >= 0, got {value}")
        extras = {
            "discrepancy": objective.discrepancy,
            "target_loss": objective.target_loss,
            "regularisers": len(objective.regularisers) or None,
            "l2_sp": objective.start_weights,
            "distillation": objective.distillation,
            "unshared": network.target_backbone,
        }
        used = [name for name, value in extras.items() if value is not None]
        if used:
            raise DalibError(
                f"the mcd scheme trains on its own three losses and would ignore model.{used[0]}; "
                "remove it (MCD's discrepancy is its two classifiers')"
            )
        self.num_k = num_k
        self.trade_off = float(trade_off)
        self.entropy_weight = float(entropy_weight)
        self.head2 = nn.Linear(network.out_features, network.num_classes)

    def configure_optimizers(self, module: DomainAdaptationModule) -> Any:
        check_full_precision(module, "mcd")
        network, total = module.network, module.trainer.estimated_stepping_batches
        features = [(n, p) for n, p in network.named_parameters() if not n.startswith("head.")]
        heads = [(f"head.{n}", p) for n, p in network.head.named_parameters()]
        heads += [(f"scheme.head2.{n}", p) for n, p in self.head2.named_parameters()]
        built = [
            module.optimization.build(network, module.objective, total, parameters)
            for parameters in (features, heads)
        ]
        return [optimizer for optimizer, _ in built], [s for _, s in built if s is not None]

    def logits(self, network: Network, x_s, x_t) -> tuple[torch.Tensor, torch.Tensor]:
        """F₁ and F₂ on G of the source-then-target batch (BatchNorm sees both domains)."""
        f = network.paired_features(x_s, x_t)
        return network.head(f), self.head2(f)

    def step_a_loss(self, logits1, logits2, y_s, w_s) -> tuple[torch.Tensor, ...]:
        """The source cross-entropies of both classifiers, plus the entropy term on the target."""
        n_s = len(y_s)
        ce1 = weighted_cross_entropy(logits1[:n_s], y_s, w_s)
        ce2 = weighted_cross_entropy(logits2[:n_s], y_s, w_s)
        loss = ce1 + ce2
        if self.entropy_weight > 0:
            p1, p2 = (F.softmax(logits[n_s:], dim=1) for logits in (logits1, logits2))
            loss = loss + self.entropy_weight * (
                mean_prediction_entropy(p1) + mean_prediction_entropy(p2)
            )
        return loss, ce1, ce2

    def target_discrepancy(self, logits1, logits2, n_s: int) -> torch.Tensor:
        return classifier_discrepancy(
            F.softmax(logits1[n_s:], dim=1), F.softmax(logits2[n_s:], dim=1)
        )

    def training_step(
        self, module: DomainAdaptationModule, batch: Batch, batch_idx: int
    ) -> dict[str, torch.Tensor]:
        network = module.network
        (x_s, y_s), x_t = batch["source"][:2], batch["target"][0]
        w_s, n_s = module.objective.batch_source_weights(batch), len(x_s)
        opt_g, opt_f = module.optimizers()

        # A: everything on the source
        logits1, logits2 = self.logits(network, x_s, x_t)
        loss_a, ce1, ce2 = self.step_a_loss(logits1, logits2, y_s, w_s)
        zero_grad(opt_g, opt_f)
        module.manual_backward(loss_a)
        optimizer_step(module, FEATURES, counted=False)
        optimizer_step(module, CLASSIFIERS, counted=False)
        module.train_source_acc.add(logits1[:n_s].detach(), y_s)

        # B: the classifiers maximise their discrepancy on the target, the features fixed
        with torch.no_grad():
            f = network.paired_features(x_s, x_t)
        logits1, logits2 = network.head(f), self.head2(f)
        loss_b, _, _ = self.step_a_loss(logits1, logits2, y_s, w_s)
        discrepancy_b = self.target_discrepancy(logits1, logits2, n_s)
        zero_grad(opt_g, opt_f)  # G gets none: what a step holds is its own backward's
        module.manual_backward(loss_b - self.trade_off * discrepancy_b)
        optimizer_step(module, CLASSIFIERS, counted=False)

        # C: the features minimise it, num_k times, the classifiers frozen
        with module.toggled_optimizer(opt_g):
            for k in range(self.num_k):
                discrepancy_c = self.target_discrepancy(*self.logits(network, x_s, x_t), n_s)
                zero_grad(opt_g, opt_f)
                module.manual_backward(self.trade_off * discrepancy_c)
                optimizer_step(module, FEATURES, counted=k == self.num_k - 1)
        step_schedulers(module)

        terms = {
            "loss": loss_a.detach(),
            "source_ce": ce1.detach(),
            "source_ce_2": ce2.detach(),
            "discrepancy_max": discrepancy_b.detach(),
            "discrepancy": discrepancy_c.detach(),
        }
        log_terms(module, terms, n_s)
        return terms
