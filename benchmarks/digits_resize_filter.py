"""Does the resize filter at test time move a digits result? The USPS test split, 16x16, is
resized to 28x28 by dalib with torchvision's bilinear ``resize(antialias=True)``
(``dalib/data/digits.py``); the Transfer-Learning-Library resizes with PIL's default filter,
bicubic for grey images (tllib/vision/transforms/__init__.py:24-26, experiments/digits/PROTOCOL.md,
"Resize filter"). This evaluates finished MNIST->USPS runs' last models both ways.

    python benchmarks/digits_resize_filter.py runs/sweeps/digits_full/*/M2U/default/seed_0 \
        > benchmarks/results/digits_full_resize_filter.md

Data from ``DALIB_DATA`` (or ``--root``), as ``dalib fit`` reads it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dalib.data.digits import load_digits, to_unit_range
from dalib.network import Network


def bicubic_usps(raw: np.ndarray, size: int) -> torch.Tensor:
    """USPS images (n, 16, 16) uint8 resized by PIL's default filter, as (n, 1, size, size)."""
    resized = [np.asarray(Image.fromarray(image).resize((size, size))) for image in raw]
    return torch.as_tensor(np.stack(resized)).unsqueeze(1)


def last_model(run: Path) -> Network:
    """The network of a finished run folder's last checkpoint, in evaluation mode."""
    return Network.from_checkpoint(run / "checkpoints" / "last.ckpt", "checkpoint").eval()


def probabilities(network: Network, images: torch.Tensor) -> torch.Tensor:
    """Softmax predictions (n, classes) of ``network`` on uint8 ``images``."""
    with torch.no_grad():
        return network(to_unit_range(images)).softmax(1)


def accuracy(network: Network, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy (%) of ``network`` on uint8 ``images``."""
    predictions = probabilities(network, images).argmax(1)
    return 100.0 * (predictions == labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished MNIST->USPS run folders")
    parser.add_argument("--root", default=None, help="data folder (default: DALIB_DATA)")
    args = parser.parse_args()
    bilinear = load_digits("USPS", False, 1, 28, args.root, False)
    native = load_digits("USPS", False, 1, 16, args.root, False)  # 16x16: no resize
    bicubic = bicubic_usps(native.images[:, 0].numpy(), 28)
    print("# Test-time resize filter: USPS test accuracy (%) of each run's last model\n")
    print(
        "Produced by `python benchmarks/digits_resize_filter.py "
        + " ".join(map(str, args.runs))
        + "`.\n"
    )
    print("| run | bilinear, antialiased (dalib) | PIL default, bicubic (TLL) | difference |")
    print("|---|---|---|---|")
    for run in args.runs:
        network = last_model(run)
        ours = accuracy(network, bilinear.images, bilinear.targets)
        theirs = accuracy(network, bicubic, bilinear.targets)
        name = "/".join(run.parts[-4:])
        print(f"| {name} | {ours:.2f} | {theirs:.2f} | {theirs - ours:+.2f} |")


if __name__ == "__main__":
    main()
