"""Peak memory of training: ``dalib fit`` vs the bare loop, each in a fresh process.

A process that has run other training keeps its heap, so a peak measured there is mostly the
earlier runs' (``overhead.py`` interleaves runs in one process for timing). Here every run is a
child process of its own, with the settings of ``benchmarks/overhead.py``: the bare loop of
``benchmarks/bare_loop.py`` and ``dalib fit`` with the committed digits config. Both count the
peak resident set from the start of training (the kernel's count is reset there, after the
imports and the data loading): the bare loop over its steps, dalib's ``peak_memory_mib`` over
its training and the validation after it (evaluation batches and the selection scores).

Usage: ``DALIB_DATA=../shared/data python benchmarks/peak_memory.py [--steps 50]
[--repeats 2]`` writes ``benchmarks/results/peak_memory.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from dalib_runs import METHODS, REPO, SETTINGS, fit_in_subprocess, write_results


def bare_peak_mib(method: str, setting: str, steps: int) -> float:
    """The bare loop's peak resident set (MiB) in a fresh process (``--bare-worker``)."""
    out = subprocess.run(
        [sys.executable, __file__, "--bare-worker", method, setting, "--steps", str(steps)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return float(out.strip().splitlines()[-1])


def bare_worker(method: str, setting: str, steps: int) -> None:
    """In the child: load the digits, train the bare loop, print its peak (MiB). torch and
    dalib are imported here, so that the parent, which only starts processes, stays light."""
    import torch
    from bare_loop import train

    from dalib.data import DATASETS

    torch.set_num_threads(1)
    pair = DATASETS.build({"name": "digits", "source": "MNIST", "target": "USPS"})
    run = train(
        pair.source, pair.target_train, steps, dann=method == "dann", **SETTINGS[setting][1]
    )
    print(json.dumps(run["peak_mib"]))


def dalib_peak_mib(method: str, setting: str, steps: int, save_dir: Path) -> float:
    """``dalib fit``'s ``peak_memory_mib`` in a fresh process."""
    config = REPO / "experiments" / "digits" / f"{method}.yaml"
    record, _ = fit_in_subprocess(
        config, save_dir, "--trainer.max_epochs=1", f"--data.iterations_per_epoch={steps}",
        *SETTINGS[setting][0],
    )  # fmt: skip
    return record["peak_memory_mib"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--bare-worker", nargs=2, metavar=("METHOD", "SETTING"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args()
    if args.bare_worker:
        bare_worker(*args.bare_worker, args.steps)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for setting in SETTINGS:
                for method in METHODS:
                    save_dir = Path(tmp) / f"{setting}-{method}-{repeat}"
                    row = {"setting": setting, "method": method, "repeat": repeat,
                           "bare_peak_mib": bare_peak_mib(method, setting, args.steps),
                           "dalib_peak_mib": dalib_peak_mib(method, setting, args.steps,
                                                            save_dir)}  # fmt: skip
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    command = (
        f"DALIB_DATA=../shared/data python benchmarks/peak_memory.py --steps {args.steps} "
        f"--repeats {args.repeats}"
    )
    lines = [
        "# Peak memory of training: dalib fit vs the bare loop, each run in a fresh process",
        "",
        f"Produced by `{command}` on {platform.machine()} CPU. MNIST→USPS, {args.steps} steps "
        "per run, the settings of `overhead.md`. Peak resident set (MiB) from the start of "
        "training, after the imports and the data loading; dalib's includes the validation "
        "after training. Median over the repeats.",
        "",
        "| setting | method | bare MiB | dalib MiB | dalib − bare MiB | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for setting in SETTINGS:
        for method in METHODS:
            mine = [r for r in rows if r["setting"] == setting and r["method"] == method]
            bare = statistics.median(r["bare_peak_mib"] for r in mine)
            ours = statistics.median(r["dalib_peak_mib"] for r in mine)
            lines.append(
                f"| {setting} | {method} | {bare:.0f} | {ours:.0f} | {ours - bare:+.0f} | "
                f"{ours / bare:.3f}x |"
            )
    md = "\n".join(lines) + "\n"
    write_results(args.out, "peak_memory", md, {"command": command, "runs": rows})


if __name__ == "__main__":
    main()
