"""Scaling efficiency of dalib training from 1 to N devices (weak scaling: fixed batch per device).

For each device count N, one ``dalib``-equivalent Lightning run (``DomainAdaptationModule`` and
``DomainDataModule``, DDP for N > 1) trains ``--steps`` steps on random images held in memory
(``--pool`` per domain, ``--image-size``², 10 classes) with ``--batch`` samples per domain and
device; rank 0 times the steps after ``--warmup`` (CUDA synchronised). Reported per N: ms per
step, images per second (both domains, all devices) and efficiency ``t_1 / t_N``, ``t_1`` at
the first device count given (1.0 = perfect: N devices process N times the images in the same
time). Each measure is timed with the
discrepancy gathered across devices (the default) and, for comparison, per device.

On a machine with GPUs:
``python benchmarks/ddp_scaling.py --devices 1 2 4 8``
(ResNet-50, 224², batch 64 per domain and GPU, MMD and DANN) writes
``benchmarks/results/ddp_scaling.{md,json}``. A quick CPU check of the script itself:
``python benchmarks/ddp_scaling.py --accelerator cpu --devices 1 2 --backbone mlp
--image-size 8 --batch 16 --steps 12 --warmup 4 --output /tmp/ddp_scaling``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import TensorDataset

from dalib import DomainAdaptationModule, DomainDataModule
from dalib.data import DATASETS, DomainPair
from dalib.records import library_versions

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = 10


@DATASETS.register("benchmark_random_images")
def random_images(size: int = 224, pool: int = 512) -> DomainPair:
    """Random images and labels, the same in every process (seeded): a pure compute benchmark."""
    g = torch.Generator().manual_seed(0)

    def domain(shift: float) -> TensorDataset:
        x = torch.randn(pool, 3, size, size, generator=g) + shift
        return TensorDataset(x, torch.randint(0, NUM_CLASSES, (pool,), generator=g))

    source, target = domain(0.0), domain(0.5)
    return DomainPair("random", "random images", source, target, target, NUM_CLASSES)


class StepTimer(pl.Callback):
    """Seconds per step on rank 0 from step ``warmup`` to the last, written to ``out``."""

    def __init__(self, warmup: int, out: Path) -> None:
        self.warmup, self.out, self.start = warmup, out, 0.0

    def sync(self, module: pl.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            self.sync(module)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, module) -> None:
        self.sync(module)
        if trainer.is_global_zero:
            steps = trainer.global_step - self.warmup
            self.out.write_text(json.dumps((time.perf_counter() - self.start) / steps))


def child(args: argparse.Namespace) -> None:
    """One timed run at ``--child`` devices."""
    warnings.filterwarnings("ignore")
    pl.seed_everything(0, verbose=False)
    backbone = {"name": args.backbone}
    if args.backbone == "mlp":
        backbone["hidden_dims"] = [256, 256]
    data = DomainDataModule(
        dataset={"name": "benchmark_random_images", "size": args.image_size, "pool": args.pool},
        batch_size=args.batch,
        iterations_per_epoch=args.steps,
        num_workers=0,
    )
    model = DomainAdaptationModule(
        num_classes=NUM_CLASSES,
        input_shape=(3, args.image_size, args.image_size),
        backbone=backbone,
        bottleneck_dim=256,
        discrepancy=args.discrepancy,
        gather_discrepancy=args.gather,
    )
    trainer = pl.Trainer(
        accelerator=args.accelerator,
        devices=args.child,
        strategy="ddp" if args.child > 1 else "auto",
        max_steps=args.steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[StepTimer(args.warmup, Path(args.out))],
    )
    trainer.fit(model, data)


def timed(args: argparse.Namespace, devices: int, discrepancy: str, gather: bool) -> float:
    """Seconds per step of one child run."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "seconds.json"
        command = [sys.executable, __file__, "--child", str(devices), "--out", str(out)]
        command += ["--discrepancy", discrepancy, *(["--gather"] if gather else [])]
        for option in ["accelerator", "backbone", "image_size", "pool", "batch", "steps", "warmup"]:
            command += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
        subprocess.run(command, check=True)
        return json.loads(out.read_text())


def markdown(rows: list[dict], args: argparse.Namespace, command: str, device: str) -> str:
    versions = library_versions()
    lines = [
        "# DDP scaling: 1 to N devices, fixed batch per device",
        "",
        f"Produced by `{command}` on {device}, torch {versions['torch']}. Backbone "
        f"{args.backbone}, {args.image_size}² random images, batch {args.batch} per domain and "
        f"device, {args.steps} steps of which the first {args.warmup} are not timed. "
        "Efficiency = t_1 / t_N (t_1: the first device count).",
        "",
        "| measure | D on | devices | ms/step | images/s | efficiency |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['discrepancy']} | {r['d_on']} | {r['devices']} | {1000 * r['seconds']:.1f} | "
            f"{r['images_per_s']:,.0f} | {r['efficiency']:.3f} |"
        )
    return "\n".join([*lines, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--accelerator", default="gpu")
    parser.add_argument("--discrepancies", nargs="+", default=["mmd", "dann"])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--pool", type=int, default=256, help="random images per domain")
    parser.add_argument("--batch", type=int, default=64, help="per domain and device")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--discrepancy", help=argparse.SUPPRESS)
    parser.add_argument("--gather", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args)
        return
    rows = []
    for discrepancy in args.discrepancies:
        for gather in (True, False):
            model = DomainAdaptationModule(
                num_classes=NUM_CLASSES, input_shape=(3, 8, 8), discrepancy=discrepancy
            )
            if gather and model.objective.discrepancy.adversarial:
                continue  # adversarial measures are never gathered: one row is enough
            d_on = "gathered batch" if gather else "each device's batch"
            if model.objective.discrepancy.adversarial:
                d_on = "per sample (adversarial)"
            base = None
            for devices in args.devices:
                seconds = timed(args, devices, discrepancy, gather)
                base = base or seconds
                rows.append(
                    {
                        "discrepancy": discrepancy,
                        "d_on": d_on,
                        "devices": devices,
                        "seconds": seconds,
                        "images_per_s": 2 * args.batch * devices / seconds,
                        "efficiency": base / seconds,
                    }
                )
    device = (
        torch.cuda.get_device_name(0)
        if args.accelerator == "gpu" and torch.cuda.is_available()
        else f"{platform.machine()} CPU"
    )
    command = " ".join(["python", "benchmarks/ddp_scaling.py", *sys.argv[1:]])
    args.output.mkdir(parents=True, exist_ok=True)
    record = {"command": command, "device": device, "rows": rows, "versions": library_versions()}
    (args.output / "ddp_scaling.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    text = markdown(rows, args, command, device)
    (args.output / "ddp_scaling.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
