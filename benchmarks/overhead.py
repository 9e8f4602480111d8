"""dalib's cost per training step: ``dalib fit`` vs the same training in Lightning alone and in
plain PyTorch.

Same network (LeNet + bottleneck, and for DANN the 1024-1024 discriminator), same batches
(MNIST→USPS from ``$DALIB_DATA``), same optimiser and schedules, same number of threads, in this
one process, interleaved: for each repeat, the bare loop of ``benchmarks/bare_loop.py``, the
same training as a minimal LightningModule (``benchmarks/lightning_loop.py``: Lightning's own
share) and ``dalib fit`` with the committed config, in that order in even repeats and in the
reverse order in odd ones (progress bar, logging, checkpointing and
validation as a user gets them). Two settings:

- ``lenet-32``: the convolutional LeNet, a 500-d bottleneck, batch 32 + 32 (the setting of
  ``benchmarks/sweeps/digits_cpu.yaml``): a 12 ms step, where a fixed cost per step shows most.
- ``protocol-128``: the digits configs as committed (the Transfer-Learning-Library protocol:
  ``lenet_fc``, a 256-d bottleneck, batch 128 + 128).

A step is the time from the start of one training step to the start of the next (data fetch
included), in the process's CPU time (all threads; on a shared machine other programs inflate
it much less than wall time) and in wall time. Each contender's figure per run is its median
step after the warm-up, and its mean step, which also counts the occasional slower steps
(dalib logs every ``log_every_n_steps`` = 50 steps); dalib's come from ``result.json``
(``train_step_cpu_ms``, ``train_step_cpu_mean_ms``, ...). The yardstick is Lightning alone
(target: dalib / Lightning alone ≤ 1.03x in median CPU time per step, in both settings); the
table gives that ratio and dalib / bare loop per repeat: median, min and max over the repeats.

The same work per step: both fetch a source and a target batch in source-only too (dalib's
loader pairs the domains; the target batch enters neither objective). Beyond the bare loop,
dalib checks the loss for NaN and keeps the training accuracy's predictions at every step.

Peak memory: the process's largest resident set from the start of each run's training (the
kernel's count is reset there, so earlier runs and the data loading do not count): the bare
loop's over its steps, dalib's ``peak_memory_mib`` (its training and the validation after it).

Usage: ``DALIB_DATA=../shared/data python benchmarks/overhead.py [--steps 200] [--repeats 6]
[--threads 1] [--settings lenet-32 protocol-128]`` writes ``benchmarks/results/overhead.{md,json}``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import statistics
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bare_loop import train
from dalib_runs import LENET_SETTING, METHODS, REPO, SETTINGS, write_results
from lightning_loop import train_lightning

from dalib.cli import main as dalib_main
from dalib.data import DATASETS

WARMUP = 5  # dalib's StepStats default


def dalib_fit(
    method: str, steps: int, save_dir: Path, *extra: str, setting: Sequence[str] = LENET_SETTING
) -> dict:
    """Train with ``dalib fit`` (the digits config, ``setting``'s overrides and ``extra``
    arguments) in this process; its ``result.json``."""
    arguments = [
        "fit", "-c", str(REPO / "experiments" / "digits" / f"{method}.yaml"),
        "--trainer.max_epochs=1", f"--data.iterations_per_epoch={steps}",
        f"--trainer.logger.init_args.save_dir={save_dir}", *setting, *extra,
    ]  # fmt: skip
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        dalib_main(arguments)
    (record,) = save_dir.rglob("result.json")
    return json.loads(record.read_text())


def after_warmup(seconds: list[float]) -> list[float]:
    return seconds[WARMUP + 1 :]


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f}x | {min(values):.3f}x | {max(values):.3f}x"


def measure(pair, setting: str, method: str, steps: int, save_dir: Path, bare_first: bool) -> dict:
    """One interleaved round: the bare loop, the minimal Lightning module and ``dalib fit``, in
    that order or (``bare_first`` false) the reverse; their step times (ms), peak memory and
    the ratios to the bare loop."""
    overrides, options = SETTINGS[setting]
    dann = method == "dann"
    contenders = {
        "bare": lambda: train(pair.source, pair.target_train, steps, dann=dann, **options),
        "lightning": lambda: train_lightning(
            pair.source, pair.target_train, steps, dann=dann, **options
        ),
        "dalib": lambda: dalib_fit(method, steps, save_dir, setting=overrides),
    }
    order = list(contenders) if bare_first else list(reversed(contenders))
    runs = {name: contenders[name]() for name in order}
    row = {"setting": setting, "method": method, "bare_first": bare_first}
    for clock, key in [("cpu", "_cpu"), ("wall", "")]:
        for who in ("bare", "lightning"):
            steps_s = after_warmup(runs[who][clock])
            row[f"{who}_{clock}_median_ms"] = 1e3 * statistics.median(steps_s)
            row[f"{who}_{clock}_mean_ms"] = 1e3 * statistics.fmean(steps_s)
        row[f"dalib_{clock}_median_ms"] = runs["dalib"][f"train_step{key}_ms"]
        row[f"dalib_{clock}_mean_ms"] = runs["dalib"][f"train_step{key}_mean_ms"]
        for stat in ("median", "mean"):
            bare = row[f"bare_{clock}_{stat}_ms"]
            row[f"{clock}_{stat}_ratio"] = row[f"dalib_{clock}_{stat}_ms"] / bare
            row[f"lightning_{clock}_{stat}_ratio"] = row[f"lightning_{clock}_{stat}_ms"] / bare
            row[f"dalib_over_lightning_{clock}_{stat}_ratio"] = (
                row[f"dalib_{clock}_{stat}_ms"] / row[f"lightning_{clock}_{stat}_ms"]
            )
    row["bare_peak_mib"] = runs["bare"]["peak_mib"]
    row["dalib_peak_mib"] = runs["dalib"]["peak_memory_mib"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pair = DATASETS.build({"name": "digits", "source": "MNIST", "target": "USPS"})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for setting in args.settings:
                for method in METHODS:
                    save_dir = Path(tmp) / f"{setting}-{method}-{repeat}"
                    # alternate which contender runs first: a process that has run longer
                    # (its heap grown, say) slows the second one neither way more often
                    bare_first = repeat % 2 == 0
                    row = measure(pair, setting, method, args.steps, save_dir, bare_first)
                    row["repeat"] = repeat
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    command = (
        f"DALIB_DATA=../shared/data python benchmarks/overhead.py --steps {args.steps} "
        f"--repeats {args.repeats}"
        + (f" --threads {args.threads}" if args.threads else "")
        + f" --settings {' '.join(args.settings)}"
    )
    write_results(
        args.out, "overhead", report(rows, command, args), {"command": command, "runs": rows}
    )


def report(rows: list[dict], command: str, args: argparse.Namespace) -> str:
    """The markdown tables: step-time ratios per setting and method, then peak memory."""
    lines = [
        "# dalib fit vs Lightning alone and a plain PyTorch loop: time per training step",
        "",
        f"Produced by `{command}` on {platform.machine()} CPU, torch {torch.__version__}, "
        f"Lightning {pl.__version__}, {torch.get_num_threads()} threads. MNIST→USPS, "
        f"{args.steps} steps per run, {args.repeats} interleaved repeats (the bare loop first in "
        "every other one, dalib first in the others). Target: dalib / Lightning alone ≤ 1.03x "
        "(median CPU time per step, both settings). *Lightning alone*: the same training as the "
        "smallest LightningModule (`benchmarks/lightning_loop.py`: automatic optimisation as in "
        "dalib, no dalib, callbacks, logger or checkpoints); *bare*: the same training in plain "
        "PyTorch (`benchmarks/bare_loop.py`). Ratios per repeat (each run's median step after the "
        "warm-up), as median, min and max over the repeats; *mean-step*: the ratio of mean steps, "
        "which also counts dalib's logging steps (every 50th). CPU time of the process; the "
        "wall-time ratios and every run's figures (`dalib_over_lightning_cpu_median_ratio`, ...) "
        "are in `overhead.json`. Settings: `lenet-32` is the convolutional LeNet, a 500-d "
        "bottleneck and batch 32 + 32; `protocol-128` the digits configs as committed "
        "(`lenet_fc`, 256-d bottleneck, batch 128 + 128).",
        "",
        "| setting | method | bare ms/step | Lightning ms/step | dalib ms/step "
        "| dalib / Lightning alone | min | max | dalib / bare | min | max "
        "| mean-step dalib / bare | min | max | Lightning alone / bare |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for setting in args.settings:
        for method in METHODS:
            mine = [r for r in rows if r["setting"] == setting and r["method"] == method]
            bare, lightning_ms, ours = (
                statistics.median(r[f"{who}_cpu_median_ms"] for r in mine)
                for who in ("bare", "lightning", "dalib")
            )
            lightning = statistics.median(r["lightning_cpu_median_ratio"] for r in mine)
            lines.append(
                f"| {setting} | {method} | {bare:.2f} | {lightning_ms:.2f} | {ours:.2f} | "
                f"{spread([r['dalib_over_lightning_cpu_median_ratio'] for r in mine])} | "
                f"{spread([r['cpu_median_ratio'] for r in mine])} | "
                f"{spread([r['cpu_mean_ratio'] for r in mine])} | "
                f"{lightning:.3f}x |"
            )
    lines += [
        "",
        "Peak memory during training (resident set, MiB, median over the repeats):",
        "",
        "| setting | method | bare | dalib | ratio median | min | max |",
        "|---|---|---|---|---|---|---|",
    ]
    for setting in args.settings:
        for method in METHODS:
            mine = [r for r in rows if r["setting"] == setting and r["method"] == method]
            bare, ours = ([r[f"{who}_peak_mib"] for r in mine] for who in ("bare", "dalib"))
            ratios = [o / b for o, b in zip(ours, bare, strict=True)]
            lines.append(
                f"| {setting} | {method} | {statistics.median(bare):.0f} | "
                f"{statistics.median(ours):.0f} | {spread(ratios)} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
