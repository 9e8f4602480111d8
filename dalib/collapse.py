"""Collapse caught: a run whose representation or predictions degenerate stops (or warns).

A discrepancy weighted too strongly can make the cheapest way to minimise ``L`` to map every
input to (nearly) the same feature vector: ``D`` is then zero, the classifier can only guess, and
the run would otherwise finish as if nothing happened. ``CollapseGuard`` checks every validation
(not the sanity check) for three signs, each of which is enough:

- ``features``: the features (the classifier's input) of the source-validation and unlabelled
  target samples have a total variance below ``FEATURE_VARIANCE`` of their mean square,
  ``tr Cov(f) / E‖f‖² < 1e-4`` (scale-free; all-zero features, dead ReLUs, count as 0);
- ``source accuracy``: the source-validation accuracy is at chance, at most the majority class's
  share plus ``CHANCE_MARGIN`` (what a constant prediction gets), while the training accuracy
  logged since the last log (``train/source_acc``) is not: at least halfway from chance to 1;
- ``target predictions``: every one of the (at least ``MIN_TARGET_SAMPLES``) unlabelled target
  samples is predicted as the same class, in a model whose source-validation accuracy is, or
  was at an earlier validation, at least halfway from chance to 1 (a model that has not
  learned anything yet, a few steps into training, often predicts one class everywhere).

A sign counts only when it holds at two consecutive validations: a model a few steps into
training can show one for a moment (a tiny source-validation set at chance once, while the
training batches are already fitted) and recover, which collapse does not. The thresholds sit
far from healthy runs (see docs/calibration_and_collapse.md for what was measured). No target
label is used.
"""

from __future__ import annotations

from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_warn

from dalib.errors import DalibError, DalibWarning

OnCollapse = Literal["stop", "warn"]
ON_COLLAPSE = ("stop", "warn")
FEATURE_VARIANCE = 1e-4  # tr Cov(f) / E||f||^2 below this: the features collapsed to a point
CHANCE_MARGIN = 0.02  # source validation accuracy within this of the majority share: chance
MIN_TARGET_SAMPLES = 20  # fewer unlabelled target samples than this: no one-class check
SOURCE_VAL, TARGET_UNLABELLED = 0, 2  # the validation loaders of DomainDataModule it reads
ADAPTATION_REMEDY = "lower gamma or calibrate it (gamma: {name: balanced})"
SOURCE_ONLY_REMEDY = "check the learning rate and the scale of the inputs"


class CollapseError(DalibError):
    """The features or the predictions collapsed (``model.on_collapse: stop``)."""


class CollapseGuard(Callback):
    """Checks every validation for collapse (see the module's docstring); ``on_collapse``:
    ``stop`` raises ``CollapseError`` with one line saying what collapsed and at which step
    (before that validation's checkpoints are written, so the earlier ones are kept); ``warn``
    warns with the same line and goes on. ``events`` lists every validation that found collapse
    (``epoch``, ``step``, ``what``, ``message``); it is part of the checkpoint, so a resumed run
    records the events before the interruption too. ``remedy`` ends the line: what to change
    (``SOURCE_ONLY_REMEDY`` for a model trained without a discrepancy)."""

    def __init__(self, on_collapse: OnCollapse = "stop", remedy: str = ADAPTATION_REMEDY) -> None:
        self.on_collapse = check_on_collapse(on_collapse)
        self.remedy = remedy
        self.events: list[dict[str, Any]] = []
        self.learned = False  # whether a validation's source accuracy was learned, so far
        self.previous: list[str] = []  # the signs the last validation showed
        self._sums: dict[str, torch.Tensor] = {}

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sums = {}

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        if trainer.sanity_checking or dataloader_idx not in (SOURCE_VAL, TARGET_UNLABELLED):
            return
        logits, features = outputs["logits"].detach(), outputs["features"].detach().double()
        k = logits.shape[1]
        sums = {
            "feature_count": torch.tensor(float(len(features)), device=features.device),
            "feature_sum": features.sum(0),
            "feature_square_sum": features.pow(2).sum(0),
        }
        if dataloader_idx == SOURCE_VAL:
            labels = outputs["labels"]
            sums["source_labels"] = torch.bincount(labels, minlength=k).double()
            sums["source_correct"] = (logits.argmax(1) == labels).double().sum()
        else:
            sums["target_predicted"] = torch.bincount(logits.argmax(1), minlength=k).double()
        for key, value in sums.items():
            self._sums[key] = self._sums[key] + value if key in self._sums else value

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not self._sums:
            return
        sums = {k: trainer.strategy.reduce(v, reduce_op="sum") for k, v in self._sums.items()}
        self._sums = {}
        train_acc = trainer.callback_metrics.get("train/source_acc")
        train_acc = None if train_acc is None else float(train_acc)
        shown = collapse_signs(sums, train_acc, self.learned)
        self.learned = self.learned or learned_now(sums, train_acc)
        found = {sign: why for sign, why in shown.items() if sign in self.previous}
        self.previous = list(shown)
        if not found:
            return
        step, epoch = trainer.global_step, trainer.current_epoch
        message = (
            f"training collapsed by step {step} (epoch {epoch}): {'; '.join(found.values())}; "
            f"{self.remedy}"
        )
        if self.on_collapse == "stop":
            raise CollapseError(
                f"{message}, or set model.on_collapse=warn to train on; the earlier checkpoints "
                "are kept"
            )
        self.events.append({"epoch": epoch, "step": step, "what": list(found), "message": message})
        rank_zero_warn(message, category=DalibWarning)

    def record(self) -> list[dict[str, Any]]:
        """The collapse events for ``result.json`` (empty: checked, none found)."""
        return list(self.events)

    def state_dict(self) -> dict[str, Any]:
        return {"events": self.events, "learned": self.learned, "previous": self.previous}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.events = list(state_dict["events"])
        self.learned = bool(state_dict["learned"])
        self.previous = list(state_dict.get("previous", []))


def check_on_collapse(on_collapse: str) -> OnCollapse:
    """``on_collapse`` if it is one of ``ON_COLLAPSE``, else a one-line error."""
    if on_collapse not in ON_COLLAPSE:
        raise DalibError(
            f"unknown on_collapse {on_collapse!r}; choose one of: {', '.join(ON_COLLAPSE)}"
        )
    return on_collapse


def learned(accuracy: float | None, chance: float) -> bool:
    """Whether an accuracy is at least halfway from chance (the majority share) to 1."""
    return accuracy is not None and accuracy >= chance + 0.5 * (1.0 - chance)


def source_accuracy(sums: dict[str, torch.Tensor]) -> tuple[float, float]:
    """``(accuracy, chance)`` on the source validation set; chance is the majority share."""
    labels = sums["source_labels"]
    return float(sums["source_correct"] / labels.sum()), float(labels.max() / labels.sum())


def learned_now(sums: dict[str, torch.Tensor], train_acc: float | None) -> bool:
    """Whether the model has learned the source: its source validation accuracy, or without
    held-out source data (``data.val_fraction: 0``) its training accuracy against 1/classes."""
    if "source_labels" in sums:
        return learned(*source_accuracy(sums))
    return learned(train_acc, 1.0 / len(sums["target_predicted"]))


def collapse_signs(
    sums: dict[str, torch.Tensor], train_acc: float | None, learned_before: bool = False
) -> dict[str, str]:
    """``{sign: description}`` of each collapse sign the summed validation outputs show.

    ``sums``: ``feature_count``, ``feature_sum``, ``feature_square_sum`` over the checked
    samples; ``source_labels`` (per-class counts) and ``source_correct`` of the source
    validation set; ``target_predicted``, per-class prediction counts on the unlabelled target.
    ``learned_before``: whether an earlier validation's source accuracy was ``learned``; one
    class for all target samples counts only once the model has learned the source (now or
    before), not in a model that has not learned anything yet.
    """
    found: dict[str, str] = {}
    n = float(sums["feature_count"])
    mean_square = float(sums["feature_square_sum"].sum()) / n
    variance = float((sums["feature_square_sum"] / n - (sums["feature_sum"] / n) ** 2).sum())
    share = max(variance, 0.0) / mean_square if mean_square > 0 else 0.0
    if share < FEATURE_VARIANCE:
        found["features"] = (
            f"the features' variance is {share:.2g} of their mean square (below "
            f"{FEATURE_VARIANCE:g}: every input maps to about the same point)"
        )
    if "source_labels" in sums:  # absent without held-out source data
        accuracy, chance = source_accuracy(sums)
        if accuracy <= chance + CHANCE_MARGIN and learned(train_acc, chance):
            found["source accuracy"] = (
                f"source validation accuracy {accuracy:.3f} is at chance ({chance:.3f}, the "
                f"majority class) while training accuracy is {train_acc:.3f}"
            )
    predicted = sums["target_predicted"]
    enough = predicted.sum() >= MIN_TARGET_SAMPLES
    has_learned = learned_before or learned_now(sums, train_acc)
    if enough and has_learned and int((predicted > 0).sum()) == 1:
        found["target predictions"] = (
            f"all {int(predicted.sum())} unlabelled target samples are predicted as class "
            f"{int(predicted.argmax())}"
        )
    return found
