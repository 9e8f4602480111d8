"""The LightningModule of dalib: a ``Network`` trained on an ``Objective`` by ``Optimization``."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from dalib.calibration import calibrate_gamma
from dalib.collapse import (
    ADAPTATION_REMEDY,
    SOURCE_ONLY_REMEDY,
    CollapseGuard,
    OnCollapse,
    check_on_collapse,
)
from dalib.data.datamodule import DomainDataModule
from dalib.errors import DalibError, DalibWarning
from dalib.finite import FiniteGuard
from dalib.network import Network
from dalib.objective import Batch, Objective, ScheduleSpec
from dalib.optim import Optimization
from dalib.registry import Spec, split_spec
from dalib.resume import RandomStates
from dalib.schemes import SCHEMES
from dalib.selection import SelectionTracker
from dalib.selection.scores import check_selection, tracked_scores
from dalib.step_stats import StepStats
from dalib.train_accuracy import TrainingAccuracy

# Validation/test loaders 0 and 1 of DomainDataModule; validation also has loader 2, unlabelled
# target samples that only the label-free selection scores see.
EVAL_DOMAINS = ("source", "target")
TEACHER_KEY = "distillation_teacher"  # the checkpoint's entry for the teacher's architecture
TRAIN_ACCURACY_KEY = "train_source_acc"  # the checkpoint's entry for the accuracy since the log


class DomainAdaptationModule(pl.LightningModule):
    """Feature extractor → optional bottleneck → classifier (``dalib.network.Network``), trained
    on ``L = L_s + λ(p)·L_t + γ(p)·D(f_s, f_t)`` (``dalib.objective.Objective``: the terms, their
    schedules, ``regularisers``, ``l2_sp``, ``unshared``, ``distillation``) by SGD
    (``dalib.optim.Optimization``: ``lr`` to ``layer_lr_decay``) in Lightning's automatic
    optimisation, the LR schedule per step (the ``standard`` scheme).

    ``init_from`` copies ``init_modules`` (``backbone``, ``bottleneck``, ``head``) from a dalib
    checkpoint when a fit starts from scratch (``start``). Checkpoints are self-contained: they
    hold L2-SP's θ₀ and the distillation teacher, so a model restored from one never reads
    ``init_from`` or the teacher's file.

    ``scheme``: how a batch updates the model (``dalib.schemes``): ``standard`` (one loss, one
    step, Lightning's automatic optimisation) or a multi-step scheme such as ``{name: mcd}``,
    which optimises manually.

    ``selection``: the checkpoint kept as ``best`` is the one a label-free score of
    ``dalib.selection`` prefers (logged as ``select/<name>`` at every validation), ``last`` (the
    final model) or ``oracle`` (best target accuracy: an upper bound, as it uses target labels).
    A score that cannot be computed stops the run with the reason, unless
    ``selection_fallback`` names the choice to use instead, which the record then states.
    ``record_scores``: compute every label-free score (and the proxy A-distance) at each
    validation, so that the record says what each would have chosen (``dalib report
    --selection``); ``False`` computes only the selected ones, which saves most of a validation's
    time on small feature data (benchmarks/results/dann_step_profile.md).

    ``checkpoint_every_n_steps``: also rewrite ``last.ckpt`` every that many training steps,
    with the position in the epoch's data, so that a run killed inside a long epoch resumes from
    there exactly (``dalib.resume``); by default only at every validation. ``FiniteGuard`` stops
    training at a non-finite loss and refuses checkpoints of non-finite weights.
    ``on_collapse``: ``stop`` (default) ends the run with one line when the features or the
    predictions collapse, ``warn`` warns and records it in ``result.json`` (``dalib.collapse``).
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: Sequence[int],
        backbone: Spec = "mlp",
        bottleneck_dim: int | None = None,
        discrepancy: Spec | None = None,
        gamma: ScheduleSpec = 1.0,
        target_loss: Spec | None = None,
        lambda_t: ScheduleSpec = 1.0,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 1e-3,
        nesterov: bool = True,
        lr_schedule: Literal["inverse", "constant"] = "inverse",
        lr_decay_alpha: float = 10.0,
        backbone_lr_mult: float = 1.0,
        method: str | None = None,
        selection: str = "last",
        selection_fallback: str | None = None,
        record_scores: bool = True,
        gather_discrepancy: bool = True,
        checkpoint_every_n_steps: int | None = None,
        lr_mults: Mapping[str, float] | None = None,
        layer_lr_decay: float = 1.0,
        init_from: str | None = None,
        init_modules: Sequence[str] = ("backbone",),
        l2_sp: float = 0.0,
        unshared: float | None = None,
        distillation: Mapping[str, Any] | None = None,
        reversal: ScheduleSpec = 1.0,
        bottleneck_options: Mapping[str, Any] | None = None,
        head_options: Mapping[str, Any] | None = None,
        on_collapse: OnCollapse = "stop",
        regularisers: Sequence[Spec] | None = None,
        scheme: Spec = "standard",
    ) -> None:
        """The network, its objective and its optimisation (``dalib fit --help`` shows these).

        Args:
            backbone: the feature extractor: a name, or {name: NAME, OPTION: VALUE}; `dalib
                list backbones` names them, `dalib list backbones NAME` shows one's options.
            discrepancy: the measure D between source and target features: a name, or {name:
                NAME, OPTION: VALUE}, or null for none; `dalib list discrepancies [NAME]`.
            gamma: γ(p), the weight of D: a number, or a schedule {name: NAME, OPTION: VALUE}
                over the training progress p; `dalib list schedules [NAME]`.
            target_loss: L_t on the target batch: a name, or {name: NAME, OPTION: VALUE}, or
                null for none; `dalib list target_losses [NAME]`.
            lambda_t: λ(p), the weight of L_t: a number or a schedule; `dalib list schedules`.
            selection: the checkpoint kept as best: a label-free score (`dalib list
                selection_scores`), last (the final model) or oracle (uses target labels).
            selection_fallback: the choice used when the selection score cannot be computed.
            on_collapse: stop (default) or warn when the representation or the predictions
                collapse (`dalib.collapse`).
            regularisers: feature regularisers added to the loss, e.g. [{name: bsp, weight:
                1e-4}]; `dalib list regularisers`.
            scheme: the training scheme: standard (one loss, one step) or a multi-step one
                such as {name: mcd, num_k: 4}; `dalib list schemes`.
        """
        super().__init__()
        self.save_hyperparameters()
        check_on_collapse(on_collapse)
        for key, value in [("selection", selection), ("selection_fallback", selection_fallback)]:
            if value is not None:
                check_selection(value, key)
        if checkpoint_every_n_steps is not None and checkpoint_every_n_steps < 1:
            raise DalibError(
                f"checkpoint_every_n_steps must be >= 1 (or null), got {checkpoint_every_n_steps}"
            )
        self.optimization = Optimization(
            lr, momentum, weight_decay, nesterov, lr_schedule, lr_decay_alpha, backbone_lr_mult,
            dict(lr_mults or {}), layer_lr_decay, l2_sp,
        )  # fmt: skip
        self.network = Network(
            num_classes, input_shape, backbone, bottleneck_dim, unshared=unshared is not None,
            bottleneck_options=bottleneck_options, head_options=head_options,
        )  # fmt: skip
        self.objective = Objective(
            self.network, discrepancy, gamma, target_loss, lambda_t, gather_discrepancy, l2_sp,
            unshared or 0.0, distillation, reversal, regularisers,
        )  # fmt: skip
        self.optimization.check_patterns(self.network, self.objective)
        self.scheme = SCHEMES.build(scheme, network=self.network, objective=self.objective)
        self.automatic_optimization = not self.scheme.manual
        parts = [("discrepancy", discrepancy), ("target_loss", target_loss)]
        names = [split_spec(spec, key)[0] for key, spec in parts if spec not in (None, "none")]
        names += list(self.objective.regularisers)
        scheme_name = split_spec(scheme, "training scheme")[0]
        if scheme_name != "standard":
            names.insert(0, scheme_name)
        self.method = method or "+".join(names) or "source_only"
        self.started = False  # whether the network has its starting weights: see on_fit_start
        self.train_source_acc = TrainingAccuracy(num_classes)
        accuracy = partial(MulticlassAccuracy, num_classes, average="micro")
        # torchmetrics, not a logged tensor with sync_dist: Lightning's synced mean truncates when
        # the processes hold different numbers of evaluation samples
        self.eval_acc = per_stage_and_domain(accuracy)
        self.eval_ce = per_stage_and_domain(MeanMetric)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (of the target network when source and target are ``unshared``)."""
        return self.network(x)

    def compute_losses(self, batch: Batch, progress: float) -> dict[str, torch.Tensor]:
        """Every term of the objective for one paired batch, and the weighted total ``loss``."""
        return self.objective(self.network, batch, progress)

    def progress(self) -> float:
        """Training progress p in [0, 1]: global step over the total number of steps."""
        total = self.trainer.estimated_stepping_batches
        return min(1.0, self.global_step / total) if 0 < total < float("inf") else 0.0

    def start(self) -> None:
        """The start of a run from scratch: ``init_from``'s weights, then the objective's
        (L2-SP's θ₀, the distillation teacher), then a calibrated γ's measurement."""
        if self.hparams.init_from is not None:
            self.network.load_parts(self.hparams.init_from, self.hparams.init_modules)
        self.objective.start(self.network)
        calibrate_gamma(self.objective, self.network, lambda: self.trainer)
        self.started = True

    def setup(self, stage: str) -> None:
        """Before fitting on a ``DomainDataModule``: a two-view target loss (``fixmatch``) needs
        its ``target_views``; views that no loss uses would only cost time, and warn."""
        data = self.trainer.datamodule
        if stage != "fit" or not isinstance(data, DomainDataModule):
            return
        if self.objective.uses_target_views:
            data.require_target_views(split_spec(self.hparams.target_loss, "target_loss")[0])
        elif data.target_views is not None:
            warnings.warn(
                "data.target_views makes a strong view of each target sample, which only a "
                "two-view target loss (fixmatch) uses; remove target_views",
                DalibWarning,
                stacklevel=2,
            )

    def on_fit_start(self) -> None:
        """``start`` once, unless a checkpoint restored the model (it holds all of that)."""
        if not self.started:
            self.start()

    def training_step(self, batch: Batch, batch_idx: int) -> Mapping[str, torch.Tensor]:
        """The scheme's step(s) on one paired batch (``dalib.schemes``); a manual scheme must
        count exactly one optimiser step per batch, or max_steps would never (or too soon) end."""
        before = self.global_step
        self.objective.before_batch(self.network, before)
        terms = self.scheme.training_step(self, batch, batch_idx)
        if self.scheme.manual and self.global_step != before + 1:
            raise DalibError(
                f"training scheme {type(self.scheme).__name__} counted {self.global_step - before}"
                " optimiser steps in one batch; count exactly one (optimizer_step(counted=True))"
            )
        return terms

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The distillation teacher's architecture (its weights are in the state_dict), and the
        training accuracy's counts since the last log."""
        checkpoint[TRAIN_ACCURACY_KEY] = self.train_source_acc.state()
        distillation = self.objective.distillation
        if distillation is not None and distillation.teacher is not None:
            checkpoint[TEACHER_KEY] = distillation.teacher.config

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Before the weights load: the distillation teacher that holds its share of them."""
        if TEACHER_KEY in checkpoint and self.objective.distillation is not None:
            self.objective.distillation.build_teacher(checkpoint[TEACHER_KEY])
        if TRAIN_ACCURACY_KEY in checkpoint:
            self.train_source_acc.restore(checkpoint[TRAIN_ACCURACY_KEY])
        self.started = True

    def _eval_step(self, stage: str, batch, dataloader_idx: int) -> dict[str, torch.Tensor]:
        x, y = batch[:2]
        features = self.network.features(x, "source" if dataloader_idx == 0 else "target")
        logits = self.network.head(features)
        outputs = {"logits": logits, "labels": y, "features": features}
        if dataloader_idx >= len(EVAL_DOMAINS):  # unlabelled target samples, for selection only
            return outputs
        domain = EVAL_DOMAINS[dataloader_idx]
        accuracy = self.eval_acc[stage][dataloader_idx]
        mean_ce = self.eval_ce[stage][dataloader_idx]
        accuracy(logits, y)
        mean_ce(F.cross_entropy(logits, y, reduction="none"))
        for name, metric, bar in [("acc", accuracy, True), ("ce", mean_ce, False)]:
            self.log(f"{stage}/{domain}_{name}", metric, prog_bar=bar, add_dataloader_idx=False,
                     batch_size=x.shape[0])  # fmt: skip
        return outputs

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0):
        return self._eval_step("val", batch, dataloader_idx)

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("test", batch, dataloader_idx)

    def configure_callbacks(self) -> list[Callback]:
        """The selection tracker; checkpoints of the model ``selection`` prefers and of the last.

        ``last.ckpt`` is rewritten at every validation, so ``--ckpt_path last`` resumes from the
        latest state whether or not the selection score improved. No checkpoints with
        ``Trainer(enable_checkpointing=False)``.
        """
        selection, every = self.hparams.selection, self.hparams.checkpoint_every_n_steps
        record = self.hparams.record_scores
        scores = tracked_scores(selection, self.hparams.selection_fallback, every_score=record)
        callbacks: list[Callback] = [
            SelectionTracker(scores, a_distance=record),
            RandomStates(),
            StepStats(),
            FiniteGuard(),
            CollapseGuard(
                self.hparams.on_collapse,
                ADAPTATION_REMEDY if self.objective.discrepancy is not None else SOURCE_ONLY_REMEDY,
            ),
        ]
        if self.trainer.checkpoint_callback is None:  # enable_checkpointing=False
            return callbacks
        if selection != "last":
            oracle = selection == "oracle"
            monitor = "val/target_acc" if oracle else f"select/{selection}"
            mode = "max" if oracle else scores[selection].mode
            # a spec's "package.module:Name" as a file name: no ":" (not allowed on Windows)
            safe = re.sub(r"[^\w.-]", "_", selection)
            name = f"best-{safe}-{{epoch}}"
            callbacks.append(ModelCheckpoint(monitor=monitor, mode=mode, filename=name))
        callbacks.append(ModelCheckpoint(filename="last", enable_version_counter=False))
        if every is not None:
            callbacks.append(
                ModelCheckpoint(
                    filename="last", every_n_train_steps=every, enable_version_counter=False
                )
            )
        return callbacks

    def configure_optimizers(self):
        """The scheme's optimisers and LR schedulers."""
        return self.scheme.configure_optimizers(self)


def per_stage_and_domain(metric: Callable[[], nn.Module]) -> nn.ModuleDict:
    """``metric()`` for each evaluation stage (``val``, ``test``) and domain (``EVAL_DOMAINS``)."""
    return nn.ModuleDict(
        {stage: nn.ModuleList(metric() for _ in EVAL_DOMAINS) for stage in ("val", "test")}
    )
