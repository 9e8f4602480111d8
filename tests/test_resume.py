"""A real ``dalib fit`` killed with SIGKILL mid-training resumes to the uninterrupted result."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch.utils.data import DataLoader, RandomSampler, WeightedRandomSampler

from dalib.errors import DalibError
from dalib.resume import ResumableSampler, restart_prefetching
from tests.conftest import REPO, TOY

ARGS = ["--trainer.max_epochs=8", "--trainer.deterministic=true", "--model.selection=dev",
        "--trainer.enable_progress_bar=false", "--data.iterations_per_epoch=30"]  # fmt: skip


def fit(cwd, *extra: str, config: str = "dann") -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "dalib.cli", "fit", "-c", str(TOY / f"{config}.yaml"), *ARGS]
    return subprocess.Popen([*command, *extra], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def record(cwd, config: str = "dann") -> dict:
    data = json.loads((cwd / "runs" / "toy" / config / "version_0" / "result.json").read_text())
    return {k: data[k] for k in ("target_acc", "selections", "metrics", "a_distance", "steps")}


def test_resumable_sampler_replays_its_epoch_after_the_used_samples():
    for plain in (
        lambda: RandomSampler(range(10), num_samples=25),
        lambda: WeightedRandomSampler(torch.arange(1.0, 11.0), 25),
    ):
        torch.manual_seed(0)
        expected = list(plain())
        torch.manual_seed(0)
        sampler = ResumableSampler(plain())
        assert list(sampler) == expected  # wrapping changes neither the order nor the draws
        after = torch.get_rng_state()
        sampler.resume(sampler.rng_state, skip=7)
        assert list(sampler) == expected[7:]
        assert torch.equal(torch.get_rng_state(), after)  # the replay leaves the generator be


def kill_when(process: subprocess.Popen, last, ready) -> dict:
    """SIGKILL ``process`` once its ``last`` checkpoint satisfies ``ready``; that checkpoint."""
    deadline = time.time() + 240
    while time.time() < deadline:
        try:
            if ready(torch.load(last, weights_only=True)):
                break
        except (FileNotFoundError, RuntimeError, EOFError, pickle.UnpicklingError):
            pass
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return torch.load(last, weights_only=True)


@pytest.mark.slow
def test_sigkill_then_ckpt_path_last_ends_as_an_uninterrupted_run(tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    whole.mkdir(), cut.mkdir()
    assert fit(whole).wait(timeout=300) == 0

    last = cut / "runs" / "toy" / "dann" / "version_0" / "checkpoints" / "last.ckpt"
    killed_epoch = kill_when(fit(cut), last, lambda ckpt: ckpt["epoch"] >= 2)["epoch"]
    assert 2 <= killed_epoch < 7, "the kill must land mid-training"
    assert not (last.parent.parent / "result.json").exists()

    resumed = fit(cut, "--ckpt_path=last")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert "Restored all states from the checkpoint" in out
    assert record(cut) == record(whole)
    assert [p.name for p in (cut / "runs" / "toy" / "dann").iterdir()] == ["version_0"]


@pytest.mark.slow
def test_sigkill_inside_an_epoch_resumes_at_the_same_batch(tmp_path):
    """``checkpoint_every_n_steps`` writes ``last.ckpt`` inside epochs, with the data position:
    the resumed run trains on the rest of that epoch's batches, in order, with the same dropout
    and schedules, and ends with the uninterrupted run's numbers."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    whole.mkdir(), cut.mkdir()
    every = "--model.checkpoint_every_n_steps=7"  # 30 steps an epoch: never at an epoch's end
    assert fit(whole, every).wait(timeout=300) == 0

    last = cut / "runs" / "toy" / "dann" / "version_0" / "checkpoints" / "last.ckpt"
    killed = kill_when(fit(cut, every), last, lambda ckpt: ckpt["global_step"] >= 70)
    assert killed["global_step"] % 30 != 0, "the checkpoint must lie inside an epoch"
    assert killed["global_step"] < 8 * 30, "the kill must land mid-training"
    assert (
        killed["callbacks"]["RandomStates"]["data"]["skips"]
        == [32 * (killed["global_step"] % 30)] * 2
    )
    assert not (last.parent.parent / "result.json").exists()

    resumed = fit(cut, every, "--ckpt_path=last")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert record(cut) == record(whole)


@pytest.mark.slow
def test_sigkill_inside_an_epoch_resumes_exactly_with_loader_workers(tmp_path):
    """With worker processes the training iterator starts drawing its epoch before the resume
    is applied, and the first evaluation of the resumed process creates its persistent workers:
    the run must still end with the uninterrupted run's steps, metrics and selections (with
    dropout and FixMatch's augmented target views, whose seeds are drawn in the main process)."""
    views = ["--data.target_views={}", "--model.target_loss={name: fixmatch, threshold: 0.2}"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    whole.mkdir(), cut.mkdir()
    args = ['--data.dataset={"name": "tests.tiny_images:tiny_digits"}', "--data.batch_size=16",
            "--data.selection_samples=32", "--model.checkpoint_every_n_steps=7",
            "--trainer.max_epochs=4", "--data.num_workers=1", *views,
            "--model.backbone={name: mlp, hidden_dims: [64, 64], dropout: 0.2}"]  # fmt: skip
    assert fit(whole, *args, config="source_only").wait(timeout=300) == 0
    last = cut / "runs" / "toy" / "source_only" / "version_0" / "checkpoints" / "last.ckpt"
    killed = kill_when(
        fit(cut, *args, config="source_only"), last, lambda ckpt: ckpt["global_step"] >= 40
    )
    assert killed["global_step"] % 30 != 0, "the checkpoint must lie inside an epoch"
    resumed = fit(cut, *args, "--ckpt_path=last", config="source_only")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert record(cut, "source_only") == record(whole, "source_only")


def test_resuming_mid_epoch_refuses_workers_that_do_not_persist():
    loader = DataLoader(range(8), num_workers=1, persistent_workers=False)
    with pytest.raises(DalibError, match="persistent_workers=True"):
        restart_prefetching(loader)
