"""The callback that scores every validation without target labels and remembers each choice."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_warn

from dalib.distributed import gather_evaluation
from dalib.errors import DalibError
from dalib.selection.scores import EvalOutputs, Score, proxy_a_distance, tracked_scores

# The validation loaders of DomainDataModule, in order.
SOURCE_VAL, TARGET_TEST, TARGET_UNLABELLED = range(3)
EMBEDDING_SAMPLES = 500


def f32(value: float) -> float:
    return float(torch.tensor(value, dtype=torch.float32))


class SelectionTracker(Callback):
    """Logs every label-free score as ``select/<name>`` and keeps a history of validations.

    At each validation (not the sanity check) it gathers the model's logits and features on the
    held-out source split, the target test split (whose labels give only the oracle) and the
    unlabelled target split, computes every score in ``scores`` (by default dalib's own, see
    ``tracked_scores``), and appends them with the target
    accuracy to ``history``. ``choices()`` then says, for every score, which validation it prefers
    and that model's target accuracy; ``oracle`` is the best target accuracy, ``last`` the final.
    The history is part of the checkpoint, so a resumed run chooses as an uninterrupted one.
    ``a_distance``: also compute the proxy A-distance of the features at each validation.
    """

    def __init__(self, scores: Mapping[str, Score] | None = None, a_distance: bool = True) -> None:
        self.scores = dict(tracked_scores() if scores is None else scores)
        self.measure_a_distance = a_distance
        self.history: list[dict[str, float]] = []
        self._outputs: dict[int, list[dict[str, torch.Tensor]]] = {}
        self.a_distance: float | None = None
        self.embedding: dict[str, torch.Tensor] = {}
        self.unavailable: dict[str, str] = {}  # score name -> why it could not be computed

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._outputs = {SOURCE_VAL: [], TARGET_TEST: [], TARGET_UNLABELLED: []}

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.sanity_checking and outputs is not None:
            self._outputs[dataloader_idx].append({k: v.cpu() for k, v in outputs.items()})

    def gathered(self, loader: int, key: str) -> torch.Tensor:
        """The outputs of every batch, of every process under DDP; empty where the loader had
        none (the source validation split with ``val_fraction: 0``, empty in every process)."""
        if not self._outputs[loader]:
            return torch.empty(0)
        return gather_evaluation(torch.cat([out[key] for out in self._outputs[loader]]))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not self._outputs[TARGET_UNLABELLED]:
            return
        out = EvalOutputs(
            source_logits=self.gathered(SOURCE_VAL, "logits"),
            source_labels=self.gathered(SOURCE_VAL, "labels"),
            source_features=self.gathered(SOURCE_VAL, "features"),
            target_logits=self.gathered(TARGET_UNLABELLED, "logits"),
            target_features=self.gathered(TARGET_UNLABELLED, "features"),
        )
        values = {name: self.score(name, out) for name in self.scores}
        test_logits = self.gathered(TARGET_TEST, "logits")
        values["target_acc"] = (
            (test_logits.argmax(1) == self.gathered(TARGET_TEST, "labels")).float().mean().item()
        )
        pl_module.log_dict({f"select/{k}": v for k, v in values.items() if k in self.scores})
        self.history.append({"epoch": trainer.current_epoch, "step": trainer.global_step, **values})
        if self.measure_a_distance:
            try:
                self.a_distance = proxy_a_distance(out.source_features, out.target_features)
            except DalibError:
                self.a_distance = None
        self.embedding = {  # a sample of the latest features, for t-SNE plots of the run
            "source": out.source_features[:EMBEDDING_SAMPLES],
            "source_labels": out.source_labels[:EMBEDDING_SAMPLES],
            "target": out.target_features[:EMBEDDING_SAMPLES],
        }
        self._outputs = {}

    def score(self, name: str, out: EvalOutputs) -> float:
        """One score, rounded as logged (float32, so this history and the checkpoint callback
        agree on ties); NaN, with the reason kept in ``unavailable``, where it cannot be computed.
        """
        try:
            return f32(self.scores[name].compute(out))
        except DalibError as error:
            if name not in self.unavailable:
                rank_zero_warn(f"selection score {name!r} cannot be computed: {error}")
            self.unavailable[name] = str(error)
            return math.nan

    def choices(self) -> dict[str, dict[str, float]]:
        """For every computable score, ``last`` and ``oracle``: the chosen validation."""
        if not self.history:
            return {}
        chosen: dict[str, dict[str, float]] = {}
        for name, score in self.scores.items():
            entries = [entry for entry in self.history if not math.isnan(entry[name])]
            pick = max if score.higher_is_better else min
            if entries:
                chosen[name] = pick(entries, key=lambda entry, name=name: entry[name])
        chosen["last"] = self.history[-1]
        chosen["oracle"] = max(self.history, key=lambda entry: entry["target_acc"])
        return chosen

    def history_record(self) -> list[dict[str, float | None]]:
        """Every validation's scores and target accuracy, for ``result.json``; NaN as ``None``
        (JSON has no NaN). ``dalib report --selection`` reads it to compare scores across runs."""
        return [
            {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in entry.items()}
            for entry in self.history
        ]

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "a_distance": self.a_distance,
            "unavailable": self.unavailable,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict["history"])
        self.a_distance = state_dict.get("a_distance")
        self.unavailable = dict(state_dict.get("unavailable", {}))
