"""A source/target pair of datasets, what every dataset factory returns, and its registry."""

from __future__ import annotations

from collections.abc import Mapping
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

    ``source_test``, when given, is a separate labelled source test set: the data module
    validates on it instead of holding out part of ``source``. ``source_test_origin`` and
    ``target_test_origin`` say where the two evaluation sets come from, and ``label_mapping``
    how the files' labels became class indices (label -> index), for the run record.
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
    source_test: Dataset | None = None
    source_test_origin: str | None = None
    target_test_origin: str | None = None
    label_mapping: Mapping[str, int] | None = None


DATASETS: Registry[DomainPair] = Registry("dataset", "dalib.datasets")
