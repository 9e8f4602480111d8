"""``dalib sweep <sweep.yaml>``: expand methods × tasks × hyper-parameters × seeds, run each.

A sweep file::

    output: runs/sweeps/toy          # where every run gets its own folder
    methods: [experiments/toy/source_only.yaml, experiments/toy/dann.yaml]
    # or composed: a list of config files per method, applied in order (``-c`` each); the
    # method is named after the last file
    # methods: [[experiments/digits/protocol.yaml, experiments/digits/methods/dann.yaml]]
    tasks: {rot35: {data.dataset: {name: moons, angle: 35}}}   # optional named overrides
    method_overrides: {dann: {model.lr: 0.03}}                 # one method's own, over its tasks'
    seeds: [0, 1, 2]
    grid: {model.gamma: [0.3, 1.0]}                            # every combination
    random: {samples: 4, seed: 0, space: {model.lr: {log_uniform: [0.001, 0.1]}}}
    overrides: {trainer.max_epochs: 10}                        # for every run
    devices_per_run: 1          # GPUs a run gets (default 1 where there are GPUs, else 0)
    processes: 8                # local runs at a time (default: len(devices) // devices_per_run)
    devices: [0, 1, 2, 3]       # local: the GPUs to share out (default: all this process sees)
    start_method: spawn         # local: fork (default on Linux) or spawn (default elsewhere)
    backend: local                                             # or ray (pip install dalib[ray])
    ray_address: null                                          # a cluster's address; none: local
    cpus_per_run: 1                                            # ray: CPUs each task reserves
    wandb: {project: dalib, offline: true}                     # optional: also log to wandb

Each run is an ordinary ``dalib fit`` of its method config plus its overrides, in a child
process (``dalib/sweep_local.py``: each run gets its own ``CUDA_VISIBLE_DEVICES`` slice of the
GPUs) or, with ``backend: ray``, as a Ray task that runs ``python -m dalib.cli fit ...`` on a
cluster's workers and reserves ``num_gpus`` GPUs (Ray sets its ``CUDA_VISIBLE_DEVICES``; the
output folder must then be on a file system every node sees). A run whose config sets
``trainer.devices: N`` (DDP) gets N GPUs, one with ``trainer.accelerator: cpu`` none. Every run
has its logs, checkpoints and ``result.json`` (which records its ``cuda_visible_devices``) in
``<output>/<method>/<task>/<hyper-parameters>/seed_<seed>/``. A run is finished when its
``result.json`` exists (written atomically, last); rerunning the sweep skips finished runs,
continues an unfinished one from its ``last.ckpt`` (written at every validation, and every
``model.checkpoint_every_n_steps`` steps when set) if its method config and overrides are
unchanged, and redoes any other whose folder exists, so an interrupted sweep resumes without
losing or duplicating a result. Random search draws hyper-parameter ``name`` of sample ``i`` from a
generator seeded by ``(seed, i, name)``, so adding a parameter leaves the others' values as
they were.
"""

from __future__ import annotations

import fnmatch
import itertools
import math
import shlex
import shutil
import sys
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dalib.console import OneLineArgumentParser
from dalib.errors import DalibError
from dalib.records import RESULT_FILE, SWEEP_FILE, read_record, write_json_atomic
from dalib.sweep_local import (
    Main,
    check_start_method,
    default_start_method,
    device_list,
    run_local,
    visible_devices,
)

SWEEP_KEYS = {
    "output", "methods", "tasks", "method_overrides", "seeds", "grid", "random", "overrides",
    "processes", "backend", "ray_address", "wandb", "devices", "devices_per_run", "start_method",
    "cpus_per_run",
}  # fmt: skip
BACKENDS = ("local", "ray")
RANDOM_KEYS = {"samples", "seed", "space"}
INPUTS_FILE = "sweep_inputs.yaml"  # a run's method config and overrides, to resume it only as is
DISTRIBUTIONS = ("uniform", "log_uniform", "int_uniform", "choice")


@dataclass(frozen=True)
class Run:
    """One ``dalib fit``: a method's config files (``-c`` in order), its overrides (dotted
    keys) and a seed."""

    method: str
    configs: tuple[Path, ...]
    task: str
    params: dict[str, Any]
    seed: int
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        params = ",".join(f"{key.split('.')[-1]}={param_text(v)}" for key, v in self.params.items())
        return f"{self.method}/{self.task}/{params or 'default'}/seed_{self.seed}"


def param_text(value: Any) -> str:
    """A swept value in a folder name: ``0.003``; a component ``{name: x, a: 1}`` as ``x(a=1)``."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        options = ",".join(f"{k}={param_text(v)}" for k, v in value.items() if k != "name")
        return f"{value.get('name', '')}({options})"
    return str(value)


def nested(dotted: Mapping[str, Any]) -> dict[str, Any]:
    """``{"model.gamma": 1}`` → ``{"model": {"gamma": 1}}``."""
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        node = out
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return out


def sample(name: str, spec: Mapping[str, Any], seed: int, index: int) -> Any:
    """Draw hyper-parameter ``name`` for random sample ``index``, independently of the others."""
    if len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise DalibError(
            f"random.space.{name} must be one of {{{', '.join(DISTRIBUTIONS)}: ...}}, got {spec}"
        )
    kind, args = next(iter(spec.items()))
    rng = np.random.default_rng([seed, index, zlib.crc32(name.encode())])
    if kind == "choice":
        return args[int(rng.integers(len(args)))]
    low, high = args
    if kind == "uniform":
        return float(rng.uniform(low, high))
    if kind == "log_uniform":
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))
    return int(rng.integers(low, high + 1))


def check_keys(where: str, given: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise DalibError(
            f"unknown key {unknown[0]!r} in {where}; allowed: {', '.join(sorted(allowed))}"
        )


def load_sweep(path: Path) -> tuple[dict[str, Any], list[Run]]:
    """Read and check a sweep file; expand it into its runs, in a fixed order."""
    if not path.is_file():
        raise DalibError(f"sweep file {path} does not exist")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise DalibError(
            f"cannot read sweep file {path}: {' '.join(str(error).split())}"
        ) from error
    if not isinstance(spec, dict):
        raise DalibError(f"{path} must be a mapping of sweep keys")
    check_keys(f"sweep file {path}", spec, SWEEP_KEYS)
    methods = spec.get("methods") or []
    if not methods:
        raise DalibError(f"{path}: 'methods' must list at least one config file")
    configs = [method_configs(path, method) for method in methods]
    tasks = spec.get("tasks") or {"default": {}}
    method_overrides = spec.get("method_overrides") or {}
    check_keys(f"{path}: method_overrides", method_overrides, {c[-1].stem for c in configs})
    grid = spec.get("grid") or {}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise DalibError(f"{path}: grid.{key} must be a non-empty list of values")
    points = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    if random := spec.get("random"):
        check_keys(f"{path}: random", random, RANDOM_KEYS)
        space, seed = random.get("space") or {}, int(random.get("seed", 0))
        if not space or int(random.get("samples", 0)) < 1:
            raise DalibError(f"{path}: random needs samples >= 1 and a non-empty space")
        draws = [{k: sample(k, v, seed, i) for k, v in space.items()}
                 for i in range(int(random["samples"]))]  # fmt: skip
        points = [{**p, **d} for p in points for d in draws]
    seeds = spec.get("seeds", [0])
    if not seeds:
        raise DalibError(f"{path}: seeds must list at least one seed")
    runs = [
        Run(
            files[-1].stem,
            files,
            task,
            params,
            int(seed),
            {**task_overrides, **method_overrides.get(files[-1].stem, {})},
        )
        for files in configs
        for task, task_overrides in tasks.items()
        for params in points
        for seed in seeds
    ]
    return spec, runs


def method_configs(path: Path, method: str | list[str]) -> tuple[Path, ...]:
    """A ``methods`` entry's config files: one path, or a list composed in order; each
    relative to the sweep file, else to the working directory."""
    names = method if isinstance(method, list) else [method]
    if not names or not all(isinstance(name, str) for name in names):
        raise DalibError(f"{path}: a method is a config file or a list of config files")
    files = []
    for name in names:
        config = Path(name) if Path(name).is_absolute() else path.parent / name
        config = config if config.is_file() else Path(name)
        if not config.is_file():
            raise DalibError(f"{path}: method config {name} does not exist")
        files.append(config)
    return tuple(files)


def run_arguments(
    run: Run, run_dir: Path, overrides: Mapping[str, Any], wandb: Mapping[str, Any] | None = None
) -> list[str]:
    """The ``dalib fit`` command line of one run; its overrides go in a YAML file beside it.

    The run logs to CSV in its folder (where its record goes) and, with ``wandb`` options, also
    to a Weights & Biases run named after it, with its whole config.
    """
    settings = nested({**overrides, **run.overrides, **run.params})
    loggers: list[dict[str, Any]] = [{
        "class_path": "pytorch_lightning.loggers.CSVLogger",
        "init_args": {"save_dir": str(run_dir), "name": "", "version": ""},
    }]  # fmt: skip
    if wandb is not None:
        loggers.append({
            "class_path": "pytorch_lightning.loggers.WandbLogger",
            "init_args": {"name": run.run_id, "save_dir": str(run_dir), **wandb},
        })  # fmt: skip
    settings.setdefault("trainer", {})["logger"] = loggers
    settings["trainer"]["enable_progress_bar"] = False
    settings["seed_everything"] = run.seed
    (run_dir / "sweep_overrides.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    configs = [arg for config in run.configs for arg in ("-c", str(config))]
    return ["fit", *configs, "-c", str(run_dir / "sweep_overrides.yaml")]


def prepare(run: Run, output: Path, spec: Mapping[str, Any]) -> list[str]:
    """The folder of ``run`` and its command line.

    An unfinished folder whose run wrote ``checkpoints/last.ckpt`` (at a validation, or every
    ``model.checkpoint_every_n_steps``) from the same method config and overrides resumes from
    it (``--ckpt_path``: ``dalib.resume`` continues it exactly); any other is removed and the run
    starts over.
    """
    run_dir = output / run.run_id
    overrides, wandb = spec.get("overrides") or {}, spec.get("wandb")
    inputs = run_inputs(run, overrides)
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    stamp = run_dir / INPUTS_FILE
    if checkpoint.is_file() and stamp.is_file() and stamp.read_text() == inputs:
        return [*run_arguments(run, run_dir, overrides, wandb), "--ckpt_path", str(checkpoint)]
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    stamp.write_text(inputs)
    return run_arguments(run, run_dir, overrides, wandb)


def run_inputs(run: Run, overrides: Mapping[str, Any]) -> str:
    """What decides a run's numbers, as text: its config files and every override."""
    settings = {**overrides, **run.overrides, **run.params, "seed": run.seed}
    texts = "\n".join(config.read_text() for config in run.configs)
    return texts + "\n# sweep settings\n" + yaml.safe_dump(settings)


def trainer_settings(run: Run, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The run's ``trainer:`` section: its config files' (later ones over earlier ones),
    under the sweep's overrides."""
    settings: dict[str, Any] = {}
    for file in run.configs:
        try:
            config = yaml.safe_load(file.read_text()) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            reason = " ".join(str(error).split())
            raise DalibError(f"cannot read method config {file}: {reason}") from error
        trainer = config.get("trainer") if isinstance(config, dict) else None
        settings.update(trainer if isinstance(trainer, dict) else {})
    swept = nested({**overrides, **run.overrides, **run.params}).get("trainer") or {}
    return {**settings, **swept}


def devices_needed(run: Run, overrides: Mapping[str, Any], per_run: int) -> int:
    """GPUs a run gets: none on the CPU; ``trainer.devices`` where it names a number of them
    (a DDP run takes them all); ``per_run`` where it leaves it to Lightning (``auto``, -1)."""
    trainer = trainer_settings(run, overrides)
    if per_run == 0 or str(trainer.get("accelerator", "auto")).lower() == "cpu":
        return 0
    devices = trainer.get("devices", "auto")
    if isinstance(devices, list):
        return len(devices)
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    try:
        count = int(devices)
    except (TypeError, ValueError):
        return per_run  # "auto"
    return count if count >= 1 else per_run  # -1: all it is given


def count_setting(spec: Mapping[str, Any], key: str, default: int, least: int) -> int:
    """An integer sweep setting, at least ``least``."""
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise DalibError(f"{key} must be an integer >= {least}, got {value!r}")
    return value


def device_plan(
    runs: Sequence[Run], spec: Mapping[str, Any], available: int, where: str
) -> tuple[list[tuple[Run, int]], int]:
    """Each run with the GPUs it needs, and ``devices_per_run`` (default: 1 if there are GPUs,
    else 0); a run that needs more than ``available`` is an error."""
    per_run = count_setting(spec, "devices_per_run", 1 if available else 0, 0)
    overrides = spec.get("overrides") or {}
    plan = [(run, devices_needed(run, overrides, per_run)) for run in runs]
    for run, need in plan:
        if need > available:
            raise DalibError(f"run {run.run_id} needs {need} GPUs; {where} {available}")
    return plan, per_run


def run_ray(todo: list[Run], output: Path, spec: Mapping[str, Any]):
    """Yield ``(run, exit code, [])`` as Ray tasks finish; each runs ``python -m dalib.cli fit``
    and reserves ``cpus_per_run`` CPUs and the GPUs it needs (``devices_per_run``; default 1
    where the cluster has GPUs), so Ray places it on a node with them free and sets its
    ``CUDA_VISIBLE_DEVICES``. A Ray already initialised in this process is used as it is."""
    try:
        import ray
    except ImportError as error:
        raise DalibError("backend: ray needs Ray: pip install 'dalib[ray]'") from error

    @ray.remote
    def fit(arguments: list[str], log: str) -> int:
        import subprocess

        with open(log, "w") as f:
            command = [sys.executable, "-m", "dalib.cli", *arguments]
            return subprocess.run(command, stdout=f, stderr=subprocess.STDOUT).returncode

    own = not ray.is_initialized()
    if own:
        ray.init(address=spec.get("ray_address"), include_dashboard=False, log_to_driver=False)
    try:
        node_gpus = max(
            (int(node["Resources"].get("GPU", 0)) for node in ray.nodes() if node["Alive"]),
            default=0,
        )
        plan, _ = device_plan(todo, spec, node_gpus, "the largest Ray node has")
        cpus = count_setting(spec, "cpus_per_run", 1, 1)
        pending = {
            fit.options(num_cpus=cpus, num_gpus=need).remote(
                prepare(run, output, spec), str(output / run.run_id / "log.txt")
            ): run
            for run, need in plan
        }
        while pending:
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            yield pending.pop(ready), ray.get(ready), []
    finally:
        if own:
            ray.shutdown()


def local_runs(
    todo: list[Run], output: Path, spec: Mapping[str, Any], processes: int | None, main: Main
):
    """``(run, exit code, its GPUs)`` of each local run as it ends (``dalib/sweep_local.py``)."""
    devices = device_list(spec["devices"]) if "devices" in spec else visible_devices()
    plan, per_run = device_plan(todo, spec, len(devices), "the sweep has")
    groups = len(devices) // per_run if per_run else 1
    processes = processes or count_setting(spec, "processes", max(1, groups), 1)

    def start(run: Run) -> tuple[list[str], Path]:
        return prepare(run, output, spec), output / run.run_id / "log.txt"

    method = check_start_method(spec.get("start_method", default_start_method()))
    return run_local(plan, start, main, processes, devices, method)


def select_runs(runs: list[Run], patterns: Sequence[str]) -> list[Run]:
    """The runs whose id (``method/task/params/seed_N``) matches one of the shell-style
    ``patterns`` (all runs when there are none): ``--only 'mcd/*'`` runs one method's part of a
    sweep, ``--only '*/seed_0'`` one seed's."""
    if not patterns:
        return runs
    chosen = [r for r in runs if any(fnmatch.fnmatchcase(r.run_id, p) for p in patterns)]
    if not chosen:
        example = runs[0].run_id if runs else "method/task/default/seed_0"
        raise DalibError(
            f"--only {' '.join(patterns)} matches no run of the sweep; run ids look like {example}"
        )
    return chosen


def run_sweep(
    path: Path, dalib_main: Main, processes: int | None = None, only: Sequence[str] = ()
) -> int:
    """Run every unfinished run of the sweep (of those ``only`` selects); return the number of
    failed runs.

    ``dalib_main`` runs one ``dalib fit`` command line in a child process (local backend).
    """
    spec, runs = load_sweep(path)
    output = Path(spec.get("output") or Path("runs") / "sweeps" / path.stem).absolute()
    backend = spec.get("backend", "local")
    if backend not in BACKENDS:
        raise DalibError(f"{path}: unknown backend {backend!r}; choose one of {BACKENDS}")
    if processes is not None and processes < 1:
        raise DalibError(f"--processes must be >= 1, got {processes}")
    try:
        write_json_atomic(output / SWEEP_FILE, {
            "sweep": str(path), "spec": spec,
            "runs": [{"id": r.run_id, "configs": [str(c) for c in r.configs],
                      "params": r.params, "seed": r.seed} for r in runs],
        })  # fmt: skip
    except OSError as error:
        raise DalibError(f"cannot write the sweep's output folder {output}: {error}") from error
    runs = select_runs(runs, only)
    todo = [r for r in runs if not (output / r.run_id / RESULT_FILE).is_file()]
    done = len(runs) - len(todo)
    print(f"dalib sweep: {len(runs)} runs, {done} already finished", flush=True)
    if not todo:
        finished = iter(())
    elif backend == "ray":
        finished = run_ray(todo, output, spec)
    else:
        finished = local_runs(todo, output, spec, processes, dalib_main)
    failed = 0
    for run, exitcode, devices in finished:
        done += 1
        result = output / run.run_id / RESULT_FILE
        try:
            record = read_record(result) if exitcode == 0 else None
        except DalibError:  # the run's own log says what went wrong
            record = None
        where = f" on GPU {','.join(devices)}" if devices else ""
        if record is not None:
            status = f"target_acc={record['target_acc']:.4f}{where}"
        else:
            failed += 1
            status = f"FAILED (exit {exitcode}{where}; see {output / run.run_id}/log.txt)"
        print(f"[{done}/{len(runs)}] {run.run_id}: {status}", flush=True)
    hint = f"dalib report {shlex.quote(str(output))}"
    print(f"dalib sweep: results in {output}; summarise with `{hint}`")
    return failed


def main(arguments: Sequence[str], dalib_main: Main) -> None:
    """``dalib sweep <sweep.yaml> [--processes N] [--only PATTERN ...]``; each run is
    ``dalib_main(["fit", ...])``."""
    parser = OneLineArgumentParser(prog="dalib sweep", description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="the sweep YAML file")
    parser.add_argument("--processes", type=int, help="runs at a time (overrides the file)")
    parser.add_argument(
        "--only", nargs="+", default=[], metavar="PATTERN",
        help="run only the runs whose id (method/task/params/seed_N) matches a shell-style "
        "pattern, e.g. 'mcd/*'",
    )  # fmt: skip
    args = parser.parse_args(arguments)
    failed = run_sweep(args.sweep, dalib_main, args.processes, args.only)
    sys.exit(1 if failed else 0)
