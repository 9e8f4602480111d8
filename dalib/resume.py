"""What exact resumption needs beyond Lightning's checkpoint.

Lightning's checkpoint holds the model, optimiser, LR scheduler and loop progress (so the λ/γ
schedules, driven by the global step, continue where they were). ``RandomStates`` adds the
Python, NumPy and torch generators, so the data order and dropout after a resume are those of an
uninterrupted run, and, in a checkpoint written in the middle of an epoch, the position in the
epoch's data: the generator state each ``ResumableSampler`` drew its order from and the number
of batches already trained on (from the ``batch_idx`` of its own hook). (Lightning's
own resumable loaders cannot serve here: it builds the training iterator before it restores the
loops, because the LR schedule asks for the number of steps.) It also keeps the list of the
run's resumes (``resumed_from``) in the checkpoint, for the run record. Which run
``--ckpt_path`` continues is ``dalib.run_identity``'s job; keeping the metrics history across
resumes ``dalib.run_history``'s.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch.utils.data import DataLoader, Sampler

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


def data_position(trainer: pl.Trainer, batches: int) -> dict[str, Any] | None:
    """Where the current epoch's training data stands after ``batches`` of its batches, when a
    checkpoint is written inside it: each ``ResumableSampler``'s generator state and the
    samples already trained on."""
    if trainer.train_dataloader is None or not 0 < batches < trainer.num_training_batches:
        return None
    loaders = [dl for dl in training_loaders(trainer) if isinstance(dl.sampler, ResumableSampler)]
    return {
        "rng_states": [dl.sampler.rng_state for dl in loaders],
        "skips": [batches * dl.batch_size for dl in loaders],
    }


class RandomStates(Callback):
    """Saves the random generators' states in every checkpoint and restores them on resume; in
    the middle of an epoch, also the position in its data (see the module's docstring).

    ``resumed_from`` lists the resumes that led to this run's current state, oldest first: the
    checkpoint, its global step and epoch, how long the segment that wrote it had trained
    (``trained_s``) and when training resumed from it (``resumed_at``, UTC).
    """

    def __init__(self) -> None:
        self._trainer: pl.Trainer | None = None
        self._restored: dict[str, Any] | None = None
        self._batches = 0  # batches trained in the current epoch
        self._started = time.perf_counter()
        self.resumed_from: list[dict[str, Any]] = []

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
            "data": data_position(trainer, self._batches) if fitting else None,
            "resumed_from": self.resumed_from,
            "trained_s": round(time.perf_counter() - self._started, 3),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_random_states(state_dict)
        self._restored = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Resume: note it in ``resumed_from``; in the middle of an epoch, replay the epoch's
        order from where it stopped. Lightning drew from the generators when it built the data
        iterator after the restore, so set them again."""
        self._started = time.perf_counter()
        if self._restored is None:
            return
        state, self._restored = self._restored, None
        self.resumed_from = [
            *state.get("resumed_from", []),
            {
                "checkpoint": str(trainer.ckpt_path),
                "global_step": trainer.global_step,
                "epoch": trainer.current_epoch,
                "trained_s": state.get("trained_s"),
                "resumed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
        ]
        position = state["data"]
        if not position:
            return
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
            restart_prefetching(loader)
        set_random_states(state)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        """Count the epoch's batches: ``batch_idx`` counts on after a mid-epoch resume."""
        self._batches = batch_idx + 1


def restart_prefetching(loader: DataLoader) -> None:
    """Make a loader with worker processes draw its epoch again, from its resumed sampler.

    Lightning creates the training iterator before ``on_train_start``, and a worker iterator
    takes indices from the sampler as it is created: the resumed epoch would run on a fresh
    order and the next epoch would skip the batches instead (losing them). With
    ``persistent_workers``, ``iter(loader)`` restarts the one iterator that Lightning holds
    (``DataLoader.__iter__``); in-process loaders draw nothing until their first batch.
    """
    if loader.num_workers == 0:
        return
    if not loader.persistent_workers:
        raise DalibError(
            "resuming in the middle of an epoch with loader workers needs "
            "persistent_workers=True (dalib's data modules set it)"
        )
    iter(loader)


def set_random_states(state_dict: dict[str, Any]) -> None:
    """Set the Python, NumPy, torch (and CUDA) generators to a ``RandomStates`` checkpoint's."""
    random.setstate(state_dict["python"])
    kind, keys, *rest = state_dict["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state_dict["torch"])
    if state_dict["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state_dict["cuda"])
