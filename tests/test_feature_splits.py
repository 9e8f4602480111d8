"""Feature files that state the protocol: a train and a test file per domain, labels of any
coding mapped to 0..C-1 by one mapping for the whole run, and where each number comes from."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import dump_svmlight_file

from dalib.data import DATASETS, DomainDataModule
from dalib.errors import DalibError
from tests.conftest import TOY, only_result, run_dalib

RNG = np.random.default_rng(0)
X = RNG.poisson(1.0, size=(30, 8)).astype(float)
PM = np.where(np.arange(30) % 2, 1, -1)  # labels -1/+1


def svm(path, x=X, y=PM, zero_based=False):
    dump_svmlight_file(x, y, str(path), zero_based=zero_based)
    return path.name


def csv(path, x, labels):
    rows = [
        ",".join([*(f"{v:g}" for v in row), str(label)])
        for row, label in zip(x, labels, strict=True)
    ]
    path.write_text("\n".join(rows) + "\n")
    return path.name


def build(root, **options):
    return DATASETS.build({"name": "features", "root": str(root), **options})


def test_minus_one_plus_one_labels_are_coded_alike_in_every_file(tmp_path):
    only_plus = np.ones(10, dtype=int)
    files = {"source": svm(tmp_path / "s.svm"), "target": svm(tmp_path / "t.svm", X + 1)}
    files["target_test"] = svm(tmp_path / "tt.svm", X[:10], only_plus)
    pair = build(tmp_path, **files)
    assert pair.num_classes == 2 and pair.label_mapping == {"-1": 0, "1": 1}
    assert pair.source.tensors[1].tolist() == ((PM + 1) // 2).tolist()
    # A mapping of the test file's own labels would make its only label, +1, class 0.
    assert pair.target_test.tensors[1].tolist() == [1] * 10
    np.testing.assert_array_equal(pair.target_test.tensors[0].numpy(), X[:10])


@pytest.mark.parametrize("zero_based", [False, True])
def test_svmlight_files_are_read_with_one_width_and_one_index_base(tmp_path, zero_based):
    """A sparse test file that never uses the first or the last feature is read like its
    training file: same width, no shift by one."""
    sparse = X.copy()
    sparse[:, [0, -1]] = 0
    source = svm(tmp_path / "s.svm", zero_based=zero_based)
    target = svm(tmp_path / "t.svm", zero_based=zero_based)
    test = svm(tmp_path / "tt.svm", sparse, zero_based=zero_based)
    pair = build(tmp_path, source=source, target=target, target_test=test)
    np.testing.assert_array_equal(pair.target_test.tensors[0].numpy(), sparse)
    pair = build(tmp_path, source=source, target=target, target_test=test, n_features=10)
    assert pair.target_test.tensors[0].shape == (30, 10)


def test_text_labels_sort_as_text_and_numeric_text_as_numbers(tmp_path):
    names = np.array(["dog", "cat", "emu"])[np.arange(30) % 3]
    source = csv(tmp_path / "s.csv", X, names)
    np.savez(tmp_path / "t.npz", fts=X, labels=names[::-1])  # text labels in an .npz file too
    pair = build(tmp_path, source=source, target="t.npz")
    assert pair.label_mapping == {"cat": 0, "dog": 1, "emu": 2}
    assert pair.source.tensors[1][:3].tolist() == [1, 0, 2]
    numbers = np.array(["10", " 9", "+10"])[np.arange(30) % 3]  # 9 < 10, not "10" < "9"
    pair = build(tmp_path, source=csv(tmp_path / "n.csv", X, numbers), target="n.csv")
    assert pair.label_mapping == {"9": 0, "10": 1}
    assert pair.source.tensors[1][:3].tolist() == [1, 0, 1]


def test_labels_one_to_c_become_zero_to_c_minus_one(tmp_path):
    y = np.arange(30) % 3 + 1
    np.savez(tmp_path / "a.npz", fts=X, labels=y)
    pair = build(tmp_path, source="a.npz", target="a.npz", num_classes=3)
    assert pair.label_mapping == {"1": 0, "2": 1, "3": 2}
    assert pair.source.tensors[1].tolist() == (y - 1).tolist()


def test_a_source_test_file_replaces_the_held_out_source(tmp_path):
    names = {"source": svm(tmp_path / "s.svm"), "target": svm(tmp_path / "t.svm")}
    held_out = DomainDataModule({"name": "features", "root": str(tmp_path), **names})
    assert [len(held_out.splits[s]) for s in ("source_train", "source_val")] == [27, 3]
    assert held_out.record() == {
        "source_eval_split": f"0.1 of the source ({tmp_path / 's.svm'}) held out at random, "
        "split_seed 0",
        "target_eval_split": f"target file {tmp_path / 't.svm'} (the samples adapted to)",
        "label_mapping": {"-1": 0, "1": 1},
    }
    names["source_test"] = svm(tmp_path / "st.svm", X[:12], PM[:12])
    names["target_test"] = svm(tmp_path / "tt.svm", X[:7], PM[:7])
    data = DomainDataModule({"name": "features", "root": str(tmp_path), **names})
    sizes = [len(data.splits[s]) for s in ("source_train", "source_val", "target_test")]
    assert sizes == [30, 12, 7]
    assert data.record()["source_eval_split"] == f"source_test file {tmp_path / 'st.svm'}"
    assert data.record()["target_eval_split"] == f"target_test file {tmp_path / 'tt.svm'}"


def write_bad(tmp_path, case):
    """The files of an error case under ``tmp_path``; returns the dataset options."""
    s, t = svm(tmp_path / "s.svm"), svm(tmp_path / "t.svm")
    if case == "unseen test label":
        return {"source": s, "target": t, "target_test": svm(tmp_path / "tt.svm", y=PM * 3)}
    if case == "codings differ":
        return {"source": csv(tmp_path / "s.csv", X, ["a", "b"] * 15), "target": t}
    if case == "text test file":
        return {"source": s, "target": t, "target_test": csv(tmp_path / "tt.csv", X, ["a"] * 30)}
    if case == "fractional":
        return {"source": svm(tmp_path / "f.svm", y=PM * 0.5), "target": t}
    if case == "one class":
        return {"source": svm(tmp_path / "o.svm", y=np.ones(30)), "target": "o.svm"}
    return {"source": s, "target": t}


@pytest.mark.parametrize(
    ("case", "options", "message"),
    [
        ("unseen test label", {}, r"tt\.svm: label -3 \(row 1, counting from 1\) is not among "
         r"the training files' labels \(-1, 1\)"),
        ("codings differ", {}, r"label codings differ: .*s\.csv has text, .*t\.svm has integers"),
        ("text test file", {}, r"tt\.csv has text labels, the training files do not"),
        ("fractional", {}, r"f\.svm: labels must be integers or text, got values such as -0\.5"),
        ("one class", {}, r"labels take one value \(1\)"),
        ("ok", {"num_classes": 3},
         r"labels take 2 distinct values \(-1, 1\) but num_classes is 3; set num_classes to 2"),
        ("ok", {"label_offset": 1}, r"label_offset is gone: .*label_mapping in result\.json"),
        ("ok", {"source_test": "st.svm"}, r"st\.svm not found .*check the source_test path"),
    ],
)  # fmt: skip
def test_bad_labels_and_files_stop_with_one_line(tmp_path, case, options, message):
    with pytest.raises(DalibError, match=message) as error:
        build(tmp_path, **write_bad(tmp_path, case), **options)
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_target_accuracy_is_measured_on_the_target_test_file(tmp_path):
    """Adapt on one target file, evaluate on another: with the target file's own rows under
    flipped labels as the test file, every reported target accuracy is 1 - the transductive
    run's, which only evaluation on the test file gives."""
    rng = np.random.default_rng(1)
    y = np.where(np.arange(200) % 2, 1, -1)
    x = rng.normal(size=(200, 5)) + 2.0 * y[:, None] * np.array([1.0, 0.5, 0, 0, 0])
    names = {"source": svm(tmp_path / "s.svm", x, y), "target": svm(tmp_path / "t.svm", x + 0.3, y)}
    flipped = svm(tmp_path / "flipped.svm", x + 0.3, -y)
    records = {}
    for test_file in (None, flipped):
        dataset = {"name": "features", "root": str(tmp_path), **names}
        if test_file:
            dataset["target_test"] = test_file
        save_dir = tmp_path / f"runs_{test_file}"
        options = [f"--data.dataset={json.dumps(dataset)}", "--trainer.max_epochs=2"]
        options.append("--data.iterations_per_epoch=5")
        run_dalib(["fit", "-c", str(TOY / "source_only.yaml"), *options], save_dir)
        records[test_file] = only_result(save_dir)
    own, test = records[None], records[flipped]
    assert own["target_acc"] > 0.8, "the model learned the task"
    for field in ("target_acc", "last_target_acc"):
        assert test[field] == pytest.approx(1.0 - own[field], abs=1e-6)
    assert test["target_eval_split"] == f"target_test file {tmp_path / 'flipped.svm'}"
    assert own["target_eval_split"] == f"target file {tmp_path / 't.svm'} (the samples adapted to)"
    assert test["label_mapping"] == {"-1": 0, "1": 1}
    assert test["source_eval_split"].startswith("0.1 of the source")
