"""The γ calibration table: hand-set vs calibrated γ, per benchmark and method, from two sweeps.

    python benchmarks/gamma_calibration.py runs/sweeps/gamma_calibration \
        --command "bash benchmarks/gamma_calibration.sh"

Reads the run records of ``<root>/hand`` (the method configs' committed γ, and source-only) and
``<root>/balanced`` (``gamma: {name: balanced, ...}``), written by the sweeps
``benchmarks/sweeps/gamma_calibration_{hand,balanced}.yaml``, and writes
``benchmarks/results/gamma_calibration.{md,json}``. Accuracies are of the model after the last
step (``selected_by: last``, no target labels); the oracle (the best validation by target
labels) is in its own column. The hand-set γ's gradient ratio at the start is
``γ_hand · ‖∂D/∂f‖ / ‖∂L_s/∂f‖`` with the norms the calibrated run of the same seed measured
(same initial network, same first batches).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from dalib.records import load_records
from dalib.report import mean_std

RESULTS = Path(__file__).resolve().parent / "results"
OFFICE_CALTECH = [f"{s}2{t}" for s in "ACDW" for t in "ACDW" if s != t]
FAMILIES = {  # title: the sweep tasks it averages over
    "Office-Caltech10 SURF, the 12 tasks as committed (l1 + z-score; BatchNorm bottleneck)": (
        OFFICE_CALTECH
    ),
    "Office-Caltech10 SURF A->W, raw counts (no preprocessing; plain MLP, no bottleneck)": [
        "A2W_counts_plain"
    ],
    "Synthetic reviews, books <-> kitchen (svmlight word counts, 2,000 words, log1p; "
    "benchmarks/make_svmlight_domains.py; adapt on the target train file, test on its test "
    "file)": ["reviews_B2K", "reviews_K2B"],
    "Digits MNIST->USPS, the CPU setting of digits_cpu.yaml (LeNet, 500-d bottleneck, 2,500 "
    "steps at batch 32)": ["M2U"],
}
SETTINGS = {  # sweep folder: γ setting
    "hand": "hand", "hand_digits": "hand",
    "balanced": "balanced", "balanced_digits": "balanced",
    "balanced_r0.25": "balanced_r0.25", "balanced_digits_r0.25": "balanced_r0.25",
}  # fmt: skip


def runs(root: Path, folder: str) -> list[dict[str, Any]]:
    """Every run record of ``root/folder`` with its sweep task (the folder after the method)
    and its γ setting (``hand``, ``balanced`` or ``balanced_r0.25``)."""
    records = []
    for record in load_records(root / folder):
        parts = Path(record["_path"]).relative_to(root / folder).parts
        records.append({**record, "setting": SETTINGS[folder], "sweep_task": parts[1]})
    return records


def hand_gamma(record: dict[str, Any]) -> float | None:
    """The committed γ of a hand-set run (a number in these configs), None for source-only."""
    gamma = record["config"]["model"].get("gamma")
    return float(gamma) if record["config"]["model"].get("discrepancy") else None


def summary(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (benchmark, method, setting): accuracies over seeds, γ, collapse counts."""
    cells: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for r in records:
        cells[r["sweep_task"], r["method"], r["setting"]].append(r)
    calibrations = {
        (r["sweep_task"], r["method"], r["seed"]): r["gamma_calibration"]
        for r in records
        if r.get("gamma_calibration")
    }
    rows = []
    for (task, method, setting), cell in sorted(cells.items()):
        cell.sort(key=lambda r: r["seed"])
        if setting.startswith("balanced"):
            gammas = [r["gamma_calibration"]["gamma"] for r in cell]
            ratios = [r["gamma_calibration"]["ratio"] for r in cell]
        else:
            gammas = [hand_gamma(r) for r in cell]
            measured = [calibrations.get((task, method, r["seed"])) for r in cell]
            ratios = [
                g * m["discrepancy_grad_norm"] / m["source_grad_norm"]
                for g, m in zip(gammas, measured, strict=True)
                if g is not None and m is not None
            ]
        rows.append(
            {
                "benchmark": task,
                "method": method,
                "gamma_setting": setting,
                "seeds": [r["seed"] for r in cell],
                "gamma": gammas,
                "gradient_ratio_at_start": ratios,
                "target_acc_last": [100 * r["target_acc"] for r in cell],
                "oracle_target_acc": [100 * r["oracle_target_acc"] for r in cell],
                "source_val_acc": [100 * r["source_val_acc"] for r in cell],
                "collapsed_runs": sum(bool(r.get("collapse")) for r in cell),
            }
        )
    return rows


def gamma_text(values: list[float | None]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    low, high = min(values), max(values)
    return f"{low:.3g}" if low == high else f"{low:.3g}-{high:.3g}"


def setting_label(method: str, setting: str) -> str:
    if method == "source_only":
        return "none"
    if setting == "hand":
        return "hand-set"
    return "calibrated, ratio " + ("0.25" if setting.endswith("r0.25") else "1")


def family_rows(rows: list[dict[str, Any]], tasks: list[str]) -> list[str]:
    """Per method and γ setting: the mean over ``tasks`` of the seed-mean target accuracy,
    against source-only on the same tasks, with γ, gradient ratios and collapses."""
    cells: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    for row in rows:
        if row["benchmark"] in tasks:
            cells[row["method"], row["gamma_setting"]][row["benchmark"]] = row
    floor = cells.get(("source_only", "hand"), {})
    lines = [
        "| method | γ | γ value | gradient ratio at start | target acc (last) | vs source-only | "
        "oracle | collapsed runs | tasks | runs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (method, setting), by_task in sorted(cells.items()):
        label = setting_label(method, setting)
        accuracy = statistics.mean(statistics.mean(r["target_acc_last"]) for r in by_task.values())
        oracle = statistics.mean(statistics.mean(r["oracle_target_acc"]) for r in by_task.values())
        shared = [t for t in by_task if t in floor]
        gains = [
            statistics.mean(by_task[t]["target_acc_last"])
            - statistics.mean(floor[t]["target_acc_last"])
            for t in shared
        ]
        versus = "" if method == "source_only" or not gains else f"{statistics.mean(gains):+.1f}"
        gammas = [g for r in by_task.values() for g in r["gamma"]]
        ratios = [x for r in by_task.values() for x in r["gradient_ratio_at_start"]]
        lines.append(
            f"| {method} | {label} | {gamma_text(gammas)} | {gamma_text(ratios)} | "
            f"{accuracy:.1f} | {versus} | {oracle:.1f} | "
            f"{sum(r['collapsed_runs'] for r in by_task.values())} | {len(by_task)} | "
            f"{sum(len(r['seeds']) for r in by_task.values())} |"
        )
    return lines


def task_rows(rows: list[dict[str, Any]], tasks: list[str]) -> list[str]:
    """One row per task, method and γ setting: mean ± std over seeds."""
    lines = [
        "| task | method | γ | γ value | gradient ratio at start | target acc (last) | "
        "oracle | source val acc | collapsed | seeds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row["benchmark"] not in tasks:
            continue
        setting = setting_label(row["method"], row["gamma_setting"])
        lines.append(
            f"| {row['benchmark']} | {row['method']} | {setting} | {gamma_text(row['gamma'])} | "
            f"{gamma_text(row['gradient_ratio_at_start'])} | "
            f"{mean_std(row['target_acc_last'], scale=1)} | "
            f"{mean_std(row['oracle_target_acc'], scale=1)} | "
            f"{mean_std(row['source_val_acc'], scale=1)} | {row['collapsed_runs']} | "
            f"{len(row['seeds'])} |"
        )
    return lines


def markdown(rows: list[dict[str, Any]], command: str, counts: dict[str, int]) -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    lines = [
        "# γ calibration: hand-set vs calibrated",
        "",
        f"Produced by `DALIB_DATA=../shared/data {command}` (dalib {commit or 'unknown'}, "
        f"torch {torch.__version__}, {platform.machine()} CPU, one thread per run); this file by "
        "`python benchmarks/gamma_calibration.py runs/sweeps/gamma_calibration ...`. Runs: "
        + ", ".join(f"{k} {v}" for k, v in counts.items())
        + ".",
        "",
        "Hand-set: the committed configs' γ (`experiments/office_caltech/methods/dan.yaml` and "
        "`experiments/digits/methods/dan.yaml` γ = 1, their `coral.yaml` γ = 10; the review "
        "tasks take Office-Caltech's). Calibrated: `gamma: {name: balanced, ratio: r}` (γ₀ "
        "measured on the first 10 batches so that the discrepancy's gradient on the features is "
        "r times the source loss's; constant, as the hand-set γ), at r = 1 and r = 0.25. "
        "Accuracy: target accuracy (%) of the model after the last step (`selected_by: last`, "
        "no target labels), mean over "
        "seeds 0, 1, 2 (per task: mean ± std); vs source-only: the difference to source-only on "
        "the same tasks and seeds; oracle: the best validation chosen with target labels (an "
        "upper bound, not a result). Gradient ratio at start: ‖γ·∂D/∂f‖ / ‖∂L_s/∂f‖ on the "
        "initial network (for the hand-set γ, from the norms the calibrated run of the same "
        "seed measured). Collapsed: runs in which `model.on_collapse: warn` recorded a collapse.",
        "",
    ]
    present = {row["benchmark"] for row in rows}
    for title, tasks in FAMILIES.items():
        if not present & set(tasks):
            continue
        lines += [f"## {title}", "", *family_rows(rows, tasks), ""]
        if len(tasks) > 1:
            lines += ["Per task:", "", *task_rows(rows, tasks), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the sweeps' parent folder (hand/, balanced/...)")
    parser.add_argument("--command", required=True, help="the command that ran the sweeps")
    args = parser.parse_args()
    records = [r for folder in SETTINGS if (args.root / folder).is_dir()
               for r in runs(args.root, folder)]  # fmt: skip
    counts = {
        "hand-set sweeps": sum(r["setting"] == "hand" for r in records),
        "calibrated at ratio 1": sum(r["setting"] == "balanced" for r in records),
        "calibrated at ratio 0.25": sum(r["setting"] == "balanced_r0.25" for r in records),
    }
    rows = summary(records)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gamma_calibration.json").write_text(json.dumps(rows, indent=1) + "\n")
    (RESULTS / "gamma_calibration.md").write_text(markdown(rows, args.command, counts) + "\n")
    print(f"wrote {RESULTS / 'gamma_calibration.md'} and .json ({len(records)} runs)")


if __name__ == "__main__":
    main()
