"""What each speed switch gives: time per training step of ``dalib fit`` with it, over without.

Source-only LeNet on MNIST→USPS (batch 32 + 32) as in ``benchmarks/overhead.py``; in one
process, each repeat runs the default and then every option, so each ratio option/default
comes from neighbouring runs. Times are the median step after the warm-up, in wall and in CPU
time (``train_step_ms``, ``train_step_cpu_ms``); ``run s`` is the whole run's wall time, which
is where ``torch.compile`` pays for its compilation.

Usage: ``DALIB_DATA=../shared/data python benchmarks/speed_options.py [--steps 100]
[--repeats 3] [--threads 1] [--accelerator gpu]`` writes
``benchmarks/results/speed_options[_gpu].{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import REPO, dalib_fit, spread

SPEED = "--trainer.callbacks+=dalib.speed.SpeedOptions"
OPTIONS = {
    "default": [],
    "bf16-mixed": ["--trainer.precision=bf16-mixed"],
    "channels_last": [SPEED, "--trainer.callbacks.channels_last=true"],
    "compile": [SPEED, "--trainer.callbacks.compile=true"],
    "1 loader worker, pinned": ["--data.num_workers=1", "--data.pin_memory=true"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = [f"--trainer.accelerator={args.accelerator}"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for name, extra in OPTIONS.items():
                save_dir = Path(tmp) / f"{repeat}-{len(rows)}"
                record = dalib_fit("source_only", args.steps, save_dir, *device, *extra)
                rows.append({"option": name, "repeat": repeat, "ms": record["train_step_ms"],
                             "cpu_ms": record["train_step_cpu_ms"],
                             "run_s": record["wall_time_s"],
                             "peak_mib": record["peak_memory_mib"]})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    command = (f"DALIB_DATA=../shared/data python benchmarks/speed_options.py "
               f"--steps {args.steps} --repeats {args.repeats}"
               + (f" --threads {args.threads}" if args.threads else "")
               + ("" if args.accelerator == "cpu" else f" --accelerator {args.accelerator}")
               )  # fmt: skip
    lines = [
        f"# Speed switches of dalib fit ({args.accelerator})",
        "",
        f"Produced by `{command}` on {platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads. Source-only LeNet, MNIST→USPS, batch 32 + 32, "
        f"{args.steps} steps per run, {args.repeats} interleaved repeats; ratio = option/default "
        "in the same repeat (below 1: faster).",
        "",
        "| option | ms/step | wall ratio median | min | max | CPU ratio median | min | max "
        "| run s | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    default = {r["repeat"]: r for r in rows if r["option"] == "default"}
    for name in OPTIONS:
        mine = [r for r in rows if r["option"] == name]
        wall = [r["ms"] / default[r["repeat"]]["ms"] for r in mine]
        cpu = [r["cpu_ms"] / default[r["repeat"]]["cpu_ms"] for r in mine]
        lines.append(
            f"| {name} | {statistics.median(r['ms'] for r in mine):.2f} | {spread(wall)} | "
            f"{spread(cpu)} | {statistics.median(r['run_s'] for r in mine):.1f} | "
            f"{statistics.median(r['peak_mib'] for r in mine):.0f} |"
        )
    md = "\n".join(lines) + "\n"
    suffix = "" if args.accelerator == "cpu" else f"_{args.accelerator}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"speed_options{suffix}.md").write_text(md)
    (args.out / f"speed_options{suffix}.json").write_text(
        json.dumps({"command": command, "runs": rows}, indent=2) + "\n"
    )
    print(md)


if __name__ == "__main__":
    main()
