"""Startup cost of the ``dalib`` command against importing Lightning alone.

Times, in fresh processes, interleaved so that a change in the machine's load hits every
command alike: ``python -c "import pytorch_lightning"`` (the yardstick), ``dalib --help``
(target: at most 1.5x the yardstick) and, for information, a one-line config error (``dalib fit``
with a misspelt key, which needs the model's and the data's signatures). Median of ``--repeats``
runs each, wall-clock and CPU (user + system) time.

    python benchmarks/startup.py            # writes benchmarks/results/startup.{md,json}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
COMMANDS = {
    "import pytorch_lightning": [sys.executable, "-c", "import pytorch_lightning"],
    "dalib --help": [sys.executable, "-m", "dalib.cli", "--help"],
    "dalib fit (config error)": [
        sys.executable, "-m", "dalib.cli", "fit", "-c",
        str(REPO / "experiments" / "toy" / "dann.yaml"), "--model.gama=1",
    ],
}  # fmt: skip
BASELINE = "import pytorch_lightning"
TARGET = 1.5  # dalib --help / import pytorch_lightning


def timed(command: list[str]) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one run of ``command`` in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        command,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def measure(repeats: int) -> dict[str, dict[str, float]]:
    for command in COMMANDS.values():  # warm the file cache; not counted
        timed(command)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in COMMANDS}
    for _ in range(repeats):
        for name, command in COMMANDS.items():
            runs[name].append(timed(command))
    medians = {
        name: {
            "wall_s": round(statistics.median(w for w, _ in times), 3),
            "cpu_s": round(statistics.median(c for _, c in times), 3),
        }
        for name, times in runs.items()
    }
    for row in medians.values():
        row["wall_ratio"] = round(row["wall_s"] / medians[BASELINE]["wall_s"], 3)
        row["cpu_ratio"] = round(row["cpu_s"] / medians[BASELINE]["cpu_s"], 3)
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--note", default="", help="a line on the conditions, for the table")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    medians = measure(args.repeats)
    load = f"1-minute load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    help_ratio = medians["dalib --help"]["wall_ratio"]
    record = {
        "command": f"python benchmarks/startup.py --repeats {args.repeats}",
        "repeats": args.repeats,
        "target_help_over_lightning": TARGET,
        "help_over_lightning_wall_median_ratio": help_ratio,
        "meets_target": help_ratio <= TARGET,
        "note": args.note,
        "load": load,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "medians": medians,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "startup.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        "# Startup: the `dalib` command vs importing Lightning",
        "",
        f"`{record['command']}`; median of {args.repeats} fresh processes each, interleaved. "
        f"Target: `dalib --help` ≤ {TARGET}x `import pytorch_lightning`.",
        "",
        f"Machine: {record['machine']}; {load}. {args.note}".rstrip(),
        "",
        "| command | wall (s) | CPU (s) | wall / Lightning | CPU / Lightning |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| `{name}` | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['wall_ratio']:.2f}x | "
        f"{r['cpu_ratio']:.2f}x |"
        for name, r in medians.items()
    ]
    (RESULTS / "startup.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
