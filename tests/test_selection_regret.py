"""Selection regret within runs and across grids, on records whose answers are worked by hand."""

import json

import pytest

from dalib import report
from dalib.selection.regret import RunScores, across_grids, from_result, within_runs
from dalib.sweep import Run


def run(params: str, oracle: float, chosen: dict, final: dict | None = None, seed: int = 0):
    return RunScores("bench", "dann", "A->W", seed, params, oracle, chosen, final)


def test_within_run_regret_is_oracle_minus_the_chosen_validation():
    runs = [
        run("a", 50.0, {"last": 48.0, "snd": 49.5, "oracle": 50.0}),
        run("b", 60.0, {"last": 60.0, "snd": 55.0, "oracle": 60.0}),
        run("c", 40.0, {"last": 39.2, "snd": 40.0, "oracle": 40.0}),
    ]
    cells = within_runs(runs)["bench"]
    assert set(cells) == {"last", "snd"}  # the oracle is the yardstick, not a contender
    assert cells["last"] == pytest.approx(
        {"n": 3, "mean": 2.8 / 3, "median": 0.8, "worst": 2.0, "within_1": 2 / 3, "vs_last_p": 1}
    )
    # snd against last, run by run: -1.5, +5, -0.8; signed ranks -2, +3, -1 balance (W = 3 of 6):
    # of the 8 equally likely sign patterns, 5 give W+ <= 3, so the two-sided p is 1 (capped).
    assert cells["snd"] == pytest.approx(
        {"n": 3, "mean": 5.5 / 3, "median": 0.5, "worst": 5.0, "within_1": 2 / 3, "vs_last_p": 1}
    )


def test_a_score_consistently_better_than_last_has_a_small_paired_p_value():
    # Eight runs where the score's choice is 1-8 points better than last's: all signs agree, so
    # the exact two-sided Wilcoxon p-value is 2/2^8.
    runs = [run(str(i), 60.0, {"last": 50.0 - i, "rv": 51.0}) for i in range(8)]
    assert within_runs(runs)["bench"]["rv"]["vs_last_p"] == pytest.approx(2 / 2**8)


def test_grid_regret_picks_the_best_rated_run_and_ranks_with_spearman():
    # One grid of four settings; "up" is larger-better and ranks them exactly as their
    # accuracies; "risk" is smaller-better and rates the worst run best; "flat" ties them all.
    accs = {"a": 40.0, "b": 44.0, "c": 47.0, "d": 45.0}
    up = {"a": 0.1, "b": 0.2, "c": 0.9, "d": 0.3}
    risk = {"a": 0.1, "b": 0.5, "c": 0.3, "d": 0.2}
    runs = [
        run(k, 50.0, {}, {"target_acc": accs[k], "up": up[k], "risk": risk[k], "flat": 1.0})
        for k in accs
    ]
    runs.append(run("a", 50.0, {}, {"target_acc": 90.0, "up": 0.0, "risk": 0.0}, seed=1))
    cells = across_grids(runs, {"up": True, "risk": False, "flat": True})["bench"]
    assert cells["up"]["n"] == 1  # the seed-1 run alone is no grid
    assert cells["up"]["mean"] == 0.0 and cells["up"]["spearman"] == pytest.approx(1.0)
    assert cells["risk"]["mean"] == pytest.approx(7.0)  # picked a (40) where c (47) was best
    # signed risks -0.1, -0.5, -0.3, -0.2 rank a, b, c, d as 4, 1, 2, 3; accuracies 1, 2, 4, 3
    assert cells["risk"]["spearman"] == pytest.approx(1 - 6 * (9 + 1 + 4 + 0) / (4 * 15))
    assert cells["flat"]["mean"] == pytest.approx(47.0 - 44.0)  # a tie: the mean of the tied
    assert cells["flat"]["spearman_n"] == 0  # a constant score has no rank correlation
    assert cells["random"]["mean"] == pytest.approx(47.0 - 44.0)
    assert cells["random"]["within_1"] == pytest.approx(1 / 4)  # only c is within a point
    assert cells["up"]["vs_random_p"] == 1.0  # one grid: a single difference proves nothing


def test_report_selection_reads_result_records(tmp_path):
    sweep_runs = []
    for lr, last, rv in [(0.01, 0.5, 0.8), (0.1, 0.6, 0.9)]:
        run_id = f"dann/t/lr={lr}/seed_0"
        history = [
            {"epoch": 0, "step": 10, "rv": 0.5, "source_acc": 0.9, "target_acc": last + 0.1},
            {"epoch": 1, "step": 20, "rv": rv, "source_acc": 0.9, "target_acc": last},
        ]
        record = {
            "method": "dann", "task": "t", "dataset": "toy", "seed": 0, "selected_by": "last",
            "target_acc": last, "oracle_target_acc": last + 0.1, "last_target_acc": last,
            "selections": {"rv": {"epoch": 1, "target_acc": last},
                           "last": {"epoch": 1, "target_acc": last},
                           "oracle": {"epoch": 0, "target_acc": last + 0.1}},
            "selection_history": history,
        }  # fmt: skip
        (tmp_path / run_id).mkdir(parents=True)
        (tmp_path / run_id / "result.json").write_text(json.dumps(record))
        sweep_runs.append({"id": run_id, "params": {"model.lr": lr}, "seed": 0})
    sweep = {"sweep": "grid.yaml", "spec": {}, "runs": sweep_runs}
    (tmp_path / "sweep.json").write_text(json.dumps(sweep))
    records = [from_result(r) for r in report.scan_records(tmp_path)[0]]
    assert [r.final["target_acc"] for r in records] == pytest.approx([50.0, 60.0])
    report.main([str(tmp_path), "--selection"])
    text = (tmp_path / "report.md").read_text()
    assert "### toy: choosing among a run's validations" in text
    assert "| rv | 2 | 10.00 | 10.00 | 10.0 | 0% | +0.00 (p=1) |" in text
    assert "| rv | 1 | 0.00 | 0.00 | 0.0 | 100% | +1.00 (1) | -5.00 (p=1) |" in text


def test_a_swept_component_names_its_folder_without_braces_or_spaces(tmp_path):
    config = tmp_path / "dann.yaml"
    config.write_text("model: {method: dann}\n")
    params = {"model.lr": 0.003, "model.gamma": {"name": "dann_ramp", "max_value": 0.3}}
    run_id = Run("dann", config, "A2C", params, 0).run_id
    assert run_id == "dann/A2C/lr=0.003,gamma=dann_ramp(max_value=0.3)/seed_0"


def test_a_score_that_always_picks_the_best_run_beats_a_random_pick():
    # Six grids of two runs, 1-6 points apart; the score rates the better run higher in each,
    # so it gains (k+1)/2 points on a random pick in grid k: all signs agree, p = 2/2^6.
    runs = [
        run(name, 90.0, {}, {"target_acc": acc, "up": acc}, seed=k)
        for k in range(6)
        for name, acc in (("low", 40.0), ("high", 41.0 + k))
    ]
    cells = across_grids(runs, {"up": True})["bench"]
    assert cells["up"]["mean"] == 0.0
    assert cells["random"]["mean"] == pytest.approx(sum((k + 1) / 2 for k in range(6)) / 6)
    assert cells["up"]["vs_random_p"] == pytest.approx(2 / 2**6)
