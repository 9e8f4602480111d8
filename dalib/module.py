"""The one LightningModule of dalib: ``L = L_s + λ(t)·L_t + γ(t)·D(f_s, f_t)``."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.plugins.precision import Precision
from pytorch_lightning.strategies import SingleDeviceStrategy
from pytorch_lightning.utilities.model_helpers import is_overridden
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from dalib.discrepancy import DISCREPANCIES
from dalib.distributed import gather_inputs, world_size
from dalib.errors import DalibError
from dalib.models import BACKBONES, bottleneck
from dalib.registry import Spec, split_spec
from dalib.resume import RandomStates
from dalib.schedules import inverse_decay, make_schedule
from dalib.selection import SCORES, SELECTIONS, SelectionTracker
from dalib.step_stats import StepStats
from dalib.target_losses import TARGET_LOSSES
from dalib.transfer.distillation import Distillation
from dalib.transfer.layers import backbone_layers, name_matches
from dalib.transfer.parameters import Snapshot, half_squared_distance, load_submodules

ScheduleSpec = float | str | Mapping[str, Any]
# Validation/test loaders 0 and 1 of DomainDataModule; validation also has loader 2, unlabelled
# target samples that only the label-free selection scores see.
EVAL_DOMAINS = ("source", "target")
# The hooks Lightning calls around a manual backward and optimiser step: when no callback and not
# the module override them, dalib steps without dispatching them (see ``lean_steps``)
STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
# Training steps whose predictions wait for the accuracy metric at most (bounded memory when the
# logging steps are far apart)
PENDING_PREDICTIONS = 100


class NonFiniteLossError(DalibError):
    """The training loss became NaN or infinite."""


def weighted_cross_entropy(
    logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None
) -> torch.Tensor:
    """Cross-entropy; with weights, ``Σ w_i·ce_i / Σ w_i`` over the batch."""
    if w is None:
        return F.cross_entropy(logits, y)
    return (w * F.cross_entropy(logits, y, reduction="none")).sum() / w.sum().clamp_min(1e-12)


class DomainAdaptationModule(pl.LightningModule):
    """Feature extractor → optional bottleneck → classifier, trained on one objective.

    ``L = L_s + λ(p)·L_t + γ(p)·D(f_s, f_t)`` at training progress ``p = step / max_steps``:

    - ``L_s``: cross-entropy on the labelled source batch.
    - ``L_t``: ``target_loss`` (``None``, ``"ce"`` on labelled target samples, ``"entropy"``,
      ``{name: pseudo_label, threshold: 0.9, per_class: null}`` on confident predictions).
    - ``D``: ``discrepancy`` from the registry, on the bottleneck features (the classifier's input)
      of the source and target batch; it also receives logits, source labels and weights.
    - ``λ``, ``γ``: numbers or schedules (``{name: dann_ramp}``, ``{name: linear_warmup, ...}``).

    With no discrepancy and no target loss this is plain source-only training on the source
    batch. Otherwise source and target go through the network as one batch, so BatchNorm sees
    both domains (and γ = 0 adds nothing to the loss or gradients).

    Optimiser: SGD with momentum and, with ``lr_schedule="inverse"``, the decay
    ``lr·(1+αp)^-0.75`` of DANN/CDAN/MDD over training progress p ∈ [0, 1], α =
    ``lr_decay_alpha`` (10 as in the DANN paper; tllib decays by ``(1+0.001·step)^-0.75``, which is
    α = 0.001·total steps: 50 for its 50,000-step digits runs); the backbone's learning rate is
    ``backbone_lr_mult·lr`` (0.1 for a pretrained backbone in the Office-31 protocol).

    Under data-parallel training, ``gather_discrepancy`` (default) computes a non-adversarial
    ``D`` on the inputs of all processes (features, instance weights, and logits and labels for
    measures that use them), gathered with gradients: W processes × batch B give the loss and
    gradients of one process × batch W·B. Adversarial measures are per-sample losses, which
    DDP's gradient averaging already makes exact; they are never gathered. ``False`` computes
    ``D`` on each process's own batch.

    Transfer (``dalib.transfer``): ``init_from`` copies ``init_modules`` from a dalib checkpoint
    (a network pretrained by ``dalib fit``); ``lr_mults`` (``{name pattern: multiplier}``) and
    ``layer_lr_decay`` (backbone layer ``i`` of ``L`` at ``decay^(L-1-i)``, discriminative
    learning rates) scale learning rates per part; ``l2_sp`` adds ``α·½‖θ − θ₀‖²`` between the
    backbone and its starting weights (L2-SP, Li et al., ICML 2018; weight decay then applies
    to the other parts only); ``unshared`` gives the target its own copy of the backbone
    (θ_t ≠ θ_s), tied by ``unshared·½‖θ_s − θ_t‖²`` (bottleneck and head stay shared);
    ``distillation`` adds a teacher's softened predictions as a term. Freezing and unfreezing
    are the ``dalib.transfer.Finetuning`` callback.

    Model selection: every validation computes the label-free scores of ``dalib.selection``
    (logged as ``select/<name>``); the checkpoint kept as ``best`` is the one ``selection``
    prefers: a score name, ``last`` (the final model) or ``oracle`` (best target accuracy, which
    uses target labels and is reported as the upper bound it is). A score that cannot be
    computed (too few samples, say) stops the run with the reason, unless ``selection_fallback``
    names the choice to use instead, which the record then states.

    ``checkpoint_every_n_steps``: also rewrite ``last.ckpt`` every that many training steps,
    with the position in the epoch's data, so that a run killed inside a long epoch resumes from
    there exactly (``dalib.resume``); by default only at every validation.
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
        gather_discrepancy: bool = True,
        checkpoint_every_n_steps: int | None = None,
        lr_mults: Mapping[str, float] | None = None,
        layer_lr_decay: float = 1.0,
        init_from: str | None = None,
        init_modules: Sequence[str] = ("backbone",),
        l2_sp: float = 0.0,
        unshared: float | None = None,
        distillation: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        for key, value in [("selection", selection), ("selection_fallback", selection_fallback)]:
            if value is not None and value not in SELECTIONS:
                raise DalibError(f"unknown {key} {value!r}; choose one of: {', '.join(SELECTIONS)}")
        if num_classes < 2:
            raise DalibError(f"num_classes must be >= 2, got {num_classes}")
        if checkpoint_every_n_steps is not None and checkpoint_every_n_steps < 1:
            raise DalibError(
                f"checkpoint_every_n_steps must be >= 1 (or null), got {checkpoint_every_n_steps}"
            )
        for name, value in [
            ("lr", lr),
            ("lr_decay_alpha", lr_decay_alpha),
            ("backbone_lr_mult", backbone_lr_mult),
            ("layer_lr_decay", layer_lr_decay),
            *(lr_mults or {}).items(),
        ]:
            if not (math.isfinite(value) and value > 0):
                raise DalibError(f"{name} must be a finite number > 0, got {value}")
        for name, value in [("l2_sp", l2_sp), ("unshared", 0.0 if unshared is None else unshared)]:
            if not (math.isfinite(value) and value >= 0):
                raise DalibError(f"{name} must be a finite number >= 0, got {value}")
        self.backbone = BACKBONES.build(backbone, input_shape=tuple(input_shape))
        width = self.backbone.out_features
        self.bottleneck = (
            nn.Identity() if bottleneck_dim is None else bottleneck(width, bottleneck_dim)
        )
        width = bottleneck_dim or width
        self.head = nn.Linear(width, num_classes)
        if init_from is not None:
            load_submodules(self, init_from, init_modules)
        # L2-SP's θ₀: the backbone as it starts (pretrained), rebuilt from the config on resume
        self.start_weights = Snapshot(self.backbone) if l2_sp > 0 else None
        self.target_backbone = None if unshared is None else copy.deepcopy(self.backbone)
        self.distillation = (
            None
            if distillation is None
            else Distillation.from_spec(dict(distillation), num_classes)
        )
        self.discrepancy = (
            None
            if discrepancy is None
            else DISCREPANCIES.build(discrepancy, in_features=width, num_classes=num_classes)
        )
        self.gamma = make_schedule(gamma, "gamma")
        self.target_loss = (
            None if target_loss in (None, "none") else TARGET_LOSSES.build(target_loss)
        )
        self.lambda_t = make_schedule(lambda_t, "lambda_t")
        self.method = method or self._default_method_name()
        # Per-sample weights of the source training set, set by ImportanceWeighting; with them
        # and indexed source batches, L_s and D are weighted (w_s). None: unweighted.
        self.source_weights: torch.Tensor | None = None
        self._lean_steps = False  # set at the start of training: see lean_steps
        self.train_source_acc = MulticlassAccuracy(num_classes, average="micro")
        # (predicted class, label) of the latest source batches: the accuracy metric sees them
        # at each log (or every PENDING_PREDICTIONS steps), as its update costs more than an argmax
        self._train_predictions: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.eval_acc = nn.ModuleDict(
            {
                stage: nn.ModuleList(
                    MulticlassAccuracy(num_classes, average="micro") for _ in EVAL_DOMAINS
                )
                for stage in ("val", "test")
            }
        )
        # torchmetrics, not a logged tensor with sync_dist: Lightning's synced mean truncates when
        # the processes hold different numbers of evaluation samples
        self.eval_ce = nn.ModuleDict(
            {stage: nn.ModuleList(MeanMetric() for _ in EVAL_DOMAINS) for stage in ("val", "test")}
        )
        self.check_lr_patterns()

    def _default_method_name(self) -> str:
        parts = []
        if self.discrepancy is not None:
            parts.append(split_spec(self.hparams.discrepancy, "discrepancy")[0])
        if self.target_loss is not None:
            parts.append(split_spec(self.hparams.target_loss, "target_loss")[0])
        return "+".join(parts) or "source_only"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (of the target network when source and target are ``unshared``)."""
        return self.head(self.features(x))

    def features(self, x: torch.Tensor, domain: str = "target") -> torch.Tensor:
        """The features the discrepancy aligns: backbone (``domain``'s), then bottleneck."""
        return self.bottleneck(self.extractor(domain)(x))

    def extractor(self, domain: str) -> nn.Module:
        """The backbone of ``domain``: the shared one, or the target's own when ``unshared``."""
        if domain == "target" and self.target_backbone is not None:
            return self.target_backbone
        return self.backbone

    def paired_features(self, x_s: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        """Source then target features, as one bottleneck batch (BatchNorm sees both)."""
        if self.target_backbone is None:
            h = self.backbone(torch.cat([x_s, x_t]))
        else:
            h = torch.cat([self.backbone(x_s), self.target_backbone(x_t)])
        return self.bottleneck(h)

    def uses_target_batch(self) -> bool:
        """Whether the objective needs the target batch (else: source-only, target skipped)."""
        return (
            self.discrepancy is not None
            or self.target_loss is not None
            or self.target_backbone is not None
            or (self.distillation is not None and "target" in self.distillation.domains)
        )

    def progress(self) -> float:
        """Training progress p in [0, 1]: global step over the total number of steps."""
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else math.inf
        return min(1.0, self.global_step / total) if math.isfinite(total) and total > 0 else 0.0

    def compute_losses(
        self, batch: Mapping[str, Sequence[torch.Tensor]], progress: float
    ) -> dict[str, torch.Tensor]:
        """Every term of the objective for one paired batch, and the weighted total ``loss``."""
        x_s, y_s = batch["source"][:2]
        w_s = self.batch_source_weights(batch)
        if not self.uses_target_batch():
            # Source-only: the target batch does not enter the objective, so it is not computed.
            x_t = logits_t = None
            logits_s = self.head(self.features(x_s, "source"))
        else:
            x_t, y_t = batch["target"][:2]
            f = self.paired_features(x_s, x_t)
            f_s, f_t = f.split([len(x_s), len(x_t)])
            logits_s, logits_t = self.head(f).split([len(x_s), len(x_t)])

        terms = {"source_ce": weighted_cross_entropy(logits_s, y_s, w_s)}
        loss = terms["source_ce"]
        terms["logits_s"] = logits_s.detach()
        if self.target_loss is not None:
            weight = self.lambda_t(progress)
            terms["target_loss"] = self.target_loss(logits_t, y_t)
            terms["lambda_t"] = torch.tensor(weight)
            if weight != 0:
                loss = loss + weight * terms["target_loss"]
        if self.discrepancy is not None:
            weight = self.gamma(progress)
            inputs = dict(f_s=f_s, f_t=f_t, logits_s=logits_s, logits_t=logits_t, y_s=y_s, w_s=w_s)
            if self.gathers_discrepancy():
                inputs = gather_inputs(self.discrepancy, inputs)
            terms["discrepancy"] = self.discrepancy(**inputs)
            terms["gamma"] = torch.tensor(weight)
            if weight != 0:
                loss = loss + weight * terms["discrepancy"]
        for name, weight, value in self.transfer_terms(x_s, x_t, logits_s, logits_t):
            terms[name] = value
            loss = loss + weight * value
        terms["loss"] = loss
        return terms

    def transfer_terms(self, x_s, x_t, logits_s, logits_t):
        """``(name, weight, value)`` of the parameter-transfer and distillation terms in use."""
        hp = self.hparams
        if self.start_weights is not None:
            yield "l2_sp", hp.l2_sp, self.start_weights.half_squared_distance(self.backbone)
        if self.target_backbone is not None:
            distance = half_squared_distance(self.backbone, self.target_backbone)
            yield "unshared_distance", hp.unshared, distance
        if self.distillation is not None:
            value = self.distillation(
                {"source": logits_s, "target": logits_t}, {"source": x_s, "target": x_t}
            )
            yield "distillation", self.distillation.weight, value

    def gathers_discrepancy(self) -> bool:
        """Whether ``D`` sees all processes' batches: see ``gather_discrepancy``."""
        return (
            self.hparams.gather_discrepancy
            and not self.discrepancy.adversarial
            and world_size() > 1
        )

    def batch_source_weights(self, batch: Mapping[str, Sequence[torch.Tensor]]):
        """The source batch's instance weights: ``source_weights`` at its sample indices."""
        if self.source_weights is None or len(batch["source"]) < 3:
            return None
        return self.source_weights.to(batch["source"][0].device)[batch["source"][2]]

    def training_step(self, batch: Mapping[str, Sequence[torch.Tensor]], batch_idx: int):
        terms = self.compute_losses(batch, self.progress())
        if self.checks_loss_this_step() and not math.isfinite(terms["loss"].item()):
            values = ", ".join(
                f"{name}={float(value):.4g}"
                for name, value in terms.items()
                if name != "logits_s" and value.dim() == 0
            )
            when = "at" if self.device.type == "cpu" else "by"
            raise NonFiniteLossError(
                f"the training loss became non-finite {when} step {self.global_step} ({values}); "
                "lower lr or gamma, or check the data for NaN/inf; earlier checkpoints are kept"
            )
        self._train_predictions.append((terms.pop("logits_s").argmax(1), batch["source"][1]))
        logs = self.logs_this_step()
        if logs or len(self._train_predictions) == PENDING_PREDICTIONS:
            predicted, labels = map(torch.cat, zip(*self._train_predictions, strict=True))
            self._train_predictions.clear()
            self.train_source_acc.update(predicted, labels)
        if logs:
            # Every trainer.log_every_n_steps steps, not every step: logging costs more than a
            # small model's step. The accuracy is over the steps since the last log.
            size = batch["source"][0].shape[0]
            logged = {f"train/{name}": value.detach() for name, value in terms.items()}
            group = self.optimizers().param_groups[-1]
            logged["lr"] = group["lr"] / group["lr_mult"]  # the base rate, before multipliers
            self.log_dict(logged, batch_size=size)
            self.log("train/source_acc", self.train_source_acc.compute(), prog_bar=True)
            self.train_source_acc.reset()
        if not self.automatic_optimization:
            self.optimization_step(terms["loss"])
        return terms["loss"]

    @property
    def automatic_optimization(self) -> bool:
        """Whether Lightning steps the optimiser: when the trainer clips or accumulates
        gradients (``gradient_clip_val``, ``accumulate_grad_batches``) or runs several processes
        (gradient synchronisation), which its automatic loop does. Otherwise ``training_step``
        takes the same step itself, as that loop's closure and hooks cost ~0.1 ms, a percent of
        a small model's step on a CPU."""
        trainer = self._trainer
        return trainer is not None and (
            bool(trainer.gradient_clip_val)
            or trainer.accumulate_grad_batches != 1
            or trainer.world_size > 1
        )

    def optimization_step(self, loss: torch.Tensor) -> None:
        """What Lightning's automatic loop does after the forward pass: zero the gradients,
        backward, optimiser step, then the per-step LR schedule. With ``lean_steps``, backward
        and the optimiser's step are called directly (the step still counts in Lightning's
        progress, which gives the global step); otherwise through Lightning, which calls
        ``STEP_HOOKS`` on every callback."""
        optimizer = self.optimizers()
        optimizer.zero_grad()
        if self._lean_steps:
            loss.backward()
            optimizer._on_before_step()  # the manual loop's step count and profiler section
            optimizer.optimizer.step()
            optimizer._on_after_step()
        else:
            self.manual_backward(loss)
            optimizer.step()
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()

    def on_train_start(self) -> None:
        self._lean_steps = self.lean_steps()

    def lean_steps(self) -> bool:
        """Whether ``optimization_step`` may skip Lightning's dispatch around backward and the
        optimiser step (~0.1 ms a step, a percent of a small model's step on a CPU): no callback
        and not the module override ``STEP_HOOKS`` or ``backward``, and the precision plugin
        and strategy are the plain 32-bit single-device ones, whose own parts there do nothing."""
        trainer = self.trainer
        return (
            type(trainer.precision_plugin) is Precision
            and type(trainer.strategy) is SingleDeviceStrategy
            and not any(
                is_overridden(hook, self, pl.LightningModule) for hook in ("backward", *STEP_HOOKS)
            )
            and not any(
                is_overridden(hook, callback, Callback)
                for callback in trainer.callbacks
                for hook in STEP_HOOKS
            )
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The optimiser-step count, which gives the global step (the schedules' position),
        from a checkpoint of the other optimisation mode (saved by dalib before it stepped the
        optimiser itself, or with gradient clipping): Lightning keeps one count per mode."""
        loops = checkpoint.get("loops", {}).get("fit_loop", {})
        automatic = loops.get("epoch_loop.automatic_optimization.optim_progress")
        manual_key = "epoch_loop.manual_optimization.optim_step_progress"
        if automatic is None or manual_key not in loops:
            return
        counts = [automatic["optimizer"]["step"], loops[manual_key]]
        mine, other = counts if self.automatic_optimization else counts[::-1]
        if mine["total"]["completed"] == 0:
            mine.update(copy.deepcopy(other))

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int):
        """The batch as it is on a CPU, where the loaders' tensors already are (Lightning's
        move walks the batch and costs ~50 µs a step); Lightning's move on other devices."""
        if device.type == "cpu":
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def checks_loss_this_step(self) -> bool:
        """Whether to stop on a non-finite loss at this step: at every step on a CPU, where the
        check is free; on an accelerator, where it waits for the step's kernels, at the logging
        steps, the epoch's last batch and before a mid-epoch checkpoint (a NaN loss makes the
        weights NaN, so it is still caught, a few steps later, before any checkpoint)."""
        if self.device.type == "cpu" or self.logs_this_step():
            return True
        every = self.hparams.checkpoint_every_n_steps
        return every is not None and (self.global_step + 1) % every == 0

    def logs_this_step(self) -> bool:
        """Whether the trainer writes logs at this step (its ``log_every_n_steps``)."""
        trainer = self.trainer
        return (self.global_step + 1) % trainer.log_every_n_steps == 0 or trainer.is_last_batch

    def _eval_step(self, stage: str, batch, dataloader_idx: int) -> dict[str, torch.Tensor]:
        x, y = batch[:2]
        features = self.features(x, "source" if dataloader_idx == 0 else "target")
        logits = self.head(features)
        outputs = {"logits": logits, "labels": y, "features": features}
        if dataloader_idx >= len(EVAL_DOMAINS):  # unlabelled target samples, for selection only
            return outputs
        metric = self.eval_acc[stage][dataloader_idx]
        metric(logits, y)
        domain = EVAL_DOMAINS[dataloader_idx]
        self.log(
            f"{stage}/{domain}_acc",
            metric,
            prog_bar=True,
            add_dataloader_idx=False,
            batch_size=x.shape[0],
        )
        mean_ce = self.eval_ce[stage][dataloader_idx]
        mean_ce(F.cross_entropy(logits, y, reduction="none"))
        self.log(
            f"{stage}/{domain}_ce",
            mean_ce,
            add_dataloader_idx=False,
            batch_size=x.shape[0],
        )
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
        if self._trainer is not None and self.trainer.checkpoint_callback is None:
            return [SelectionTracker(), RandomStates(), StepStats()]  # enable_checkpointing=False
        latest = [ModelCheckpoint(filename="last", save_top_k=1, enable_version_counter=False)]
        if self.hparams.checkpoint_every_n_steps is not None:
            latest.append(
                ModelCheckpoint(
                    filename="last",
                    every_n_train_steps=self.hparams.checkpoint_every_n_steps,
                    enable_version_counter=False,
                )
            )
        selection = self.hparams.selection
        if selection == "last":
            return [SelectionTracker(), RandomStates(), StepStats(), *latest]
        if selection == "oracle":
            monitor, mode = "val/target_acc", "max"
        else:
            monitor, mode = f"select/{selection}", SCORES[selection].mode
        selected = ModelCheckpoint(
            monitor=monitor, mode=mode, filename=f"best-{selection}-{{epoch}}", save_top_k=1
        )
        return [SelectionTracker(), RandomStates(), StepStats(), selected, *latest]

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Optimiser groups, one per learning-rate multiplier and weight decay: see ``lr_mult``."""
        groups: dict[tuple[float, float], list[nn.Parameter]] = {}
        for name, p in self.named_parameters():
            groups.setdefault((self.lr_mult(name), self.weight_decay_of(name)), []).append(p)
        # the head's group (multiplier 1) last: its rate is the base rate that training logs
        order = sorted(groups, key=lambda key: any(p is self.head.weight for p in groups[key]))
        return [{"params": groups[k], "lr_mult": k[0], "weight_decay": k[1]} for k in order]

    def lr_mult(self, name: str) -> float:
        """The learning-rate multiplier of parameter ``name``.

        ``backbone_lr_mult`` for the backbone (and the target's ``unshared`` copy), times
        ``layer_lr_decay`` per backbone layer below the top one; 1 for the rest. The longest
        pattern of ``lr_mults`` that names the parameter (or a module holding it) overrides both.
        """
        hp = self.hparams
        patterns = [pattern for pattern in hp.lr_mults or {} if name_matches(name, pattern)]
        if patterns:
            return float(hp.lr_mults[max(patterns, key=len)])
        part, _, rest = name.partition(".")
        if part not in ("backbone", "target_backbone"):
            return 1.0
        layers = [layer for layer, _ in backbone_layers(self.backbone)]
        depth = next((i for i, layer in enumerate(layers) if name_matches(rest, layer)), None)
        below_top = 0 if depth is None else len(layers) - 1 - depth
        return hp.backbone_lr_mult * hp.layer_lr_decay**below_top

    def weight_decay_of(self, name: str) -> float:
        """Weight decay, except where L2-SP pulls the backbone towards its start instead."""
        if self.hparams.l2_sp > 0 and name.partition(".")[0] == "backbone":
            return 0.0
        return self.hparams.weight_decay

    def configure_optimizers(self):
        hp = self.hparams
        groups = self.parameter_groups()
        for group in groups:
            group["lr"] = hp.lr * group["lr_mult"]
        optimizer = torch.optim.SGD(
            groups,
            lr=hp.lr,
            momentum=hp.momentum,
            nesterov=hp.nesterov and hp.momentum > 0,
        )
        if hp.lr_schedule == "constant":
            return optimizer
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise DalibError("the inverse LR decay needs a finite trainer.max_epochs or max_steps")
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: inverse_decay(min(1.0, step / total), hp.lr_decay_alpha)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def check_lr_patterns(self) -> None:
        """Every ``lr_mults`` pattern names at least one parameter: a typo is an error."""
        names = [name for name, _ in self.named_parameters()]
        for pattern in self.hparams.lr_mults or {}:
            if not any(name_matches(name, pattern) for name in names):
                raise DalibError(
                    f"lr_mults pattern {pattern!r} names no parameter; parameters are named like "
                    f"{names[0]!r} (see model.named_parameters())"
                )
