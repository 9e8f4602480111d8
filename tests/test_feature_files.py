"""Feature-file domains: every format reads the same numbers; preprocessing; bad files."""

import numpy as np
import pytest
import scipy.io
import torch
from sklearn.datasets import dump_svmlight_file

from dalib.data import DATASETS
from dalib.data.features import load_feature_file, preprocess
from dalib.errors import DalibError

RNG = np.random.default_rng(0)
X = RNG.integers(0, 5, size=(12, 6)).astype(float)
Y = np.arange(12) % 3


def write(path, x=X, y=Y):
    if path.suffix == ".mat":
        scipy.io.savemat(path, {"fts": x, "labels": y[:, None]})
    elif path.suffix == ".npz":
        np.savez(path, fts=x, labels=y)
    elif path.suffix == ".csv":
        np.savetxt(path, np.column_stack([x, y]), delimiter=",")
    else:
        dump_svmlight_file(x, y, str(path))
    return path


@pytest.mark.parametrize("suffix", [".mat", ".npz", ".csv", ".svm"])
def test_every_format_reads_the_same_features_and_labels(tmp_path, suffix):
    x, y = load_feature_file(write(tmp_path / f"d{suffix}"), n_features=6)
    np.testing.assert_array_equal(x, X)
    np.testing.assert_array_equal(y, Y)


def test_preprocessing_steps_match_numpy():
    l1 = X / X.sum(1, keepdims=True)
    np.testing.assert_allclose(preprocess([X], ["l1"], "x")[0], l1)
    z = (l1 - l1.mean(0)) / l1.std(0)
    np.testing.assert_allclose(preprocess([X], ["l1", "zscore"], "x")[0], z)
    np.testing.assert_allclose(preprocess([X], ["log1p"], "x")[0], np.log1p(X))
    constant = np.ones((4, 2))
    assert (preprocess([constant], ["zscore"], "x")[0] == 0).all(), "constant features become 0"


def test_a_test_file_is_standardised_with_its_training_files_statistics():
    train, test = X.copy(), RNG.normal(3.0, 2.0, size=(5, 6))
    train[:, 2] = 1.0  # constant in the training file: 0 in both files
    train_z, test_z = preprocess([train, test], ["zscore"], "x")
    varying = [0, 1, 3, 4, 5]
    mean, std = train[:, varying].mean(0), train[:, varying].std(0)
    np.testing.assert_allclose(train_z[:, varying], (train[:, varying] - mean) / std)
    np.testing.assert_allclose(test_z[:, varying], (test[:, varying] - mean) / std)
    assert (train_z[:, 2] == 0).all() and (test_z[:, 2] == 0).all()
    assert train[0, 2] == 1.0, "the caller's arrays are left as they were"


def test_a_feature_pair_from_two_files(tmp_path):
    write(tmp_path / "a.npz"), write(tmp_path / "b.npz", X + 1)
    pair = DATASETS.build(
        {
            "name": "features",
            "source": "a.npz",
            "target": "b.npz",
            "num_classes": 3,
            "root": str(tmp_path),
            "preprocess": ["zscore"],
        }
    )
    assert pair.task == "a->b" and pair.num_classes == 3
    assert torch.equal(pair.target_train.tensors[0], pair.target_test.tensors[0])
    assert pair.source.tensors[0].dtype == torch.float32


@pytest.mark.parametrize(
    ("files", "options", "message"),
    [
        ({"a.npz": (X, Y), "b.npz": (X[:, :4], Y)}, {}, "different widths: .*a.npz has 6"),
        (
            {"a.npz": (X, Y), "b.npz": (X, Y + 5)},
            {},
            r"take 6 distinct values \(0, 1, 2, 5, 6 and 1 more\) but num_classes is 3",
        ),
        ({"a.npz": (X, Y)}, {}, "b.npz not found .*config's root"),
        ({"a.npz": (X, Y), "b.npz": (X, Y)}, {"preprocess": ["l2"]}, "unknown preprocessing"),
    ],
)
def test_bad_feature_files_stop_with_one_clear_line(tmp_path, files, options, message):
    for name, (x, y) in files.items():
        write(tmp_path / name, x, y)
    spec = {
        "name": "features",
        "source": "a.npz",
        "target": "b.npz",
        "num_classes": 3,
        "root": str(tmp_path),
        **options,
    }
    with pytest.raises(DalibError, match=message):
        DATASETS.build(spec)


def test_missing_keys_and_unknown_suffixes_are_named(tmp_path):
    np.savez(tmp_path / "k.npz", X=X, y=Y)
    with pytest.raises(DalibError, match=r"no 'fts' array .*it has: X, y"):
        load_feature_file(tmp_path / "k.npz")
    (tmp_path / "f.parquet").write_text("")
    with pytest.raises(DalibError, match="unknown feature file type"):
        load_feature_file(tmp_path / "f.parquet")


def test_office_caltech_without_data_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("DALIB_DATA", str(tmp_path))
    with pytest.raises(DalibError, match=r"office_caltech10_surf not found .*\$DALIB_DATA"):
        DATASETS.build({"name": "office_caltech10"})
