"""A real ``dalib fit`` killed with SIGKILL mid-training resumes to the uninterrupted result."""

import json
import os
import signal
import subprocess
import sys
import time

import torch

from tests.conftest import REPO, TOY

ARGS = ["--trainer.max_epochs=8", "--trainer.deterministic=true", "--model.selection=dev",
        "--trainer.enable_progress_bar=false", "--data.iterations_per_epoch=30"]  # fmt: skip


def fit(cwd, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "dalib.cli", "fit", "-c", str(TOY / "dann.yaml"), *ARGS]
    return subprocess.Popen([*command, *extra], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def record(cwd) -> dict:
    data = json.loads((cwd / "runs" / "toy" / "dann" / "version_0" / "result.json").read_text())
    return {k: data[k] for k in ("target_acc", "selections", "metrics", "a_distance", "steps")}


def test_sigkill_then_ckpt_path_last_ends_as_an_uninterrupted_run(tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    whole.mkdir(), cut.mkdir()
    assert fit(whole).wait(timeout=300) == 0

    process = fit(cut)
    last = cut / "runs" / "toy" / "dann" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while time.time() < deadline:  # kill once a checkpoint of epoch >= 2 exists
        try:
            if torch.load(last, weights_only=True)["epoch"] >= 2:
                break
        except (FileNotFoundError, RuntimeError, EOFError):
            pass
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_epoch = torch.load(last, weights_only=True)["epoch"]
    assert 2 <= killed_epoch < 7, "the kill must land mid-training"
    assert not (last.parent.parent / "result.json").exists()

    resumed = fit(cut, "--ckpt_path=last")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert "Restored all states from the checkpoint" in out
    assert record(cut) == record(whole)
    assert [p.name for p in (cut / "runs" / "toy" / "dann").iterdir()] == ["version_0"]
