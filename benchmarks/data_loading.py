"""Does data loading keep up with training? Digits loader throughput vs LeNet training steps.

Measured in one run: the images per second that the paired MNIST→USPS training loader of
``DomainDataModule`` delivers (source + target batch per step, default settings), against the
images per second that a LeNet training step consumes (forward of both batches, backward, SGD)
on the same machine. A ratio above 1 means the loader is not the bottleneck.

Usage: ``DALIB_DATA=../shared/data python benchmarks/data_loading.py`` writes
``benchmarks/results/data_loading.{md,json}``.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dalib import DomainAdaptationModule, DomainDataModule

REPO = Path(__file__).resolve().parents[1]
STEPS = 60


def loader_images_per_second(data: DomainDataModule) -> float:
    """Paired images per second over ``STEPS`` steps of the training loader (after a warm-up)."""
    batches = iter(data.train_dataloader())
    next(batches)
    start = time.perf_counter()
    for _ in range(STEPS):
        next(batches)
    elapsed = time.perf_counter() - start
    return STEPS * 2 * data.batch_size / elapsed


def training_images_per_second(data: DomainDataModule) -> float:
    """Images per second consumed by LeNet steps on fixed batches (median step time)."""
    torch.manual_seed(0)
    model = DomainAdaptationModule(num_classes=10, input_shape=data.input_shape,
                                   backbone="lenet", bottleneck_dim=500)  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batch, _, _ = next(iter(data.train_dataloader()))
    x = torch.cat([batch["source"][0], batch["target"][0]])
    y = batch["source"][1]
    times = []
    for _ in range(STEPS + 1):
        start = time.perf_counter()
        optimizer.zero_grad()
        F.cross_entropy(model(x)[: len(y)], y).backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return len(x) / statistics.median(times[1:])


def main() -> None:
    rows = []
    for batch_size in (32, 64, 128):
        data = DomainDataModule(dataset={"name": "digits", "source": "MNIST", "target": "USPS"},
                                batch_size=batch_size, iterations_per_epoch=STEPS + 1)  # fmt: skip
        data.setup("fit")
        loader = loader_images_per_second(data)
        training = training_images_per_second(data)
        rows.append({"batch_per_domain": batch_size, "num_workers": data.num_workers,
                     "loader_images_per_s": loader, "training_images_per_s": training,
                     "ratio": loader / training})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    lines = [
        "# Data loading vs training, digits (MNIST→USPS, LeNet)",
        "",
        "Produced by `DALIB_DATA=../shared/data python benchmarks/data_loading.py` on "
        f"{platform.machine()} CPU, torch {torch.__version__}, {torch.get_num_threads()} threads.",
        "Loader: images per second of the paired training loader (default settings). Training:",
        "images per second a LeNet step consumes (forward, backward, SGD; median step).",
        "",
        "| batch per domain | loader workers | loader img/s | training img/s | loader / training |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['batch_per_domain']} | {r['num_workers']} | "
                     f"{r['loader_images_per_s']:,.0f} | {r['training_images_per_s']:,.0f} | "
                     f"{r['ratio']:.1f}x |")  # fmt: skip
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "data_loading.md").write_text("\n".join(lines) + "\n")
    (out / "data_loading.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
