"""``dalib report <results dir>``: run records → tables (Markdown, CSV) and plots.

Every ``result.json`` under the folder is one run. The main table is the mean ± standard deviation
over seeds of the target accuracy of the model each run *selected* (the selection score is named
in the title; a run that mixes scores gets one table per score), per method × task, with an
average column. The oracle table (best target accuracy over validations, chosen with target
labels) is printed separately and labelled as the upper bound it is. Where a run's config names
a ``reference``, the published number and its source stand beside ours. A record that cannot be
read is reported by name and skipped.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dalib.console import OneLineArgumentParser
from dalib.errors import DalibError
from dalib.records import RESULT_FILE, check_writable, row_name, scan_records, sweeps_under

if TYPE_CHECKING:
    from dalib.selection.regret import RunScores


def swept_params(records: list[dict[str, Any]], root: Path) -> list[str]:
    """Hyper-parameters a sweep varied (from its ``sweep.json``), each run's values attached, and
    each run's sweep task name (``_sweep_task``, the second part of its run id)."""
    by_dir: dict[str, dict[str, Any]] = {}
    for sweep_file, sweep in sweeps_under(root):
        for run in sweep["runs"]:
            by_dir[str((sweep_file.parent / run["id"]).resolve())] = run
    for record in records:
        run = by_dir.get(str(Path(record["_path"]).resolve()))
        if run is not None:
            record["_params"] = run["params"]
            record["_sweep_task"] = run["id"].split("/")[1]
        record.setdefault("_params", {})
    keys = {k for r in records for k in r["_params"]}
    return sorted(k for k in keys if len({str(r["_params"].get(k)) for r in records}) > 1)


def split_shared_tasks(records: list[dict[str, Any]]) -> None:
    """Where a sweep's named tasks share one data task (an ablation: ``tasks: {afn_only: {...},
    entropy_only: {...}}`` on one dataset), name each run's task ``"<task> [<sweep task>]"`` so
    that the tables keep the variants apart instead of pooling them as seeds, and mark it
    ``_variant`` (no average over such columns means anything). Records from no sweep (an earlier
    publication's, ``kept``) keep their task."""
    swept = [record for record in records if "_sweep_task" in record]
    names: dict[str, set[str]] = defaultdict(set)
    for record in swept:
        names[record["task"]].add(record["_sweep_task"])
    for record in swept:
        if len(names[record["task"]]) > 1:
            record["task"] = f"{record['task']} [{record['_sweep_task']}]"
            record["_variant"] = record["_sweep_task"]


def mean_std(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    if not values:
        return ""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{scale * statistics.mean(values):.{digits}f} ± {scale * std:.{digits}f}"


def table(
    records: list[dict[str, Any]], varied: Sequence[str], key: str, scale: float = 100.0
) -> list[list[str]]:
    """Rows of method × task cells ``mean ± std`` of ``key`` over seeds, plus the average over
    tasks (blank where some columns are an ablation's variants of one task: no average of those
    means anything)."""
    digits = 1 if scale == 100.0 else 2
    tasks = sorted({r["task"] for r in records})
    averaged = not any("_variant" in r for r in records)
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in records:
        cells[row_name(r, varied), r["task"]].append(r[key])
    rows = [["method", *tasks, "avg", "seeds"]]
    for name in sorted({row_name(r, varied) for r in records}):
        means = [statistics.mean(cells[name, t]) for t in tasks if cells[name, t]]
        seeds = sorted({len(cells[name, t]) for t in tasks if cells[name, t]})
        complete = averaged and len(means) == len(tasks)
        avg = f"{scale * statistics.mean(means):.{digits}f}" if complete else ""
        row = [name, *(mean_std(cells[name, t], scale, digits) for t in tasks), avg]
        rows.append([*row, "/".join(map(str, seeds))])
    return rows


def published(records: list[dict[str, Any]]) -> list[list[str]]:
    """Published numbers named by the configs' ``reference``, per method × task (and ``avg``)."""
    seen = {}
    for r in records:
        if (r.get("reference") or {}).get("target_acc"):
            seen[r["method"]] = r["reference"]
    tasks = sorted({r["task"] for r in records})
    if any("avg" in ref["target_acc"] for ref in seen.values()):
        tasks.append("avg")
    rows = [["method", *tasks, "source"]]
    for method, ref in sorted(seen.items()):
        numbers = ref.get("target_acc", {})
        rows.append([method, *(str(numbers.get(t, "")) for t in tasks), ref.get("source", "")])
    return rows if len(rows) > 1 else []


def selection_table(records: list[dict[str, Any]], varied: Sequence[str]) -> list[list[str]]:
    """Per row: the mean target accuracy of the model each selection score chose (blank for a
    score its runs did not record, e.g. runs of an older version)."""
    scored = [r for r in records if r.get("selections")]
    if not scored:
        return []
    names = list(dict.fromkeys(name for r in scored for name in r["selections"]))
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in scored:
        for name, choice in r["selections"].items():
            values[row_name(r, varied), name].append(choice["target_acc"])
    rows = [["method", *names]]
    for row in sorted({row_name(r, varied) for r in scored}):
        means = [statistics.mean(v) if (v := values[row, n]) else None for n in names]
        rows.append([row, *("" if m is None else f"{100 * m:.1f}" for m in means)])
    return rows


def sweep_commands(root: Path) -> list[str]:
    """The sweep files behind the records under ``root``, as their ``sweep.json`` names them."""
    return sorted({sweep["sweep"] for _, sweep in sweeps_under(root)})


def run_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat entry per run, accuracies in percent, for committed benchmark results; a run of an
    ablation's variant (``split_shared_tasks``) also names it (``variant``: its sweep task)."""

    def percent(value: float | None) -> float | None:
        return None if value is None else round(100 * value, 2)

    return [
        {
            "benchmark": r.get("dataset"),
            "task": r["task"],
            "method": r["method"],
            "seed": r.get("seed"),
            "params": r["_params"],
            "target_acc": percent(r["target_acc"]),
            "selected_by": r["selected_by"],
            "oracle_target_acc": percent(r.get("oracle_target_acc")),
            "last_target_acc": percent(r.get("last_target_acc")),
            "selections": {
                name: percent(choice["target_acc"])
                for name, choice in (r.get("selections") or {}).items()
            },
            "steps": r.get("steps"),
            "train_step_ms": r.get("train_step_ms"),
            "wall_time_s": r.get("wall_time_s"),
            **({"variant": r["_variant"]} if "_variant" in r else {}),
        }
        for r in sorted(records, key=lambda r: (r["method"], r["task"], r["_path"]))
    ]


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


REGRET_HOW = (
    "within a run: the oracle's validation against the score's; across a grid of runs that "
    "differ only in hyper-parameters: the best final model against the one the score rates best; "
    "`last` and `random` are the baselines to beat"
)


def regret_sections(runs: list[RunScores], higher_is_better: Mapping[str, bool]) -> list[str]:
    """Markdown: per benchmark, the within-run table, then the across-grid one where there are
    grids."""
    from dalib.selection.regret import across_grids, grid_table, within_runs, within_table

    parts: list[str] = []
    grid_cells = across_grids(runs, higher_is_better)
    for benchmark, cells in sorted(within_runs(runs).items()):
        parts += ["", f"### {benchmark}: choosing among a run's validations", ""]
        parts.append(markdown(within_table(cells)))
        if benchmark in grid_cells:
            parts += ["", f"### {benchmark}: choosing among a grid's runs (final models)", ""]
            parts.append(markdown(grid_table(grid_cells[benchmark])))
    return parts


def write_report(
    root: Path,
    out: Path,
    plots: bool = False,
    selection: bool = False,
    kept: Sequence[dict[str, Any]] = (),
) -> str:
    """Write ``report.md``, ``report.csv`` and ``records.json`` into ``out``; return the text.

    ``kept``: records of runs that are not under ``root`` (those an earlier publication holds,
    in ``scan_records``' form), reported with them.
    """
    if not root.is_dir():
        raise DalibError(f"{root} is not a folder of run records")
    records, problems = scan_records(root)
    records += kept
    if not records:
        why = f": {problems[0]}" if problems else ""
        raise DalibError(f"no readable {RESULT_FILE} under {root}{why}")
    for problem in problems:
        print(f"dalib report: skipping corrupt record: {problem}", file=sys.stderr, flush=True)
    varied = swept_params(records, root)
    split_shared_tasks(records)
    check_writable(out, "cannot write the report to")
    parts = [f"# Results in `{root}`", "", f"{len(records)} runs. Target accuracy (%), "
             "mean ± std over seeds; `avg`: mean over tasks (none where columns are an "
             "ablation's variants of one task)."]  # fmt: skip
    if sweeps := sweep_commands(root):
        runs = ", ".join(f"`dalib sweep {s}`" for s in sweeps)
        parts += ["", f"Produced by {runs}, then `dalib report {root}`."]
    csv_rows = []
    for selection in sorted({r["selected_by"] for r in records}):
        chosen = [r for r in records if r["selected_by"] == selection]
        label = "target labels: the oracle" if selection == "oracle" else "no target labels"
        parts += ["", f"## Model selected by `{selection}` ({label})", ""]
        rows = table(chosen, varied, "target_acc")
        parts.append(markdown(rows))
        csv_rows += [[f"selected_by={selection}", *row] for row in rows]
    oracle = [r for r in records if r.get("oracle_target_acc") is not None]
    if oracle:
        parts += ["", "## Oracle: best target accuracy over validations (uses target labels; "
                  "an upper bound, not a result)", ""]  # fmt: skip
        rows = table(oracle, varied, "oracle_target_acc")
        parts.append(markdown(rows))
        csv_rows += [["oracle", *row] for row in rows]
    if reference := published(records):
        parts += ["", "## Published numbers named by the configs", "", markdown(reference)]
    if every := selection_table(records, varied):
        title = ("## What each selection score would have chosen (target accuracy %, mean over "
                 "seeds and tasks; `oracle` uses target labels)")  # fmt: skip
        parts += ["", title, "", markdown(every)]
    measured = [r for r in records if r.get("a_distance") is not None]
    if measured:
        parts += ["", "## Proxy A-distance between source and target features (last validation; "
                  "0: indistinguishable, 2: separable)", ""]  # fmt: skip
        parts.append(markdown(table(measured, varied, "a_distance", scale=1.0)))
    if selection:  # the scores' package loads Lightning: only when asked for
        from dalib.selection.regret import from_result
        from dalib.selection.scores import tracked_scores

        parts += ["", "## Selection regret (percentage points below the oracle, which uses target "
                  "labels; " + f"{REGRET_HOW})"]  # fmt: skip
        higher = {name: score.higher_is_better for name, score in tracked_scores().items()}
        parts += regret_sections([from_result(r) for r in records], higher)
    if plots:
        from dalib.plots import all_plots  # matplotlib and t-SNE load only when asked for

        figures = all_plots(records, varied, out)
        parts += ["", "## Figures", "", *(f"![{p.stem}]({p.name})" for p in figures)]
    text = "\n".join(parts) + "\n"
    (out / "report.md").write_text(text)
    with (out / "report.csv").open("w", newline="") as f:
        csv.writer(f).writerows(csv_rows)
    (out / "records.json").write_text(json.dumps(run_records(records), indent=1) + "\n")
    return text


def main(arguments: Sequence[str]) -> None:
    """``dalib report <results dir> [--out DIR] [--plots] [--selection]``: report.md,
    report.csv and records.json."""
    parser = OneLineArgumentParser(prog="dalib report", description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="folder holding run records (result.json)")
    parser.add_argument("--out", type=Path, help="where report.md and report.csv go")
    parser.add_argument(
        "--plots", action="store_true", help="also accuracy vs hyper-parameter, curves, t-SNE"
    )
    parser.add_argument(
        "--selection", action="store_true", help="also each selection score's regret"
    )
    args = parser.parse_args(arguments)
    print(write_report(args.results, args.out or args.results, args.plots, args.selection))
