"""Resume faults: ``--ckpt_path`` continues only an unfinished run of the same config, refuses
anything else without touching a file, and a run killed twice ends with the uninterrupted run's
``metrics.csv``, row for row, and the learning curve of every step."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pytorch_lightning import Callback

from dalib import run_history
from dalib.cli import main
from dalib.lightning_cli import DalibCLI
from dalib.plots import read_curve
from dalib.run_identity import differences
from tests.conftest import REPO, TOY

pytestmark = pytest.mark.slow  # real fits through the CLI, killed and resumed

# 4 epochs of 12 steps; `last.ckpt` every 5 steps too, so kills land inside epochs; a row every
# step. (A row's training accuracy is over the steps since the last row, and not in the
# checkpoint: with rows less often, a checkpoint between two rows changes the next row's.)
ARGS = ["-c", str(TOY / "dann.yaml"), "--trainer.max_epochs=4", "--data.iterations_per_epoch=12",
        "--trainer.log_every_n_steps=1", "--model.checkpoint_every_n_steps=5",
        "--model.selection=dev", "--trainer.deterministic=true",
        "--trainer.enable_progress_bar=false"]  # fmt: skip
RUNS = Path("runs") / "toy" / "dann"


class KillAt(Callback):
    """SIGKILLs its own process when training reaches ``step``: a crash no code can tidy up."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def fit_killed_at(step: int, arguments: list[str]) -> None:
    """``dalib <arguments>``, killed at ``step`` (the run's config is left as it is)."""
    before_fit = DalibCLI.before_fit

    def with_kill(cli: DalibCLI) -> None:
        cli.trainer.callbacks.append(KillAt(step))
        before_fit(cli)

    DalibCLI.before_fit = with_kill
    main(arguments)


def dalib(cwd: Path, *extra: str, kill_at: int | None = None) -> subprocess.CompletedProcess:
    """``dalib fit`` of ``ARGS`` in a fresh process, with one thread (bit-exact numbers)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    arguments = ["fit", *ARGS, *extra]
    if kill_at is None:
        command = [sys.executable, "-m", "dalib.cli", *arguments]
    else:
        driver = "import sys; from tests.test_faults_resume import fit_killed_at; "
        driver += "fit_killed_at(int(sys.argv[1]), sys.argv[2:])"
        command = [sys.executable, "-c", driver, str(kill_at), *arguments]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def metrics_rows(run_dir: Path) -> tuple[list[str], list[dict[str, str]]]:
    with (run_dir / "metrics.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A folder whose ``runs/toy/dann`` holds ``version_0``, finished, and ``version_1``, the
    same config killed at step 19 (its ``last.ckpt`` at step 15)."""
    cwd = tmp_path_factory.mktemp("runs")
    assert (done := dalib(cwd)).returncode == 0, done.stderr
    assert dalib(cwd, kill_at=19).returncode == -signal.SIGKILL
    assert not (cwd / RUNS / "version_1" / "result.json").exists()
    return cwd


def refused(cwd: Path, *extra: str) -> str:
    """Run a resume that must be refused; its one error line. No file may change."""
    before = snapshot(cwd / "runs")
    result = dalib(cwd, *extra)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("dalib: error:")]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0]
    assert snapshot(cwd / "runs") == before
    return errors[0]


def test_a_finished_run_given_by_path_is_never_resumed(runs):
    version_0 = RUNS / "version_0"
    line = refused(runs, f"--ckpt_path={version_0 / 'checkpoints' / 'last.ckpt'}")
    assert f"its run finished ({version_0 / 'result.json'})" in line


def test_a_resume_with_another_config_is_refused(runs):
    line = refused(runs, "--model.lr=0.02", "--ckpt_path=last")
    assert line == (
        f"dalib: error: --ckpt_path last: no unfinished run of this config under {RUNS} "
        f"(version_0 finished ({RUNS / 'version_0' / 'result.json'}); version_1 differs in "
        "model.lr (0.01 there, 0.02 here)); start without --ckpt_path, or give a checkpoint file"
    )
    line = refused(runs, "--trainer.max_epochs=5", "--ckpt_path=last")
    assert "version_1 differs in trainer.max_epochs (4 there, 5 here)" in line
    checkpoint = RUNS / "version_1" / "checkpoints" / "last.ckpt"
    line = refused(runs, "--seed_everything=1", f"--ckpt_path={checkpoint}")
    assert "not a run of this config (version_1 differs in seed_everything (0 there, 1 here))" in (
        line
    )


def test_where_the_run_executes_is_not_its_identity():
    saved = {"model": {"lr": 0.01}, "trainer": {"devices": "auto", "max_epochs": 4}}
    current = {"model": {"lr": 0.01}, "trainer": {"devices": 2, "max_epochs": 4}, "ckpt_path": "x"}
    assert differences(saved, current) == []
    current["trainer"]["max_epochs"] = 6
    assert differences(saved, current) == ["trainer.max_epochs (4 there, 6 here)"]


def test_set_aside_and_join_give_the_same_files_when_repeated_after_a_kill(tmp_path):
    """Rows from the checkpoint's step on are re-trained, so dropped; a kill between any two
    file operations leaves files that the next call completes."""
    header = "epoch,loss,step\n"
    (tmp_path / "metrics.csv").write_text(header + "0,0.9,2\n0,0.8,5\n0,0.7,8\n")
    run_history.set_aside(tmp_path, global_step=5)  # the checkpoint after 5 steps
    history = (tmp_path / run_history.HISTORY_FILE).read_text()
    assert history == header + "0,0.9,2\n"
    assert not (tmp_path / "metrics.csv").exists()
    (tmp_path / "metrics.csv").write_text("epoch,loss,step,val\n0,0.7,5,\n0,0.6,8,\n0,,8,0.5\n")
    run_history.set_aside(tmp_path, global_step=9)  # killed again, checkpoint after 9 steps
    (tmp_path / "metrics.csv").write_text("epoch,loss,step,val\n1,0.4,11,\n")
    run_history.join(tmp_path)
    joined = (tmp_path / "metrics.csv").read_text()
    assert joined == "epoch,loss,step,val\n0,0.9,2,\n0,0.7,5,\n0,0.6,8,\n0,,8,0.5\n1,0.4,11,\n"
    (tmp_path / run_history.HISTORY_FILE).write_text(history)  # as if killed before the unlink
    run_history.join(tmp_path)
    assert (tmp_path / "metrics.csv").read_text() == joined


def test_killed_twice_the_resumed_run_keeps_every_row_and_curve(runs, tmp_path):
    whole = runs / RUNS / "version_0"
    # Killed after 22 steps: last.ckpt at step 20, and the rows of steps 20 (the 21st batch)
    # logged; that batch is trained again, so its earlier row is dropped. Then at 32 (30, 30).
    assert dalib(tmp_path, kill_at=22).returncode == -signal.SIGKILL
    resumed = dalib(tmp_path, "--ckpt_path=last", kill_at=32)
    assert resumed.returncode == -signal.SIGKILL, resumed.stderr
    resumed = dalib(tmp_path, "--ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr
    run = tmp_path / RUNS / "version_0"
    assert [p.name for p in run.parent.iterdir()] == ["version_0"]
    assert sorted(p.name for p in run.iterdir() if p.suffix == ".csv") == ["metrics.csv"]

    assert metrics_rows(run) == metrics_rows(whole)  # header and every row, bit for bit

    record = json.loads((run / "result.json").read_text())
    expected = json.loads((whole / "result.json").read_text())
    assert record["metrics"] == expected["metrics"] and record["steps"] == 48
    assert [(r["global_step"], r["epoch"]) for r in record["resumed_from"]] == [(20, 1), (30, 2)]
    assert all(r["checkpoint"].endswith("version_0/checkpoints/last.ckpt") and r["trained_s"] > 0
               for r in record["resumed_from"])  # fmt: skip
    assert expected["resumed_from"] == []

    report = subprocess.run(
        [sys.executable, "-m", "dalib.cli", "report", str(run), "--plots", "--out", "report"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "report" / "learning_curves.png").is_file()
    for metric in ("val/target_acc", "train/loss"):  # what the curves are drawn from
        assert read_curve(run, metric) == read_curve(whole, metric)
    assert sorted(read_curve(run, "val/target_acc")) == [11, 23, 35, 47]
    assert sorted(read_curve(run, "train/loss")) == list(range(48))

    line = refused(tmp_path, "--ckpt_path=last")  # now finished, it is never resumed again
    assert f"version_0 finished ({RUNS / 'version_0' / 'result.json'})" in line
