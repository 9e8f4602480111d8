"""The objective of domain adaptation, an ``nn.Module`` usable with or without Lightning.

``L = L_s + λ(p)·L_t + γ(p)·D(f_s, f_t)`` (+ transfer terms) at training progress
``p = step / total steps`` in [0, 1]:

- ``L_s``: cross-entropy on the labelled source batch (weighted by instance weights if set).
- ``L_t``: ``target_loss`` (``None``, ``"ce"`` on labelled target samples, ``"entropy"``,
  ``{name: pseudo_label, threshold: 0.9, per_class: null}`` on confident predictions,
  ``{name: mean_teacher, alpha: 0.99}``: consistency with an EMA teacher, which ``start`` and
  ``before_batch`` keep up to date; ``{name: fixmatch, threshold: 0.95}`` on two augmented views
  of each target sample, ``(x_weak, y, x_strong)`` target batches from ``data.target_views``:
  the strong view joins the source and weak target batch in one forward pass, and ``D`` and
  every other term see the weak view).
- ``D``: ``discrepancy`` from the registry, on the features (the classifier's input) of the
  source and target batch; it also receives logits, source labels and instance weights.
- ``λ``, ``γ``: numbers or schedules (``{name: dann_ramp}``, ``{name: linear_warmup, ...}``);
  γ may also be calibrated without labels at the start (``{name: balanced, ...}``,
  ``dalib.calibration``).
- ``reversal`` ρ(p), for adversarial measures: a number or schedule that scales only the gradient
  their gradient-reversal layers send back into the features. γ scales the whole term, so the
  discriminator (critic, adversarial head) trains at γ times its loss and the features get
  ``-γ·ρ·coeff`` times its gradient. dalib's default ramps γ and keeps ρ = 1 (the discriminator
  ramps up with the features); the Transfer-Learning-Library keeps γ = 1 and ramps ρ
  (``WarmStartGradientReverseLayer``, tllib/modules/grl.py:59-77), training the discriminator
  at full rate from the first step.
- Regularisers (``dalib.regularisers``): ``regularisers: [{name: bsp, weight: 1e-4}]``, each
  ``weight·R(f_s, f_t)`` on the features of both domains, composable with any ``D`` and ``L_t``.
- Transfer terms (``dalib.transfer``): ``l2_sp·½‖θ − θ₀‖²`` between the backbone and its
  starting weights (L2-SP, Li et al., ICML 2018); ``unshared·½‖θ_s − θ_t‖²`` between the source
  backbone and the target's own copy (a network built with ``unshared=True``); ``distillation``,
  a teacher's softened predictions, times its ``weight``.

With no discrepancy, no target loss and nothing else that needs the target batch, this is plain
source-only training and the target batch is not computed. Otherwise source and target go
through the network as one batch, so BatchNorm sees both domains (and γ = 0 adds nothing to
the loss or gradients, while D is still computed and reported).

Under data-parallel training, ``gather_discrepancy`` (default) computes a non-adversarial ``D``
on the inputs of all processes (features, instance weights, and logits and labels for measures
that use them), gathered with gradients: W processes × batch B give the loss and gradients of
one process × batch W·B. Adversarial measures are per-sample losses, which DDP's gradient
averaging already makes exact; they are never gathered. ``False`` computes ``D`` on each
process's own batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dalib.calibration import BalancedGamma, make_gamma
from dalib.discrepancy import DISCREPANCIES
from dalib.discrepancy.adversarial import GradientReversal
from dalib.distributed import gather_inputs, mean_over_processes, world_size
from dalib.errors import DalibError
from dalib.network import Network
from dalib.registry import Spec
from dalib.regularisers import build_regularisers
from dalib.schedules import Constant, make_schedule
from dalib.target_losses import TARGET_LOSSES, TeacherTargetLoss, TwoViewTargetLoss
from dalib.transfer.distillation import Distillation
from dalib.transfer.parameters import Snapshot, half_squared_distance

ScheduleSpec = float | str | Mapping[str, Any]
Batch = Mapping[str, Sequence[torch.Tensor]]


def weighted_cross_entropy(
    logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None
) -> torch.Tensor:
    """Cross-entropy; with weights, ``Σ w_i·ce_i / Σ w_i`` over the batch.

    Under data-parallel training, which averages the processes' losses (and gradients), the
    denominator is the mean of the processes' ``Σ w``: the average is then the weighted mean over
    all processes' samples, as one process with the whole batch computes it.
    """
    if w is None:
        return F.cross_entropy(logits, y)
    total = (w * F.cross_entropy(logits, y, reduction="none")).sum()
    return total / mean_over_processes(w.sum()).clamp_min(1e-12)


class Objective(nn.Module):
    """Every term of ``L`` for one paired batch: ``terms = objective(network, batch, progress)``.

    ``network`` (a ``Network``) sizes the discrepancy and gives L2-SP's θ₀ (its backbone now);
    it is not held: the objective is called with the network each time. Its own modules (an
    adversarial discriminator, θ₀, the distillation teacher) are in its ``state_dict``.
    ``source_weights``: per-sample weights of the whole source training set (set by
    ``ImportanceWeighting``); with them and indexed source batches ``(x, y, index)``, ``L_s`` and
    ``D`` are weighted. ``None``: unweighted.
    """

    def __init__(
        self,
        network: Network,
        discrepancy: Spec | None = None,
        gamma: ScheduleSpec = 1.0,
        target_loss: Spec | None = None,
        lambda_t: ScheduleSpec = 1.0,
        gather_discrepancy: bool = True,
        l2_sp: float = 0.0,
        unshared: float = 0.0,
        distillation: Mapping[str, Any] | None = None,
        reversal: ScheduleSpec = 1.0,
        regularisers: Sequence[Spec] | None = None,
    ) -> None:
        super().__init__()
        for name, value in [("l2_sp", l2_sp), ("unshared", unshared)]:
            if not (math.isfinite(value) and value >= 0):
                raise DalibError(f"{name} must be a finite number >= 0, got {value}")
        self.discrepancy = (
            None
            if discrepancy is None
            else DISCREPANCIES.build(
                discrepancy, in_features=network.out_features, num_classes=network.num_classes
            )
        )
        self.gamma = make_gamma(gamma)  # a schedule, or a rule calibrated at the start
        if isinstance(self.gamma, BalancedGamma) and self.discrepancy is None:
            raise DalibError("a calibrated gamma needs a discrepancy; set model.discrepancy")
        self.reversal = make_schedule(reversal, "reversal")
        if self.reversal != Constant(1.0) and not self.reversal_layers():
            raise DalibError(
                "reversal schedules the gradient reversal of an adversarial discrepancy "
                "(dann, cdan, mdd, wdgrl); this config has none: remove reversal or use gamma"
            )
        self.target_loss = (
            None
            if target_loss in (None, "none")
            else TARGET_LOSSES.build(target_loss, network=network)
        )
        self.lambda_t = make_schedule(lambda_t, "lambda_t")
        self.gather_discrepancy = gather_discrepancy
        self.l2_sp = l2_sp
        self.start_weights = Snapshot(network.backbone) if l2_sp > 0 else None
        self.unshared = unshared
        self.distillation = (
            None
            if distillation is None
            else Distillation.from_spec(distillation, network.num_classes)
        )
        self.regularisers, self.regulariser_weights = build_regularisers(regularisers)
        self.source_weights: torch.Tensor | None = None
        #: whether the objective needs the target batch (else: source-only, target skipped)
        self.uses_target_batch = (
            self.discrepancy is not None
            or self.target_loss is not None
            or len(self.regularisers) > 0
            or network.target_backbone is not None
            or (self.distillation is not None and "target" in self.distillation.domains)
        )

    def start(self, network: Network) -> None:
        """What a run starting from scratch takes as it starts: L2-SP's θ₀ (``network``'s
        backbone now, after ``init_from``), the distillation teacher (read from its file) and a
        target loss's teacher (``network``'s weights now)."""
        if isinstance(self.target_loss, TeacherTargetLoss):
            self.target_loss.start(network)
        if self.start_weights is not None:
            self.start_weights.take(network.backbone)
        if self.distillation is not None:
            self.distillation.load_teacher(next(network.parameters()).device)

    def before_batch(self, network: Network, step: int) -> None:
        """Before each training batch, with the optimiser steps taken so far: a teacher target
        loss (``mean_teacher``) takes in the student's weights of the last step."""
        if isinstance(self.target_loss, TeacherTargetLoss):
            self.target_loss.before_batch(network, step)

    def forward(self, network: Network, batch: Batch, progress: float) -> dict[str, torch.Tensor]:
        """Every named term for one paired batch ``{"source": (x, y[, index]), "target": (x, y)}``
        at progress ``p``, the weights ``gamma``, ``lambda_t`` in use, the weighted total
        ``loss``, and ``logits_s`` (the source logits, detached, for the training accuracy)."""
        x_s, y_s = batch["source"][:2]
        w_s = self.batch_source_weights(batch)
        if not self.uses_target_batch:
            x_t = y_t = f_s = f_t = logits_t = None
            logits_s = network.head(network.features(x_s, "source"))
        else:
            x_t, y_t = batch["target"][:2]
            views = [x_t, *self.strong_view(batch)]  # the strong view goes in the same batch
            f = network.paired_features(x_s, torch.cat(views) if len(views) > 1 else x_t)
            sizes = [len(x_s), *map(len, views)]
            f_s, f_t, *_ = f.split(sizes)
            logits_s, logits_t, *logits_strong = network.head(f).split(sizes)

        terms = {"source_ce": weighted_cross_entropy(logits_s, y_s, w_s)}
        loss = terms["source_ce"]
        terms["logits_s"] = logits_s.detach()
        if self.target_loss is not None:
            weight = self.lambda_t(progress)
            if isinstance(self.target_loss, TeacherTargetLoss):
                terms["target_loss"] = self.target_loss(logits_t, y_t, x_t, network)
            elif isinstance(self.target_loss, TwoViewTargetLoss):
                terms["target_loss"] = self.target_loss(logits_t, *logits_strong)
            else:
                terms["target_loss"] = self.target_loss(logits_t, y_t)
            terms["lambda_t"] = torch.tensor(weight)
            if weight != 0:
                loss = loss + weight * terms["target_loss"]
        if self.discrepancy is not None:
            weight = self.gamma(progress)
            if self.discrepancy.adversarial:
                scale = self.reversal(progress)
                for layer in self.reversal_layers():
                    layer.scale = scale
                terms["reversal"] = torch.tensor(scale)
            inputs = dict(f_s=f_s, f_t=f_t, logits_s=logits_s, logits_t=logits_t, y_s=y_s, w_s=w_s)
            if self.gathers_discrepancy():
                inputs = gather_inputs(self.discrepancy, inputs)
            terms["discrepancy"] = self.discrepancy(**inputs)
            terms["gamma"] = torch.tensor(weight)
            if weight != 0:
                loss = loss + weight * terms["discrepancy"]
        for name, regulariser in self.regularisers.items():
            terms[name] = regulariser(f_s, f_t)
            loss = loss + self.regulariser_weights[name] * terms[name]
        for name, weight, value in self.transfer_terms(network, x_s, x_t, logits_s, logits_t):
            terms[name] = value
            loss = loss + weight * value
        terms["loss"] = loss
        return terms

    @property
    def uses_target_views(self) -> bool:
        """Whether the target loss needs a strong view of each target sample (``fixmatch``)."""
        return isinstance(self.target_loss, TwoViewTargetLoss)

    def strong_view(self, batch: Batch) -> list[torch.Tensor]:
        """``[x_strong]``, the target batch's third entry, when the target loss uses it; else
        ``[]``."""
        if not self.uses_target_views:
            return []
        if len(batch["target"]) < 3:
            raise DalibError(
                "target_loss fixmatch needs a weak and a strong view of each target sample, "
                "batches (x_weak, y, x_strong): set data.target_views"
            )
        return [batch["target"][2]]

    def feature_terms(
        self, network: Network, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(f, L_s, D)`` of one paired batch, ``f`` the source and target features as a leaf
        that requires grad: what ``dalib.calibration`` differentiates to calibrate γ."""
        x_s, y_s = batch["source"][:2]
        x_t = batch["target"][0]
        f = network.paired_features(x_s, x_t).detach().requires_grad_()
        f_s, f_t = f.split([len(x_s), len(x_t)])
        logits_s, logits_t = network.head(f).split([len(x_s), len(x_t)])
        w_s = self.batch_source_weights(batch)
        source_loss = weighted_cross_entropy(logits_s, y_s, w_s)
        discrepancy = self.discrepancy(
            f_s=f_s, f_t=f_t, logits_s=logits_s, logits_t=logits_t, y_s=y_s, w_s=w_s
        )
        return f, source_loss, discrepancy

    def transfer_terms(self, network: Network, x_s, x_t, logits_s, logits_t):
        """``(name, weight, value)`` of the parameter-transfer and distillation terms in use."""
        if self.start_weights is not None:
            yield "l2_sp", self.l2_sp, self.start_weights.half_squared_distance(network.backbone)
        if network.target_backbone is not None:
            distance = half_squared_distance(network.backbone, network.target_backbone)
            yield "unshared_distance", self.unshared, distance
        if self.distillation is not None:
            value = self.distillation(
                {"source": logits_s, "target": logits_t}, {"source": x_s, "target": x_t}
            )
            yield "distillation", self.distillation.weight, value

    def reversal_layers(self) -> list[GradientReversal]:
        """The gradient-reversal layers of the discrepancy, which ``reversal`` scales."""
        if self.discrepancy is None:
            return []
        return [m for m in self.discrepancy.modules() if isinstance(m, GradientReversal)]

    def gathers_discrepancy(self) -> bool:
        """Whether ``D`` sees all processes' batches: see ``gather_discrepancy``."""
        return self.gather_discrepancy and not self.discrepancy.adversarial and world_size() > 1

    def batch_source_weights(self, batch: Batch) -> torch.Tensor | None:
        """The source batch's instance weights: ``source_weights`` at its sample indices."""
        if self.source_weights is None or len(batch["source"]) < 3:
            return None
        return self.source_weights.to(batch["source"][0].device)[batch["source"][2]]

    def named_trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """The objective's trained parameters (an adversarial discriminator's, ``discrepancy.…``);
        not the distillation teacher's, which stay frozen, nor a target loss's teacher's (frozen:
        the EMA of ``before_batch`` sets them)."""
        return (
            (name, p)
            for name, p in self.named_parameters()
            if not name.startswith(("distillation.", "target_loss."))
        )
