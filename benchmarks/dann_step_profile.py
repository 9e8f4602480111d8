"""Where a DANN training step's CPU time goes: Office-Caltech10 SURF A→W, the shipped config.

Runs ``dalib fit`` of ``experiments/office_caltech/{protocol,methods/dann}.yaml`` in this process
(2 epochs of 50 steps, no logger, no checkpoints, one torch thread) with Python's profiler on
thread CPU time from the first to the last training batch, and groups each function's own time
by where its code lives: torch's operators (C++), torch's Python, Lightning, torchmetrics, dalib,
the rest.
The profiler's per-call overhead inflates the Python rows; the shares say where to look, the
per-step total is an upper bound.

Usage: ``DALIB_DATA=../shared/data python benchmarks/dann_step_profile.py`` writes
``benchmarks/results/dann_step_profile.{md,json}``.
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from dalib.cli import main as dalib_main

REPO = Path(__file__).resolve().parents[1]
EPOCHS, STEPS = 2, 50
PROFILER = cProfile.Profile(timer=time.thread_time)


class StepProfiler(pl.Callback):
    """Profiles from the first training batch's start to the last one's end."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == 0:
            PROFILER.enable()

    def on_train_end(self, trainer, pl_module) -> None:
        PROFILER.disable()


#: Functions whose cumulative time (with everything they call) is reported, by file and name.
PHASES = {
    "training step: forward + losses (dalib/module.py training_step)": (
        "dalib/module.py",
        "training_step",
    ),
    "backward (torch run_backward)": (
        "~",
        "<method 'run_backward' of 'torch._C._EngineBase' objects>",
    ),
    "optimiser step (SGD step; it runs Lightning's closure: forward, losses, backward)": (
        "torch/optim/sgd.py",
        "step",
    ),
    "validation loop (Lightning; includes the selection scores)": (
        "pytorch_lightning/loops/evaluation_loop.py",
        "run",
    ),
    "selection scores at each validation (dalib SelectionTracker)": (
        "dalib/selection/tracker.py",
        "on_validation_epoch_end",
    ),
}


def where(filename: str, name: str) -> str:
    if filename == "~":
        if "sklearn" in name or "scipy" in name:
            return "scikit-learn / scipy"
        return "torch operators (C++)" if "torch" in name else "Python builtins"
    for marker, group in [
        ("/sklearn/", "scikit-learn / scipy"),
        ("/scipy/", "scikit-learn / scipy"),
        ("/dalib/", "dalib"),
        ("/pytorch_lightning/", "Lightning"),
        ("/lightning_fabric/", "Lightning"),
        ("/lightning_utilities/", "Lightning"),
        ("/torchmetrics/", "torchmetrics"),
        ("/torch/", "torch (Python)"),
    ]:
        if marker in filename:
            return group
    return "other Python"


def main() -> None:
    torch.set_num_threads(1)
    os.chdir(tempfile.mkdtemp())  # dalib fit writes its result.json into the working folder
    dalib_main(
        [
            "fit",
            "-c",
            str(REPO / "experiments/office_caltech/protocol.yaml"),
            "-c",
            str(REPO / "experiments/office_caltech/methods/dann.yaml"),
            f"--trainer.max_epochs={EPOCHS}",
            "--trainer.logger=false",
            "--trainer.enable_checkpointing=false",
            "--trainer.enable_progress_bar=false",
            "--trainer.callbacks+=__main__.StepProfiler",
        ]
    )
    stats = pstats.Stats(PROFILER)
    groups: dict[str, float] = {}
    top: list[tuple[float, str]] = []
    overall: list[tuple[float, str]] = []
    phases = dict.fromkeys(PHASES, 0.0)
    for (filename, line, name), (_, _, own, cumulative, _) in stats.stats.items():
        for phase, (suffix, function) in PHASES.items():
            if filename.endswith(suffix) and name == function:
                phases[phase] += cumulative
        group = where(filename, name)
        groups[group] = groups.get(group, 0.0) + own
        label = f"{filename.split('site-packages/')[-1]}:{line} {name}"
        overall.append((own, label))
        if group == "dalib":
            top.append((own, f"{Path(filename).relative_to(REPO)}:{line} {name}"))
    total = sum(groups.values())
    steps = EPOCHS * STEPS
    result = {
        "command": "DALIB_DATA=../shared/data python benchmarks/dann_step_profile.py",
        "torch": torch.__version__,
        "steps": steps,
        "cpu_ms_per_step": 1e3 * total / steps,
        "phases_ms_per_step": {k: 1e3 * t / steps for k, t in phases.items()},
        "share": {g: t / total for g, t in sorted(groups.items(), key=lambda kv: -kv[1])},
        "dalib_functions_ms_per_step": {k: 1e3 * t / steps for t, k in sorted(top)[-10:][::-1]},
        "functions_ms_per_step": {k: 1e3 * t / steps for t, k in sorted(overall)[-15:][::-1]},
    }
    out = REPO / "benchmarks" / "results"
    (out / "dann_step_profile.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "# A DANN training step's CPU time, by where the code lives",
        "",
        f"Command: `{result['command']}` (torch {torch.__version__}, one thread). Office-Caltech10 "
        "SURF A→W with `experiments/office_caltech/{protocol,methods/dann}.yaml`, "
        f"{steps} steps profiled "
        "(cProfile on thread CPU time, which inflates Python code): "
        f"{result['cpu_ms_per_step']:.1f} ms per step including validation between epochs. "
        "Measured on a loaded 2-core machine.",
        "",
        "| phase (cumulative, with what it calls) | ms per step |",
        "|---|---:|",
        *(f"| {k} | {v:.2f} |" for k, v in result["phases_ms_per_step"].items()),
        "",
        "| where the code lives (own time) | share of CPU time |",
        "|---|---:|",
        *(f"| {g} | {100 * s:.1f}% |" for g, s in result["share"].items()),
        "",
        "dalib's own functions (own time, ms per step):",
        "",
        "| function | ms |",
        "|---|---:|",
        *(f"| `{k}` | {v:.2f} |" for k, v in result["dalib_functions_ms_per_step"].items()),
        "",
        "All functions, the 15 with the most own time (ms per step):",
        "",
        "| function | ms |",
        "|---|---:|",
        *(f"| `{k}` | {v:.2f} |" for k, v in result["functions_ms_per_step"].items()),
    ]
    (out / "dann_step_profile.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
