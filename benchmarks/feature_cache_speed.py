"""How much faster heads train on cached features than through the frozen backbone each step.

A DANN head (bottleneck 256, classifier, discriminator of two hidden layers of 1024) on
ImageNet MobileNetV2 features (../shared/weights, BatchNorm frozen), USPS→MNIST digits as
3x96x96 images (subsets). Two ways, same head, same steps: (a) the backbone frozen by
``Finetuning(freeze=["backbone"])`` and run at every step; (b) ``cached_features``: the
backbone runs once, training reads the features. Times are CPU seconds of the process (one
thread) per training epoch, medians (no validation), and of the one-off extraction (which also
loads the digits and the backbone).
Writes ``benchmarks/results/feature_cache_speed.{md,json}``. Usage::

    DALIB_DATA=../shared/data python benchmarks/feature_cache_speed.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from dalib_runs import REPO, write_results

from dalib import DATASETS, DomainAdaptationModule, DomainDataModule
from dalib.data.digits import DigitImages, load_digits
from dalib.data.domains import DomainPair
from dalib.records import library_versions
from dalib.transfer import Finetuning

WEIGHTS = REPO.parent / "shared" / "weights" / "mobilenet_v2_imagenet_torchvision.pt"
COMMAND = "DALIB_DATA=../shared/data python benchmarks/feature_cache_speed.py"
SIZE = 96


def rgb_subset(name: str, train: bool, n: int) -> DigitImages:
    """The first ``n`` images of a digits split as 3 x SIZE x SIZE."""
    digits = load_digits(name, train, 1, 28, None, False)
    images = F.interpolate(digits.images[:n].float(), size=SIZE, mode="bilinear")
    return DigitImages(images.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1),
                       digits.targets[:n])  # fmt: skip


@DATASETS.register("usps_mnist_rgb")
def usps_mnist_rgb(n: int = 600) -> DomainPair:
    """USPS→MNIST subsets as RGB images MobileNetV2 takes."""
    return DomainPair(
        benchmark="digits",
        task=f"USPS->MNIST ({n} images each, {SIZE}x{SIZE} RGB)",
        source=rgb_subset("USPS", True, n),
        target_train=rgb_subset("MNIST", True, n),
        target_test=rgb_subset("MNIST", False, n // 2),
        num_classes=10,
    )


class EpochTimer(pl.Callback):
    """CPU seconds of this process per training epoch (robust to other processes' load)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.started = time.process_time()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.times.append(time.process_time() - self.started)


def train(data: DomainDataModule, backbone, callbacks, epochs: int) -> list[float]:
    """Epoch times of a DANN head on ``data``."""
    pl.seed_everything(0)
    timer = EpochTimer()
    model = DomainAdaptationModule(
        num_classes=10, input_shape=data.input_shape, backbone=backbone, bottleneck_dim=256,
        discrepancy={"name": "dann", "hidden_dim": 1024},  # as in the committed table
    )  # fmt: skip
    trainer = pl.Trainer(
        max_epochs=epochs, callbacks=[*callbacks, timer], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(model, data)
    return timer.times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="steps per epoch, batch 32+32")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)  # CPU time of one thread: comparable under a shared machine's load
    backbone = {"name": "mobilenet_v2", "checkpoint": str(WEIGHTS), "frozen_bn": True}
    raw = DomainDataModule(dataset="usps_mnist_rgb", iterations_per_epoch=args.steps)
    uncached = train(raw, backbone, [Finetuning(freeze=["backbone"])], args.epochs)
    with tempfile.TemporaryDirectory() as cache:
        spec = {"name": "cached_features", "dataset": "usps_mnist_rgb", "backbone": backbone,
                "cache_dir": cache}  # fmt: skip
        started = time.process_time()
        features = DomainDataModule(dataset=spec, iterations_per_epoch=args.steps)
        features.setup("fit")
        extraction = time.process_time() - started
        started = time.process_time()
        DomainDataModule(dataset=spec).setup("fit")
        reload = time.process_time() - started
        cached = train(features, "identity", [], args.epochs)
    per_epoch = {"uncached": statistics.median(uncached), "cached": statistics.median(cached)}
    ratio = per_epoch["uncached"] / per_epoch["cached"]
    images = sum(len(getattr(raw.pair, p)) for p in ("source", "target_train", "target_test"))
    result = {
        "command": COMMAND,
        "task": raw.task,
        "steps_per_epoch": args.steps,
        "epoch_times_s": {"uncached": uncached, "cached": cached},
        "median_epoch_s": per_epoch,
        "speedup": ratio,
        "extraction_s": extraction,
        "cache_hit_s": reload,
        "images_extracted": images,
        "threads": torch.get_num_threads(),
        "versions": library_versions(),
    }
    md = (
        "# Feature cache: heads on cached features vs through the frozen backbone\n\n"
        f"Produced by `{COMMAND}`.\n\n"
        f"DANN head (bottleneck 256) on ImageNet MobileNetV2 features, {raw.task}; "
        f"{args.steps} steps of 32 source + 32 target images per epoch, median of "
        f"{args.epochs} epochs, no validation; CPU seconds of the process (one thread, so other\n"
        "processes on the shared machine do not inflate them), measured in one run.\n\n"
        "| | CPU seconds per epoch |\n|---|---|\n"
        f"| frozen backbone at every step (`Finetuning(freeze=[backbone])`) | "
        f"{per_epoch['uncached']:.3f} |\n"
        "| cached features (`cached_features`, `backbone: identity`) | "
        f"{per_epoch['cached']:.3f} |\n\n"
        f"**{ratio:.0f}x** faster per epoch on cached features. The one-off extraction of "
        f"{images} images took {extraction:.1f} CPU s (about "
        f"{extraction / per_epoch['uncached']:.1f} uncached epochs; with loading the digits and "
        f"the backbone); a later run finds the file in {reload:.1f} CPU s (loading the digits, "
        "building the backbone and hashing it for the key) and never calls the backbone.\n\n"
        f"Versions: {json.dumps(result['versions'])}\n"
    )
    write_results(args.out, "feature_cache_speed", md, result)


if __name__ == "__main__":
    main()
