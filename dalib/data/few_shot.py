"""Target-only training: a few labelled target samples per class become the labelled domain."""

from __future__ import annotations

import dataclasses

from torch.utils.data import Subset

from dalib.data.datamodule import dataset_labels, labelled_subset
from dalib.data.domains import DATASETS, DomainPair
from dalib.errors import DalibError
from dalib.registry import Spec


@DATASETS.register("few_shot")
def few_shot(dataset: Spec, per_class: int, seed: int = 0) -> DomainPair:
    """``dataset`` with ``per_class`` labelled target training samples per class as its source.

    The baseline of fine-tuning (or training from scratch) on the few target labels alone: the
    samples are those that ``target_labels_per_class: per_class`` labels with
    ``split_seed: seed``, so it compares with semi-supervised adaptation on the same labels.
    The target (training and test) is unchanged.
    """
    if per_class < 1:
        raise DalibError(f"few_shot per_class must be >= 1, got {per_class}")
    pair = DATASETS.build(dataset)
    target = pair.target_eval if pair.target_eval is not None else pair.target_train
    chosen = labelled_subset(dataset_labels(pair.target_train), per_class, seed).tolist()
    return dataclasses.replace(
        pair,
        task=f"{pair.task.split('->')[-1]}, {per_class} labels per class",
        source=Subset(pair.target_train, chosen),
        source_eval=Subset(target, chosen),
        source_origin=f"the {per_class} labelled target samples per class of {pair.task}",
        source_test=None,  # the original source's test set is no test of this "source"
        source_test_origin=None,
    )
