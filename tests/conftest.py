"""Shared helpers: run the real ``dalib`` command in-process, quietly, into a temporary folder."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from dalib.cli import main
from tests.local_http import server  # noqa: F401 - the local HTTP server fixture

# The suite's models are tiny: one thread is as fast, and it keeps the suite from slowing down
# by orders of magnitude when another process shares the CPU (OpenMP threads spin-waiting).
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "experiments" / "toy"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A ``ddp`` test is also ``slow`` (it spawns processes); a ``gpu`` test is skipped, with
    the reason, where no CUDA device is available."""
    requires_cuda = pytest.mark.skip(reason="requires CUDA")
    for item in items:
        if item.get_closest_marker("ddp") is not None:
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("gpu") is not None and not torch.cuda.is_available():
            item.add_marker(requires_cuda)


def run_dalib(args: list[str], save_dir: Path) -> None:
    """``dalib <args>`` with logs under ``save_dir`` and no progress bar."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(
            [
                *args,
                "--trainer.enable_progress_bar=false",
                "--trainer.enable_model_summary=false",
                f"--trainer.logger.init_args.save_dir={save_dir}",
            ]
        )


def only_result(save_dir: Path) -> dict:
    """The one ``result.json`` under ``save_dir``."""
    (path,) = save_dir.rglob("result.json")
    return json.loads(path.read_text())


@pytest.fixture
def fit_toy(tmp_path):
    """Fit ``experiments/toy/<method>.yaml`` with extra overrides; return its result record."""

    def fit(method: str, *overrides: str) -> dict:
        save_dir = tmp_path / method
        run_dalib(["fit", "-c", str(TOY / f"{method}.yaml"), *overrides], save_dir)
        return only_result(save_dir)

    return fit


SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data(monkeypatch) -> Path:
    """``../shared/data`` as the data folder (``$DALIB_DATA``); skips where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not beside this checkout")
    monkeypatch.setenv("DALIB_DATA", str(SHARED_DATA))
    return SHARED_DATA


def quiet_fit(module, data, callbacks=(), ckpt_path=None, **trainer_options) -> pl.Trainer:
    """Fit ``module`` on ``data`` with a silent trainer: no logger, checkpoints or validation
    unless ``trainer_options`` say otherwise."""
    options = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "limit_val_batches": 0,
        **trainer_options,
    }
    trainer = pl.Trainer(callbacks=list(callbacks), **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, data, ckpt_path=ckpt_path)
    return trainer
