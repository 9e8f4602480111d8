"""Domains of precomputed features: ``.mat``, ``.npz``, ``.csv`` and LIBSVM/svmlight files.

A domain is a training file and optionally a test file (``source_test``, ``target_test``), so
that "adapt on the target training file, report accuracy on its test file" is one config.
Labels of any coding are mapped to 0..C−1 (``dalib.data.labels``). Preprocessing follows the
published shallow-DA protocols, applied per domain in the given order: ``l1`` (divide each row
by its sum, for bag-of-words counts), ``log1p`` (for counts), ``zscore`` (standardise each
feature with the domain's training-file statistics; constant features become 0).
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.io
import torch
from sklearn.datasets import load_svmlight_file, load_svmlight_files

from dalib.data.batched import BatchedTensorDataset
from dalib.data.checks import check_finite
from dalib.data.domains import DATASETS, DomainPair
from dalib.data.labels import LabelCoding, as_read, class_values
from dalib.data.roots import data_root, require
from dalib.errors import DalibError

Step = Literal["l1", "log1p", "zscore"]
NEEDS_ROWS = "it needs one row per sample: its features and a label"
SVMLIGHT = (".svm", ".svmlight", ".libsvm", ".txt")
FORMATS = (".mat", ".npz", ".csv", *SVMLIGHT)
Features = tuple[np.ndarray, np.ndarray]  # (n, d) float64 features; labels, integers or text


def load_feature_files(
    paths: Sequence[Path],
    features_key: str = "fts",
    labels_key: str = "labels",
    n_features: int | None = None,
) -> list[Features]:
    """Features (n, d) as float64 and labels (int64, or text) of each file, by its suffix.

    ``.mat``/``.npz``: arrays under ``features_key`` and ``labels_key``; ``.csv``: the label in
    the last column (a number or text), numbers before it; ``.svm``/``.svmlight``/``.libsvm``/
    ``.txt``: svmlight format. The svmlight files of one call are read together (scikit-learn's
    ``load_svmlight_files``), so they share one width and one index base (0 or 1) even when a
    sparse file never uses the last or the first feature; ``n_features`` fixes the width.
    """
    for path in paths:
        if path.suffix.lower() not in FORMATS:
            raise DalibError(f"{path}: unknown feature file type; use one of {', '.join(FORMATS)}")
        if path.is_file() and path.stat().st_size == 0:
            raise DalibError(f"{path} has no rows (the file is empty); {NEEDS_ROWS}")
    svmlight = [p for p in paths if p.suffix.lower() in SVMLIGHT]
    read = dict(zip(svmlight, _svmlight(svmlight, n_features), strict=True))
    for path in paths:
        if path not in read:
            read[path] = _dense(path, features_key, labels_key)
    return [_checked(path, *read[path]) for path in paths]


def load_feature_file(path: Path, **options) -> Features:
    """One file's features and labels (``load_feature_files``' options)."""
    return load_feature_files([path], **options)[0]


def _svmlight(paths: list[Path], n_features: int | None) -> list[Features]:
    if not paths:
        return []
    try:
        loaded = load_svmlight_files([str(p) for p in paths], n_features=n_features)
    except (OSError, ValueError) as error:
        for path in paths:  # name the file at fault
            try:
                load_svmlight_file(str(path), n_features=n_features)
            except (OSError, ValueError) as its_error:
                raise DalibError(
                    f"{path} could not be read as an svmlight file: {its_error}"
                ) from None
        raise DalibError(
            f"{', '.join(map(str, paths))} could not be read together: {error}"
        ) from None
    return [(loaded[2 * i].toarray(), loaded[2 * i + 1]) for i in range(len(paths))]


def _dense(path: Path, features_key: str, labels_key: str) -> Features:
    suffix = path.suffix.lower()
    try:
        if suffix == ".mat":
            return _keys(scipy.io.loadmat(path), path, features_key, labels_key)
        if suffix == ".npz":
            with np.load(path) as content:
                return _keys(dict(content), path, features_key, labels_key)
        with warnings.catch_warnings():  # an empty file: numpy warns, the check below stops
            warnings.filterwarnings("ignore", message=".*input contained no data")
            table = np.loadtxt(path, delimiter=",", ndmin=2, dtype=str)
        return table[:, :-1].astype(np.float64), table[:, -1]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        if isinstance(error, DalibError):  # a missing key, named by _keys
            raise
        raise DalibError(f"{path} could not be read as a feature file: {error}") from None


def _checked(path: Path, x: np.ndarray, y: np.ndarray) -> Features:
    y = as_read(y)
    if len(y) == 0:
        raise DalibError(f"{path} has no rows; {NEEDS_ROWS}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(y) or x.shape[1] == 0:
        raise DalibError(
            f"{path}: expected (n, d) features, d >= 1, and n labels, got {x.shape}, {y.shape}"
        )
    check_finite(str(path), x, y)
    return x, class_values(y, str(path))


def _keys(content: dict, path: Path, features_key: str, labels_key: str) -> Features:
    missing = [k for k in (features_key, labels_key) if k not in content]
    if missing:
        found = ", ".join(k for k in content if not k.startswith("__"))
        raise DalibError(
            f"{path} has no {missing[0]!r} array (it has: {found}); set features_key/labels_key"
        )
    return content[features_key], content[labels_key]


def preprocess(arrays: Sequence[np.ndarray], steps: Sequence[Step], where: str) -> list[np.ndarray]:
    """Apply the preprocessing steps in order to one domain's arrays: its training file first,
    then its test file if any. ``zscore`` uses the training file's statistics for both, so the
    test file is coded like the training one and never fitted on. The steps work in place on
    one copy of each array (a 6,000 x 5,000 file is 240 MB as float64)."""
    arrays = [np.array(x, dtype=np.float64) for x in arrays]
    for step in steps:
        if step == "l1":
            for x in arrays:
                sums = np.abs(x).sum(axis=1, keepdims=True)
                np.divide(x, sums, out=x, where=sums > 0)  # rows summing to 0 are all 0
        elif step == "log1p":
            if any((x < 0).any() for x in arrays):
                raise DalibError(f"{where}: log1p preprocessing needs non-negative features")
            for x in arrays:
                np.log1p(x, out=x)
        elif step == "zscore":
            mean, std = arrays[0].mean(axis=0), arrays[0].std(axis=0)
            for x in arrays:
                x -= mean
                np.divide(x, std, out=x, where=std > 0)
                x[:, std == 0] = 0  # constant in the training file: no information
        else:
            raise DalibError(f"unknown preprocessing step {step!r}; use l1, log1p or zscore")
    return arrays


def feature_pair(
    benchmark: str,
    task: str,
    files: Mapping[str, Path],
    num_classes: int | None,
    steps: Sequence[Step],
    **load_options,
) -> DomainPair:
    """A pair from the files of ``source`` and ``target`` and optionally ``source_test`` and
    ``target_test``: one width, one label coding (from the training files), each domain
    preprocessed on its training file."""
    read = dict(zip(files, load_feature_files(list(files.values()), **load_options), strict=True))
    widths = {part: x.shape[1] for part, (x, _) in read.items()}
    if len(set(widths.values())) > 1:
        found = ", ".join(f"{files[part]} has {width}" for part, width in widths.items())
        raise DalibError(
            f"feature files have different widths: {found}; every file needs the same features"
        )
    coding = LabelCoding.of({str(files[p]): read[p][1] for p in ("source", "target")}, num_classes)
    data = {}
    for domain in ("source", "target"):
        parts = [p for p in (domain, f"{domain}_test") if p in read]
        labels = [read[p][1] for p in parts]
        features = preprocess([read.pop(p)[0] for p in parts], steps, str(files[domain]))
        for part, x, y in zip(parts, features, labels, strict=True):
            y = coding.encode(y, str(files[part]))
            data[part] = BatchedTensorDataset(
                torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)
            )
    source_test = files.get("source_test")
    target_test = files.get("target_test")
    return DomainPair(
        benchmark, task, data["source"], data["target"], data.get("target_test", data["target"]),
        coding.num_classes, source_origin=str(files["source"]),
        source_test=data.get("source_test"),
        source_test_origin=f"source_test file {source_test}" if source_test else None,
        # without a target_test file, transductive: adapt to and test on all target samples
        target_test_origin=(f"target_test file {target_test}" if target_test
                            else f"target file {files['target']} (the samples adapted to)"),
        label_mapping=coding.record(),
    )  # fmt: skip


@DATASETS.register("features")
def feature_files(
    source: str,
    target: str,
    num_classes: int | None = None,
    source_test: str | None = None,
    target_test: str | None = None,
    root: str | None = None,
    preprocess: Sequence[Step] = (),
    features_key: str = "fts",
    labels_key: str = "labels",
    n_features: int | None = None,
    label_offset: int | None = None,
) -> DomainPair:
    """Any feature files: a source and a target, each optionally with a separate test file.

    Args:
        source: the labelled source file (path relative to the data folder, or absolute);
            ``.mat``, ``.npz``, ``.csv`` or svmlight (``.svm``, ``.svmlight``, ``.libsvm``,
            ``.txt``).
        target: the target file adapted to; its labels are hidden in training.
        num_classes: the number of classes, checked against the distinct labels of the
            source and target files (by default, that number).
        source_test: a labelled source test file: the source validation split
            (``source_val_acc``, label-free selection) instead of a hold-out of ``source``.
        target_test: the target file every target accuracy is measured on; without it, the
            target file itself (transductive).
        root: the data folder (default ``$DALIB_DATA``, else ``~/.cache/dalib``).
        preprocess: steps applied in order within each domain: ``l1`` (rows divided by their
            sum), ``log1p``, ``zscore`` (per feature, with the domain's training-file
            statistics).
        features_key: the features' array in ``.mat``/``.npz`` files.
        labels_key: the labels' array in ``.mat``/``.npz`` files.
        n_features: the width of svmlight files (default: the largest index in any of them).
        label_offset: removed; labels of any coding (−1/+1, 1..C, text) are mapped to 0..C−1
            in sorted order (``label_mapping`` in ``result.json``). Setting it is an error.
    """
    if label_offset is not None:
        raise DalibError(
            "label_offset is gone: labels of any coding (-1/+1, 1..C, text) are mapped to "
            "0..C-1 in sorted order, recorded as label_mapping in result.json; remove it"
        )
    base = data_root(root)
    given = {
        "source": source,
        "target": target,
        "source_test": source_test,
        "target_test": target_test,
    }
    files = {
        part: require(base / name, root, f"check the {part} path")
        for part, name in given.items() if name is not None
    }  # fmt: skip
    return feature_pair(
        "features", f"{Path(source).stem}->{Path(target).stem}", files, num_classes, preprocess,
        features_key=features_key, labels_key=labels_key, n_features=n_features,
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

    Files ``office_caltech10_surf/<domain>_SURF_L10.mat`` (``fts``, ``labels`` in 1..10, coded
    0..9) under the data folder. Transductive: trained on all source samples, adapted to and
    tested on all target samples.

    Args:
        source: the source domain: A, C, D or W (amazon, caltech10, dslr, webcam).
        target: the target domain, likewise.
        root: the data folder (default ``$DALIB_DATA``, else ``~/.cache/dalib``).
        preprocess: steps applied in order within each domain; the default is the release
            README's: rows divided by their sum, then each feature z-scored.
    """
    s, t = _office_caltech_domain(source), _office_caltech_domain(target)
    folder = require(
        data_root(root) / "office_caltech10_surf", root,
        "get the SURF .mat files of the GFK release (Gong et al., CVPR 2012) into that folder",
    )  # fmt: skip
    path = {k: folder / f"{v}_SURF_L10.mat" for k, v in OFFICE_CALTECH_DOMAINS.items()}
    for short in (s, t):
        require(path[short], root, "the Office-Caltech10 SURF release has one .mat per domain")
    files = {"source": path[s], "target": path[t]}
    return feature_pair("office_caltech10", f"{s}->{t}", files, 10, preprocess)
