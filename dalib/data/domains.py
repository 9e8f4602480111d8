"""A source/target pair of datasets, what every dataset factory returns, and its registry."""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset

from dalib.registry import Registry


@dataclass(frozen=True)
class DomainPair:
    """Labelled source data, target data for training, and the target test split.

    ``target_train`` may carry its labels: the data module hides all but the few a
    semi-supervised split keeps. ``target_test`` is used only for evaluation. ``source_eval``,
    when given, holds the same samples as ``source`` with the evaluation transform (no
    augmentation), for the held-out source validation split; ``target_eval`` likewise holds the
    samples of ``target_train`` with the evaluation transform, for label-free model selection.
    ``in_memory`` says whether the
    samples are already tensors in memory (no loader workers needed) or decoded from files.
    ``source_origin`` names the file or folder the source was read from, for messages about it.
    """

    benchmark: str
    task: str
    source: Dataset
    target_train: Dataset
    target_test: Dataset
    num_classes: int
    source_eval: Dataset | None = None
    target_eval: Dataset | None = None
    in_memory: bool = True
    source_origin: str | None = None


DATASETS: Registry[DomainPair] = Registry("dataset", "dalib.datasets")
