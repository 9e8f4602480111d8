"""Issue 18's investigation runs as one table: ``python benchmarks/misses.py`` (after
``bash benchmarks/misses.sh`` or while it runs) writes ``benchmarks/results/misses.{md,json}``.

Each run of the ``benchmarks/sweeps/misses_*.yaml`` sweeps is read from its folder: the target
and held-out source accuracy at the end of every epoch it finished (``metrics.csv``; the model
after that epoch's last step, no target labels used to choose it), the mean source cross-entropy
and discrepancy over its last two logged training steps (every 50 steps), and whether it finished (a
``result.json``). An unfinished run is listed with the epochs it reached, never as finished.
"""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SWEEPS = ("misses_wdgrl", "misses_source_only", "misses_office_caltech")
RESULTS = REPO / "benchmarks" / "results"
PAIRED = ("coral", "jan", "deepjdot", "wdgrl", "dan", "dann")  # against source-only, same runs


def paired_differences(table: Path) -> list[dict]:
    """Per method: its accuracy minus source-only's on the same task and seed, from a committed
    results file (``benchmarks/results/<name>.json``): mean, standard error, pairs above zero."""
    runs = json.loads(table.read_text())
    floor = {(r["task"], r["seed"]): r["target_acc"] for r in runs if r["method"] == "source_only"}
    rows = []
    for method in PAIRED:
        diffs = [r["target_acc"] - floor[r["task"], r["seed"]] for r in runs
                 if r["method"] == method and (r["task"], r["seed"]) in floor]  # fmt: skip
        if len(diffs) < 2:
            continue
        rows.append({
            "table": table.name, "method": method, "pairs": len(diffs),
            "mean_diff": round(statistics.mean(diffs), 2),
            "std_error": round(statistics.stdev(diffs) / len(diffs) ** 0.5, 2),
            "above": sum(d > 0 for d in diffs),
        })  # fmt: skip
    return rows


def number(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None


def read_run(folder: Path, sweep: str) -> dict:
    """One run's record from its folder ``<method>/<task>/<params>/seed_<k>``."""
    rows = list(csv.DictReader((folder / "metrics.csv").open()))
    epochs = [r for r in rows if number(r.get("val/target_acc")) is not None]
    train = [r for r in rows if number(r.get("train/source_ce")) is not None][-2:]
    config = yaml.safe_load((folder / "config.yaml").read_text())
    method, task, params, seed = folder.relative_to(REPO / "runs" / "sweeps" / sweep).parts

    def mean(key: str) -> float | None:
        values = [number(r.get(key)) for r in train if number(r.get(key)) is not None]
        return round(statistics.mean(values), 4) if values else None

    return {
        "sweep": sweep,
        "method": method,
        "task": task,
        "params": params,
        "seed": int(seed.removeprefix("seed_")),
        "finished": (folder / "result.json").is_file(),
        "epochs_done": len(epochs),
        "epochs_planned": config["trainer"]["max_epochs"],
        "target_acc_by_epoch": [round(100 * float(r["val/target_acc"]), 2) for r in epochs],
        "source_val_acc_last": round(100 * float(epochs[-1]["val/source_acc"]), 2)
        if epochs
        else None,
        "train_source_ce_end": mean("train/source_ce"),
        "train_discrepancy_end": mean("train/discrepancy"),
        "selected_by": "last (the model at the end of the last epoch reached)",
    }


def records() -> list[dict]:
    found = []
    for sweep in SWEEPS:
        for metrics in sorted((REPO / "runs" / "sweeps" / sweep).glob("*/*/*/seed_*/metrics.csv")):
            found.append(read_run(metrics.parent, sweep))
    return found


def markdown(runs: list[dict], paired: list[dict], version: str) -> str:
    lines = [
        "# Issue 18: the other misses, measured",
        "",
        f"Produced by `bash benchmarks/misses.sh` (the sweeps `benchmarks/sweeps/misses_*.yaml`), "
        f"this file by `python benchmarks/misses.py` (dalib {version}, CPU, one thread per run). "
        "Target accuracy (%) of the model at the end of each epoch (no target labels used to "
        "choose it; `last` = the end of the last epoch the run reached). A run marked "
        "`unfinished` was stopped before its last epoch: its numbers are those of the epochs it "
        "reached. Train CE / discrepancy: mean of the last two logged training steps "
        "(every 50 steps).",
        "",
        "| sweep | method | task | params | seed | epochs | target acc by epoch | last | "
        "source val acc (last) | train CE | train discrepancy |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        by_epoch = ", ".join(f"{a:.1f}" for a in r["target_acc_by_epoch"])
        last = f"{r['target_acc_by_epoch'][-1]:.1f}" if r["target_acc_by_epoch"] else "-"
        status = "" if r["finished"] else " (unfinished)"
        lines.append(
            f"| {r['sweep']} | {r['method']} | {r['task']} | {r['params']} | {r['seed']} | "
            f"{r['epochs_done']}/{r['epochs_planned']}{status} | {by_epoch} | {last} | "
            f"{r['source_val_acc_last']} | {r['train_source_ce_end']} | "
            f"{r['train_discrepancy_end']} |"
        )
    lines += [
        "",
        "## Committed tables: each method minus source-only on the same task and seed",
        "",
        "From the committed results files named (model after the last step, no target labels); "
        "standard error of the mean difference over the task-seed pairs.",
        "",
        "| table | method | pairs | mean difference (points) | std error | pairs above 0 |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['table']} | {r['method']} | {r['pairs']} | {r['mean_diff']:+.2f} | "
        f"{r['std_error']:.2f} | {r['above']} |"
        for r in paired
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    runs = records()
    paired = [row for name in ("office_caltech.json", "digits.json")
              for row in paired_differences(RESULTS / name)]  # fmt: skip
    version = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    (RESULTS / "misses.json").write_text(
        json.dumps({"runs": runs, "paired": paired}, indent=1) + "\n"
    )
    (RESULTS / "misses.md").write_text(markdown(runs, paired, version))
    print(f"wrote {RESULTS / 'misses.md'}: {len(runs)} runs")


if __name__ == "__main__":
    main()
