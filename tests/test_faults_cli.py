"""Expected failures of ``dalib test``/``report``/``sweep``/``fit``: one line, exit status 2.

Each case runs the real command (in this process, stderr captured at the file descriptor, so
that Lightning's log lines would count too) next to a finished run, and checks: exit status 2,
exactly one line on stderr, naming the problem, and the finished run's files byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dalib.cli import main
from dalib.records import current_umask
from tests.conftest import REPO, TOY, run_dalib

FIT = ["fit", "-c", str(TOY / "dann.yaml"), "--trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 1-epoch toy run; returns the folder holding its run folder."""
    runs = tmp_path_factory.mktemp("runs")
    tiny = ["--trainer.max_epochs=1", "--data.iterations_per_epoch=5"]
    run_dalib(["fit", "-c", str(TOY / "dann.yaml"), *tiny], runs)
    return runs


def digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the SHA-256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def checkpoint(runs: Path) -> Path:
    return next(runs.rglob("last.ckpt"))


def report_folder(tmp: Path, runs: Path, edit: Callable[[dict], dict]) -> Path:
    """A copy of the finished run's record, changed by ``edit``, in a folder of its own."""
    record = json.loads(next(runs.rglob("result.json")).read_text())
    folder = tmp / "records" / "run"
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps(edit(record)))
    return folder.parent


def a_file(tmp: Path) -> Path:
    path = tmp / "a_file"
    path.write_text("not a folder\n")
    return path


CASES: dict[str, tuple[Callable[[Path, Path], list[str]], str]] = {
    "test of a missing checkpoint": (
        lambda tmp, runs: ["test", "-c", str(TOY / "dann.yaml"), f"--ckpt_path={tmp}/x.ckpt"],
        "no such checkpoint file",
    ),
    "validate of a folder as checkpoint": (
        lambda tmp, runs: ["validate", "-c", str(TOY / "dann.yaml"), f"--ckpt_path={tmp}"],
        "no such checkpoint file",
    ),
    "fit into /proc": (
        lambda tmp, runs: [*FIT, "--trainer.logger.init_args.save_dir=/proc/dalib_runs"],
        "cannot write runs into /proc/dalib_runs",
    ),
    "fit into a path under a regular file": (
        lambda tmp, runs: [*FIT, f"--trainer.logger.init_args.save_dir={a_file(tmp)}/runs"],
        "cannot write runs into",
    ),
    "report --out under a regular file": (
        lambda tmp, runs: ["report", str(runs), "--out", f"{a_file(tmp)}/report"],
        "cannot write the report to",
    ),
    "report of a record without selected_by": (
        lambda tmp, runs: [
            "report",
            str(
                report_folder(
                    tmp, runs, lambda r: {k: v for k, v in r.items() if k != "selected_by"}
                )
            ),
            "--out",
            str(tmp / "out"),
        ],
        "is not a complete run record: no selected_by",
    ),
    "report with a corrupt sweep.json": (
        lambda tmp, runs: [
            "report",
            str(sweep_json(report_folder(tmp, runs, dict), '{"sweep": "s.yaml", "runs": [{')),
            "--out",
            str(tmp / "out"),
        ],
        "sweep.json: Expecting",
    ),
    "report with a sweep.json of another shape": (
        lambda tmp, runs: [
            "report",
            str(sweep_json(report_folder(tmp, runs, dict), '{"runs": 3}')),
            "--out",
            str(tmp / "out"),
        ],
        "is not a sweep record",
    ),
    "report of a missing folder": (
        lambda tmp, runs: ["report", str(tmp / "nowhere")],
        "is not a folder of run records",
    ),
    "sweep file that is not YAML": (
        lambda tmp, runs: ["sweep", str(write(tmp / "s.yaml", "methods: [a\n"))],
        "cannot read sweep file",
    ),
    "sweep output under a regular file": (
        lambda tmp, runs: [
            "sweep",
            str(
                write(
                    tmp / "s.yaml",
                    f"output: {a_file(tmp)}/out\nmethods: [{TOY / 'dann.yaml'}]\n",
                )
            ),
        ],
        "cannot write the sweep's output folder",
    ),
    "unknown command": (lambda tmp, runs: ["tset"], "invalid choice: 'tset'"),
}


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def sweep_json(folder: Path, text: str) -> Path:
    (folder / "sweep.json").write_text(text)
    return folder


@pytest.mark.parametrize("case", list(CASES))
def test_an_expected_failure_is_one_line_exit_2_and_changes_no_run(case, finished, tmp_path, capfd):
    arguments, problem = CASES[case]
    before = digest(finished)
    args = arguments(tmp_path, finished)
    capfd.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(args)
    err = capfd.readouterr().err
    assert stop.value.code == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("dalib: error: ") and problem in err, err
    assert digest(finished) == before


def test_test_writes_its_record_beside_the_checkpoint_and_touches_nothing_else(
    finished, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # nothing (a config.yaml) may land in the working directory
    before = digest(finished)
    ckpt = checkpoint(finished)
    run_dalib(["test", "-c", str(TOY / "dann.yaml"), f"--ckpt_path={ckpt}"], tmp_path / "new")
    after = digest(finished)
    added = sorted(set(after) - set(before))
    assert added == [str((ckpt.parent.parent / "test_result.json").relative_to(finished))]
    assert {k: after[k] for k in before} == before
    assert list(tmp_path.iterdir()) == []


def test_the_sweep_hint_is_shell_quoted_and_its_record_a_normal_file(tmp_path, capsys):
    output = tmp_path / "a sweep; rm -rf x"
    path = write(tmp_path / "s.yaml", f"output: '{output}'\nmethods: [{TOY / 'dann.yaml'}]\n")
    run = output / "dann" / "default" / "default" / "seed_0"
    run.mkdir(parents=True)
    record = {"method": "dann", "task": "t", "selected_by": "dev", "target_acc": 1.0}
    (run / "result.json").write_text(json.dumps(record))  # finished: nothing to train
    with pytest.raises(SystemExit) as stop:
        main(["sweep", str(path)])
    assert stop.value.code == 0
    assert f"`dalib report '{output}'`" in capsys.readouterr().out
    assert (output / "sweep.json").stat().st_mode & 0o777 == 0o666 & ~current_umask()


@pytest.mark.slow
def test_a_fit_prints_only_what_the_user_can_act_on(tmp_path):
    """Before training: no Lightning tips, no model summary, no warning dalib causes."""
    done = subprocess.run(
        [sys.executable, "-m", "dalib.cli", *FIT, "--trainer.max_epochs=1",
         "--data.iterations_per_epoch=5", "--trainer.log_every_n_steps=5",
         f"--trainer.logger.init_args.save_dir={tmp_path}"],
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed = done.stdout + done.stderr
    for noise in ("Tip:", "args parameter", "Trainable params", "will override", "LeafSpec"):
        assert noise not in printed, printed
    assert "/dalib/" not in done.stderr, done.stderr  # no warning raised in dalib's code
    assert len(done.stderr.splitlines()) <= 6, done.stderr
