"""Batched reads (``__getitems__``) give exactly the samples and batches of per-sample reads."""

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Subset

from dalib.data import DATASETS
from dalib.data.batched import BatchedTensorDataset, read_items
from dalib.data.datamodule import KeepLabels, WithIndex
from dalib.data.digits import DigitImages
from dalib.target_losses import UNLABELLED

INDICES = [3, 7, 7, 0, 41]


class PerSample(Dataset):
    """The same dataset read one sample at a time (no ``__getitems__``)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset[index]


def digits() -> DigitImages:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50, 1, 28, 28), dtype=torch.uint8, generator=g)
    return DigitImages(images, torch.randint(0, 10, (50,), generator=g))


def assert_same_samples(batched: list, single: list) -> None:
    assert len(batched) == len(single)
    for mine, theirs in zip(batched, single, strict=True):
        assert len(mine) == len(theirs)
        for a, b in zip(mine, theirs, strict=True):
            assert type(a) is type(b)
            assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


def test_each_dataset_reads_a_batch_as_its_samples():
    images = digits()
    tensors = BatchedTensorDataset(torch.randn(50, 3), torch.arange(50) % 4)
    keep = torch.tensor([3, 41])
    for dataset in [
        images,
        tensors,
        KeepLabels(images, keep),
        WithIndex(Subset(tensors, list(range(49, -1, -1)))),
        WithIndex(KeepLabels(PerSample(images), keep)),  # a wrapped dataset without batches
    ]:
        assert callable(getattr(dataset, "__getitems__", None))
        assert_same_samples(read_items(dataset, INDICES), [dataset[i] for i in INDICES])
    labels = [y for _, y in KeepLabels(images, keep).__getitems__(INDICES)]
    assert labels == [int(images.targets[3]), UNLABELLED, UNLABELLED, UNLABELLED,
                      int(images.targets[41])]  # fmt: skip


def test_loader_batches_equal_those_read_sample_by_sample():
    for dataset in [digits(), DATASETS.build({"name": "moons"}).source]:
        loaders = [
            DataLoader(
                data,
                batch_size=8,
                drop_last=True,
                sampler=RandomSampler(data, generator=torch.Generator().manual_seed(1)),
            )
            for data in (dataset, PerSample(dataset))
        ]
        pairs = list(zip(*loaders, strict=True))
        assert len(pairs) == len(dataset) // 8
        for batched, single in pairs:
            assert_same_samples([batched], [single])
