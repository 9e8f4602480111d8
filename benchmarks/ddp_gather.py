"""The cost of gathering the discrepancy's inputs across DDP processes, on CPU (gloo).

Two processes each train an MLP (784 → 500 → 500, bottleneck 256, 10 classes) under
``DistributedDataParallel``: one step is the module's ``compute_losses`` on ``--batch`` samples
per domain and process, backward (DDP's gradient all-reduce included) and an SGD step. Each
measure runs with ``gather_discrepancy`` on (D on the gathered 2 × batch) and off (D on each
process's own batch); repeats of the two are interleaved, and the ratio is the median over
repeats of (median step time with the gather) / (median step time without), taken on rank 0.
DANN is adversarial, so it is never gathered: its ratio shows that the option costs it nothing.

Usage: ``python benchmarks/ddp_gather.py [--batch 64] [--repeats 7]`` writes
``benchmarks/results/ddp_gather.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dalib import DomainAdaptationModule
from dalib.records import library_versions

REPO = Path(__file__).resolve().parents[1]
WORLD = 2
MEASURES = ["mmd", "coral", "sinkhorn", "dann"]
# The committed table was measured with DANN's former default discriminator (1024 wide).
OPTIONS = {"dann": {"hidden_dim": 1024}}
STEPS_PER_REPEAT = 5


class Objective(nn.Module):
    """What DDP wraps, as Lightning's training step does: the module's total loss."""

    def __init__(self, module: DomainAdaptationModule) -> None:
        super().__init__()
        self.module = module

    def forward(self, batch: dict) -> torch.Tensor:
        return self.module.compute_losses(batch, progress=0.5)["loss"]


def batches(batch: int, rank: int, count: int) -> list[dict]:
    g = torch.Generator().manual_seed(rank)
    return [
        {
            "source": (torch.randn(batch, 784, generator=g), torch.randint(0, 10, (batch,))),
            "target": (torch.randn(batch, 784, generator=g) + 0.5, torch.randint(0, 10, (batch,))),
        }
        for _ in range(count)
    ]


def trainer_step(name: str, gather: bool, rank: int, batch: int):
    torch.manual_seed(0)
    module = DomainAdaptationModule(
        num_classes=10,
        input_shape=(784,),
        backbone={"name": "mlp", "hidden_dims": [500, 500]},
        bottleneck_dim=256,
        discrepancy={"name": name, **OPTIONS.get(name, {})},
        gather_discrepancy=gather,
    )
    model = DistributedDataParallel(Objective(module))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    data = batches(batch, rank, STEPS_PER_REPEAT)

    def run() -> list[float]:
        times = []
        for b in data:
            start = time.perf_counter()
            optimizer.zero_grad()
            model(b).backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
        return times

    return module, run


def worker(rank: int, init_file: str, out_file: str, batch: int, repeats: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    runs = {(n, g): trainer_step(n, g, rank, batch) for n in MEASURES for g in (True, False)}
    for _, run in runs.values():  # warm-up
        run()
    medians = {key: [] for key in runs}
    for _ in range(repeats):
        for key, (_, run) in runs.items():
            medians[key].append(statistics.median(run()))
    if rank == 0:
        rows = []
        for name in MEASURES:
            on, off = medians[(name, True)], medians[(name, False)]
            rows.append(
                {
                    "measure": name,
                    "gathered": runs[(name, True)][0].objective.gathers_discrepancy(),
                    "ms_with_gather": 1000 * statistics.median(on),
                    "ms_without": 1000 * statistics.median(off),
                    "ratio": statistics.median(a / b for a, b in zip(on, off, strict=True)),
                }
            )
        Path(out_file).write_text(json.dumps(rows))
    dist.destroy_process_group()


def markdown(rows: list[dict], args: argparse.Namespace, command: str) -> str:
    versions = library_versions()
    lines = [
        "# Cost of the gathered discrepancy: 2 DDP processes on CPU (gloo)",
        "",
        f"Produced by `{command}` on {platform.machine()} CPU, torch {versions['torch']}, "
        f"{WORLD} processes with one thread each. One step: `compute_losses` on {args.batch} "
        "samples per domain and process (MLP 784-500-500, bottleneck 256), backward with DDP's "
        f"all-reduce, SGD. Median over {args.repeats} interleaved repeats of "
        f"{STEPS_PER_REPEAT} steps.",
        "",
        "| measure | gathered | ms/step, gather_discrepancy on | ms/step, off | ratio on/off |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['measure']} | {'yes' if r['gathered'] else 'no'} | {r['ms_with_gather']:.2f} "
            f"| {r['ms_without']:.2f} | {r['ratio']:.3f}x |"
        )
    lines += [
        "",
        "With the gather, D runs on 2 × the batch (the global batch) in each process, so its",
        "own cost grows too (quadratically for MMD and Sinkhorn); `dann` is adversarial and never",
        "gathered, so both columns run the same code.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="samples per domain and process")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        mp.spawn(
            worker,
            args=(str(Path(tmp) / "init"), str(out), args.batch, args.repeats),
            nprocs=WORLD,
        )
        rows = json.loads(out.read_text())
    command = " ".join(["python", "benchmarks/ddp_gather.py", *sys.argv[1:]])
    results = REPO / "benchmarks" / "results"
    record = {"command": command, "rows": rows, "versions": library_versions(), **vars(args)}
    (results / "ddp_gather.json").write_text(json.dumps(record, indent=2) + "\n")
    (results / "ddp_gather.md").write_text(markdown(rows, args, command))
    print(markdown(rows, args, command))


if __name__ == "__main__":
    main()
