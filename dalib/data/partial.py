"""Partial domain adaptation: any registered pair with the target restricted to some classes."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch.utils.data import Subset

from dalib.data.datamodule import dataset_labels
from dalib.data.domains import DATASETS, DomainPair
from dalib.errors import DalibError
from dalib.registry import Spec


@DATASETS.register("partial")
def partial(dataset: Spec, target_classes: Sequence[int]) -> DomainPair:
    """``dataset`` with only ``target_classes`` in its target (train and test); the source
    keeps every class, so the other classes are outlier source classes (as in PADA)."""
    pair = DATASETS.build(dataset)
    classes = sorted(set(int(c) for c in target_classes))
    if not classes or classes[0] < 0 or classes[-1] >= pair.num_classes:
        raise DalibError(
            f"target_classes must be a non-empty list of classes in [0, {pair.num_classes})"
        )

    def keep(part):
        mask = torch.isin(dataset_labels(part), torch.tensor(classes))
        return Subset(part, torch.nonzero(mask).flatten().tolist())

    return dataclasses.replace(
        pair,
        task=f"{pair.task}, target classes {classes}",
        target_train=keep(pair.target_train),
        target_test=keep(pair.target_test),
    )
