"""Checks of the data itself, run as it is read, before any training step.

Each names what is wrong and where: a bad file stops the run with one ``DalibError`` line; data
that trains but likely not as meant (classes that never occur, batches larger than a split) is a
``DalibWarning`` once, on the first process only.
"""

from __future__ import annotations

import numpy as np
import torch
from pytorch_lightning.utilities import rank_zero_warn

from dalib.errors import DalibError, DalibWarning

LISTED = 10  # classes named in a message; the rest are counted


def check_finite(where: str, features: np.ndarray, labels: np.ndarray) -> None:
    """Every feature and label is a finite number; else name the first bad row and column.

    Rows and columns count from 1, as a spreadsheet or ``sed -n 8p`` does. Text labels have
    nothing to check.
    """
    numeric = labels.dtype.kind in "biuf"
    bad_labels = ~np.isfinite(labels) if numeric else np.zeros(len(labels), dtype=bool)
    if bad_labels.any():
        row = int(np.argmax(bad_labels))
        raise DalibError(
            f"{where}: the label of row {row + 1} (counting from 1) is {labels[row]}; "
            f"{int(bad_labels.sum())} NaN/inf labels in all; labels must be integers or text"
        )
    bad = ~np.isfinite(features)
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        raise DalibError(
            f"{where}: row {row + 1}, column {column + 1} (counting from 1) is "
            f"{features[row, column]}; {int(bad.sum())} NaN/inf values in "
            f"{int(bad.any(axis=1).sum())} rows in all; fix or drop those rows"
        )


def check_source_labels(where: str, labels: torch.Tensor, num_classes: int) -> None:
    """The (non-empty) source has at least 2 classes, else stop; warn of classes it never
    shows."""
    present = labels.unique().tolist()
    if len(present) < 2:
        raise DalibError(
            f"the source ({where}) has only class {present[0]} in its {len(labels)} samples; "
            "a classifier "
            "needs at least 2 classes: check its labels, or the source named in the config"
        )
    missing = sorted(set(range(num_classes)) - set(present))
    if missing:
        named = ", ".join(str(c) for c in missing[:LISTED])
        more = f" and {len(missing) - LISTED} more" if len(missing) > LISTED else ""
        never = "class {} never occurs" if len(missing) == 1 else "classes {} never occur"
        rank_zero_warn(
            f"source labels cover {num_classes - len(missing)} of num_classes={num_classes}; "
            f"{never.format(named + more)} in {where}",
            category=DalibWarning,
        )


def check_batch_size(split: str, size: int, batch_size: int, processes: int, steps: int) -> None:
    """Warn if one training step draws more samples of ``split`` than it holds.

    Training batches are drawn without replacement and cycle (or with replacement, when
    weighted), so such a batch repeats samples rather than dropping or shrinking.
    """
    drawn = batch_size * processes
    if drawn <= size:
        return
    per_step = f"batch_size {batch_size}" + (f" x {processes} processes" if processes > 1 else "")
    epoch = f"; an epoch is {steps} step{'s' if steps > 1 else ''}"
    rank_zero_warn(
        f"{per_step} > {size} samples in the {split} split: every step draws each sample "
        f"about {drawn / size:.1f} times{epoch}; lower data.batch_size",
        category=DalibWarning,
    )
