"""Importance weighting inside deep training: re-estimated density ratios on the features."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from dalib.data.datamodule import dataset_labels
from dalib.errors import DalibError
from dalib.registry import Spec, split_spec
from dalib.weighting.density_ratio import ESTIMATORS
from dalib.weighting.selection import class_weights_from_target


def effective_sample_size(w: np.ndarray) -> float:
    """Kish's effective sample size ``(Σw)² / Σw²`` as a fraction of the sample count."""
    return float(w.sum() ** 2 / (w**2).sum() / len(w))


class ImportanceWeighting(pl.Callback):
    """Every ``every_n_epochs`` epochs, fit ``estimator`` on the features of the source and
    target training sets and hand the source weights to the module's objective
    (``source_weights``), which uses them in ``L_s`` and passes them to the discrepancy as ``w_s``.

    ``estimator``: a name of the ``ESTIMATORS`` registry (``classifier``, ``kmm``, ``kliep``,
    ``ulsif``, a plugin's, a ``"package.module:Name"`` spec) or ``{name: ..., **options}`` with
    its constructor's options (``alpha``, ``clip``, ``sigma``...), or ``None`` (uniform). With
    ``class_weights=True`` (partial domain adaptation, PADA) each source weight is also
    multiplied by its class's weight from the module's mean target predictions.
    Logs ``weights/ess`` (effective sample size as a fraction), ``weights/min``,
    ``weights/median``, ``weights/max``, and a histogram where the logger has
    ``add_histogram`` (TensorBoard). ``options``, where they were before, is refused with a
    message that shows the new form.
    """

    def __init__(
        self,
        estimator: Spec | None = "classifier",
        every_n_epochs: int = 1,
        options: dict | None = None,
        class_weights: bool = False,
    ) -> None:
        if options is not None:  # the shape before estimators had a registry
            name = split_spec(estimator or "classifier", "density-ratio estimator")[0]
            raise DalibError(
                "ImportanceWeighting's options now go inside the estimator: write "
                f"estimator: {{name: {name}, {', '.join(f'{k}: {v}' for k, v in options.items())}}}"
            )
        if every_n_epochs < 1:
            raise DalibError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        if estimator is None and not class_weights:
            raise DalibError("ImportanceWeighting needs an estimator or class_weights: true")
        self.estimator = None if estimator is None else ESTIMATORS.build(estimator)
        self.class_weights = class_weights
        self.every_n_epochs = every_n_epochs

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "source_index"):
            raise DalibError("ImportanceWeighting needs a DomainDataModule (the data: section)")
        datamodule.source_index = True

    @torch.no_grad()
    def features(self, pl_module: pl.LightningModule, dataset: Dataset, domain: str) -> np.ndarray:
        """The module's features (classifier input) for every sample of ``domain``, in eval mode."""
        was_training = pl_module.training
        pl_module.eval()
        out = [
            pl_module.network.features(batch[0].to(pl_module.device), domain).float().cpu()
            for batch in DataLoader(dataset, batch_size=256)
        ]
        pl_module.train(was_training)
        return torch.cat(out).numpy()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch % self.every_n_epochs:
            return
        w = self.compute_weights(trainer, pl_module)
        pl_module.objective.source_weights = torch.as_tensor(w, dtype=torch.float32)
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

    def compute_weights(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> np.ndarray:
        """Weights of the source training samples from the current features."""
        splits = trainer.datamodule.splits
        f_s = self.features(pl_module, splits["source_train"], "source")
        f_t = self.features(pl_module, splits["target_train"], "target")
        w = (
            np.ones(len(f_s))
            if self.estimator is None
            else self.estimator.fit_predict_weights(f_s, f_t)
        )
        if self.class_weights:
            with torch.no_grad():
                logits_t = pl_module.network.head(torch.from_numpy(f_t).to(pl_module.device))
            per_class = class_weights_from_target(logits_t.softmax(dim=1).cpu().numpy())
            w = w * per_class[dataset_labels(splits["source_train"]).numpy()]
            w = w / w.mean()
        return w
