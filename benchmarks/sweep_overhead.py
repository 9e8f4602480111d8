"""Sweep overhead per run: what ``dalib sweep`` and ``dalib report`` add to the runs' training.

Runs one sweep of ``--runs`` small fits (rotated moons, source-only and DANN) in a fresh output
folder, then ``dalib report`` on it, all in this one process's measurements:

- sweep wall time, minus the sum of each run's own ``wall_time_s`` (from ``trainer.fit`` start to
  end, written by the run into ``result.json``) = what the sweep adds: forking, config parsing,
  building the model and data, writing the record;
- the report's wall time, spread over the runs.

The per-run overhead is reported in seconds and as a share of a 1-minute run (target < 5%).
Usage: ``python benchmarks/sweep_overhead.py [--runs 8] [--epochs 10]`` writes
``benchmarks/results/sweep_overhead.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch
import yaml
from dalib_runs import REPO, write_results

from dalib.cli import main as dalib_main
from dalib.report import write_report
from dalib.sweep import run_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8, help="runs in the sweep (even)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dalib-sweep-overhead-"))
    spec = {
        "output": str(work / "runs"),
        "methods": [str(REPO / "experiments/toy/source_only.yaml"),
                    str(REPO / "experiments/toy/dann.yaml")],
        "seeds": list(range(args.runs // 2)),
        "overrides": {"trainer.max_epochs": args.epochs},
    }  # fmt: skip
    (work / "sweep.yaml").write_text(yaml.safe_dump(spec))
    start = time.perf_counter()
    failed = run_sweep(work / "sweep.yaml", dalib_main)
    sweep_s = time.perf_counter() - start
    if failed:
        raise SystemExit(f"{failed} runs failed; see {work}")
    fit_s = [json.loads(p.read_text())["wall_time_s"] for p in (work / "runs").rglob("result.json")]
    start = time.perf_counter()
    write_report(work / "runs", work / "report")
    report_s = time.perf_counter() - start
    shutil.rmtree(work)
    n = len(fit_s)
    per_run = (sweep_s - sum(fit_s) + report_s) / n
    result = {
        "runs": n, "epochs": args.epochs, "sweep_s": sweep_s, "fit_s_total": sum(fit_s),
        "mean_fit_s": sum(fit_s) / n, "report_s": report_s, "overhead_per_run_s": per_run,
        "share_of_1_minute_run": per_run / 60, "share_of_these_runs": per_run / (sum(fit_s) / n),
    }  # fmt: skip
    command = f"python benchmarks/sweep_overhead.py --runs {args.runs} --epochs {args.epochs}"
    md = "\n".join([
        "# Sweep overhead per run",
        "",
        f"Produced by `{command}` on {platform.machine()} CPU, torch {torch.__version__}.",
        "",
        "| runs | sweep wall s | sum of fit s | report s | overhead per run s | "
        "of a 1-minute run | of these runs |",
        "|---|---|---|---|---|---|---|",
        f"| {n} | {sweep_s:.1f} | {sum(fit_s):.1f} | {report_s:.2f} | {per_run:.2f} | "
        f"{100 * per_run / 60:.1f}% | {100 * result['share_of_these_runs']:.1f}% |",
        "",
        "Overhead = sweep wall time − Σ each run's own fit time (`wall_time_s` in its",
        "`result.json`) + the report's time, divided by the number of runs. It covers forking",
        "the run, parsing its config, building model and data, and writing its record.",
    ]) + "\n"  # fmt: skip
    write_results(args.out, "sweep_overhead", md, result)


if __name__ == "__main__":
    main()
