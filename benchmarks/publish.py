"""Turn a finished (or partly finished) sweep into committed results: <name>.md and <name>.json.

    python benchmarks/publish.py runs/sweeps/office_caltech office_caltech \
        --command "bash benchmarks/office_caltech.sh" --planned 468 \
        --baseline "CORAL + linear SVM (Sun, Feng and Saenko, AAAI 2016)=48.8"

``<name>.json`` is ``dalib report``'s ``records.json`` (one entry per run, accuracies in percent,
``commit``: the dalib version that made the run); ``<name>.md`` is the report under a header that
names the command, the code versions and how many of the planned runs each made, followed by
the target check: every method's average over tasks against the published numbers its config
names and against each ``--baseline``, and against source-only measured in the same table.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import subprocess
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import torch
import yaml

from dalib.records import scan_records
from dalib.report import markdown, swept_params, write_report

RESULTS = Path(__file__).resolve().parent / "results"


def method_averages(records: list[dict]) -> dict[str, tuple[float, int, int]]:
    """Per method: mean over tasks of the seed-mean target accuracy, tasks and runs counted."""
    cells: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        cells[r["method"]][r["task"]].append(r["target_acc"])
    return {
        m: (statistics.mean(statistics.mean(v) for v in tasks.values()), len(tasks),
            sum(len(v) for v in tasks.values()))
        for m, tasks in cells.items()
    }  # fmt: skip


def task_means(
    records: list[dict], key: str = "target_acc"
) -> dict[tuple[str, str], tuple[float, int]]:
    """Per (method, task): the mean of ``key`` over the runs that recorded it, and their count."""
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in records:
        if r.get(key) is not None:
            cells[r["method"], r["task"]].append(r[key])
    return {k: (statistics.mean(v), len(v)) for k, v in cells.items()}


def target_check(
    records: list[dict], references: dict, baselines: list[tuple[str, float]], labelled: dict
):
    """Markdown lines: ours (no target labels) against published numbers and source-only."""
    lines = [
        "## Targets",
        "",
        "Ours: the reported model (`selected_by` above; no target labels), "
        "mean over seeds. Oracle: each run's best validation by target accuracy (uses target "
        "labels, as a source that picks its best epoch on the target test set does). Published "
        "numbers as their source chose them (see the source).",
        "",
    ]
    cells, oracle = task_means(records), task_means(records, "oracle_target_acc")
    rows = [["method", "task", "ours", "seeds", "published", "ours - published", "oracle",
             "oracle - published", "source"]]  # fmt: skip
    for method, ref in sorted(references.items()):
        for task, number in sorted(ref.get("target_acc", {}).items()):
            if task == "avg" or (method, task) not in cells:
                continue
            ours, n = cells[method, task]
            best = oracle.get((method, task))
            rows.append([method, task, f"{ours:.1f}", str(n), f"{number:.1f}",
                         f"{ours - number:+.1f} ({'met' if ours >= number else 'missed'})",
                         "" if best is None else f"{best[0]:.1f}",
                         "" if best is None else f"{best[0] - number:+.1f}",
                         ref["source"]])  # fmt: skip
    if len(rows) > 1:
        lines += [markdown(rows), ""]
    if variants := sorted({r["variant"] for r in records if "variant" in r}):
        named = ", ".join(variants)
        return [*lines, f"Some columns are an ablation's variants of one task ({named}): no "
                "average over tasks means anything; each variant's numbers are below."]  # fmt: skip
    averages = method_averages(records)
    all_tasks = len({r["task"] for r in records})
    floor = averages.get("source_only")
    rows = [["method", "avg over tasks", "tasks", "runs", "vs source-only (same table)",
             *(f"vs {label}" for label, _ in baselines)]]  # fmt: skip
    for method, (avg, tasks, runs) in sorted(averages.items(), key=lambda kv: -kv[1][0]):
        complete = tasks == all_tasks
        vs_floor = (
            ""
            if floor is None or method == "source_only"
            else (f"{avg - floor[0]:+.2f} ({'above' if avg > floor[0] else 'NOT above'})")
        )
        name = (
            f"{method} (uses {labelled[method]} target labels per class)"
            if method in labelled
            else method
        )
        row = [name, f"{avg:.2f}" + ("" if complete else " (partial)"), str(tasks), str(runs),
               vs_floor, *(f"{avg - value:+.2f}" for _, value in baselines)]  # fmt: skip
        rows.append(row)
    lines.append(markdown(rows))
    for label, value in baselines:
        lines.append(f"\n`{label}`: {value} (published; a shallow method, not run here).")
    return lines


def run_key(record: dict) -> tuple:
    return (
        record["method"],
        record["task"],
        json.dumps(record["params"], sort_keys=True),
        record["seed"],
    )


def kept_records(previous: Path, new: list[dict]) -> tuple[list[dict], dict[tuple, str]]:
    """The earlier publication's runs that ``new`` does not redo, in the report's internal form
    (fractions, a ``_path`` naming where they come from), and the code version of each, by
    ``run_key``: its ``commit``, or for a publication older than that field, the version its
    ``.md`` header names (right only where that publication came from one version)."""
    header = (
        previous.with_suffix(".md").read_text() if previous.with_suffix(".md").is_file() else ""
    )
    version = m.group(1) if (m := re.search(r"\(dalib ([0-9a-f]+),", header)) else "unknown"
    redone = {run_key(r) for r in new}
    versions = {}

    def fraction(value: float | None) -> float | None:
        return None if value is None else value / 100

    kept = []
    for r in json.loads(previous.read_text()):
        if run_key(r) in redone:
            continue
        versions[run_key(r)] = r.get("commit", version)
        kept.append({
            "dataset": r["benchmark"], "task": r["task"], "method": r["method"], "seed": r["seed"],
            "_params": r["params"], "_path": f"{previous}#{r['method']}/{r['task']}/{r['seed']}",
            "target_acc": fraction(r["target_acc"]), "selected_by": r["selected_by"],
            "oracle_target_acc": fraction(r["oracle_target_acc"]),
            "last_target_acc": fraction(r["last_target_acc"]),
            "selections": {n: {"target_acc": fraction(v)} for n, v in r["selections"].items()},
            "steps": r.get("steps"), "train_step_ms": r["train_step_ms"],
            "wall_time_s": r["wall_time_s"],
        })  # fmt: skip
    return kept, versions


def experiment_facts(folder: Path, methods: set[str]) -> tuple[dict, dict]:
    """Published numbers (``reference.yaml``) and target labels per class (``methods/<m>.yaml``)
    of ``methods``, from a benchmark's config folder."""
    table = yaml.safe_load((folder / "reference.yaml").read_text()) or {}
    references = {m: table[m] for m in methods if m in table}
    labelled = {}
    for method in methods:
        config = yaml.safe_load((folder / "methods" / f"{method}.yaml").read_text()) or {}
        if k := (config.get("data") or {}).get("target_labels_per_class"):
            labelled[method] = k
    return references, labelled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="the sweep's output folder")
    parser.add_argument("name", help="results/<name>.md and .json")
    parser.add_argument("--command", required=True, help="the command that produced the runs")
    parser.add_argument("--planned", type=int, help="how many runs the sweep plans")
    parser.add_argument("--baseline", action="append", default=[], help="'label=value' (percent)")
    parser.add_argument("--previous", type=Path, help="keep this publication's other runs")
    parser.add_argument("--experiments", type=Path, help="the benchmark's config folder")
    parser.add_argument(
        "--runs-at", help="the commit the runs were made at, when not HEAD (a pinned checkout)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write (%(default)s)")
    args = parser.parse_args()
    if args.previous and not args.experiments:
        parser.error("--previous needs --experiments (the kept methods' references)")
    baselines = [(b.rsplit("=", 1)[0], float(b.rsplit("=", 1)[1])) for b in args.baseline]
    new = scan_records(args.runs)[0]  # the report names the unreadable ones
    kept, kept_versions = [], {}
    if args.previous:
        swept_params(new, args.runs)  # gives each record its ``_params``, as the report does
        redone = [{**r, "params": r["_params"]} for r in new]
        kept, kept_versions = kept_records(args.previous, redone)
    with tempfile.TemporaryDirectory() as tmp:
        report = write_report(args.runs, Path(tmp), kept=kept)
        records = json.loads((Path(tmp) / "records.json").read_text())
    references, labelled = (
        experiment_facts(args.experiments, {r["method"] for r in kept}) if kept else ({}, {})
    )
    for record in new:
        if record.get("reference"):
            references[record["method"]] = record["reference"]
        if k := record["config"]["data"].get("target_labels_per_class"):
            labelled[record["method"]] = k
    commit = (
        args.runs_at
        or subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    )
    for record in records:
        record["commit"] = kept_versions.get(run_key(record), commit)
    planned = f" of the {args.planned} the sweep plans" if args.planned else ""
    if kept:
        by_version = Counter(kept_versions.values())
        made_by = ", ".join(f"{n} by dalib {v}" for v, n in sorted(by_version.items()))
        planned += (
            f" ({len(records) - len(kept)} from this command at dalib {commit}; {len(kept)} kept "
            f"from the earlier publication {args.previous.name} for the runs not rerun, made "
            f"{made_by}; each record's `commit` names its version)"
        )
    header = [
        f"# {args.name}: results",
        "",
        f"Produced by `{args.command}` (dalib {commit}, torch {torch.__version__}, "
        f"{platform.machine()} CPU, one thread per run as the script sets); this file by "
        f"`python benchmarks/publish.py {args.runs} {args.name} ...` (see the script). It holds "
        f"{len(records)} runs{planned}; rerunning the command resumes the sweep.",
        "",
    ]
    body = report.split("\n", 1)[1]  # drop the report's own title
    text = "\n".join([*header, *target_check(records, references, baselines, labelled), "", body])
    args.out.mkdir(exist_ok=True)
    (args.out / f"{args.name}.md").write_text(text)
    (args.out / f"{args.name}.json").write_text(json.dumps(records, indent=1) + "\n")
    print(f"wrote {args.out / args.name}.md and .json ({len(records)} runs)")


if __name__ == "__main__":
    main()
