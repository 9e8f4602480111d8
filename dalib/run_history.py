"""A resumed run's ``metrics.csv`` holds every step, as an uninterrupted run's would.

Lightning's CSV logger deletes ``metrics.csv`` when it starts in a folder that has one. So
before a resumed run's logger starts, ``set_aside`` moves the rows logged before the checkpoint
(those with ``step`` below its global step: Lightning logs a batch's metrics, and the
validation that ends an epoch, at the number of optimiser steps before that batch; later rows
belong to steps the resumed run trains again) into ``metrics.before_resume.csv``; when the fit
ends, ``join`` puts them in front of the resumed run's rows in ``metrics.csv``.

Both survive a kill at any moment: every file is replaced atomically, and rows already joined
are recognised and kept once (a row is the same row when every column is), so a repeated
``set_aside`` or ``join`` gives the same files.
"""

from __future__ import annotations

import csv
import stat
from pathlib import Path
from typing import TextIO

from dalib.records import write_atomic

METRICS_FILE = "metrics.csv"  # Lightning's CSVLogger
HISTORY_FILE = "metrics.before_resume.csv"

Row = dict[str, str]


def read_rows(path: Path) -> list[Row]:
    """The rows of a CSV file; none if it does not exist."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_rows_atomic(path: Path, rows: list[Row], mode_of: Path) -> None:
    """Write ``rows`` (columns sorted, as Lightning writes them) atomically, with the
    permissions of ``mode_of`` where it exists."""
    columns = sorted({key for row in rows for key in row})

    def dump(f: TextIO) -> None:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)

    write_atomic(path, dump, stat.S_IMODE(mode_of.stat().st_mode) if mode_of.is_file() else None)


def once(rows: list[Row]) -> list[Row]:
    """``rows`` in order, each row that repeats an earlier one left out."""
    seen: set[tuple] = set()
    kept = []
    for row in rows:
        key = tuple(sorted((k, v) for k, v in row.items() if v))
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept


def set_aside(run_dir: Path, global_step: int) -> None:
    """Before resuming ``run_dir`` from a checkpoint at ``global_step``: keep the rows of the
    earlier segments logged before that step in ``HISTORY_FILE``, and remove ``metrics.csv``."""
    history, metrics = run_dir / HISTORY_FILE, run_dir / METRICS_FILE
    rows = once(read_rows(history) + read_rows(metrics))
    kept = [row for row in rows if int(row["step"]) < global_step]
    if kept:
        write_rows_atomic(history, kept, mode_of=metrics)
    else:
        history.unlink(missing_ok=True)
    metrics.unlink(missing_ok=True)


def join(run_dir: Path) -> None:
    """After a resumed fit ended: ``metrics.csv`` = the history set aside, then this segment's
    rows; the history file removed. Nothing to do for a run that was never resumed."""
    history, metrics = run_dir / HISTORY_FILE, run_dir / METRICS_FILE
    if not history.is_file():
        return
    write_rows_atomic(metrics, once(read_rows(history) + read_rows(metrics)), mode_of=metrics)
    history.unlink()
