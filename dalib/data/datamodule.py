"""The paired-domain data module: every training step sees one source and one target batch."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import (
    DataLoader,
    Dataset,
    RandomSampler,
    Subset,
    WeightedRandomSampler,
    random_split,
)

from dalib.data.batched import read_items
from dalib.data.checks import check_batch_size, check_source_labels
from dalib.data.domains import DATASETS, DomainPair
from dalib.data.views import DrawSeeds, TwoViews, ViewOptions, image_views
from dalib.distributed import ShardedRandomSampler, evaluation_sampler, global_seed
from dalib.errors import DalibError
from dalib.registry import split_spec
from dalib.resume import ResumableSampler
from dalib.target_losses import UNLABELLED


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """All labels of a dataset of ``(x, y)`` pairs, read from ``targets`` when it has them."""
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[torch.as_tensor(dataset.indices)]
    targets = getattr(dataset, "targets", None)
    if targets is None and hasattr(dataset, "tensors"):
        targets = dataset.tensors[1]
    if targets is None:
        targets = [int(y) for _, y in dataset]
    return torch.as_tensor(targets)


class KeepLabels(Dataset):
    """A view of ``dataset`` whose labels are ``UNLABELLED`` except at the ``keep`` indices."""

    def __init__(self, dataset: Dataset, keep: torch.Tensor) -> None:
        self.dataset = dataset
        self.keep = set(keep.tolist())

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        x, y = self.dataset[index]
        return x, self.label(y, index)

    def __getitems__(self, indices: list[int]) -> list[tuple[Any, int]]:
        samples = read_items(self.dataset, indices)
        return [(x, self.label(y, i)) for (x, y), i in zip(samples, indices, strict=True)]

    def label(self, y: Any, index: int) -> int:
        """Sample ``index``'s label if it is kept, else ``UNLABELLED``."""
        return int(y) if index in self.keep else UNLABELLED


class WithIndex(Dataset):
    """``(x, y, index)``: lets a callback's per-sample weights find the source samples."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        x, y = self.dataset[index][:2]
        return x, y, index

    def __getitems__(self, indices: list[int]) -> list[tuple[Any, int, int]]:
        samples = read_items(self.dataset, indices)
        return [(*sample[:2], index) for sample, index in zip(samples, indices, strict=True)]


def labelled_subset(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Indices of ``per_class`` random samples of every class (all of a smaller class).

    Drawn from ``seed`` alone, so the semi-supervised split (``target_labels_per_class``) and
    the ``few_shot`` dataset with the same seed label exactly the same target samples.
    """
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in labels.unique():
        members = (labels == c).nonzero().squeeze(1)
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(chosen)


class DomainDataModule(pl.LightningDataModule):
    """Source and target data from a registered dataset, as paired training batches.

    - Training: ``iterations_per_epoch`` steps of one source and one target batch (the anchors
      define an "epoch" as a fixed number of iterations; by default, enough steps to see the
      larger training domain once). Both domains are drawn without replacement and cycle.
    - Validation and test: loader 0 is a held-out split of the labelled source data,
      ``val_fraction`` of it (what label-free model selection may use; ``val_fraction: 0`` trains
      on all the source, as the Transfer-Learning-Library does, and leaves loader 0 empty, so the
      scores that need held-out source data are recorded as unavailable), or the dataset's
      source test set when it has one (a ``source_test`` file); loader 1 is the target test
      split (evaluation only). ``record()`` says where each comes from, for ``result.json``.
      Validation has a loader 2: up to ``selection_samples`` target training samples, labels
      hidden, for the label-free selection scores (entropy, SND, and the density ratios of IWCV
      and DEV).
    - Target training labels are hidden, except ``target_labels_per_class`` per class for
      semi-supervised adaptation.
    - ``target_views``: target training batches ``(x_weak, y, x_strong)``, two independent
      augmentations of each image, FixMatch's weak and strong (``dalib.data.views``).
    - ``class_balanced``: source batches drawn with probability inversely proportional to
      class frequency (with replacement), for imbalanced source domains.
    - ``labelled_target_fraction``: with ``target_labels_per_class``, target batches drawn
      (with replacement) so that this fraction of each is labelled on average; 0 draws
      uniformly, so that few labels rarely reach a batch (100 of 7,291: 0.4 per batch of 32).
    - ``num_workers``: loader processes; by default none for data held in memory (toy, digits,
      feature files: a worker would only add inter-process copies) and up to 8 for images
      decoded from disk. ``pin_memory`` defaults to whether CUDA is available.
    - Several processes (DDP): each draws its own ``batch_size`` of each domain per step, disjoint
      from the others' (``ShardedRandomSampler``); the default epoch divides by the number of
      processes; validation and test split their sets without padding, each sample evaluated once.
    - Checked before any training (``dalib.data.checks``): a source of fewer than 2 classes
      stops; classes the source never shows, and a batch larger than a training split, warn.
    """

    def __init__(
        self,
        dataset: str | Mapping[str, Any] = "moons",
        batch_size: int = 32,
        eval_batch_size: int = 512,
        iterations_per_epoch: int | None = None,
        val_fraction: float = 0.1,
        target_labels_per_class: int = 0,
        split_seed: int = 0,
        class_balanced: bool = False,
        labelled_target_fraction: float = 0.0,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        selection_samples: int = 2000,
        target_views: Mapping[str, Any] | None = None,
    ) -> None:
        """The data of a run.

        Args:
            dataset: a registered dataset by name, or ``{name: ..., <its options>}``: ``moons``,
                ``blobs``, ``digits`` (source, target), ``features`` (source, target,
                source_test, target_test, num_classes, preprocess, n_features, ...),
                ``office_caltech10``, ``office31``, ``officehome``, ``visda2017``,
                ``domainnet`` (source, target, file_lists, ...); ``dalib list datasets NAME``
                shows one's options, as does the documentation's Data page.
            batch_size: samples of each domain per training step (per process).
            eval_batch_size: samples per validation and test batch.
            iterations_per_epoch: training steps per epoch (default: one pass over the
                larger training domain).
            val_fraction: the share of the source held out for validation, unless the
                dataset has a source test set.
            target_labels_per_class: target training labels kept per class
                (semi-supervised adaptation); 0 hides them all.
            split_seed: the seed of the source hold-out and of the kept target labels.
            class_balanced: draw source batches inversely to class frequency.
            labelled_target_fraction: the share of each target batch drawn from the kept
                labelled samples (with ``target_labels_per_class``).
            num_workers: loader processes (default: none for in-memory data, up to 8 for
                images).
            pin_memory: pin batches in memory (default: whether CUDA is available).
            selection_samples: target training samples (labels hidden) for the label-free
                selection scores.
            target_views: each target training sample as a weak and a strong augmentation of
                its image, for target_loss fixmatch: {} for FixMatch's, or {shift, ops,
                magnitude, cutout} (dalib.data.views); images only (digits, image folders).
        """
        super().__init__()
        if batch_size < 1 or eval_batch_size < 1:
            raise DalibError(f"batch sizes must be >= 1, got {batch_size} and {eval_batch_size}")
        if iterations_per_epoch is not None and iterations_per_epoch < 1:
            raise DalibError(f"iterations_per_epoch must be >= 1, got {iterations_per_epoch}")
        if not 0.0 <= val_fraction < 1.0:
            raise DalibError(
                f"val_fraction must be in [0, 1) (0: train on all the source), got {val_fraction}"
            )
        if target_labels_per_class < 0:
            raise DalibError(f"target_labels_per_class must be >= 0, got {target_labels_per_class}")
        if selection_samples < 2:
            raise DalibError(f"selection_samples must be >= 2, got {selection_samples}")
        self.dataset_name, self.dataset_options = split_spec(dataset, "dataset")
        DATASETS.get(self.dataset_name)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.iterations_per_epoch = iterations_per_epoch
        self.val_fraction = val_fraction
        self.target_labels_per_class = target_labels_per_class
        self.split_seed = split_seed
        self.class_balanced = class_balanced
        if not 0.0 <= labelled_target_fraction < 1.0:
            raise DalibError(
                f"labelled_target_fraction must be in [0, 1), got {labelled_target_fraction}"
            )
        if labelled_target_fraction > 0 and target_labels_per_class == 0:
            raise DalibError("labelled_target_fraction needs target_labels_per_class > 0")
        self.labelled_target_fraction = labelled_target_fraction
        self.selection_samples = selection_samples
        self.target_views = None if target_views is None else ViewOptions.from_spec(target_views)
        self._num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self._pair: DomainPair | None = None
        self._splits: dict[str, Dataset] | None = None
        self.source_index = False  # set by ImportanceWeighting: source batches carry indices

    @property
    def pair(self) -> DomainPair:
        """The datasets, built (generated, loaded) on first use."""
        if self._pair is None:
            self._pair = DATASETS.build({"name": self.dataset_name, **self.dataset_options})
        return self._pair

    @property
    def num_classes(self) -> int:
        return self.pair.num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample, checked to be the same in both domains."""
        return self.splits["source_train"][0][0].shape

    @property
    def benchmark(self) -> str:
        return self.pair.benchmark

    @property
    def task(self) -> str:
        return self.pair.task

    @property
    def splits(self) -> dict[str, Dataset]:
        """Source train/validation, target train (labels hidden) and target test, checked."""
        if self._splits is None:
            self._splits = self._make_splits()
        return self._splits

    def _make_splits(self) -> dict[str, Dataset]:
        pair = self.pair
        parts = {
            "source": pair.source,
            "target training": pair.target_train,
            "target test": pair.target_test,
        }
        if pair.source_test is not None:
            parts["source test"] = pair.source_test
        for name, part in parts.items():
            if len(part) == 0:
                raise DalibError(
                    f"the {name} set of {self.dataset_name!r} is empty; check the dataset "
                    "path and domain names in the config"
                )
        check_source_labels(
            pair.source_origin or f"{pair.benchmark} {pair.task}",
            dataset_labels(pair.source),
            pair.num_classes,
        )
        shapes = {name: tuple(part[0][0].shape) for name, part in parts.items()}
        if len(set(shapes.values())) > 1:
            found = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
            raise DalibError(
                f"source and target inputs must have the same shape, got {found}; "
                "resize or project one domain"
            )
        generator = torch.Generator().manual_seed(self.split_seed)
        if pair.source_test is not None:  # train on all the source, validate on its test set
            source_train, source_val = pair.source, pair.source_test
        else:
            source_train, source_val = self._hold_out(pair, generator)
        keep = torch.empty(0, dtype=torch.long)
        if self.target_labels_per_class > 0:
            keep = labelled_subset(
                dataset_labels(pair.target_train), self.target_labels_per_class, self.split_seed
            )
        target_eval = pair.target_eval if pair.target_eval is not None else pair.target_train
        n_select = min(self.selection_samples, len(target_eval))
        select = torch.randperm(len(target_eval), generator=generator)[:n_select].sort().values
        splits = {
            "source_train": source_train,
            "source_val": source_val,
            "target_train": KeepLabels(pair.target_train, keep),
            "target_test": pair.target_test,
            "target_unlabelled": KeepLabels(Subset(target_eval, select.tolist()), select[:0]),
        }
        if self.target_views is not None:
            views = image_views(pair.target_train, self.target_views)
            if views is None:
                raise DalibError(
                    f"data.target_views: the {self.dataset_name!r} dataset has no target images "
                    "to augment (feature vectors or points, where FixMatch's shifts, RandAugment "
                    "and Cutout have no meaning); remove target_views"
                )
            images = KeepLabels(views.images, keep)
            splits["target_views"] = TwoViews(images, views.weak, views.strong)
        return splits

    def require_target_views(self, target_loss: str) -> None:
        """Stop before training when ``target_loss`` needs a weak and a strong view of each
        target sample and this data module makes none, with what to change."""
        if self.target_views is not None:
            return
        if image_views(self.pair.target_train, ViewOptions()) is None:
            raise DalibError(
                f"target_loss {target_loss} trains on a weak and a strong augmentation of each "
                f"target image; the {self.dataset_name!r} dataset has none to augment (feature "
                "vectors or points, where FixMatch's shifts, RandAugment and Cutout have no "
                "meaning): use pseudo_label, its one-view form"
            )
        raise DalibError(
            f"target_loss {target_loss} needs a weak and a strong view of each target image: "
            "set data.target_views: {} (FixMatch's augmentations; options in dalib.data.views)"
        )

    def _hold_out(self, pair: DomainPair, generator: torch.Generator) -> tuple[Dataset, Dataset]:
        """``val_fraction`` of the source held out for validation, the rest for training."""
        n_val = 0 if self.val_fraction == 0 else max(1, round(self.val_fraction * len(pair.source)))
        if n_val >= len(pair.source):
            raise DalibError(
                f"the source set has {len(pair.source)} samples, too few to hold out "
                f"{n_val} for validation; lower val_fraction"
            )
        source_train, source_val = random_split(
            pair.source, [len(pair.source) - n_val, n_val], generator=generator
        )
        if pair.source_eval is not None:  # validate without the training augmentation
            source_val = Subset(pair.source_eval, source_val.indices)
        return source_train, source_val

    def record(self) -> dict[str, Any]:
        """Where the run record's numbers come from: ``source_eval_split`` (``source_val_acc``,
        label-free selection), ``target_eval_split`` (every ``target_acc``), and the
        ``label_mapping`` from the files' labels to class indices (``None``: labels used as
        read)."""
        pair = self.pair
        if pair.source_test is not None:
            source = pair.source_test_origin or "the dataset's source test set"
        else:
            source = (
                f"{self.val_fraction:g} of the source ({pair.source_origin or pair.benchmark}) "
                f"held out at random, split_seed {self.split_seed}"
            )
        if pair.target_test_origin is not None:
            target = pair.target_test_origin
        elif pair.target_test is pair.target_train:
            target = "the target training samples (the samples adapted to)"
        else:
            target = f"the {pair.benchmark} dataset's target test split"
        return {
            "source_eval_split": source,
            "target_eval_split": target,
            "label_mapping": None if pair.label_mapping is None else dict(pair.label_mapping),
        }

    def setup(self, stage: str) -> None:
        """Build and check the splits before any loader is asked for; before fitting, warn of
        a batch larger than a training split."""
        splits = self.splits
        if stage != "fit":
            return
        processes = self.replicas()[0]
        for split, name in [
            ("source_train", "source training"),
            ("target_train", "target training"),
        ]:
            check_batch_size(
                name, len(splits[split]), self.batch_size, processes, self.steps_per_epoch()
            )

    def steps_per_epoch(self) -> int:
        if self.iterations_per_epoch is not None:
            return self.iterations_per_epoch
        larger = max(len(self.splits["source_train"]), len(self.splits["target_train"]))
        return max(1, math.ceil(larger / (self.batch_size * self.replicas()[0])))

    def replicas(self) -> tuple[int, int]:
        """``(processes, this process's rank)`` of the attached trainer; ``(1, 0)`` without one."""
        if self.trainer is None:
            return 1, 0
        return self.trainer.world_size, self.trainer.global_rank

    @property
    def num_workers(self) -> int:
        if self._num_workers is not None:
            return self._num_workers
        return 0 if self.pair.in_memory else min(8, os.cpu_count() or 1)

    def _loader(self, dataset: Dataset, batch_size: int, **options) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
            **options,
        )

    def _train_loader(
        self,
        dataset: Dataset,
        stream: int,
        weights: torch.Tensor | None,
        index: bool = False,
        seeds: bool = False,
    ) -> DataLoader:
        """Batches of ``dataset``; drawn with replacement in proportion to ``weights`` if given;
        with ``seeds``, each index with its augmentation seed (``dalib.data.views``)."""
        steps = self.steps_per_epoch()
        replicas, rank = self.replicas()
        if replicas > 1:
            sampler = ShardedRandomSampler(
                dataset, steps, self.batch_size, replicas, rank, global_seed() + stream, weights,
                draw_seeds=seeds,
            )  # fmt: skip
        elif weights is not None:
            sampler = WeightedRandomSampler(weights, steps * self.batch_size, replacement=True)
        else:
            sampler = RandomSampler(dataset, num_samples=steps * self.batch_size)
        if seeds and replicas == 1:
            sampler = DrawSeeds(sampler)
        if replicas == 1:  # the sharded sampler's order is a function of (seed, epoch) already
            sampler = ResumableSampler(sampler)
        if index:
            dataset = WithIndex(dataset)
        return self._loader(dataset, self.batch_size, sampler=sampler, drop_last=True)

    def _eval_loader(self, split: str) -> DataLoader:
        """Batches of ``split`` in order. With workers, their seed comes from a generator of the
        loader's own: the persistent iterator is created at a process's first evaluation, which
        after a resume is not the run's first, so drawing it from torch's global generator would
        shift the training randomness after a resume. (In-process loaders draw once at every
        evaluation, resumed or not, and keep doing so, which leaves in-memory runs unchanged.)"""
        dataset = self.splits[split]
        replicas, rank = self.replicas()
        sampler = None if replicas == 1 else evaluation_sampler(dataset, split, replicas, rank)
        own = {"generator": torch.Generator()} if self.num_workers > 0 else {}
        return self._loader(dataset, self.eval_batch_size, sampler=sampler, **own)

    def source_weights(self) -> torch.Tensor | None:
        """Sampling weights of the source: inverse class frequencies with ``class_balanced``."""
        if not self.class_balanced:
            return None
        labels = dataset_labels(self.splits["source_train"])
        return 1.0 / torch.bincount(labels).double()[labels]

    def target_weights(self) -> torch.Tensor | None:
        """Sampling weights of the target: ``labelled_target_fraction`` on the labelled ones."""
        if self.labelled_target_fraction == 0:
            return None
        labelled = torch.zeros(len(self.splits["target_train"]), dtype=torch.bool)
        labelled[list(self.splits["target_train"].keep)] = True
        fraction = self.labelled_target_fraction
        return torch.where(
            labelled, fraction / labelled.sum(), (1 - fraction) / (~labelled).sum()
        ).double()

    def train_dataloader(self) -> CombinedLoader:
        return CombinedLoader(
            {
                "source": self._train_loader(
                    self.splits["source_train"], 0, self.source_weights(), self.source_index
                ),
                "target": self._target_train_loader(),
            },
            mode="min_size",
        )

    def _target_train_loader(self) -> DataLoader:
        """Target batches ``(x, y)``; with ``target_views``, ``(x_weak, y, x_strong)``."""
        views = "target_views" in self.splits
        dataset = self.splits["target_views" if views else "target_train"]
        return self._train_loader(dataset, 1, self.target_weights(), seeds=views)

    def val_dataloader(self) -> list[DataLoader]:
        return [*self.test_dataloader(), self._eval_loader("target_unlabelled")]

    def test_dataloader(self) -> list[DataLoader]:
        return [self._eval_loader("source_val"), self._eval_loader("target_test")]
