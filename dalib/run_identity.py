"""Which run ``dalib fit --ckpt_path`` continues: only an unfinished run of the same config.

A run folder (``save_dir/name/version_N``, or ``save_dir/name`` itself with an empty version, as
``dalib sweep`` lays its runs out) holds Lightning's ``config.yaml`` (the resolved
config it was started with), its checkpoints, and, once it finished, ``result.json``. A resume
continues the run in its own folder, so it must be the run the user means: ``last`` takes the
newest ``last.ckpt`` among the unfinished runs of this config; a checkpoint file given by path
must belong to an unfinished run (and, in this config's run folder, to a run of this config).
Anything else stops with one line naming each candidate and why it was passed over, before
anything is written (Lightning rewrites ``config.yaml`` and its CSV logger deletes
``metrics.csv`` when a run starts). A finished run is never modified.

Two configs are the same run when they agree on every key but ``IGNORED``: the checkpoint path,
where the run executes (accelerator, devices, nodes, strategy), how it shows progress, and the
logger (the run folder itself is the run's identity). Everything else, ``max_epochs``, ``seed``
and data keys included, decides the numbers, and a changed value is a new run.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from dalib.errors import DalibError
from dalib.records import RESULT_FILE

CONFIG_FILE = "config.yaml"  # Lightning's SaveConfigCallback default
IGNORED = (
    "ckpt_path",
    "reference",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "trainer.logger",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.default_root_dir",
    "trainer.profiler",
)


@dataclass(frozen=True)
class Resume:
    """The checkpoint to resume from, its run folder and its global step."""

    checkpoint: Path
    run_dir: Path
    global_step: int


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``{"model.lr": 0.01, ...}``; lists and empty mappings stay values."""
    if not isinstance(config, dict) or not config:
        return {prefix: config}
    flat: dict[str, Any] = {}
    for key, value in config.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The keys outside ``IGNORED`` whose values differ, as ``key (<saved> there, <current>
    here)``; a key missing on one side counts as null there."""
    a, b = flatten(saved), flatten(current)
    keys = [
        k
        for k in sorted(a.keys() | b.keys())
        if not any(k == p or k.startswith(f"{p}.") for p in IGNORED) and a.get(k) != b.get(k)
    ]
    return [f"{k} ({json.dumps(a.get(k))} there, {json.dumps(b.get(k))} here)" for k in keys]


def why_not(run_dir: Path, config: dict[str, Any], checkpoint: Path) -> str | None:
    """Why ``run_dir`` cannot be resumed from ``checkpoint`` with ``config``; None if it can."""
    if (run_dir / RESULT_FILE).is_file():
        return f"{run_dir.name} finished ({run_dir / RESULT_FILE})"
    if not checkpoint.is_file():
        return f"{run_dir.name} has no {checkpoint.relative_to(run_dir)}"
    saved = run_dir / CONFIG_FILE
    if not saved.is_file():
        return f"{run_dir.name} has no {CONFIG_FILE} to compare with"
    try:
        diffs = differences(yaml.safe_load(saved.read_text()) or {}, config)
    except yaml.YAMLError:
        return f"{run_dir.name} has a {CONFIG_FILE} that is not YAML"
    if diffs:
        more = f" and {len(diffs) - 3} more keys" if len(diffs) > 3 else ""
        return f"{run_dir.name} differs in {', '.join(diffs[:3])}{more}"
    return None


def global_step(checkpoint: Path) -> int:
    """The checkpoint's global step, read without loading its tensors into memory."""
    try:
        return int(torch.load(checkpoint, weights_only=True, mmap=True)["global_step"])
    except (OSError, RuntimeError, EOFError, KeyError, pickle.UnpicklingError) as error:
        raise DalibError(f"cannot read the global step of {checkpoint}: {error}") from None


def resume_target(ckpt_path: str, run_root: Path | None, config: dict[str, Any]) -> Resume | None:
    """The run ``fit --ckpt_path ckpt_path`` continues, or None where Lightning's own handling
    applies (a checkpoint outside any run folder, or outside ``run_root``: a new run folder).

    ``run_root`` is the config's ``save_dir/name`` (None if the logger has none); ``config`` the
    resolved fit config as plain data (what ``config.yaml`` holds). Raises ``DalibError`` naming
    the candidates when no run fits.
    """
    if ckpt_path == "last":
        if run_root is None:
            return None
        runs = sorted(p for p in run_root.glob("*/") if p.is_dir()) if run_root.is_dir() else []
        reasons = {run: why_not(run, config, run / "checkpoints" / "last.ckpt") for run in runs}
        fitting = [run for run, reason in reasons.items() if reason is None]
        if not fitting:
            found = "; ".join(r for r in reasons.values() if r) or "no run folders"
            raise DalibError(
                f"--ckpt_path last: no unfinished run of this config under {run_root} ({found}); "
                "start without --ckpt_path, or give a checkpoint file"
            )
        run = max(fitting, key=lambda r: (r / "checkpoints" / "last.ckpt").stat().st_mtime)
        checkpoint = run / "checkpoints" / "last.ckpt"
        return Resume(checkpoint, run, global_step(checkpoint))
    checkpoint = Path(ckpt_path)
    if not checkpoint.is_file() or checkpoint.parent.name != "checkpoints":
        return None
    run = checkpoint.parent.parent
    if (run / RESULT_FILE).is_file():
        raise DalibError(
            f"--ckpt_path {ckpt_path}: its run finished ({run / RESULT_FILE}) and a finished run "
            "is never modified; start a new run, or use model.init_from to start from its weights"
        )
    # the run folder is save_dir/name/version, or save_dir/name itself with version "" (a sweep's)
    if run_root is None or run_root.resolve() not in (run.resolve(), run.resolve().parent):
        return None  # another config's run: Lightning resumes into a new run folder
    reason = why_not(run, config, checkpoint)
    if reason is not None:
        raise DalibError(
            f"--ckpt_path {ckpt_path}: not a run of this config ({reason}); resume with that "
            "run's config, or start without --ckpt_path"
        )
    return Resume(checkpoint, run, global_step(checkpoint))
