"""Run records: the file names, the run folders, and writing and reading ``result.json``.

A run is finished when its folder holds ``result.json`` (written once, atomically, last). A sweep
folder holds ``sweep.json`` naming its runs. Commands write records through this module and
``dalib report`` reads them through it; it imports nothing of dalib's but its errors, so every
command can use it without importing another command.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

import dalib
from dalib.errors import DalibError

RESULT_FILE = "result.json"  # a finished fit's record
SWEEP_FILE = "sweep.json"  # a sweep's spec and run list, in its output folder
EMBEDDING_FILE = "embedding.pt"  # the last validation's features, for `dalib report --plots`
LIBRARIES = ("torch", "torchvision", "pytorch-lightning", "torchmetrics", "POT", "numpy")
#: Fields every ``result.json`` has, the ones ``dalib report`` tabulates.
REQUIRED_FIELDS = ("method", "task", "selected_by", "target_acc")

Record = dict[str, Any]


def library_versions() -> dict[str, str]:
    """Versions of Python, dalib (``dalib.__version__``) and the libraries that decide a run's
    numbers."""
    versions = {"python": platform.python_version(), "dalib": dalib.__version__}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_atomic(path: Path, write: Callable[[TextIO], None], mode: int | None = None) -> None:
    """Write a text file through ``write(file)`` so that ``path`` holds either the old file or
    the whole new one.

    The file gets ``mode``; by default the mode a plain ``open(path, "w")`` would give (0666
    less the umask), not the 0600 of the temporary file it is renamed from.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask() if mode is None else mode)
        with os.fdopen(fd, "w", newline="") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` as indented JSON, atomically (``write_atomic``)."""

    def dump(f: TextIO) -> None:
        json.dump(record, f, indent=2, sort_keys=False, default=str)
        f.write("\n")

    write_atomic(path, dump)


def check_writable(folder: Path, problem: str, fix: str = "") -> None:
    """Create ``folder`` if needed and write a file in it, or stop with the one line
    ``<problem> <folder>: <reason>[; <fix>]``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise DalibError(
            f"{problem} {folder}: {error.strerror}" + (f"; {fix}" if fix else "")
        ) from error


def current_umask() -> int:
    """The process's umask (reading it means setting it; it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def run_directory(trainer) -> Path:
    """The run's own folder, ``save_dir/name/version``: where Lightning puts its checkpoints.

    For CSV and TensorBoard loggers it is their ``log_dir``; for wandb it is the run's folder
    (``save_dir/project/run_id``), not the shared ``save_dir`` that ``trainer.log_dir`` gives.
    """
    if not trainer.loggers:
        return Path(trainer.default_root_dir)
    logger = trainer.loggers[0]
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(logger.save_dir or trainer.default_root_dir) / str(logger.name) / version


def checkpoint_run_directory(checkpoint: Path) -> Path:
    """The run folder a checkpoint belongs to: ``<run>/checkpoints/x.ckpt`` → ``<run>``."""
    folder = checkpoint.parent
    return folder.parent if folder.name == "checkpoints" else folder


def read_record(path: Path) -> Record:
    """One ``result.json``; a file that is not a complete record raises a one-line error."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise DalibError(f"cannot read {path}: {' '.join(str(error).split())}") from error
    if not isinstance(record, dict):
        raise DalibError(f"{path} is not a run record (a JSON object)")
    missing = [key for key in REQUIRED_FIELDS if key not in record]
    if missing:
        raise DalibError(f"{path} is not a complete run record: no {', '.join(missing)}")
    if not isinstance(record["target_acc"], int | float):
        raise DalibError(f"{path}: target_acc is {record['target_acc']!r}, not a number")
    return record


def scan_records(root: Path) -> tuple[list[Record], list[str]]:
    """Every complete run record under ``root`` (each given ``_path``, its run folder), and
    one line per ``result.json`` that is not one, saying why."""
    records, problems = [], []
    for path in sorted(root.rglob(RESULT_FILE)):
        try:
            record = read_record(path)
        except DalibError as error:
            problems.append(str(error))
            continue
        record["_path"] = str(path.parent)
        records.append(record)
    return records, problems


def load_records(root: Path) -> list[Record]:
    """Every complete run record under ``root``; the others are named on stderr and skipped."""
    records, problems = scan_records(root)
    for problem in problems:
        print(f"dalib report: skipping corrupt record: {problem}", file=sys.stderr, flush=True)
    return records


def read_sweep(path: Path) -> Record:
    """A ``sweep.json``: ``{"sweep": <sweep file>, "spec": ..., "runs": [{id, params, ...}]}``."""
    try:
        sweep = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        reason = " ".join(str(error).split())
        raise DalibError(f"cannot read {path}: {reason}; delete it and rerun its sweep") from error
    runs = sweep.get("runs") if isinstance(sweep, dict) else None
    if (
        not isinstance(runs, list)
        or "sweep" not in sweep
        or not all(isinstance(run, dict) and {"id", "params"} <= run.keys() for run in runs)
    ):
        raise DalibError(
            f"{path} is not a sweep record (a sweep file and runs with id and params); "
            "delete it and rerun its sweep"
        )
    return sweep


def sweeps_under(root: Path) -> list[tuple[Path, Record]]:
    """Every ``sweep.json`` under ``root``, read."""
    return [(path, read_sweep(path)) for path in sorted(root.rglob(SWEEP_FILE))]


def row_name(record: Record, varied: Sequence[str]) -> str:
    """The method, with the swept hyper-parameters that distinguish its runs."""
    params = ", ".join(
        f"{k.split('.')[-1]}={record['_params'][k]}" for k in varied if k in record["_params"]
    )
    return f"{record['method']} ({params})" if params else record["method"]
