"""dalib's cost over a hand-written loop: time per training step, ``dalib fit`` vs plain PyTorch.

Same network (LeNet + 500-d bottleneck, and DANN's 1024-1024 discriminator), same batches (32
source + 32 target, MNIST→USPS from ``$DALIB_DATA``), same optimiser and schedules, same number
of threads, in this one process, interleaved: for each repeat, the bare loop of
``benchmarks/bare_loop.py`` and then ``dalib fit`` with the committed config (progress bar,
logging, checkpointing and validation as a user gets them). A step is the time from the start of
one training step to the start of the next (data fetch included); each contender's figure is the
median step after ``--warmup`` steps (dalib's comes from ``train_step_ms`` in its
``result.json``). The table gives the ratio dalib/bare per repeat: median, min and max.

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

from dalib.cli import main as dalib_main
from dalib.data import DATASETS

REPO = Path(__file__).resolve().parents[1]
WARMUP = 5  # dalib's StepStats default


def dalib_step_ms(method: str, steps: int, save_dir: Path) -> float:
    arguments = [
        "fit", "-c", str(REPO / "experiments" / "digits" / f"{method}.yaml"),
        "--trainer.max_epochs=1", f"--data.iterations_per_epoch={steps}",
        f"--trainer.logger.init_args.save_dir={save_dir}",
    ]  # fmt: skip
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        dalib_main(arguments)
    (record,) = save_dir.rglob("result.json")
    return json.loads(record.read_text())["train_step_ms"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    pair = DATASETS.build({"name": "digits", "source": "MNIST", "target": "USPS"})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for method in ("source_only", "dann"):
                times = train(pair.source, pair.target_train, args.steps, dann=method == "dann")
                bare = 1e3 * statistics.median(times[WARMUP + 1 :])
                ours = dalib_step_ms(method, args.steps, Path(tmp) / f"{method}-{repeat}")
                rows.append({"method": method, "repeat": repeat, "bare_ms": bare,
                             "dalib_ms": ours, "ratio": ours / bare})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    command = (f"DALIB_DATA=../shared/data python benchmarks/overhead.py --steps {args.steps} "
               f"--repeats {args.repeats}")  # fmt: skip
    lines = [
        "# dalib fit vs a plain PyTorch loop: time per training step",
        "",
        f"Produced by `{command}` on {platform.machine()} CPU, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads. MNIST→USPS, LeNet, batch 32 + 32, {args.steps} "
        "steps per run, median step after the warm-up; target: dalib ≤ 1.05x.",
        "",
        "| method | bare ms/step (median) | dalib ms/step (median) | ratio median | min | max |",
        "|---|---|---|---|---|---|",
    ]
    for method in ("source_only", "dann"):
        mine = [r for r in rows if r["method"] == method]
        ratios = [r["ratio"] for r in mine]
        lines.append(
            f"| {method} | {statistics.median(r['bare_ms'] for r in mine):.2f} | "
            f"{statistics.median(r['dalib_ms'] for r in mine):.2f} | "
            f"{statistics.median(ratios):.3f}x | {min(ratios):.3f}x | {max(ratios):.3f}x |"
        )
    md = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overhead.md").write_text(md)
    (args.out / "overhead.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(md)


if __name__ == "__main__":
    main()
