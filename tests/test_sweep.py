"""Sweeps: expansion, seeded random search, bad files, and a real SIGKILL in the middle."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dalib.cli import main
from dalib.errors import DalibError
from dalib.report import write_report
from dalib.sweep import load_sweep, prepare, run_sweep, select_runs
from tests.conftest import REPO, TOY

TIMING = {
    "wall_time_s",
    "train_step_ms",
    "train_step_cpu_ms",
    "train_step_mean_ms",
    "train_step_cpu_mean_ms",
    "peak_memory_mib",
    "config",
    "versions",
    "selected_checkpoint",
    "resumed_from",  # a run the killed sweep left with a checkpoint continues from it
}


def sweep_file(tmp_path: Path, name: str = "sweep.yaml", **spec) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def test_grid_random_tasks_and_seeds_expand_in_a_fixed_order(tmp_path):
    path = sweep_file(
        tmp_path,
        methods=[str(TOY / "source_only.yaml"), str(TOY / "dann.yaml")],
        tasks={"r20": {"data.dataset": {"name": "moons", "angle": 20}}, "r35": {}},
        grid={"model.gamma": [0.5, 1.0]},
        random={"samples": 3, "seed": 1, "space": {"model.lr": {"log_uniform": [1e-3, 1e-1]}}},
        seeds=[0, 1],
    )
    _, runs = load_sweep(path)
    assert len(runs) == 2 * 2 * 2 * 3 * 2
    assert len({r.run_id for r in runs}) == len(runs)
    assert runs[0].run_id.startswith("source_only/r20/gamma=0.5,lr=")
    assert all(1e-3 <= r.params["model.lr"] <= 1e-1 for r in runs)


def test_only_selects_runs_by_id_pattern_and_a_pattern_matching_nothing_is_refused(tmp_path):
    path = sweep_file(
        tmp_path,
        methods=[str(TOY / "source_only.yaml"), str(TOY / "dann.yaml")],
        tasks={"r20": {}, "r35": {}},
        seeds=[0, 1],
    )
    _, runs = load_sweep(path)
    assert select_runs(runs, []) == runs
    assert [r.run_id for r in select_runs(runs, ["dann/*"])] == [
        "dann/r20/default/seed_0", "dann/r20/default/seed_1",
        "dann/r35/default/seed_0", "dann/r35/default/seed_1",
    ]  # fmt: skip
    chosen = select_runs(runs, ["*/r35/*/seed_1", "source_only/r20/*"])
    assert [r.run_id for r in chosen] == [
        "source_only/r20/default/seed_0", "source_only/r20/default/seed_1",
        "source_only/r35/default/seed_1", "dann/r35/default/seed_1",
    ]  # fmt: skip
    with pytest.raises(DalibError, match=r"--only mcd/\* matches no run .* source_only/r20"):
        select_runs(runs, ["mcd/*"])


def test_method_overrides_beat_task_overrides_for_that_method_only(tmp_path):
    path = sweep_file(
        tmp_path,
        methods=[str(TOY / "source_only.yaml"), str(TOY / "dann.yaml")],
        tasks={"fast": {"model.lr": 0.1}, "plain": {}},
        method_overrides={"dann": {"model.lr": 0.01}},
    )
    lrs = {(r.method, r.task): r.overrides.get("model.lr") for r in load_sweep(path)[1]}
    assert lrs == {("source_only", "fast"): 0.1, ("source_only", "plain"): None,
                   ("dann", "fast"): 0.01, ("dann", "plain"): 0.01}  # fmt: skip
    bad = sweep_file(tmp_path, "bad.yaml", methods=[str(TOY / "dann.yaml")],
                     method_overrides={"dan": {"model.lr": 0.01}})  # fmt: skip
    with pytest.raises(DalibError, match=r"unknown key 'dan' in .*method_overrides"):
        load_sweep(bad)


def test_a_composed_method_runs_its_config_files_in_order_and_resumes_only_unchanged(tmp_path):
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text("trainer: {max_epochs: 3}\nmodel: {lr: 0.05}\n")
    path = sweep_file(
        tmp_path,
        methods=[["protocol.yaml", str(TOY / "dann.yaml")], str(TOY / "source_only.yaml")],
        method_overrides={"dann": {"model.gamma": 0.5}},
    )
    spec, (dann, source_only) = load_sweep(path)
    assert (dann.method, dann.configs) == ("dann", (protocol, TOY / "dann.yaml"))
    assert dann.overrides == {"model.gamma": 0.5} and source_only.configs == (
        TOY / "source_only.yaml",
    )
    output = tmp_path / "out"
    arguments = prepare(dann, output, spec)
    assert arguments[:5] == ["fit", "-c", str(protocol), "-c", str(TOY / "dann.yaml")]
    checkpoint = output / dann.run_id / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"step 10")
    assert prepare(dann, output, spec)[-1] == str(checkpoint)  # unchanged files: resume
    protocol.write_text("trainer: {max_epochs: 3}\nmodel: {lr: 0.5}\n")
    assert "--ckpt_path" not in prepare(dann, output, spec)  # the protocol changed: start over
    bad = sweep_file(tmp_path, "bad.yaml", methods=[["protocol.yaml", "missing.yaml"]])
    with pytest.raises(DalibError, match=r"method config missing\.yaml does not exist"):
        load_sweep(bad)


def test_random_search_is_seeded_per_parameter_name(tmp_path):
    space = {"model.lr": {"log_uniform": [1e-3, 1e-1]}}
    one = sweep_file(tmp_path, "a.yaml", methods=[str(TOY / "dann.yaml")],
                     random={"samples": 4, "seed": 3, "space": space})  # fmt: skip
    space["model.gamma"] = {"uniform": [0.0, 1.0]}
    two = sweep_file(tmp_path, "b.yaml", methods=[str(TOY / "dann.yaml")],
                     random={"samples": 4, "seed": 3, "space": space})  # fmt: skip
    lrs = [[r.params["model.lr"] for r in load_sweep(p)[1]] for p in (one, two)]
    assert lrs[0] == lrs[1] and len(set(lrs[0])) == 4


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"methods": [str(TOY / "dann.yaml")], "seed": [1]}, "unknown key 'seed' in sweep file"),
        ({"methods": []}, "'methods' must list at least one config file"),
        ({"methods": ["nope.yaml"]}, "method config nope.yaml does not exist"),
        ({"methods": [str(TOY / "dann.yaml")], "grid": {"model.gamma": []}}, "non-empty list"),
        (
            {"methods": [str(TOY / "dann.yaml")],
             "random": {"samples": 2, "space": {"model.lr": {"normal": [0, 1]}}}},
            "random.space.model.lr must be one of",
        ),
    ],
)  # fmt: skip
def test_bad_sweep_files_are_refused_with_one_line(tmp_path, spec, message):
    with pytest.raises(DalibError, match=message.replace(".", r"\.")):
        load_sweep(sweep_file(tmp_path, **spec))


def start_sweep(path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "dalib.cli", "sweep", str(path)]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def records(output: Path) -> dict[str, dict]:
    found = {}
    for path in output.rglob("result.json"):
        record = json.loads(path.read_text())
        found[str(path.parent.relative_to(output))] = {
            k: v for k, v in record.items() if k not in TIMING
        }
    return found


@pytest.mark.slow
def test_a_sweep_killed_mid_run_resumes_to_the_same_records(tmp_path):
    spec = {
        "methods": [str(TOY / "source_only.yaml"), str(TOY / "mmd.yaml")],
        "seeds": [0, 1],
        "overrides": {"trainer.max_epochs": 2, "data.iterations_per_epoch": 40},
    }
    whole = sweep_file(tmp_path, "whole.yaml", output=str(tmp_path / "whole"), **spec)
    cut = sweep_file(tmp_path, "cut.yaml", output=str(tmp_path / "cut"), **spec)
    assert start_sweep(whole).wait(timeout=300) == 0

    process = start_sweep(cut)
    deadline = time.time() + 240
    while time.time() < deadline:  # kill while run 2 is under way (run 1 has its record)
        finished = list((tmp_path / "cut").rglob("result.json"))
        started = list((tmp_path / "cut").rglob("metrics.csv"))
        if finished and len(started) > len(finished):
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = len(list((tmp_path / "cut").rglob("result.json")))
    assert 1 <= killed_at < 4
    time.sleep(2)  # an orphaned run would finish its record now; the sweep's runs die with it
    assert len(list((tmp_path / "cut").rglob("result.json"))) == killed_at

    resumed = start_sweep(cut)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert f"4 runs, {killed_at} already finished" in out
    assert records(tmp_path / "cut") == records(tmp_path / "whole")
    assert len(records(tmp_path / "cut")) == 4

    report = write_report(tmp_path / "cut", tmp_path / "report")
    assert "| mmd | " in report and "| source_only | " in report
    assert (tmp_path / "report" / "report.csv").read_text().count("\n") == 6


def test_an_unfinished_run_with_a_checkpoint_resumes_only_with_the_same_inputs(tmp_path):
    path = sweep_file(tmp_path, methods=[str(TOY / "dann.yaml")], seeds=[0])
    spec, (run,) = load_sweep(path)
    output = tmp_path / "out"
    assert "--ckpt_path" not in prepare(run, output, spec)  # a new run
    run_dir = output / run.run_id
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"step 10")
    (run_dir / "metrics.csv").write_text("step\n")
    resumed = prepare(run, output, spec)
    assert resumed[-2:] == ["--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt")]
    assert (run_dir / "metrics.csv").is_file()  # kept: the resumed run continues its history
    changed = {**spec, "overrides": {"model.lr": 0.5}}
    assert "--ckpt_path" not in prepare(run, output, changed)  # other numbers: start over
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.csv").exists()


@pytest.mark.slow
def test_a_sweep_killed_after_a_step_checkpoint_continues_the_run_exactly(tmp_path):
    spec = {
        "methods": [str(TOY / "dann.yaml")],
        "overrides": {
            "trainer.max_epochs": 1, "data.iterations_per_epoch": 60,
            "model.checkpoint_every_n_steps": 7,
        },
    }  # fmt: skip
    whole = sweep_file(tmp_path, "whole.yaml", output=str(tmp_path / "whole"), **spec)
    cut = sweep_file(tmp_path, "cut.yaml", output=str(tmp_path / "cut"), **spec)
    assert start_sweep(whole).wait(timeout=300) == 0
    process = start_sweep(cut)
    last = (
        tmp_path / "cut" / "dann" / "default" / "default" / "seed_0" / "checkpoints" / "last.ckpt"
    )
    deadline = time.time() + 240
    while not last.is_file() and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert last.is_file() and not list((tmp_path / "cut").rglob("result.json"))
    resumed = start_sweep(cut)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "cut").rglob("result.json")]
    assert record["resumed_from"] and record["resumed_from"][0]["global_step"] % 7 == 0
    assert records(tmp_path / "cut") == records(tmp_path / "whole")


def test_report_names_a_corrupt_record_and_goes_on(tmp_path, capsys):
    reference = {"source": "Paper 2018, Table 1", "target_acc": {"A->B": 91.7}}
    good = {"method": "dann", "task": "A->B", "seed": 0, "selected_by": "dev",
            "target_acc": 0.9, "oracle_target_acc": 0.95, "reference": reference}  # fmt: skip
    for seed, acc in ((0, 0.9), (1, 0.8)):
        run = tmp_path / f"run{seed}"
        run.mkdir()
        (run / "result.json").write_text(json.dumps({**good, "seed": seed, "target_acc": acc}))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "result.json").write_text('{"method": "dann", "target_')
    text = write_report(tmp_path, tmp_path / "out")
    notice = capsys.readouterr()
    assert f"skipping corrupt record: cannot read {tmp_path / 'broken' / 'result.json'}" in (
        notice.err
    )
    assert "skipping" not in notice.out
    assert "| dann | 85.0 ± 7.1 | 85.0 | 2 |" in text
    assert "Model selected by `dev` (no target labels)" in text
    assert "| dann | 91.7 | Paper 2018, Table 1 |" in text


def test_report_keeps_apart_the_named_tasks_of_an_ablation_on_one_data_task(tmp_path):
    """Two sweep tasks on the same data (``afn_only``, ``entropy_only``) are two columns, not
    four seeds of one; a task that no other sweep task shares keeps its own name."""
    runs = []
    for task, data_task, accs in (("afn_only", "U->M", (0.7, 0.8)),
                                  ("entropy_only", "U->M", (0.5, 0.6)),
                                  ("M2U", "M->U", (0.9, 0.9))):  # fmt: skip
        for seed, acc in enumerate(accs):
            run_id = f"afn/{task}/default/seed_{seed}"
            (tmp_path / run_id).mkdir(parents=True)
            record = {"method": "afn", "task": data_task, "seed": seed, "selected_by": "last",
                      "target_acc": acc, "oracle_target_acc": acc}  # fmt: skip
            (tmp_path / run_id / "result.json").write_text(json.dumps(record))
            runs.append({"id": run_id, "configs": [], "params": {}, "seed": seed})
    (tmp_path / "sweep.json").write_text(json.dumps({"sweep": "s.yaml", "spec": {}, "runs": runs}))
    text = write_report(tmp_path, tmp_path / "out")
    header = "| method | M->U | U->M [afn_only] | U->M [entropy_only] | avg | seeds |"
    assert header in text
    # no average over variants: it would mix the ablation's arms with the other task
    assert "| afn | 90.0 ± 0.0 | 75.0 ± 7.1 | 55.0 ± 7.1 |  | 2 |" in text
    variants = {r["variant"] for r in json.loads((tmp_path / "out" / "records.json").read_text())
                if "variant" in r}  # fmt: skip
    assert variants == {"afn_only", "entropy_only"}

    # a run an earlier publication kept (no sweep task) keeps its data task beside them
    kept = [{"method": "source_only", "task": "U->M", "seed": 0, "selected_by": "last",
             "target_acc": 0.75, "oracle_target_acc": 0.75, "_params": {},
             "_path": str(tmp_path / "earlier.json#source_only")}]  # fmt: skip
    text = write_report(tmp_path, tmp_path / "out", kept=kept)
    assert "| source_only |  | 75.0 ± 0.0 |  |  |  | 1 |" in text


@pytest.mark.slow
def test_ray_backend_runs_a_sweep_on_a_local_ray_instance(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the Ray workers' `python -m dalib.cli`
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    path = sweep_file(
        tmp_path,
        output=str(tmp_path / "out"),
        methods=[str(TOY / "dann.yaml")],
        seeds=[0, 1],
        overrides={"trainer.max_epochs": 1, "data.iterations_per_epoch": 20},
        backend="ray",
    )
    assert run_sweep(path, main) == 0
    found = records(tmp_path / "out")
    assert sorted(found) == ["dann/default/default/seed_0", "dann/default/default/seed_1"]
    assert [r["seed"] for _, r in sorted(found.items())] == [0, 1]
    assert run_sweep(path, main) == 0  # everything finished: nothing is run again
    assert records(tmp_path / "out") == found


@pytest.mark.slow
def test_wandb_logs_each_run_with_its_config_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    path = sweep_file(
        tmp_path,
        output=str(tmp_path / "out"),
        methods=[str(TOY / "dann.yaml")],
        overrides={"trainer.max_epochs": 1, "data.iterations_per_epoch": 7},
        wandb={"project": "dalib-test", "offline": True},
    )
    sweep = start_sweep(path)  # as a command: this test process may have used wandb already
    assert sweep.wait(timeout=120) == 0, sweep.stdout.read()
    run_dir = tmp_path / "out" / "dann" / "default" / "default" / "seed_0"
    assert (run_dir / "result.json").is_file()
    (wandb_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    logged = wandb_file.read_bytes()
    assert b"dann/default/default/seed_0" in logged  # the run's name
    assert b'"iterations_per_epoch":7' in logged and b'"name":"dann"' in logged  # config
