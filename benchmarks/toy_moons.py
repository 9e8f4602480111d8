"""Source-only, MMD and DANN on the embedded rotated-moons task, 3 seeds: the README's numbers.

Runs the committed configs through the real command (``dalib fit -c experiments/toy/<m>.yaml``)
and writes ``benchmarks/results/toy_moons.{md,json}``. Usage::

    python benchmarks/toy_moons.py [--seeds 0 1 2] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from dalib_runs import REPO, fit_in_subprocess, write_results

METHODS = ("source_only", "mmd", "dann")
COMMAND = "python benchmarks/toy_moons.py"


def fit(method: str, seed: int, save_dir: Path) -> dict:
    """One ``dalib fit`` run; its ``result.json`` record."""
    config = REPO / "experiments" / "toy" / f"{method}.yaml"
    return fit_in_subprocess(config, save_dir, f"--seed_everything={seed}")[0]


def threads() -> str:
    """The torch threads of the runs: ``OMP_NUM_THREADS``, else torch's default (the CPUs)."""
    if "OMP_NUM_THREADS" in os.environ:
        return f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    return f"torch's default threads ({os.cpu_count()} CPUs here)"


def table(records: list[dict], seeds: list[int]) -> str:
    """Markdown: target accuracy per seed and mean ± std per method."""
    head = "| method | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std | source val |"
    lines = [head, "|" + "---|" * (len(seeds) + 3)]
    for method in METHODS:
        runs = [r for r in records if r["method"] == method]
        acc = [100 * r["target_acc"] for r in runs]
        src = statistics.mean(100 * r["source_val_acc"] for r in runs)
        std = statistics.stdev(acc) if len(acc) > 1 else 0.0
        cells = " | ".join(f"{a:.1f}" for a in acc)
        lines.append(f"| {method} | {cells} | {statistics.mean(acc):.1f} ± {std:.1f} | {src:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        records = [fit(m, s, Path(tmp) / f"{m}_seed{s}") for m in METHODS for s in args.seeds]
    for r in records:
        r.pop("config")
    first = records[0]
    md = (
        f"# Rotated moons ({first['task']})\n\n"
        f"Produced by `{COMMAND}` (configs in `experiments/toy/`) with {threads()}; the\n"
        "thread count changes floating-point sums and so these numbers (see the README).\n"
        "Target test accuracy (%) of the model after the last training step: no model selection,\n"
        "so no target labels were used to pick it. Source val: held-out source accuracy (%).\n\n"
        f"{table(records, args.seeds)}\n\n"
        f"Versions: {json.dumps(first['versions'])}\n"
    )
    write_results(args.out, "toy_moons", md, records)


if __name__ == "__main__":
    main()
