"""Which classes a finished MNIST->USPS run's last model predicts on the USPS test split: how
many samples it gives each class against the true counts, its recall per class, and how many of
its predictions are confident (max probability above a threshold, FixMatch's 0.95) and how many
of those are right. A self-training method that drifts toward a few classes shows it here.

    python benchmarks/digits_predictions.py \
        runs/sweeps/fixmatch_m2u_ablation/fixmatch/*/default/seed_0

Data from ``DALIB_DATA`` (or ``--root``), as ``dalib fit`` reads it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from digits_resize_filter import last_model, probabilities

from dalib.data.digits import load_digits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished MNIST->USPS run folders")
    parser.add_argument("--root", default=None, help="data folder (default: DALIB_DATA)")
    parser.add_argument("--threshold", type=float, default=0.95, help="confidence threshold")
    args = parser.parse_args()
    usps = load_digits("USPS", False, 1, 28, args.root, False)
    labels = usps.targets
    classes = int(labels.max()) + 1
    print("# Predictions of each run's last model on the USPS test split\n")
    print(
        f"Produced by `python benchmarks/digits_predictions.py {' '.join(map(str, args.runs))}`.\n"
    )
    print(f"True count per class 0-9: {torch.bincount(labels, minlength=classes).tolist()}\n")
    print(
        f"| run | accuracy | predicted count per class 0-9 | recall per class 0-9 (%) "
        f"| confident (p > {args.threshold}) | accuracy of the confident |"
    )
    print("|---|---|---|---|---|---|")
    for run in args.runs:
        p = probabilities(last_model(run), usps.images)
        predicted, confident = p.argmax(1), p.max(1).values > args.threshold
        right = predicted == labels
        recall = [round(100 * right[labels == c].float().mean().item()) for c in range(classes)]
        counts = torch.bincount(predicted, minlength=classes).tolist()
        share, confident_right = confident.float().mean(), right[confident].float().mean()
        print(
            f"| {'/'.join(run.parts[-4:])} | {100 * right.float().mean():.1f} | {counts} "
            f"| {recall} | {100 * share:.1f}% | {100 * confident_right:.1f} |"
        )


if __name__ == "__main__":
    main()
