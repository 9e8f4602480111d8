"""Feature extraction ("feature sharing"): a frozen backbone runs once over a dataset, its
features are cached on disk, and any head, domain-adaptation heads included, trains on them.

``data.dataset: {name: cached_features, dataset: <any dataset>, backbone: <backbone spec>}``
with ``model.backbone: identity``. The cache file is keyed by the backbone (its spec and a hash
of its weights), and the data (the dataset spec, data folder, split sizes and a hash of the
first samples), so a later run with the same three reads the file and never calls the backbone.
The features are those of the evaluation transform: no augmentation on cached features.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dalib.data.batched import BatchedTensorDataset
from dalib.data.datamodule import dataset_labels
from dalib.data.domains import DATASETS, DomainPair
from dalib.data.roots import data_root, default_cache
from dalib.errors import DalibError
from dalib.models import BACKBONES
from dalib.network import load_parts
from dalib.registry import Spec, split_spec


def tensor_digest(h: Any, tensors) -> None:
    """Feed tensors' dtypes, shapes and bytes to a hash (a ``hashlib`` object)."""
    for t in tensors:
        t = torch.as_tensor(t).detach().cpu()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        flat = t.reshape(-1)  # 1-d: a 0-d tensor (BatchNorm's counter) cannot be viewed as bytes
        h.update(flat.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def cache_key(dataset: Spec, backbone: Spec, extractor: nn.Module, parts: dict[str, Dataset]):
    """A hash of the backbone (spec and weights) and the data (spec, folder, sizes, samples)."""
    h = hashlib.sha256()
    name, options = split_spec(dataset, "dataset")
    description = {
        "dataset": [name, options],
        "data_root": str(data_root(options.get("root")).resolve()),
        "backbone": list(split_spec(backbone, "backbone")),
        "sizes": {part: len(data) for part, data in parts.items()},
    }
    h.update(json.dumps(description, sort_keys=True, default=str).encode())
    tensor_digest(h, extractor.state_dict().values())
    for data in parts.values():  # a changed transform or file shows in the first samples
        tensor_digest(h, [data[i][0] for i in range(min(4, len(data)))])
    return h.hexdigest()[:24]


@torch.no_grad()
def extract(extractor: nn.Module, data: Dataset, batch_size: int, workers: int, device):
    """Features and labels of every sample of ``data``, in order."""
    loader = DataLoader(data, batch_size=batch_size, num_workers=workers)
    features = [extractor(batch[0].to(device)).float().cpu() for batch in loader]
    return torch.cat(features), dataset_labels(data).long()


@DATASETS.register("cached_features")
def cached_features(
    dataset: Spec,
    backbone: Spec,
    checkpoint: str | None = None,
    cache_dir: str | None = None,
    batch_size: int = 256,
) -> DomainPair:
    """``dataset``'s samples (source, target, target test, any source test) as features of a frozen
    ``backbone``; what the run record says of the dataset (its splits, label mapping) is kept.

    ``backbone``: a backbone spec, e.g. ``{name: mobilenet_v2, checkpoint: <state_dict>}``;
    ``checkpoint``: a dalib ``.ckpt`` whose backbone weights replace the spec's (a network
    trained by ``dalib fit``); ``cache_dir``: where the feature files go (default
    ``~/.cache/dalib/features``).
    """
    if batch_size < 1:
        raise DalibError(f"cached_features batch_size must be >= 1, got {batch_size}")
    pair = DATASETS.build(dataset)
    parts = {
        "source": pair.source_eval if pair.source_eval is not None else pair.source,
        "target_train": pair.target_eval if pair.target_eval is not None else pair.target_train,
        "target_test": pair.target_test,
    }
    if pair.source_test is not None:
        parts["source_test"] = pair.source_test
    holder = nn.Module()
    holder.backbone = BACKBONES.build(backbone, input_shape=tuple(parts["source"][0][0].shape))
    if checkpoint is not None:
        load_parts(holder, checkpoint, ["backbone"], "cached_features checkpoint")
    extractor = holder.backbone.eval()
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache() / "features"
    path = folder / f"{cache_key(dataset, backbone, extractor, parts)}.pt"
    if path.is_file():
        cached = torch.load(path, weights_only=True)
    else:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        extractor.to(device)
        workers = 0 if pair.in_memory else min(8, os.cpu_count() or 1)
        cached = {
            part: extract(extractor, data, batch_size, workers, device)
            for part, data in parts.items()
        }
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(cached, partial)
        os.replace(partial, path)  # atomic: a concurrent run reads a whole file or none
    name = split_spec(backbone, "backbone")[0]
    return DomainPair(
        benchmark=pair.benchmark,
        task=f"{pair.task}, cached {name} features",
        source=BatchedTensorDataset(*cached["source"]),
        target_train=BatchedTensorDataset(*cached["target_train"]),
        target_test=BatchedTensorDataset(*cached["target_test"]),
        num_classes=pair.num_classes,
        source_origin=pair.source_origin,
        source_test=BatchedTensorDataset(*cached["source_test"])
        if "source_test" in cached
        else None,
        source_test_origin=pair.source_test_origin,
        target_test_origin=pair.target_test_origin,
        label_mapping=pair.label_mapping,
    )
