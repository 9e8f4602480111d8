"""What exact resumption needs beyond Lightning's checkpoint: random states, and finding `last`.

Lightning's checkpoint holds the model, optimiser, LR scheduler and loop progress (so the λ/γ
schedules, driven by the global step, continue where they were). ``RandomStates`` adds the
Python, NumPy and torch generators, so the data order and dropout after a resume are those of an
uninterrupted run. ``find_last_checkpoint`` resolves ``--ckpt_path last`` to the newest
``last.ckpt`` of the config's run folder, so the resumed run continues in that folder.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_lightning.callbacks import Callback

from dalib.errors import DalibError


def numpy_state() -> tuple:
    """NumPy's global generator state in plain Python types (checkpoints load weights-only)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return kind, keys.tolist(), int(position), int(has_gauss), float(cached)


class RandomStates(Callback):
    """Saves the random generators' states in every checkpoint and restores them on resume."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "python": random.getstate(),
            "numpy": numpy_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
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
