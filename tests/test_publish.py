"""benchmarks/publish.py: a sweep folder into committed results, keeping an earlier table's runs."""

import importlib.util
import json
import sys

import yaml

from tests.conftest import REPO


def publish(monkeypatch, *arguments: str) -> None:
    """``python benchmarks/publish.py ARGUMENTS``, in this process (torch is already loaded)."""
    spec = importlib.util.spec_from_file_location("publish", REPO / "benchmarks" / "publish.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(sys, "argv", ["publish.py", *arguments])
    script.main()


def write_run(folder, method, seed, acc, reference):
    folder.mkdir(parents=True)
    record = {"method": method, "dataset": "toy", "task": "A->B", "seed": seed,
              "selected_by": "last", "target_acc": acc, "oracle_target_acc": acc + 0.01,
              "last_target_acc": acc, "steps": 30,
              "selections": {"last": {"target_acc": acc}, "rv": {"target_acc": acc - 0.1}},
              "reference": reference, "config": {"data": {}, "model": {}}}  # fmt: skip
    (folder / "result.json").write_text(json.dumps(record))


def test_new_runs_join_the_runs_an_earlier_publication_kept_and_replace_the_ones_they_redo(
    tmp_path, monkeypatch
):
    flat = {"benchmark": "toy", "task": "A->B", "params": {}, "selected_by": "last",
            "train_step_ms": 1.0, "wall_time_s": 2.0}  # fmt: skip
    previous = [
        {**flat, "method": "source_only", "seed": 0, "target_acc": 50.0,
         "oracle_target_acc": 52.0, "last_target_acc": 50.0, "selections": {"last": 50.0}},
        {**flat, "method": "source_only", "seed": 1, "target_acc": 60.0, "commit": "def5678",
         "oracle_target_acc": 62.0, "last_target_acc": 60.0, "selections": {"last": 60.0}},
        {**flat, "method": "mcd", "seed": 0, "target_acc": 10.0,
         "oracle_target_acc": 11.0, "last_target_acc": 10.0, "selections": {"last": 10.0}},
    ]  # fmt: skip
    (tmp_path / "toy.json").write_text(json.dumps(previous))
    (tmp_path / "toy.md").write_text("# toy\n\nProduced by `x` (dalib abc1234, torch 2).\n")
    experiments = tmp_path / "experiments"
    (experiments / "methods").mkdir(parents=True)
    reference = {"source_only": {"source": "Paper, Table 1", "target_acc": {"A->B": 57.0}}}
    (experiments / "reference.yaml").write_text(yaml.safe_dump(reference))
    (experiments / "methods" / "source_only.yaml").write_text("model: {}\n")
    write_run(tmp_path / "runs" / "mcd" / "seed_0", "mcd", 0, 0.7, {"source": "none"})
    out = tmp_path / "out"
    publish(monkeypatch, str(tmp_path / "runs"), "toy", "--command", "bash x.sh",
            "--previous", str(tmp_path / "toy.json"), "--experiments", str(experiments),
            "--out", str(out), "--runs-at", "fed9876")  # fmt: skip
    records = json.loads((out / "toy.json").read_text())
    # each run names the version that made it: the new run this command's, a kept run its own
    # `commit`, or (a publication older than that field) the version its header names
    assert sorted((r["method"], r["seed"], r["target_acc"], r["commit"]) for r in records) == [
        ("mcd", 0, 70.0, "fed9876"), ("source_only", 0, 50.0, "abc1234"),
        ("source_only", 1, 60.0, "def5678"),
    ]  # fmt: skip
    # the steps each run trained (the earlier publication did not record them)
    assert sorted((r["method"], r["seed"], r["steps"]) for r in records) == [
        ("mcd", 0, 30),
        ("source_only", 0, None),
        ("source_only", 1, None),
    ]
    text = (out / "toy.md").read_text()
    assert "It holds 3 runs (1 from this command at dalib fed9876; 2 kept " in text
    assert (
        "from the earlier publication toy.json for the runs not rerun, made 1 by dalib abc1234, "
        "1 by dalib def5678;" in text
    )
    # the oracle (best validation, target labels) beside ours: the seeds' 52 and 62
    assert (
        "| source_only | A->B | 55.0 | 2 | 57.0 | -2.0 (missed) | 57.0 | +0.0 | Paper, Table 1 |"
        in text
    )
    assert "| mcd | 70.00 | 1 | 1 | +15.00 (above) |" in text
    assert "| source_only | 55.0 ± 7.1 | 55.0 | 2 |" in text
    # a score the older runs did not record (here rv) is blank in their rows
    assert (
        "| method | last | rv |\n|---|---|---|\n| mcd | 70.0 | 60.0 |\n| source_only | 55.0 |  |"
        in text
    )


def test_an_ablation_s_variants_of_one_task_get_no_average_over_tasks(tmp_path, monkeypatch):
    """Named sweep tasks on one data task are an ablation's arms: the target check lists none
    of them averaged (an average of arms is no result)."""
    runs = []
    for variant, acc in (("full", 0.6), ("no_entropy", 0.75)):
        run_id = f"afn/{variant}/default/seed_0"
        write_run(tmp_path / "runs" / run_id, "afn", 0, acc, None)
        runs.append({"id": run_id, "configs": [], "params": {}, "seed": 0})
    sweep = {"sweep": "ablation.yaml", "spec": {}, "runs": runs}
    (tmp_path / "runs" / "sweep.json").write_text(json.dumps(sweep))
    out = tmp_path / "out"
    publish(monkeypatch, str(tmp_path / "runs"), "abl", "--command", "dalib sweep ablation.yaml",
            "--out", str(out))  # fmt: skip
    text = (out / "abl.md").read_text()
    assert "Some columns are an ablation's variants of one task (full, no_entropy)" in text
    assert "avg over tasks" not in text
    assert "| afn | 60.0 ± 0.0 | 75.0 ± 0.0 |  | 1 |" in text
    records = json.loads((out / "abl.json").read_text())
    assert sorted((r["variant"], r["target_acc"]) for r in records) == [
        ("full", 60.0),
        ("no_entropy", 75.0),
    ]
