"""Domains of precomputed features: ``.mat``, ``.npz``, ``.csv`` and LIBSVM/svmlight files.

Preprocessing follows the published shallow-DA protocols, applied per domain in the given order:
``l1`` (divide each row by its sum, for bag-of-words counts), ``log1p`` (for counts), ``zscore``
(standardise each feature within the domain; constant features become 0).
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.io
import torch
from sklearn.datasets import load_svmlight_file

from dalib.data.batched import BatchedTensorDataset
from dalib.data.checks import check_finite
from dalib.data.domains import DATASETS, DomainPair
from dalib.data.roots import data_root, require
from dalib.errors import DalibError

Step = Literal["l1", "log1p", "zscore"]
NEEDS_ROWS = "it needs one row per sample: its features and a label"
FORMATS = (".mat", ".npz", ".csv", ".svm", ".svmlight", ".libsvm", ".txt")


def load_feature_file(
    path: Path,
    features_key: str = "fts",
    labels_key: str = "labels",
    n_features: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Features (n, d) as float64 and integer labels (n,) from one file, by its suffix.

    ``.mat``/``.npz``: arrays under ``features_key`` and ``labels_key``; ``.csv``: numbers only,
    the label in the last column; ``.svm``/``.svmlight``/``.libsvm``/``.txt``: svmlight format
    (``n_features`` fixes the width so that domains agree).
    """
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise DalibError(f"{path}: unknown feature file type; use one of {', '.join(FORMATS)}")
    if path.is_file() and path.stat().st_size == 0:
        raise DalibError(f"{path} has no rows (the file is empty); {NEEDS_ROWS}")
    try:
        if suffix == ".mat":
            content = scipy.io.loadmat(path)
            x, y = _keys(content, path, features_key, labels_key)
        elif suffix == ".npz":
            with np.load(path) as content:
                x, y = _keys(dict(content), path, features_key, labels_key)
        elif suffix == ".csv":
            with warnings.catch_warnings():  # an empty file: numpy warns, the check below stops
                warnings.filterwarnings("ignore", message=".*input contained no data")
                table = np.loadtxt(path, delimiter=",", ndmin=2)
            x, y = table[:, :-1], table[:, -1]
        else:
            x, y = load_svmlight_file(str(path), n_features=n_features)
            x = x.toarray()
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        if isinstance(error, DalibError):  # a missing key, named by _keys
            raise
        raise DalibError(f"{path} could not be read as a feature file: {error}") from None
    y = np.asarray(y).ravel()
    if len(y) == 0:
        raise DalibError(f"{path} has no rows; {NEEDS_ROWS}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(y) or x.shape[1] == 0:
        raise DalibError(
            f"{path}: expected (n, d) features, d >= 1, and n labels, got {x.shape}, {y.shape}"
        )
    check_finite(str(path), x, y)
    if not np.all(np.equal(np.mod(y, 1), 0)):
        raise DalibError(f"{path}: labels must be integers, got values such as {y[y % 1 != 0][0]}")
    return x, y.astype(np.int64)


def _keys(content: dict, path: Path, features_key: str, labels_key: str):
    missing = [k for k in (features_key, labels_key) if k not in content]
    if missing:
        found = ", ".join(k for k in content if not k.startswith("__"))
        raise DalibError(
            f"{path} has no {missing[0]!r} array (it has: {found}); set features_key/labels_key"
        )
    return content[features_key], content[labels_key]


def preprocess(x: np.ndarray, steps: Sequence[Step], where: str) -> np.ndarray:
    """Apply the preprocessing steps in order, within one domain."""
    for step in steps:
        if step == "l1":
            sums = np.abs(x).sum(axis=1, keepdims=True)
            x = np.divide(x, sums, out=np.zeros_like(x), where=sums > 0)
        elif step == "log1p":
            if (x < 0).any():
                raise DalibError(f"{where}: log1p preprocessing needs non-negative features")
            x = np.log1p(x)
        elif step == "zscore":
            std = x.std(axis=0, keepdims=True)
            x = np.divide(x - x.mean(axis=0, keepdims=True), std, out=np.zeros_like(x),
                          where=std > 0)  # fmt: skip
        else:
            raise DalibError(f"unknown preprocessing step {step!r}; use l1, log1p or zscore")
    return x


def feature_domain(
    path: Path, steps: Sequence[Step], num_classes: int, label_offset: int = 0, **load_options
) -> BatchedTensorDataset:
    """One domain as float32 tensors, labels shifted by ``-label_offset`` and checked."""
    x, y = load_feature_file(path, **load_options)
    y = y - label_offset
    if y.min() < 0 or y.max() >= num_classes:
        raise DalibError(
            f"{path}: labels span {y.min() + label_offset}..{y.max() + label_offset}, outside "
            f"{label_offset}..{label_offset + num_classes - 1} for {num_classes} classes; "
            "set num_classes or label_offset"
        )
    x = preprocess(x, steps, str(path))
    return BatchedTensorDataset(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y))


def _pair_of_files(
    benchmark: str, task: str, source: Path, target: Path, num_classes: int, **options
) -> DomainPair:
    source_data = feature_domain(source, num_classes=num_classes, **options)
    target_data = feature_domain(target, num_classes=num_classes, **options)
    d_s, d_t = source_data.tensors[0].shape[1], target_data.tensors[0].shape[1]
    if d_s != d_t:
        raise DalibError(
            f"feature files have different widths: {source} has {d_s}, {target} has {d_t}; "
            "both domains need the same features"
        )
    # Transductive protocol: train on all source samples, adapt to and test on all target ones.
    return DomainPair(
        benchmark, task, source_data, target_data, target_data, num_classes,
        source_origin=str(source),
    )  # fmt: skip


@DATASETS.register("features")
def feature_files(
    source: str,
    target: str,
    num_classes: int,
    root: str | None = None,
    preprocess: Sequence[Step] = (),
    label_offset: int = 0,
    features_key: str = "fts",
    labels_key: str = "labels",
    n_features: int | None = None,
) -> DomainPair:
    """Any two feature files (paths relative to the data folder, or absolute)."""
    base = data_root(root)
    paths = [require(base / p, root, "check the source/target paths") for p in (source, target)]
    return _pair_of_files(
        "features", f"{Path(source).stem}->{Path(target).stem}", *paths, num_classes,
        steps=preprocess, label_offset=label_offset, features_key=features_key,
        labels_key=labels_key, n_features=n_features,
    )  # fmt: skip


OFFICE_CALTECH_DOMAINS = {"A": "amazon", "C": "Caltech10", "D": "dslr", "W": "webcam"}


def _office_caltech_domain(name: str) -> str:
    for short, file_stem in OFFICE_CALTECH_DOMAINS.items():
        if name in (short, file_stem, file_stem.lower()):
            return short
    raise DalibError(
        f"unknown Office-Caltech10 domain {name!r}; choose one of A, C, D, W "
        "(amazon, caltech10, dslr, webcam)"
    )


@DATASETS.register("office_caltech10")
def office_caltech10(
    source: str = "A",
    target: str = "W",
    root: str | None = None,
    preprocess: Sequence[Step] = ("l1", "zscore"),
) -> DomainPair:
    """Office-Caltech10 SURF features (Gong et al., CVPR 2012 GFK release), 800-d, 10 classes.

    Files ``office_caltech10_surf/<domain>_SURF_L10.mat`` (``fts``, ``labels`` in 1..10) under
    the data folder. Default preprocessing is the release README's: rows divided by their sum,
    then each feature z-scored within its domain.
    """
    s, t = _office_caltech_domain(source), _office_caltech_domain(target)
    folder = require(
        data_root(root) / "office_caltech10_surf", root,
        "get the SURF .mat files of the GFK release (Gong et al., CVPR 2012) into that folder",
    )  # fmt: skip
    path = {k: folder / f"{v}_SURF_L10.mat" for k, v in OFFICE_CALTECH_DOMAINS.items()}
    for short in (s, t):
        require(path[short], root, "the Office-Caltech10 SURF release has one .mat per domain")
    return _pair_of_files(
        "office_caltech10", f"{s}->{t}", path[s], path[t], 10, steps=preprocess, label_offset=1
    )
