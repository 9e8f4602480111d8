"""Importance weighting inside deep training: re-estimated density ratios on the features."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from dalib.errors import DalibError
from dalib.weighting.density_ratio import ESTIMATORS


def effective_sample_size(w: np.ndarray) -> float:
    """Kish's effective sample size ``(Σw)² / Σw²`` as a fraction of the sample count."""
    return float(w.sum() ** 2 / (w**2).sum() / len(w))


class ImportanceWeighting(pl.Callback):
    """Every ``every_n_epochs`` epochs, fit ``estimator`` on the features of the source and
    target training sets and hand the source weights to the module (``source_weights``), which
    uses them in ``L_s`` and passes them to the discrepancy as ``w_s``.

    ``estimator``: ``classifier``, ``kmm``, ``kliep`` or ``ulsif``; ``options`` go to its
    constructor (``alpha``, ``clip``, ``sigma``...). Logs ``weights/ess`` (effective sample
    size as a fraction), ``weights/min``, ``weights/median``, ``weights/max``, and a histogram
    where the logger has ``add_histogram`` (TensorBoard).
    """

    def __init__(
        self, estimator: str = "classifier", every_n_epochs: int = 1, options: dict | None = None
    ) -> None:
        if estimator not in ESTIMATORS:
            raise DalibError(
                f"unknown weighting estimator {estimator!r}; choose one of {sorted(ESTIMATORS)}"
            )
        if every_n_epochs < 1:
            raise DalibError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.estimator = ESTIMATORS[estimator](**(options or {}))
        self.every_n_epochs = every_n_epochs

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "source_index"):
            raise DalibError("ImportanceWeighting needs a DomainDataModule (the data: section)")
        datamodule.source_index = True

    @torch.no_grad()
    def features(self, pl_module: pl.LightningModule, dataset: Dataset) -> np.ndarray:
        """The module's features (classifier input) for every sample, in eval mode."""
        was_training = pl_module.training
        pl_module.eval()
        out = [
            pl_module.features(batch[0].to(pl_module.device)).float().cpu()
            for batch in DataLoader(dataset, batch_size=256)
        ]
        pl_module.train(was_training)
        return torch.cat(out).numpy()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch % self.every_n_epochs:
            return
        splits = trainer.datamodule.splits
        w = self.estimator.fit_predict_weights(
            self.features(pl_module, splits["source_train"]),
            self.features(pl_module, splits["target_train"]),
        )
        pl_module.source_weights = torch.as_tensor(w, dtype=torch.float32)
        stats: dict[str, Any] = {
            "weights/ess": effective_sample_size(w),
            "weights/min": float(w.min()),
            "weights/median": float(np.median(w)),
            "weights/max": float(w.max()),
        }
        pl_module.log_dict(stats, on_step=False, on_epoch=True)
        experiment = getattr(trainer.logger, "experiment", None)
        if hasattr(experiment, "add_histogram"):
            experiment.add_histogram("weights/source", w, trainer.current_epoch)
