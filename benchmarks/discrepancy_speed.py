"""Time and memory of every registered discrepancy: forward + backward on random features.

Three tables, each measured in one run of this script (ratios are taken within one process,
with interleaved repeats, because these machines are noisy):

1. every measure for n samples per domain in {32, 128, 512, 2048} and width d in {256, 2048}:
   median milliseconds of forward + backward, and the peak resident memory that one call adds
   (each cell runs in a fresh process: ``ru_maxrss`` after the call minus before it);
2. multi-kernel MMD (5 Gaussian bandwidths) against one ``torch.cdist`` over the same joint
   batch, forward + backward, at n = 1024 per domain, d = 2048 (target: at most 1.5x);
3. every measure at batch 32 and 64 per domain on LeNet-sized features (d = 500, 10 classes)
   against one LeNet training step on the same batches (target: at most 10%).

Usage: ``python benchmarks/discrepancy_speed.py [--quick | --lenet-only] [--cpu-time]`` writes
``benchmarks/results/discrepancy_speed.{md,json}``. ``--quick`` runs the small sizes only (to
``discrepancy_speed_quick.*``), ``--lenet-only`` only table 3 (to
``discrepancy_speed_lenet_only.*``). Table 3 also times the adversarial measures in their
papers' settings (bigger discriminators, WDGRL's 5 critic steps), which configs pin.
``--cpu-time`` times everything (table 1's cells too) in thread CPU time on one torch thread,
which on a shared machine leaves out the time other processes hold the core.
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
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from dalib import DomainAdaptationModule
from dalib.discrepancy import DISCREPANCIES, builtin_discrepancies

REPO = Path(__file__).resolve().parents[1]
SIZES = [32, 128, 512, 2048]
WIDTHS = [256, 2048]
NUM_CLASSES = 10
# The papers' settings of the adversarial measures, which their defaults trade for speed:
# discriminators of two hidden layers of 1024 (Transfer-Learning-Library, CDAN's 1024-wide
# randomised map) and WDGRL's 5 critic steps per step with a 100-wide critic (the authors' code).
PAPER_SETTINGS = [
    *((name, {"hidden_dim": 1024}) for name in ("dann", "mdd")),
    *((name, {"hidden_dim": 1024, "random_dim": 1024}) for name in ("cdan", "cdan_e")),
    ("wdgrl", {"critic_steps": 5, "hidden_dim": 100}),
]


def inputs(n: int, d: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "f_s": torch.randn(n, d, generator=g).requires_grad_(),
        "f_t": (torch.randn(n, d, generator=g) + 0.5).requires_grad_(),
        "logits_s": torch.randn(n, NUM_CLASSES, generator=g).requires_grad_(),
        "logits_t": torch.randn(n, NUM_CLASSES, generator=g).requires_grad_(),
        "y_s": torch.randint(0, NUM_CLASSES, (n,), generator=g),
    }


def step_of(name: str, n: int, d: int, **options) -> Callable[[], None]:
    """One forward + backward of measure ``name`` built with ``options``."""
    torch.manual_seed(0)
    measure = DISCREPANCIES.build({"name": name, **options}, in_features=d, num_classes=NUM_CLASSES)
    x = inputs(n, d)

    def step() -> None:
        value = measure(x["f_s"], x["f_t"], logits_s=x["logits_s"], logits_t=x["logits_t"],
                        y_s=x["y_s"])  # fmt: skip
        value.backward()

    return step


# Clock of every timing: wall time, or with --cpu-time the thread's CPU time (one torch
# thread), which leaves out the time other processes hold the core on a shared machine.
CLOCK = {"clock": time.perf_counter}


def median_ms(step: Callable[[], None], budget_s: float = 1.0, max_repeats: int = 15) -> float:
    step()  # warm-up
    times: list[float] = []
    while len(times) < max_repeats and (len(times) < 3 or sum(times) < budget_s):
        start = CLOCK["clock"]()
        step()
        times.append(CLOCK["clock"]() - start)
        if times[-1] > 5 * budget_s:
            break
    return 1e3 * statistics.median(times)


def worker(name: str, n: int, d: int) -> dict:
    """Run in a fresh process: peak memory of the first call, then the median time."""
    step = step_of(name, n, d)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    return {"measure": name, "n": n, "d": d, "ms": median_ms(step), "peak_mib": peak_kib / 1024}


def interleaved_ratio(a: Callable[[], None], b: Callable[[], None], repeats: int) -> tuple:
    """Median times of ``a`` and ``b`` (ms), timed alternately, and the median ratio a/b."""
    a(), b()
    ta, tb = [], []
    for _ in range(repeats):
        for f, out in ((a, ta), (b, tb)):
            start = CLOCK["clock"]()
            f()
            out.append(CLOCK["clock"]() - start)
    ratios = [x / y for x, y in zip(ta, tb, strict=True)]
    return 1e3 * statistics.median(ta), 1e3 * statistics.median(tb), statistics.median(ratios)


def mmd_vs_cdist(n: int = 1024, d: int = 2048) -> dict:
    x = inputs(n, d)
    mmd = step_of("mmd", n, d)

    def cdist() -> None:
        joint = torch.cat([x["f_s"], x["f_t"]])
        torch.cdist(joint, joint).sum().backward()

    mmd_ms, cdist_ms, ratio = interleaved_ratio(mmd, cdist, repeats=9)
    return {"n": n, "d": d, "mmd_ms": mmd_ms, "cdist_ms": cdist_ms, "ratio": ratio}


def lenet_step(batch: int) -> Callable[[], None]:
    """One training step of LeNet (bottleneck 500, 10 classes) on a source and a target batch."""
    torch.manual_seed(0)
    model = DomainAdaptationModule(num_classes=NUM_CLASSES, input_shape=(1, 28, 28),
                                   backbone="lenet", bottleneck_dim=500)  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(2 * batch, 1, 28, 28)
    y = torch.randint(0, NUM_CLASSES, (batch,))

    def step() -> None:
        optimizer.zero_grad()
        F.cross_entropy(model(x)[:batch], y).backward()
        optimizer.step()

    return step


def versus_lenet(batches: list[int]) -> list[dict]:
    """Every measure with its defaults, then the adversarial ones in their papers' settings."""
    rows = []
    for batch in batches:
        reference = lenet_step(batch)
        variants = [(name, {}, "default") for name in builtin_discrepancies()]
        variants += [(name, options, "paper") for name, options in PAPER_SETTINGS]
        for name, options, setting in variants:
            measure_ms, lenet_ms, ratio = interleaved_ratio(
                step_of(name, batch, 500, **options), reference, repeats=15
            )
            rows.append({"measure": name, "setting": setting, "options": options, "batch": batch,
                         "ms": measure_ms, "lenet_step_ms": lenet_ms, "ratio": ratio})  # fmt: skip
    return rows


def run_cell(name: str, n: int, d: int) -> dict:
    cpu_time = ["--cpu-time"] if CLOCK["clock"] is time.thread_time else []
    out = subprocess.run(
        [sys.executable, __file__, "--worker", name, str(n), str(d), *cpu_time],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def markdown(
    grid: list[dict], mmd: dict | None, lenet: list[dict], command: str, load: tuple
) -> str:
    lines = [
        "# Discrepancy speed and memory",
        "",
        f"Produced by `{command}` on {platform.machine()} CPU, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {CLOCK['clock'].__name__} as the clock; "
        f"1-minute load average {load[0]:.1f} at the start, "
        f"{load[1]:.1f} at the end, on {os.cpu_count()} cores (other work on the machine makes "
        "absolute times noisy; the ratios are taken within one process).",
        "",
    ]
    if grid:
        sizes = sorted({(r["n"], r["d"]) for r in grid}, key=lambda nd: (nd[1], nd[0]))
        lines += [
            "## Forward + backward: median ms / peak MiB added by one call",
            "",
            "n samples per domain, d feature width. Peak memory is the growth of the process's",
            "maximum resident set during the first call, in a fresh process per cell.",
            "",
            "| measure | " + " | ".join(f"n={n}, d={d}" for n, d in sizes) + " |",
            "|---|" + "---|" * len(sizes),
        ]
        for name in sorted({r["measure"] for r in grid}):
            cells = {(r["n"], r["d"]): r for r in grid if r["measure"] == name}
            row = [f"{cells[s]['ms']:.1f} / {cells[s]['peak_mib']:.0f}" for s in sizes]
            lines.append(f"| {name} | " + " | ".join(row) + " |")
        lines.append("")
    if mmd:
        lines += [
            "## Multi-kernel MMD against one torch.cdist (target <= 1.5x)",
            "",
            f"n = {mmd['n']} per domain, d = {mmd['d']}, forward + backward, interleaved repeats: "
            f"MMD {mmd['mmd_ms']:.1f} ms, cdist {mmd['cdist_ms']:.1f} ms, "
            f"median ratio **{mmd['ratio']:.2f}x**.",
            "",
        ]
    lines += [
        "## Against one LeNet training step (target <= 10%)",
        "",
        "Measure forward + backward on d = 500 features and 10-class logits, against a LeNet",
        "step (forward of source + target batch, backward, SGD) at the same batch per domain,",
        "timed alternately in one process; the ratio is the median of the per-repeat ratios.",
        "Setting `default`: the measure's defaults (adversarial heads 128 wide, CDAN's randomised",
        "map 256 wide, WDGRL one critic step per step with a 64-wide critic). Setting `paper`: the",
        "options the paper configs pin (hidden layers of 1024 as in the Transfer-Learning-Library",
        "and the authors' code, CDAN's map 1024 wide; WDGRL 5 critic steps per step with a",
        "100-wide critic, as in the authors' code).",
        "",
        "| measure | setting | options | batch | measure ms | LeNet step ms | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in lenet:
        options = ", ".join(f"{k}={v}" for k, v in r["options"].items()) or "defaults"
        cells = [r["measure"], r["setting"], options, r["batch"], f"{r['ms']:.2f}",
                 f"{r['lenet_step_ms']:.2f}", f"{100 * r['ratio']:.1f}%"]  # fmt: skip
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n in {32, 128}, d = 256 only")
    parser.add_argument(
        "--lenet-only", action="store_true", help="only the LeNet-step comparison (table 3)"
    )
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time everything in thread CPU time, on one thread (for a loaded machine)",
    )
    parser.add_argument("--worker", nargs=3, metavar=("NAME", "N", "D"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    if args.cpu_time:
        torch.set_num_threads(1)
        CLOCK["clock"] = time.thread_time
    if args.worker:
        name, n, d = args.worker
        print(json.dumps(worker(name, int(n), int(d))))
        return
    sizes, widths = ([32, 128], [256]) if args.quick else (SIZES, WIDTHS)
    load_start = os.getloadavg()[0]
    grid, mmd = [], None
    if not args.lenet_only:
        for name in builtin_discrepancies():
            for d in widths:
                for n in sizes:
                    grid.append(run_cell(name, n, d))
                    print(json.dumps(grid[-1]), flush=True)
        mmd = mmd_vs_cdist(*((128, 256) if args.quick else (1024, 2048)))
    lenet = versus_lenet([32] if args.quick else [32, 64])
    flag = " --quick" if args.quick else " --lenet-only" if args.lenet_only else ""
    command = "python benchmarks/discrepancy_speed.py" + flag + (" --cpu-time" * args.cpu_time)
    load = (load_start, os.getloadavg()[0])
    md = markdown(grid, mmd, lenet, command, load)
    stem = "discrepancy_speed" + flag.replace(" --", "_").replace("-", "_")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.md").write_text(md)
    (args.out / f"{stem}.json").write_text(
        json.dumps(
            {"grid": grid, "mmd_vs_cdist": mmd, "versus_lenet": lenet, "load_average": load},
            indent=2,
        )
        + "\n"
    )
    print(md)


if __name__ == "__main__":
    main()
