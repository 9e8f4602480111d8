"""What the label-free selection scores cost a run: ``model.record_scores`` true vs false.

Runs ``dalib fit`` on ``experiments/office_caltech/{protocol,methods/dann}.yaml``
(Office-Caltech10 SURF A→W, the shipped config, ``model.selection: last``) in child
processes, both settings interleaved, ``--repeats`` times each, one torch thread, and measures
each child's CPU time (user + system, from ``resource.getrusage(RUSAGE_CHILDREN)``), which a
loaded machine disturbs less than wall time. The ratio of the medians is the number to read.

Usage: ``DALIB_DATA=../shared/data python benchmarks/record_scores_cost.py [--repeats 3]``
writes ``benchmarks/results/record_scores_cost.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = (
    "experiments/office_caltech/protocol.yaml",
    "experiments/office_caltech/methods/dann.yaml",
)
SETTINGS = ("true", "false")


def child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def fit_cpu_seconds(record_scores: str, save_dir: str) -> float:
    """CPU seconds of one ``dalib fit`` with ``model.record_scores`` set as given."""
    before = child_cpu_seconds()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "dalib.cli",
            "fit",
            "-c",
            CONFIGS[0],
            "-c",
            CONFIGS[1],
            f"--model.record_scores={record_scores}",
            "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={save_dir}",
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return child_cpu_seconds() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {setting: [] for setting in SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for setting in SETTINGS:
                seconds[setting].append(fit_cpu_seconds(setting, f"{tmp}/{setting}{repeat}"))
    median = {setting: statistics.median(values) for setting, values in seconds.items()}
    ratio = median["false"] / median["true"]
    script = "benchmarks/record_scores_cost.py"
    command = f"DALIB_DATA=../shared/data python {script} --repeats {args.repeats}"
    out = REPO / "benchmarks" / "results"
    (out / "record_scores_cost.json").write_text(
        json.dumps(
            {
                "command": command,
                "configs": CONFIGS,
                "cpu_seconds": seconds,
                "median": median,
                "ratio_false_over_true": ratio,
            },
            indent=2,
        )
        + "\n"
    )
    rows = [
        f"| {s} | {median[s]:.1f} | {', '.join(f'{v:.1f}' for v in seconds[s])} |" for s in SETTINGS
    ]
    (out / "record_scores_cost.md").write_text(
        "# What recording every selection score costs a run\n\n"
        f"Command: `{command}`. `{' + '.join(CONFIGS)}` (Office-Caltech10 SURF A→W), "
        "one torch thread, "
        "CPU time (user + system) of each `dalib fit` process, the two settings interleaved; "
        "measured on a loaded 2-core machine.\n\n"
        "| model.record_scores | median CPU s per run | each run |\n|---|---:|---|\n"
        + "\n".join(rows)
        + f"\n\nRatio false / true of the medians: **{ratio:.2f}**. `false` computes only the "
        "selected score and `source_acc` at each validation and no proxy A-distance; the "
        "training is the same.\n"
    )
    print(f"record_scores false/true CPU: {ratio:.2f}")


if __name__ == "__main__":
    main()
