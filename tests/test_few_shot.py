"""The few_shot dataset: the target's few labelled samples as the labelled domain."""

import pytest
import torch

from dalib import DATASETS, DomainDataModule
from dalib.errors import DalibError
from dalib.target_losses import UNLABELLED

MOONS = {"name": "moons", "angle": 35}


def test_few_shot_source_is_the_semi_supervised_split_of_the_same_seed():
    few = DATASETS.build({"name": "few_shot", "dataset": MOONS, "per_class": 4, "seed": 3})
    semi = DomainDataModule(dataset=MOONS, target_labels_per_class=4, split_seed=3)
    target = semi.splits["target_train"]
    labelled = {i for i in range(len(target)) if target[i][1] != UNLABELLED}
    assert set(few.source.indices) == labelled
    for k, index in enumerate(few.source.indices):
        x, y = few.source[k]
        assert torch.equal(x, semi.pair.target_train[index][0])
        assert y == semi.pair.target_train[index][1]
    assert sorted(int(y) for _, y in few.source) == [0] * 4 + [1] * 4
    assert len(few.target_train) == len(semi.pair.target_train)


def test_few_shot_needs_at_least_one_sample_per_class():
    with pytest.raises(DalibError, match="per_class must be >= 1"):
        DATASETS.build({"name": "few_shot", "dataset": MOONS, "per_class": 0})


def test_labelled_target_fraction_fills_target_batches_with_the_few_labels():
    dm = DomainDataModule(
        dataset=MOONS, target_labels_per_class=5, labelled_target_fraction=0.5,
        batch_size=64, iterations_per_epoch=50,
    )  # fmt: skip
    labelled = torch.cat(
        [batch["target"][1] != UNLABELLED for batch, _, _ in dm.train_dataloader()]
    )
    assert (
        abs(float(labelled.float().mean()) - 0.5) < 0.05
    )  # uniform draws: 10 labelled in the whole set
    with pytest.raises(DalibError, match="needs target_labels_per_class > 0"):
        DomainDataModule(dataset=MOONS, labelled_target_fraction=0.5)
