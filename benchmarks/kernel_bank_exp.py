"""One batched ``exp`` over a bandwidth bank against one ``exp`` per bandwidth.

``Σ_s exp(-r/s)`` for a (n, n) block ``r`` and K bandwidths, forward + backward, thread CPU
time on one torch thread, the variants interleaved for ``--repeats`` rounds: the whole
(K, n, n) stack in one ``exp``, one ``exp`` per bandwidth, and dalib's kernel bank (the stack
in groups of at most ``dalib.discrepancy.kernels.BATCH_ELEMENTS`` entries). The ratios to one
``exp`` per bandwidth within each round give the median and min–max. This is what sets
``BATCH_ELEMENTS``.

Usage: ``python benchmarks/kernel_bank_exp.py [--repeats 7]`` writes
``benchmarks/results/kernel_bank_exp.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from dalib.discrepancy.kernels import bank_sum

REPO = Path(__file__).resolve().parents[1]


def variants(n: int, k: int) -> dict[str, Callable[[], None]]:
    g = torch.Generator().manual_seed(0)
    r = torch.rand(n, n, generator=g).mul(4.0).requires_grad_()
    sigmas = torch.linspace(0.5, 3.0, k).tolist()
    negative = torch.tensor([-2.0 * s * s for s in sigmas]).view(-1, 1, 1)

    def run(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
        return lambda: torch.autograd.grad(fn().sum(), r)

    return {
        "one exp per bandwidth": run(lambda: sum(torch.exp(r / s) for s in negative.flatten())),
        "one exp over the stack": run(lambda: torch.exp(r / negative).sum(dim=0)),
        "dalib (groups)": run(lambda: bank_sum(r, negative)),
    }


def cpu_ms(fn: Callable[[], None], calls: int) -> float:
    start = time.thread_time()
    for _ in range(calls):
        fn()
    return 1e3 * (time.thread_time() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for n in (32, 128, 512):
        for k in (5, 33):
            runs = variants(n, k)
            calls = max(1, 200_000 // (n * n * k))
            times: dict[str, list[float]] = {name: [] for name in runs}
            for r in range(args.repeats):
                order = list(runs) if r % 2 == 0 else list(reversed(runs))
                for name in order:
                    times[name].append(cpu_ms(runs[name], calls))
            loop = times["one exp per bandwidth"]
            row = {"n": n, "bandwidths": k, "ms_per_bandwidth_loop": statistics.median(loop)}
            for name in ("one exp over the stack", "dalib (groups)"):
                ratios = [a / b for a, b in zip(times[name], loop, strict=True)]
                row[name] = {"median": statistics.median(ratios), "min": min(ratios),
                             "max": max(ratios)}  # fmt: skip
            rows.append(row)
            print(row, flush=True)
    write(rows, args.repeats)


def write(rows: list[dict], repeats: int) -> None:
    command = "python benchmarks/kernel_bank_exp.py" + (
        f" --repeats {repeats}" if repeats != 7 else ""
    )
    out = REPO / "benchmarks" / "results"
    (out / "kernel_bank_exp.json").write_text(
        json.dumps({"command": command, "torch": torch.__version__, "rows": rows}, indent=1) + "\n"
    )
    lines = [
        "# A bandwidth bank's exp: batched or one per bandwidth",
        "",
        f"Command: `{command}` (torch {torch.__version__}). Forward + backward of "
        "`Σ_s exp(-r/s)` on an n × n block, one thread, CPU time; ratio to one `exp` per "
        f"bandwidth within each of {repeats} interleaved rounds, median (min–max). Measured on "
        "a loaded 2-core machine: only ratios within this run count.",
        "",
        "| n | bandwidths | one exp per bandwidth, ms | one exp over the stack | dalib (groups) |",
        "|---:|---:|---:|---|---|",
    ]
    for r in rows:
        cells = [
            f"**{r[name]['median']:.2f}** ({r[name]['min']:.2f}–{r[name]['max']:.2f})"
            for name in ("one exp over the stack", "dalib (groups)")
        ]
        lines.append(
            f"| {r['n']} | {r['bandwidths']} | {r['ms_per_bandwidth_loop']:.3f} | "
            + " | ".join(cells)
            + " |"
        )
    (out / "kernel_bank_exp.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
