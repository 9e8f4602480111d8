"""dalib's cost over a hand-written loop: time per training step, ``dalib fit`` vs plain PyTorch.

Same network (LeNet + 500-d bottleneck, and DANN's 1024-1024 discriminator), same batches (32
source + 32 target, MNIST→USPS from ``$DALIB_DATA``), same optimiser and schedules, same number
of threads, in this one process, interleaved: for each repeat, the bare loop of
``benchmarks/bare_loop.py`` and then ``dalib fit`` with the committed config (progress bar,
logging, checkpointing and validation as a user gets them). A step is the time from the start of
one training step to the start of the next (data fetch included), in wall time and in the
process's CPU time (all threads; on a shared machine other programs inflate it much less than
wall time); each contender's figure is the median step after the warm-up (dalib's comes from
``train_step_ms`` and ``train_step_cpu_ms`` in its ``result.json``). The table gives the ratio
dalib/bare per repeat: median, min and max.

The same work per step: both fetch a source and a target batch in source-only too (dalib's
loader pairs the domains; the target batch enters neither objective). Beyond the bare loop,
dalib checks the loss for NaN and keeps the training accuracy's predictions at every step, and
logs every 10th step (``log_every_n_steps``), a step slower than the median one.

Peak memory: the process's largest resident set from the start of each run's training (the
kernel's count is reset there, so earlier runs and the data loading do not count): the bare
loop's over its steps, dalib's ``peak_memory_mib`` (its training and the validation after it).

Usage: ``DALIB_DATA=../shared/data python benchmarks/overhead.py [--steps 300] [--repeats 5]``
writes ``benchmarks/results/overhead.{md,json}``.
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
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bare_loop import train
from dalib_runs import LENET_SETTING, REPO

from dalib.cli import main as dalib_main
from dalib.data import DATASETS

WARMUP = 5  # dalib's StepStats default


def dalib_fit(method: str, steps: int, save_dir: Path, *extra: str) -> dict:
    """Train with ``dalib fit`` (and ``extra`` arguments) in this process; its ``result.json``."""
    arguments = [
        "fit", "-c", str(REPO / "experiments" / "digits" / f"{method}.yaml"),
        "--trainer.max_epochs=1", f"--data.iterations_per_epoch={steps}",
        f"--trainer.logger.init_args.save_dir={save_dir}", *LENET_SETTING, *extra,
    ]  # fmt: skip
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        dalib_main(arguments)
    (record,) = save_dir.rglob("result.json")
    return json.loads(record.read_text())


def median_ms(seconds: list[float]) -> float:
    return 1e3 * statistics.median(seconds[WARMUP + 1 :])


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f}x | {min(values):.3f}x | {max(values):.3f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pair = DATASETS.build({"name": "digits", "source": "MNIST", "target": "USPS"})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for method in ("source_only", "dann"):
                bare = train(pair.source, pair.target_train, args.steps, dann=method == "dann")
                ours = dalib_fit(method, args.steps, Path(tmp) / f"{method}-{repeat}")
                row = {"method": method, "repeat": repeat,
                       "bare_ms": median_ms(bare["wall"]), "dalib_ms": ours["train_step_ms"],
                       "bare_cpu_ms": median_ms(bare["cpu"]),
                       "dalib_cpu_ms": ours["train_step_cpu_ms"],
                       "bare_peak_mib": bare["peak_mib"],
                       "dalib_peak_mib": ours["peak_memory_mib"]}  # fmt: skip
                row["ratio"] = row["dalib_ms"] / row["bare_ms"]
                row["cpu_ratio"] = row["dalib_cpu_ms"] / row["bare_cpu_ms"]
                rows.append(row)
                print(json.dumps(row), flush=True)
    command = (f"DALIB_DATA=../shared/data python benchmarks/overhead.py --steps {args.steps} "
               f"--repeats {args.repeats}"
               + (f" --threads {args.threads}" if args.threads else ""))  # fmt: skip
    lines = [
        "# dalib fit vs a plain PyTorch loop: time per training step",
        "",
        f"Produced by `{command}` on {platform.machine()} CPU, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads. MNIST→USPS, LeNet, batch 32 + 32, {args.steps} "
        "steps per run, median step after the warm-up, over "
        f"{args.repeats} interleaved repeats; target: dalib ≤ 1.05x. Both fetch a source and a "
        "target batch per step in source-only too; dalib also checks the loss for NaN and keeps "
        "the training accuracy's predictions every step, and logs every 10th step.",
        "",
        "| method | time | bare ms/step (median) | dalib ms/step (median) | ratio median | min "
        "| max |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in ("source_only", "dann"):
        mine = [r for r in rows if r["method"] == method]
        for label, key in [("wall", ""), ("CPU", "cpu_")]:
            lines.append(
                f"| {method} | {label} | "
                f"{statistics.median(r[f'bare_{key}ms'] for r in mine):.2f} | "
                f"{statistics.median(r[f'dalib_{key}ms'] for r in mine):.2f} | "
                f"{spread([r[f'{key}ratio'] for r in mine])} |"
            )
    lines += [
        "",
        "Peak memory during training (resident set, MiB, median over the repeats):",
        "",
        "| method | bare | dalib | ratio median | min | max |",
        "|---|---|---|---|---|---|",
    ]
    for method in ("source_only", "dann"):
        mine = [r for r in rows if r["method"] == method]
        bare, ours = ([r[f"{who}_peak_mib"] for r in mine] for who in ("bare", "dalib"))
        ratios = [o / b for o, b in zip(ours, bare, strict=True)]
        lines.append(f"| {method} | {statistics.median(bare):.0f} | "
                     f"{statistics.median(ours):.0f} | {spread(ratios)} |")  # fmt: skip
    md = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overhead.md").write_text(md)
    (args.out / "overhead.json").write_text(
        json.dumps({"command": command, "runs": rows}, indent=2) + "\n"
    )
    print(md)


if __name__ == "__main__":
    main()
