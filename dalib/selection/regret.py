"""Selection regret: how far below the oracle each label-free score's choice falls.

Accuracies are in percentage points; the oracle uses target labels and is only the yardstick.

- **Within a run** (over its validations): regret = ``oracle_target_acc − target_acc`` of the
  validation the score chose (``result.json``'s ``selections``). ``last`` (the model after the
  final step, no selection at all) is the baseline a score must beat.
- **Across a grid** (runs of one benchmark, method, task and seed that differ only in their
  hyper-parameters): each run's final model is scored at its last validation, the score picks the
  run it rates best (ties: the mean over the tied runs), and regret = the best final target
  accuracy in the group − the picked run's. Spearman's ρ between the score, signed so that larger
  means better, and the final target accuracy says how well it ranks the whole grid. ``random``
  (a uniformly random pick: best − mean, within 1 point as often as that share of runs) is the
  baseline there.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from scipy.stats import spearmanr, wilcoxon

WITHIN = 1.0  # percentage points: a choice this close to the oracle counts as a hit
RANDOM = "random"


@dataclass(frozen=True)
class RunScores:
    """What one run's record says about selection, accuracies in percent.

    ``chosen``: score name → target accuracy of the validation it chose (with ``last``);
    ``final``: the last validation's score values and ``target_acc``, or ``None`` where the
    record predates ``selection_history``.
    """

    benchmark: str
    method: str
    task: str
    seed: int | None
    params: str
    oracle: float
    chosen: dict[str, float]
    final: dict[str, float | None] | None


def from_result(record: Mapping[str, Any], benchmark: str | None = None) -> RunScores:
    """A ``result.json`` (accuracies as fractions); ``_params`` as ``dalib report`` attaches."""
    history = record.get("selection_history") or []
    final = None
    if history:
        final = dict(history[-1])
        final["target_acc"] = 100 * final["target_acc"]
    return RunScores(
        benchmark=benchmark or str(record.get("dataset")),
        method=record["method"],
        task=record["task"],
        seed=record.get("seed"),
        params=str(sorted((record.get("_params") or {}).items())),
        oracle=100 * record["oracle_target_acc"],
        chosen={k: 100 * v["target_acc"] for k, v in (record.get("selections") or {}).items()},
        final=final,
    )


def from_published(entry: Mapping[str, Any], benchmark: str) -> RunScores:
    """One entry of a committed ``benchmarks/results/<name>.json`` (accuracies in percent)."""
    return RunScores(
        benchmark=benchmark,
        method=entry["method"],
        task=entry["task"],
        seed=entry.get("seed"),
        params=str(sorted((entry.get("params") or {}).items())),
        oracle=entry["oracle_target_acc"],
        chosen=dict(entry.get("selections") or {}),
        final=entry.get("final_scores"),
    )


def summary(regrets: list[float], hits: list[float] | None = None) -> dict[str, float | int]:
    """Mean, median and worst regret, and the share of choices within ``WITHIN`` points."""
    hits = hits if hits is not None else [float(r <= WITHIN + 1e-9) for r in regrets]
    return {
        "n": len(regrets),
        "mean": statistics.mean(regrets),
        "median": statistics.median(regrets),
        "worst": max(regrets),
        "within_1": statistics.mean(hits),
    }


def paired_p(differences: list[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value that paired differences centre on 0 (zeros
    dropped); 1 where every difference is 0."""
    if not any(differences):
        return 1.0
    return float(wilcoxon(differences, zero_method="wilcox").pvalue)


def within_runs(runs: Iterable[RunScores]) -> dict[str, dict[str, dict[str, float | int]]]:
    """Per benchmark and score: the regret of choosing among a run's validations, and the
    Wilcoxon p-value of its run-by-run difference from ``last``'s (``vs_last_p``)."""
    regrets: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    gaps: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        for name, acc in run.chosen.items():
            if name != "oracle":
                regrets[run.benchmark][name].append(run.oracle - acc)
                gaps[run.benchmark][name].append(run.chosen["last"] - acc)
    out: dict[str, dict[str, dict[str, float | int]]] = {}
    for benchmark, scores in regrets.items():
        out[benchmark] = {}
        for name, values in scores.items():
            cell = summary(values)
            cell["vs_last_p"] = paired_p(gaps[benchmark][name])
            out[benchmark][name] = cell
    return out


def grids(runs: Iterable[RunScores]) -> dict[tuple[str, str, str, Any], list[RunScores]]:
    """Runs with a final validation, grouped by benchmark, method, task and seed; only groups of
    runs with at least two different hyper-parameter settings."""
    groups: dict[tuple[str, str, str, Any], list[RunScores]] = defaultdict(list)
    for run in runs:
        if run.final is not None:
            groups[run.benchmark, run.method, run.task, run.seed].append(run)
    return {k: g for k, g in groups.items() if len({r.params for r in g}) > 1}


def grid_choice(group: list[RunScores], name: str, higher_is_better: bool) -> tuple[float, float]:
    """``(regret, ρ)`` of one score on one grid; NaN regret where a run lacks the score, NaN ρ
    where either side is constant."""
    accs = [r.final["target_acc"] for r in group]
    values = [r.final.get(name) for r in group]
    if any(v is None or math.isnan(v) for v in values):
        return math.nan, math.nan
    signed = [v if higher_is_better else -v for v in values]
    best = max(signed)
    picked = statistics.mean(a for a, v in zip(accs, signed, strict=True) if v == best)
    constant = len(set(signed)) == 1 or len(set(accs)) == 1
    rho = math.nan if constant else float(spearmanr(signed, accs).statistic)
    return max(accs) - picked, rho


def across_grids(
    runs: Iterable[RunScores], higher_is_better: Mapping[str, bool]
) -> dict[str, dict[str, dict[str, float | int]]]:
    """Per benchmark and score (and ``random``): regret of choosing a grid's run, the mean
    Spearman ρ with the number of grids where it is defined, and the Wilcoxon p-value of its
    grid-by-grid difference from a random pick's expected regret (``vs_random_p``)."""
    regrets: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    hits: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    rhos: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    gaps: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (benchmark, *_), group in grids(runs).items():
        accs = [r.final["target_acc"] for r in group]
        random_regret = max(accs) - statistics.mean(accs)
        regrets[benchmark][RANDOM].append(random_regret)
        hits[benchmark][RANDOM].append(statistics.mean(max(accs) - a <= WITHIN for a in accs))
        gaps[benchmark][RANDOM].append(0.0)
        for name, higher in higher_is_better.items():
            regret, rho = grid_choice(group, name, higher)
            if not math.isnan(regret):
                regrets[benchmark][name].append(regret)
                hits[benchmark][name].append(float(regret <= WITHIN + 1e-9))
                gaps[benchmark][name].append(random_regret - regret)
            if not math.isnan(rho):
                rhos[benchmark][name].append(rho)
    out: dict[str, dict[str, dict[str, float | int]]] = {}
    for benchmark, scores in regrets.items():
        out[benchmark] = {}
        for name, values in scores.items():
            cell = summary(values, hits[benchmark][name])
            found = rhos[benchmark].get(name, [])
            cell["spearman"] = statistics.mean(found) if found else math.nan
            cell["spearman_n"] = len(found)
            cell["vs_random_p"] = paired_p(gaps[benchmark][name])
            out[benchmark][name] = cell
    return out


def percent(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.1f}"


def within_table(cells: Mapping[str, Mapping[str, float | int]]) -> list[list[str]]:
    """Rows: score, runs, mean/median/worst regret, share within 1 point, mean regret − last's
    (with the paired Wilcoxon p-value)."""
    last = cells.get("last", {}).get("mean", math.nan)
    rows = [["score", "runs", "mean regret", "median", "worst", "within 1 pt", "vs last"]]
    for name, c in sorted(cells.items(), key=lambda item: item[1]["mean"]):
        vs = "baseline" if name == "last" else f"{c['mean'] - last:+.2f} (p={c['vs_last_p']:.2g})"
        rows.append([name, str(c["n"]), f"{c['mean']:.2f}", f"{c['median']:.2f}",
                     percent(c["worst"]), f"{100 * c['within_1']:.0f}%", vs])  # fmt: skip
    return rows


def grid_table(cells: Mapping[str, Mapping[str, float | int]]) -> list[list[str]]:
    """Rows: score, grids, regret statistics, mean Spearman ρ (grids where defined), vs random."""
    base = cells.get(RANDOM, {}).get("mean", math.nan)
    rows = [["score", "grids", "mean regret", "median", "worst", "within 1 pt",
             "mean Spearman ρ (grids)", "vs random"]]  # fmt: skip
    for name, c in sorted(cells.items(), key=lambda item: item[1]["mean"]):
        rho = f"{c['spearman']:+.2f} ({c['spearman_n']})" if c.get("spearman_n") else ""
        vs = "baseline" if name == RANDOM else f"{c['mean'] - base:+.2f} (p={c['vs_random_p']:.2g})"
        rows.append([name, str(c["n"]), f"{c['mean']:.2f}", f"{c['median']:.2f}",
                     percent(c["worst"]), f"{100 * c['within_1']:.0f}%", rho, vs])  # fmt: skip
    return rows
