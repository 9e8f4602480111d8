"""Print what sweeps would run, without running them (`python benchmarks/sweep_plan.py A.yaml`).

For each sweep file: its output folder, the runs it plans, how many have finished already (a
``result.json`` in the run's folder, which ``dalib sweep`` skips), and its runs per method. The
file is read and checked as ``dalib sweep`` reads it (``dalib.sweep.load_sweep``: unknown keys,
missing method configs and empty lists stop with the reason), so a plan that prints is a sweep
that starts. Used by ``benchmarks/gpu_full.sh --dry-run``.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from dalib.errors import DalibError
from dalib.sweep import load_sweep


def plan(path: Path) -> tuple[str, int, int]:
    """One line per sweep file: ``(text, runs planned, runs finished)``."""
    spec, runs = load_sweep(path)
    output = Path(spec.get("output", "runs/sweeps") or "runs/sweeps")
    finished = sum((output / run.run_id / "result.json").is_file() for run in runs)
    methods = Counter(run.method for run in runs)
    per_method = ", ".join(f"{m} {n}" for m, n in methods.items())
    text = f"{path}: {len(runs)} runs into {output} ({finished} finished); {per_method}"
    return text, len(runs), finished


def main(arguments: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", type=Path, help="sweep YAML files")
    args = parser.parse_args(arguments)
    total = done = 0
    for path in args.sweeps:
        try:
            text, planned, finished = plan(path)
        except DalibError as error:
            print(f"sweep_plan: error: {error}", file=sys.stderr)
            return 2
        print(text)
        total, done = total + planned, done + finished
    print(f"total: {total} runs, {done} finished, {total - done} to run")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
