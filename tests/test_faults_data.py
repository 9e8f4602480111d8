"""Bad data files and folders through ``dalib fit``: one ``dalib: error:`` line and exit status 2
before any training, files of existing runs untouched; data that trains but likely not as meant
(classes that never occur, a batch larger than a split) warns once, naming what is wrong."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from dalib.cli import main
from dalib.data.checks import check_batch_size, check_finite, check_source_labels
from dalib.errors import DalibError, DalibWarning
from tests.conftest import REPO, TOY
from tests.test_image_folders import CLASSES, office31_tree

RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 4))
Y = np.arange(40) % 2
NAN_ROW, NAN_COLUMN = 7, 2  # 0-based; messages count from 1: row 8, column 3


def with_bad_values(x: np.ndarray = X) -> np.ndarray:
    """``x`` with NaN at (NAN_ROW, NAN_COLUMN) and inf in two later cells."""
    x = x.copy()
    x[NAN_ROW, NAN_COLUMN] = np.nan
    x[9, 0] = x[30, 3] = np.inf
    return x


def write(path: Path, x: np.ndarray = X, y: np.ndarray = Y) -> Path:
    """Features and labels in the format of ``path``'s suffix (svmlight written by hand: sklearn
    refuses to write NaN)."""
    if path.suffix == ".csv":
        np.savetxt(path, np.column_stack([x, y]), delimiter=",")
    elif path.suffix == ".npz":
        np.savez(path, fts=x, labels=y)
    elif path.suffix == ".mat":
        scipy.io.savemat(path, {"fts": x, "labels": y[:, None]})
    else:
        lines = [f"{label} " + " ".join(f"{j + 1}:{v}" for j, v in enumerate(row))
                 for row, label in zip(x, y, strict=True)]  # fmt: skip
        path.write_text("".join(line + "\n" for line in lines))
    return path


def features(source: str, target: str = "good.csv", num_classes: int = 2) -> str:
    return (f"--data.dataset={{name: features, source: {source}, target: {target}, "
            f"num_classes: {num_classes}}}")  # fmt: skip


def fit_args(data_dir: Path, save_dir: Path, *overrides: str) -> list[str]:
    """A 1-epoch source-only fit of the toy config, on the data in ``data_dir``."""
    return [
        "fit", "-c", str(TOY / "source_only.yaml"),
        "--trainer.max_epochs=1", "--data.iterations_per_epoch=2",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        f"--trainer.logger.init_args.save_dir={save_dir}",
        *overrides, f"--data.dataset.root={data_dir}",
    ]  # fmt: skip


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def data_dir(tmp_path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    write(folder / "good.csv")
    return folder


@pytest.fixture
def runs(tmp_path) -> Path:
    """A save_dir that already holds a run, whose files must come through unchanged."""
    run = tmp_path / "runs" / "toy" / "source_only" / "version_0"
    run.mkdir(parents=True)
    (run / "result.json").write_text('{"target_acc": 0.9}\n')
    (run / "last.ckpt").write_bytes(b"weights")
    return tmp_path / "runs"


def nan_file(suffix: str):
    return lambda d: write(d / f"nan{suffix}", with_bad_values())


def empty_rows(suffix: str):
    return lambda d: write(d / f"rows{suffix}", X[:0], Y[:0])


def image_domains(prune):
    """An Office-31 tree (one JPEG per class) under the data folder, changed by ``prune``."""

    def make(d: Path) -> None:
        office31_tree(d, per_class=1)
        prune(d / "office31")

    return make


def keep_one_class(office: Path) -> None:
    for name in CLASSES[1:]:
        shutil.rmtree(office / "amazon" / "images" / name)
        (office / "amazon" / "images" / name).mkdir()


def empty_the_source(office: Path) -> None:
    shutil.rmtree(office / "amazon")
    (office / "amazon").mkdir()


def truncated_mnist(d: Path) -> None:
    """MNIST's four files, each an idx header that promises more images than follow."""
    (d / "MNIST" / "raw").mkdir(parents=True)
    for split, n in [("train", 60000), ("t10k", 10000)]:
        images = struct.pack(">4i", 0x803, n, 28, 28) + bytes(100)
        (d / "MNIST" / "raw" / f"{split}-images-idx3-ubyte").write_bytes(images)
        labels = struct.pack(">2i", 0x801, n) + bytes(10)
        (d / "MNIST" / "raw" / f"{split}-labels-idx1-ubyte").write_bytes(labels)


OFFICE = "--data.dataset={name: office31, source: amazon, target: webcam, resize: 8, crop: 8}"
BAD_DATA = {
    "empty csv": (lambda d: (d / "e.csv").write_text(""), features("e.csv"), r"e\.csv has no rows"),
    "blank csv": (lambda d: (d / "e.csv").write_text("\n\n"), features("e.csv"),
                  r"e\.csv has no rows"),
    "empty npz file": (lambda d: (d / "e.npz").write_bytes(b""), features("e.npz"),
                       r"e\.npz has no rows \(the file is empty\)"),
    "npz of 0 rows": (empty_rows(".npz"), features("rows.npz"), r"rows\.npz has no rows"),
    "mat of 0 rows": (empty_rows(".mat"), features("rows.mat"), r"rows\.mat has no rows"),
    "empty svmlight": (lambda d: (d / "e.svm").write_text(""), features("e.svm"),
                       r"e\.svm has no rows"),
    "svmlight of comments": (lambda d: (d / "e.svm").write_text("# no samples\n"),
                             features("e.svm"), r"e\.svm has no rows"),
    "empty target csv": (lambda d: (d / "e.csv").write_text(""), features("good.csv", "e.csv"),
                         r"e\.csv has no rows"),
    "csv of labels only": (lambda d: np.savetxt(d / "l.csv", Y), features("l.csv"),
                           r"l\.csv: expected \(n, d\) features, d >= 1"),
    "truncated npz": (lambda d: (d / "t.npz").write_bytes(write(d / "ok.npz").read_bytes()[:200]),
                      features("t.npz"), r"t\.npz could not be read as a feature file"),
    "NaN/inf in csv": (nan_file(".csv"), features("nan.csv"), r"nan\.csv: row 8, column 3 .*nan"),
    "NaN/inf in npz": (nan_file(".npz"), features("nan.npz"), r"nan\.npz: row 8, column 3 .*nan"),
    "NaN/inf in mat": (nan_file(".mat"), features("nan.mat"), r"nan\.mat: row 8, column 3 .*nan"),
    "NaN/inf in svmlight": (nan_file(".svm"), features("nan.svm"),
                            r"nan\.svm: row 8, column 3 .*nan"),
    "NaN/inf in the target": (nan_file(".csv"), features("good.csv", "nan.csv"),
                              r"nan\.csv: row 8, column 3 \(counting from 1\) is nan; 3 NaN/inf "
                              "values in 3 rows"),
    "NaN label": (lambda d: write(d / "l.csv", y=np.where(np.arange(40) == 5, np.nan, Y)),
                  features("l.csv"), r"l\.csv: the label of row 6 .* is nan"),
    "one-class source": (lambda d: write(d / "one.csv", y=np.ones(40)), features("one.csv"),
                         r"the source \(.*one\.csv\) has only class 1 in its 40 samples"),
    "one-class source folder": (image_domains(keep_one_class), OFFICE,
                                r"the source \(.*amazon/images\) has only class 0"),
    "truncated MNIST": (truncated_mnist, "--data.dataset={name: digits}",
                        r"MNIST under .* could not be read, a truncated or corrupt file"),
    "corrupt USPS": (lambda d: (d / "usps.bz2").write_bytes(b"BZh9 not bzip2"),
                     "--data.dataset={name: digits, source: USPS, target: MNIST}",
                     r"USPS under .* could not be read, a truncated or corrupt file"),
    "empty source folder": (image_domains(empty_the_source), OFFICE,
                            r"office31/amazon has no class folders"),
}  # fmt: skip


@pytest.mark.parametrize(("make", "dataset", "message"), BAD_DATA.values(), ids=BAD_DATA)
def test_bad_data_stops_before_training_with_one_line(
    capsys, data_dir, runs, make, dataset, message
):
    make(data_dir)
    before = snapshot(runs)
    with pytest.raises(SystemExit) as stop, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(fit_args(data_dir, runs, dataset))
    assert stop.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert lines[-1].startswith("dalib: error: ") and re.search(message, lines[-1]), lines[-1]
    assert not [w for w in caught if issubclass(w.category, DalibWarning)]
    assert snapshot(runs) == before, "a run folder was created or changed"


def dalib_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, DalibWarning)]


def fit_and_warnings(data_dir: Path, save_dir: Path, *overrides: str) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every emission counts, not only the first
        main(fit_args(data_dir, save_dir, *overrides))
    assert len(list(save_dir.rglob("result.json"))) == 1, "the run trained to its end"
    return dalib_warnings(caught)


def test_classes_missing_from_the_source_warn_once_naming_them(data_dir, tmp_path):
    write(data_dir / "five.csv", y=np.arange(40) % 5)  # the target shows classes 0..4
    found = fit_and_warnings(
        data_dir, tmp_path / "runs", features("good.csv", "five.csv", num_classes=5)
    )
    assert found == [
        f"source labels cover 2 of num_classes=5; classes 2, 3, 4 never occur in "
        f"{data_dir / 'good.csv'}"
    ]


def test_an_empty_class_folder_warns_naming_its_class(data_dir, tmp_path):
    office31_tree(data_dir, per_class=1)
    shutil.rmtree(data_dir / "office31" / "amazon" / "images" / "class_05")
    (data_dir / "office31" / "amazon" / "images" / "class_05").mkdir()
    found = fit_and_warnings(data_dir, tmp_path / "runs", OFFICE, "--data.batch_size=4")
    assert found == [
        "source labels cover 30 of num_classes=31; class 5 never occurs in "
        f"{data_dir / 'office31' / 'amazon' / 'images'}"
    ]


def test_a_batch_larger_than_a_training_split_warns_once_for_that_split(data_dir, tmp_path):
    write(data_dir / "big.csv", RNG.normal(size=(200, 4)), np.arange(200) % 2)
    found = fit_and_warnings(
        data_dir, tmp_path / "runs", features("big.csv", "good.csv"),
        "--data.batch_size=100", "--data.iterations_per_epoch=null",
    )  # fmt: skip
    # source: 200 - 20 held out = 180 >= 100, no warning; target: 40 < 100, each sample 2.5x
    assert found == [
        "batch_size 100 > 40 samples in the target training split: every step draws each "
        "sample about 2.5 times; an epoch is 2 steps; lower data.batch_size"
    ]


def test_good_data_trains_without_a_data_warning(data_dir, tmp_path):
    assert fit_and_warnings(data_dir, tmp_path / "runs", features("good.csv")) == []


@pytest.mark.slow
def test_the_command_prints_each_warning_as_one_line(data_dir, tmp_path):
    """The console as a user sees it: a fresh process, Python's own warning filters."""
    write(data_dir / "three.csv", y=np.arange(40) % 3)  # the target shows classes 0..2
    args = fit_args(data_dir, tmp_path / "runs", features("good.csv", "three.csv", num_classes=3),
                    "--data.batch_size=64")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": ""}
    done = subprocess.run(
        [sys.executable, "-m", "dalib.cli", *args], capture_output=True, text=True, env=env,
        cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    ours = [line for line in done.stderr.splitlines() if line.startswith("dalib: warning:")]
    assert ours == [
        f"dalib: warning: source labels cover 2 of num_classes=3; class 2 never occurs in "
        f"{data_dir / 'good.csv'}",
        "dalib: warning: batch_size 64 > 36 samples in the source training split: every step "
        "draws each sample about 1.8 times; an epoch is 2 steps; lower data.batch_size",
        "dalib: warning: batch_size 64 > 40 samples in the target training split: every step "
        "draws each sample about 1.6 times; an epoch is 2 steps; lower data.batch_size",
    ]


def test_the_first_bad_cell_and_the_count_are_exact():
    with pytest.raises(DalibError, match=r"^f: row 8, column 3 .* is nan; 3 NaN/inf values in 3 "):
        check_finite("f", with_bad_values(), Y.astype(float))
    x = np.zeros((5, 3))
    x[4, 1] = x[4, 2] = -np.inf
    with pytest.raises(DalibError, match=r"row 5, column 2 .* is -inf; 2 NaN/inf values in 1 row"):
        check_finite("f", x, np.zeros(5))
    check_finite("f", X, Y.astype(float))  # finite: no error


def test_source_label_checks_count_and_cap_the_missing_classes():
    with pytest.raises(DalibError, match=r"^the source \(s\) has only class 3 in its 4 samples"):
        check_source_labels("s", torch.full((4,), 3), 10)
    with pytest.warns(DalibWarning, match=r"cover 2 of num_classes=25; classes 1, 2, 3, 4, 5, "
                      r"6, 7, 8, 9, 10 and 13 more never occur in s$"):  # fmt: skip
        check_source_labels("s", torch.tensor([0, 11, 0]), 25)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_source_labels("s", torch.tensor([1, 0, 1]), 2)  # every class present: silent


def test_the_batch_check_counts_every_process():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_batch_size("target training", 100, 50, 1, 2)  # fits: silent
    with pytest.warns(DalibWarning, match=r"^batch_size 50 x 4 processes > 100 samples .* about "
                      r"2.0 times; an epoch is 1 step;"):  # fmt: skip
        check_batch_size("target training", 100, 50, 4, 1)
