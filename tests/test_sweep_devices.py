"""Sweeps on several GPUs, simulated on a CPU machine by the sweep file's ``devices: N``.

A child run is given ``CUDA_VISIBLE_DEVICES``, which nothing on a CPU machine reads; the fake
``dalib fit`` below records it with the time it ran, so that the tests can check which runs
overlapped and what each was given. The real-training tests check the spawn start method (no
``prctl``) against fork, and that Ray tasks reserve GPUs (a local Ray told it has 2).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path

import pytest
import yaml

from dalib.cli import main
from dalib.errors import DalibError
from dalib.records import write_json_atomic
from dalib.sweep import run_sweep
from tests.conftest import REPO, TOY
from tests.test_sweep import records, sweep_file

HOLD_S = 1.0  # how long a fake run holds its GPUs


def run_folder(arguments: list[str]) -> Path:
    """The run folder of a sweep's ``fit -c <config> -c <run>/sweep_overrides.yaml``."""
    return Path(arguments[-1]).parent


def fake_fit(arguments: list[str]) -> None:
    """A ``dalib fit`` that notes its GPUs and times; seed 1 is killed at once, like a crash."""
    run = run_folder(arguments)
    settings = yaml.safe_load((run / "sweep_overrides.yaml").read_text())
    start = time.time()
    if settings["seed_everything"] == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(HOLD_S)
    seen = {"devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "end": time.time()}
    (run / "seen.json").write_text(json.dumps(seen))
    write_json_atomic(
        run / "result.json",
        {"method": "fake", "task": "t", "selected_by": "dev", "target_acc": 1.0},
    )


def sleeping_fit(arguments: list[str]) -> None:
    """A ``dalib fit`` that notes its process id and sleeps: it ends only when killed."""
    (run_folder(arguments) / "pid").write_text(str(os.getpid()))
    time.sleep(120)


def seen(output: Path) -> dict[str, dict]:
    return {
        str(path.parent.relative_to(output)): json.loads(path.read_text())
        for path in output.rglob("seen.json")
    }


def overlap(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


@pytest.mark.slow
def test_concurrent_runs_get_distinct_gpus_and_a_crashed_runs_gpu_goes_to_the_next(
    tmp_path, capsys
):
    path = sweep_file(
        tmp_path, output=str(tmp_path / "out"), methods=[str(TOY / "dann.yaml")],
        seeds=[0, 1, 2, 3, 4, 5], devices=3, start_method="fork",
    )  # fmt: skip
    assert run_sweep(path, fake_fit) == 1  # seed 1, killed
    runs = seen(tmp_path / "out")
    assert sorted(runs) == [f"dann/default/default/seed_{s}" for s in (0, 2, 3, 4, 5)]
    assert {run["devices"] for run in runs.values()} == {"0", "1", "2"}  # processes = 3 groups
    pairs = list(combinations(runs.values(), 2))
    assert sum(overlap(a, b) for a, b in pairs) >= 3  # runs did run side by side
    for a, b in pairs:
        if overlap(a, b):
            assert a["devices"] != b["devices"]
    out = capsys.readouterr().out
    assert "dann/default/default/seed_1: FAILED (exit -9 on GPU 1;" in out
    # seeds 0-2 took GPUs 0-2; seed 1's GPU was free again at its crash, before seed 0 ended
    seed = {int(key[-1]): run for key, run in runs.items()}
    assert seed[3]["devices"] == "1" and seed[3]["start"] < seed[0]["end"]


@pytest.mark.slow
def test_ddp_runs_take_their_devices_and_cpu_runs_none(tmp_path):
    path = sweep_file(
        tmp_path, output=str(tmp_path / "out"), methods=[str(TOY / "dann.yaml")],
        tasks={"one": {}, "ddp": {"trainer.devices": 2}, "cpu": {"trainer.accelerator": "cpu"}},
        seeds=[0, 2], devices=[4, 5, 6], processes=3, start_method="fork",
    )  # fmt: skip
    assert run_sweep(path, fake_fit) == 0
    runs = seen(tmp_path / "out")
    given = {key: run["devices"] for key, run in runs.items()}
    assert all(given[f"dann/one/default/seed_{s}"] in ("4", "5", "6") for s in (0, 2))
    assert all(given[f"dann/cpu/default/seed_{s}"] is None for s in (0, 2))
    for s in (0, 2):
        pair = given[f"dann/ddp/default/seed_{s}"].split(",")
        assert len(set(pair)) == 2 and set(pair) <= {"4", "5", "6"}
    for a, b in combinations(runs.values(), 2):
        if overlap(a, b) and a["devices"] and b["devices"]:
            assert not set(a["devices"].split(",")) & set(b["devices"].split(","))

    too_big = sweep_file(
        tmp_path, "big.yaml", output=str(tmp_path / "big"), methods=[str(TOY / "dann.yaml")],
        overrides={"trainer.devices": 4}, devices=3,
    )  # fmt: skip
    with pytest.raises(DalibError, match=r"needs 4 GPUs; the sweep has 3$"):
        run_sweep(too_big, fake_fit)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"devices": 0}, "devices must be a count >= 1 or a list of GPU ids, got 0"),
        ({"devices": [0, 0]}, "devices lists a GPU twice"),
        ({"devices_per_run": -1}, "devices_per_run must be an integer >= 0, got -1"),
        ({"processes": 0}, "processes must be an integer >= 1, got 0"),
        ({"start_method": "forkserver"}, "start_method must be one of fork, spawn"),
    ],
)
def test_bad_device_settings_are_refused_with_one_line(tmp_path, spec, message):
    path = sweep_file(
        tmp_path, output=str(tmp_path / "o"), methods=[str(TOY / "dann.yaml")], **spec
    )
    with pytest.raises(DalibError, match=message):
        run_sweep(path, fake_fit)


def process_gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie nobody reaped has exited too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return stat.is_file() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.slow
def test_spawned_runs_end_with_a_killed_sweep_without_prctl(tmp_path):
    path = sweep_file(
        tmp_path, output=str(tmp_path / "out"), methods=[str(TOY / "dann.yaml")],
        seeds=[0, 1], devices=2, start_method="spawn",
    )  # fmt: skip
    script = (
        "import sys; from pathlib import Path; from dalib.sweep import run_sweep; "
        "from tests.test_sweep_devices import sleeping_fit; "
        "run_sweep(Path(sys.argv[1]), sleeping_fit)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    sweep = subprocess.Popen([sys.executable, "-c", script, str(path)], env=env)
    pid_files = [tmp_path / "out" / "dann" / "default" / "default" / f"seed_{s}" / "pid"
                 for s in (0, 1)]  # fmt: skip
    deadline = time.time() + 120
    while not all(p.is_file() and p.read_text() for p in pid_files) and time.time() < deadline:
        time.sleep(0.1)
    pids = [int(p.read_text()) for p in pid_files]
    assert not any(process_gone(pid) for pid in pids)
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()
    deadline = time.time() + 10
    while not all(process_gone(pid) for pid in pids) and time.time() < deadline:
        time.sleep(0.1)
    orphans = [pid for pid in pids if not process_gone(pid)]
    for pid in orphans:  # leave no sleeper behind if the test fails
        os.kill(pid, signal.SIGKILL)
    assert orphans == []


@pytest.mark.slow
def test_spawn_runs_a_sweep_to_the_same_records_as_fork(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a spawned run's threads, as this process has
    found = {}
    for method in ("fork", "spawn"):
        path = sweep_file(
            tmp_path, f"{method}.yaml", output=str(tmp_path / method),
            methods=[str(TOY / "dann.yaml")], seeds=[0, 1], devices=2, start_method=method,
            overrides={"trainer.max_epochs": 1, "data.iterations_per_epoch": 10},
        )  # fmt: skip
        assert run_sweep(path, main) == 0, capsys.readouterr().out
        found[method] = records(tmp_path / method)
    assert sorted(found["spawn"]) == ["dann/default/default/seed_0", "dann/default/default/seed_1"]
    assert found["spawn"] == found["fork"]
    assert [r["cuda_visible_devices"] for _, r in sorted(found["spawn"].items())] == ["0", "1"]


@pytest.mark.slow
def test_ray_tasks_reserve_the_gpus_of_a_run(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the Ray workers' `python -m dalib.cli`
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    try:  # a Ray that believes it has 2 GPUs; the sweep uses it as it is
        path = sweep_file(
            tmp_path, output=str(tmp_path / "out"), methods=[str(TOY / "dann.yaml")],
            seeds=[0, 1], backend="ray",
            overrides={"trainer.max_epochs": 1, "data.iterations_per_epoch": 10},
        )  # fmt: skip
        assert run_sweep(path, main) == 0
        given = [r["cuda_visible_devices"] for r in records(tmp_path / "out").values()]
        assert len(given) == 2 and set(given) <= {"0", "1"}  # one of Ray's 2 GPUs each
        big = sweep_file(
            tmp_path, "big.yaml", output=str(tmp_path / "big"), methods=[str(TOY / "dann.yaml")],
            backend="ray", overrides={"trainer.devices": 3},
        )  # fmt: skip
        with pytest.raises(DalibError, match="needs 3 GPUs; the largest Ray node has 2"):
            run_sweep(big, main)
        assert ray.is_initialized()  # not the sweep's to shut down
    finally:
        ray.shutdown()


@pytest.mark.ddp
def test_a_ddp_run_of_a_sweep_started_by_the_dalib_script_trains(tmp_path):
    """Lightning relaunches ``python <argv[0]> ...`` for its DDP ranks: the ``dalib`` script."""
    script = Path(sys.executable).parent / "dalib"
    if not script.is_file():
        pytest.skip("no dalib script beside this Python")
    path = sweep_file(
        tmp_path, output=str(tmp_path / "out"), methods=[str(TOY / "mmd_ddp.yaml")], devices=2,
        overrides={"trainer.max_epochs": 1, "data.iterations_per_epoch": 5},
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [str(script), "sweep", str(path)], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (result,) = (tmp_path / "out").rglob("result.json")
    record = json.loads(result.read_text())
    assert record["config"]["trainer"]["devices"] == 2  # two gloo ranks, on the CPU: no GPU
    assert record["cuda_visible_devices"] is None


@pytest.mark.slow
def test_a_forked_run_leaves_the_parents_wandb_run_alone(tmp_path, monkeypatch):
    """A sweep started where a wandb run is open (a notebook, an earlier test) forks children
    that inherit it: they must not try to finish it (wandb refuses: exit 1)."""
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    parent_run = wandb.init(dir=str(tmp_path), project="dalib-test")
    try:
        path = sweep_file(
            tmp_path, output=str(tmp_path / "out"), methods=[str(TOY / "dann.yaml")],
            seeds=[0, 2], start_method="fork",
        )  # fmt: skip
        assert run_sweep(path, fake_fit) == 0
        assert wandb.run is parent_run
    finally:
        parent_run.finish()
