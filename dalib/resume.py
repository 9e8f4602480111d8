"""What exact resumption needs beyond Lightning's checkpoint: random states, and finding `last`.

Lightning's checkpoint holds the model, optimiser, LR scheduler and loop progress (so the λ/γ
schedules, driven by the global step, continue where they were). ``RandomStates`` adds the
Python, NumPy and torch generators, so the data order and dropout after a resume are those of an
uninterrupted run, and, in a checkpoint written in the middle of an epoch, the position in the
epoch's data: the generator state each ``ResumableSampler`` drew its order from and the number
of batches already trained on. (Lightning's own resumable loaders cannot serve here: it builds
the training iterator before it restores the loops, because the LR schedule asks for the
number of steps.) ``find_last_checkpoint`` resolves ``--ckpt_path last`` to the newest
``last.ckpt`` of the config's run folder, so the resumed run continues in that folder.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch.utils.data import Sampler

from dalib.errors import DalibError


def numpy_state() -> tuple:
    """NumPy's global generator state in plain Python types (checkpoints load weights-only)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return kind, keys.tolist(), int(position), int(has_gauss), float(cached)


class ResumableSampler(Sampler[int]):
    """A sampler that draws its epoch's order from torch's global generator as its iteration
    starts (``RandomSampler``, ``WeightedRandomSampler``), made replayable.

    It keeps the generator state the order was drawn from (``rng_state``); ``resume(state,
    skip)`` makes the next iteration draw the same order from that state, without touching the
    global generator, and start after its first ``skip`` indices.
    """

    def __init__(self, sampler: Sampler[int]) -> None:
        self.sampler = sampler
        self.rng_state: torch.Tensor | None = None
        self._resume: tuple[torch.Tensor, int] | None = None

    def __len__(self) -> int:
        return len(self.sampler)

    def resume(self, rng_state: torch.Tensor, skip: int) -> None:
        self._resume = rng_state, skip

    def __iter__(self) -> Iterator[int]:
        if self._resume is None:
            self.rng_state = torch.get_rng_state()
            yield from self.sampler
            return
        (self.rng_state, skip), self._resume = self._resume, None
        current = torch.get_rng_state()
        torch.set_rng_state(self.rng_state)
        indices = iter(self.sampler)
        first = list(itertools.islice(indices, 1))  # the sampler draws its order here
        torch.set_rng_state(current)
        yield from itertools.islice(itertools.chain(first, indices), skip, None)


def training_loaders(trainer: pl.Trainer) -> list:
    """The training data loaders (one per domain for ``DomainDataModule``)."""
    loaders = trainer.train_dataloader
    if isinstance(loaders, Mapping):
        return list(loaders.values())
    return list(loaders) if isinstance(loaders, list | tuple) else [loaders]


def data_position(trainer: pl.Trainer) -> dict[str, Any] | None:
    """Where the current epoch's training data stands, when a checkpoint is written inside it:
    each ``ResumableSampler``'s generator state and the samples already trained on."""
    done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
    if trainer.train_dataloader is None or not 0 < done < trainer.num_training_batches:
        return None
    loaders = [dl for dl in training_loaders(trainer) if isinstance(dl.sampler, ResumableSampler)]
    return {
        "rng_states": [dl.sampler.rng_state for dl in loaders],
        "skips": [done * dl.batch_size for dl in loaders],
    }


class RandomStates(Callback):
    """Saves the random generators' states in every checkpoint and restores them on resume; in
    the middle of an epoch, also the position in its data (see the module's docstring)."""

    def __init__(self) -> None:
        self._trainer: pl.Trainer | None = None
        self._resume: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        trainer = self._trainer
        fitting = trainer is not None and trainer.training
        return {
            "python": random.getstate(),
            "numpy": numpy_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "data": data_position(trainer) if fitting else None,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_random_states(state_dict)
        self._resume = state_dict if state_dict.get("data") else None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Mid-epoch resume: replay the epoch's order from where it stopped. Lightning drew from
        the generators when it built the data iterator after the restore, so set them again."""
        if self._resume is None:
            return
        state, self._resume = self._resume, None
        position = state["data"]
        loaders = [
            dl for dl in training_loaders(trainer) if isinstance(dl.sampler, ResumableSampler)
        ]
        if len(loaders) != len(position["skips"]):
            raise DalibError(
                f"the checkpoint holds the data position of {len(position['skips'])} training "
                f"loaders, this run has {len(loaders)}; resume with the same data config"
            )
        for loader, rng_state, skip in zip(
            loaders, position["rng_states"], position["skips"], strict=True
        ):
            loader.sampler.resume(rng_state, skip)
        set_random_states(state)


def set_random_states(state_dict: dict[str, Any]) -> None:
    """Set the Python, NumPy, torch (and CUDA) generators to a ``RandomStates`` checkpoint's."""
    random.setstate(state_dict["python"])
    kind, keys, *rest = state_dict["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state_dict["torch"])
    if state_dict["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state_dict["cuda"])


def find_last_checkpoint(run_root: Path) -> tuple[Path, str]:
    """The newest ``<run_root>/<version>/checkpoints/last.ckpt`` and its version folder name."""
    candidates = sorted(run_root.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise DalibError(
            f"--ckpt_path last: no last.ckpt under {run_root}/*/checkpoints; start the run "
            "without --ckpt_path, or give the checkpoint file"
        )
    return candidates[-1], candidates[-1].parent.parent.name
