"""Which label-free score to trust: selection regret over every committed sweep and the grids.

    python benchmarks/selection.py --collect runs/sweeps/selection

``--collect`` first copies the finished runs of the selection grids (``result.json``,
``metrics.csv`` and each sweep's ``sweep.json``) into ``benchmarks/results/selection_runs/``;
the tables are then computed from committed files only: the grid records there, and the
committed sweeps ``office_caltech``, ``digits`` (CPU setting), ``digits_tll_short`` and
``toy_moons`` of ``benchmarks/results/``. Writes ``benchmarks/results/selection.{md,json}``.
Regret is in percentage points below the oracle (``dalib.selection.regret``).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

from dalib.records import RESULT_FILE, SWEEP_FILE, load_records
from dalib.report import markdown, regret_sections, swept_params
from dalib.selection.regret import (
    RANDOM,
    RunScores,
    across_grids,
    from_published,
    from_result,
    grid_choice,
    grids,
    paired_p,
    within_runs,
)
from dalib.selection.scores import tracked_scores
from dalib.sweep import load_sweep

RESULTS = Path(__file__).resolve().parent / "results"
GRID_RECORDS = RESULTS / "selection_runs"
SWEEPS = Path(__file__).resolve().parent / "sweeps" / "selection"
#: Committed sweeps and how their records are stored: flat entries in percent, or result.json.
COMMITTED = {"office_caltech": "published", "digits": "published",
             "digits_tll_short": "published", "toy_moons": "result"}  # fmt: skip
SIGNIFICANT = (
    0.05  # a score beats `last` only where its paired advantage is this unlikely by chance
)
COMMAND = "python benchmarks/selection.py --collect runs/sweeps/selection"


def collect(source: Path) -> int:
    """Copy every finished grid run (its record and metrics) and each sweep.json; return how many
    runs are committed."""
    for sweep in source.rglob(SWEEP_FILE):
        target = GRID_RECORDS / sweep.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sweep, target)
    for result in source.rglob(RESULT_FILE):
        target = GRID_RECORDS / result.parent.relative_to(source)
        target.mkdir(parents=True, exist_ok=True)
        for name in (RESULT_FILE, "metrics.csv"):
            if (result.parent / name).is_file():
                shutil.copyfile(result.parent / name, target / name)
    return len(list(GRID_RECORDS.rglob(RESULT_FILE)))


def committed_runs() -> list[RunScores]:
    """The committed sweeps' runs, each benchmark named by its result file."""
    runs = []
    for name, kind in COMMITTED.items():
        entries = json.loads((RESULTS / f"{name}.json").read_text())
        convert = from_published if kind == "published" else from_result
        runs += [convert(entry, name) for entry in entries]
    return runs


def grid_runs() -> list[RunScores]:
    if not GRID_RECORDS.is_dir():
        return []
    records = load_records(GRID_RECORDS)
    swept_params(records, GRID_RECORDS)  # attaches each run's hyper-parameters as _params
    return [from_result(record, f"{record.get('dataset')} grid") for record in records]


def grid_sizes(runs: list[RunScores]) -> list[str]:
    """One line per grid benchmark: how many grids, and how many of their points have run."""
    sizes: dict[str, list[int]] = {}
    for (benchmark, *_), group in grids(runs).items():
        sizes.setdefault(benchmark, []).append(len(group))
    lines = [f"`{b}`: {len(n)} grids (method, task, seed) of {min(n)}-{max(n)} finished points "
             f"(8 planned each), {sum(n)} runs." for b, n in sorted(sizes.items())]  # fmt: skip
    return [*lines, ""]


def top_two_p(runs: list[RunScores], benchmark: str, grid: dict, higher: dict[str, bool]) -> str:
    """The runner-up score across ``benchmark``'s grids and the paired Wilcoxon p-value of its
    grid-by-grid regret against the best score's: whether the order of the two means anything."""
    ranked = sorted((k for k in grid if k != RANDOM), key=lambda k: grid[k]["mean"])
    best, second = ranked[:2]
    pairs = [(grid_choice(g, best, higher[best])[0], grid_choice(g, second, higher[second])[0])
             for (b, *_), g in grids(runs).items() if b == benchmark]  # fmt: skip
    p = paired_p([a - b for a, b in pairs if not (math.isnan(a) or math.isnan(b))])
    return (f" The runner-up, `{second}` (regret {grid[second]['mean']:.2f}), against "
            f"`{best}`: paired Wilcoxon p={p:.2g}.")  # fmt: skip


def recommendation(benchmark: str, within: dict, grid: dict | None) -> str:
    """One line from the numbers: the score of lowest mean regret, recommended over ``last`` only
    where it is lower and the paired Wilcoxon test gives p < ``SIGNIFICANT``; across grids, the
    best score against ``random``."""
    scores = {k: v for k, v in within.items() if k != "last"}
    best = min(scores, key=lambda k: scores[k]["mean"])
    last = within["last"]["mean"]
    if scores[best]["mean"] < last and scores[best]["vs_last_p"] < SIGNIFICANT:
        line = (f"**{benchmark}**: among a run's validations `{best}` has the lowest mean regret "
                f"({scores[best]['mean']:.2f} points against `last`'s {last:.2f}, paired Wilcoxon "
                f"p={scores[best]['vs_last_p']:.2g}, {scores[best]['n']} runs): use "
                f"`model.selection: {best}`.")  # fmt: skip
    else:
        line = (f"**{benchmark}**: among a run's validations no score beats `last` (mean regret "
                f"{last:.2f}; the best score, `{best}`, {scores[best]['mean']:.2f}, paired "
                f"Wilcoxon p={scores[best]['vs_last_p']:.2g}, {scores[best]['n']} runs): keep "
                "`model.selection: last`.")  # fmt: skip
    if grid:
        ranked = {k: v for k, v in grid.items() if k != RANDOM}
        top = min(ranked, key=lambda k: ranked[k]["mean"])
        base = grid[RANDOM]["mean"]
        better = ranked[top]["mean"] < base and ranked[top]["vs_random_p"] < SIGNIFICANT
        verdict = "beats" if better else "does not significantly beat"
        line += (f" Across hyper-parameter grids ({ranked[top]['n']} grids) the best, `{top}` "
                 f"(regret {ranked[top]['mean']:.2f}, Spearman ρ {ranked[top]['spearman']:+.2f}), "
                 f"{verdict} a random pick ({base:.2f}; paired Wilcoxon "
                 f"p={ranked[top]['vs_random_p']:.2g}).")  # fmt: skip
    return line


def by_method(runs: list[RunScores], higher: dict[str, bool]) -> dict[str, dict[str, dict]]:
    """Across-grid cells per grid benchmark and method (``"<benchmark>, <method>"``): whether a
    score that ranks one method's grids well also ranks another's."""
    split = [replace(r, benchmark=f"{r.benchmark}, {r.method}") for r in runs
             if r.benchmark.endswith(" grid")]  # fmt: skip
    return across_grids(split, higher)


def method_table(cells: dict[str, dict[str, dict]]) -> list[str]:
    """Markdown: one row per score, one column per method; each cell the mean regret across that
    method's grids with the mean Spearman ρ, the lowest regret of a column in bold."""
    columns = sorted(cells)
    names = sorted({name for c in cells.values() for name in c}, key=lambda n: (n == RANDOM, n))
    rows = [["score", *(f"{c.split(', ')[-1]} ({cells[c][RANDOM]['n']} grids)" for c in columns)]]
    best = {c: min(v["mean"] for v in cells[c].values()) for c in columns}
    for name in names:
        row = [f"`{name}`"]
        for column in columns:
            cell = cells[column].get(name)
            if cell is None:
                row.append("")
                continue
            text = f"{cell['mean']:.2f}"
            text = f"**{text}**" if cell["mean"] == best[column] else text
            if cell.get("spearman_n"):
                text += f" (ρ {cell['spearman']:+.2f})"
            row.append(text)
        rows.append(row)
    return [
        "",
        "### Grids per method: mean regret of the run each score picks (mean Spearman ρ)",
        "",
        markdown(rows),
    ]


def no_nan(value: Any) -> Any:
    """``value`` with every NaN (an undefined Spearman ρ) as ``None``: JSON has no NaN."""
    if isinstance(value, dict):
        return {k: no_nan(v) for k, v in value.items()}
    return None if isinstance(value, float) and math.isnan(value) else value


def version() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collect", type=Path, help="the grids' sweep output folder to copy in")
    args = parser.parse_args()
    if args.collect:
        collect(args.collect)
    runs = committed_runs() + grid_runs()
    higher = {name: score.higher_is_better for name, score in tracked_scores().items()}
    within, grid = within_runs(runs), across_grids(runs, higher)
    per_method = by_method(runs, higher)
    planned = sum(len(load_sweep(path)[1]) for path in sorted(SWEEPS.glob("*.yaml")))
    finished = sum(r.benchmark.endswith(" grid") for r in runs)
    lines = [
        "# Selection regret: which label-free score to trust",
        "",
        f"Produced by `{COMMAND}` (dalib {version()}) from committed records: the sweeps "
        f"{', '.join(f'`benchmarks/results/{n}.json`' for n in COMMITTED)} and the selection "
        f"grids' runs in `benchmarks/results/selection_runs/` ({finished} of the {planned} runs "
        "that `bash benchmarks/selection_grid.sh` and `bash benchmarks/selection_grid.sh "
        "--digits` plan; rerunning them resumes).",
        "",
        "Regret: percentage points of target accuracy below the oracle (which uses target "
        "labels and is only the yardstick). Within a run: the oracle's validation against the "
        "one the score chose, `last` (no selection) the baseline. Across a grid (runs of one "
        "method, task and seed differing only in hyper-parameters): the best final model against "
        "the one the score rates best at its last validation, a uniformly `random` pick the "
        "baseline; Spearman ρ between the score (signed so larger is better) and the final "
        "target accuracy, averaged over the grids where it is defined (their number in "
        "brackets). `vs last`: mean regret minus `last`'s, with the two-sided Wilcoxon "
        "signed-rank p-value of the run-by-run differences; a score is recommended over `last` "
        f"only where it is lower with p < {SIGNIFICANT}; likewise across grids against the random "
        "pick's expected regret, grid by grid. Each row says how many runs or grids "
        "it rests on.",
        "",
        *grid_sizes(runs),
        "## Recommendations (from the tables below)",
        "",
        *(
            f"- {recommendation(b, within[b], grid.get(b))}"
            + (top_two_p(runs, b, grid[b], higher) if b in grid else "")
            for b in sorted(within)
        ),
        "",
        "## Tables",
        *regret_sections(runs, higher),
        *(method_table(per_method) if per_method else []),
    ]
    (RESULTS / "selection.md").write_text("\n".join(lines) + "\n")
    out = {"command": COMMAND, "version": version(), "grid_runs": finished,
           "grid_runs_planned": planned, "within_runs": within, "across_grids": grid,
           "across_grids_by_method": per_method}  # fmt: skip
    (RESULTS / "selection.json").write_text(json.dumps(no_nan(out), indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
