"""Figures of ``dalib report --plots``: accuracy vs hyper-parameter, learning curves, t-SNE."""

from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt
import torch
from sklearn.manifold import TSNE

from dalib.records import EMBEDDING_FILE, row_name

Record = dict[str, Any]


def accuracy_vs_parameter(records: list[Record], param: str, out: Path) -> Path:
    """Mean target accuracy (selected model) over seeds against one swept hyper-parameter."""
    series: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if param in r["_params"]:
            series[f"{r['method']} · {r['task']}"][float(r["_params"][param])].append(
                100 * r["target_acc"]
            )
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in sorted(series.items()):
        xs = sorted(points)
        means = [statistics.mean(points[x]) for x in xs]
        stds = [statistics.stdev(points[x]) if len(points[x]) > 1 else 0.0 for x in xs]
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=label)
    values = [x for points in series.values() for x in points]
    if values and min(values) > 0 and max(values) / min(values) >= 100:
        ax.set_xscale("log")
    ax.set(xlabel=param, ylabel="target accuracy (%), selected model",
           title=f"Target accuracy vs {param}")  # fmt: skip
    ax.legend(fontsize="small")
    path = out / f"accuracy_vs_{param.replace('.', '_')}.png"
    fig.tight_layout(), fig.savefig(path, dpi=120), plt.close(fig)
    return path


def read_curve(run_dir: Path, metric: str) -> dict[int, float]:
    """``metric`` against the step, from a run's ``metrics.csv``."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return {}
    with path.open() as f:
        return {int(row["step"]): float(row[metric])
                for row in csv.DictReader(f) if row.get(metric)}  # fmt: skip


def learning_curves(
    records: list[Record], varied: list[str], out: Path, metric: str = "val/target_acc"
) -> Path:
    """``metric`` against the training step, mean over seeds, one line per method and task."""
    curves: dict[str, list[dict[int, float]]] = defaultdict(list)
    for r in records:
        if curve := read_curve(Path(r["_path"]), metric):
            curves[f"{row_name(r, varied)} · {r['task']}"].append(curve)
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, runs in sorted(curves.items()):
        steps = sorted(set.intersection(*(set(c) for c in runs)))
        ax.plot(steps, [100 * statistics.mean(c[s] for c in runs) for s in steps], label=label)
    ax.set(xlabel="step", ylabel=f"{metric} (%)", title="Learning curves (mean over seeds)")
    ax.legend(fontsize="small")
    path = out / "learning_curves.png"
    fig.tight_layout(), fig.savefig(path, dpi=120), plt.close(fig)
    return path


def tsne(
    records: list[Record], varied: list[str], out: Path, embedding_file: str = EMBEDDING_FILE
) -> Path | None:
    """t-SNE of source vs target features of the lowest seed of each row × task."""
    first: dict[str, Record] = {}
    for r in sorted(records, key=lambda r: r["seed"]):
        if (Path(r["_path"]) / embedding_file).is_file():
            first.setdefault(f"{row_name(r, varied)} · {r['task']}", r)
    if not first:
        return None
    cols = min(3, len(first))
    rows = math.ceil(len(first) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4 * rows), squeeze=False)
    for ax, (label, r) in zip(axes.flat, sorted(first.items()), strict=False):
        emb = torch.load(Path(r["_path"]) / embedding_file, weights_only=True)
        x = torch.cat([emb["source"], emb["target"]]).double().numpy()
        xy = TSNE(2, init="pca", perplexity=min(30, len(x) - 1), random_state=0).fit_transform(x)
        n_s = len(emb["source"])
        ax.scatter(*xy[:n_s].T, s=4, c="tab:blue", label="source")
        ax.scatter(*xy[n_s:].T, s=4, c="tab:red", label="target")
        a_distance = r.get("a_distance")
        ax.set_title(label + (f"\nproxy A-distance {a_distance:.2f}" if a_distance else ""),
                     fontsize="small")  # fmt: skip
        ax.set_xticks([]), ax.set_yticks([])
    for ax in axes.flat[len(first) :]:
        ax.axis("off")
    axes.flat[0].legend(markerscale=3)
    path = out / "tsne.png"
    fig.tight_layout(), fig.savefig(path, dpi=120), plt.close(fig)
    return path


def all_plots(records: list[Record], varied: list[str], out: Path) -> list[Path]:
    paths = [accuracy_vs_parameter(records, p, out) for p in varied
             if all(isinstance(r["_params"].get(p, 0), int | float) for r in records)]  # fmt: skip
    paths.append(learning_curves(records, varied, out))
    if (figure := tsne(records, varied, out)) is not None:
        paths.append(figure)
    return paths
