"""Datasets (registered by name) and the paired-domain data module."""

from dalib.data import digits, features, few_shot, images, partial, toy  # noqa: F401 - registers the datasets
from dalib.data.datamodule import DomainDataModule
from dalib.data.domains import DATASETS, DomainPair

__all__ = ["DATASETS", "DomainDataModule", "DomainPair"]
