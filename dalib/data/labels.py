"""Class labels of any coding (−1/+1, 1..C, text) as the indices 0..C−1 a classifier needs.

One mapping per run: the sorted distinct labels of its training files (numbers in numeric
order, text in character order), so it is the same on every run of the same files; every file,
test files included, is coded with it, and the run record keeps it (``label_mapping``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from dalib.errors import DalibError

SHOWN = 5  # label values named in a message


def as_read(labels: np.ndarray) -> np.ndarray:
    """Text labels (stripped) as float64 when every one reads as a number; else unchanged."""
    labels = np.asarray(labels).ravel()
    if labels.dtype.kind not in "US":
        return labels
    text = np.char.strip(labels.astype(str))
    try:
        return text.astype(np.float64)
    except ValueError:
        return text


def class_values(labels: np.ndarray, where: str) -> np.ndarray:
    """``labels`` as int64 when they are integers (numbers, or text that all reads as one),
    else as text; a fractional number is refused."""
    labels = as_read(labels)
    if labels.dtype.kind == "U":
        return labels
    if labels.dtype.kind not in "biuf":
        raise DalibError(f"{where}: labels must be integers or text, got {labels.dtype} values")
    fractional = labels % 1 != 0
    if fractional.any():
        raise DalibError(
            f"{where}: labels must be integers or text, got values such as {labels[fractional][0]}"
        )
    return labels.astype(np.int64)


def shown(values: np.ndarray) -> str:
    """Up to ``SHOWN`` values for a message, then how many more."""
    more = f" and {len(values) - SHOWN} more" if len(values) > SHOWN else ""
    return ", ".join(str(v) for v in values[:SHOWN]) + more


@dataclass(frozen=True)
class LabelCoding:
    """Class ``i`` is the label ``values[i]``; ``values`` sorted and distinct."""

    values: np.ndarray

    @classmethod
    def of(cls, training: Mapping[str, np.ndarray], num_classes: int | None) -> LabelCoding:
        """The coding of the union of the training files' labels (file name -> labels).

        All files must use one kind (integers or text); ``num_classes``, when given, must be the
        number of distinct labels found.
        """
        kinds = {
            where: "text" if y.dtype.kind == "U" else "integers" for where, y in training.items()
        }
        if len(set(kinds.values())) > 1:
            described = ", ".join(f"{where} has {kind}" for where, kind in kinds.items())
            raise DalibError(f"label codings differ: {described}; use one coding in every file")
        values = np.unique(np.concatenate(list(training.values())))
        if num_classes is not None and num_classes != len(values):
            raise DalibError(
                f"the training files' labels take {len(values)} distinct values "
                f"({shown(values)}) but num_classes is {num_classes}; set num_classes to "
                f"{len(values)} or leave it out"
            )
        if len(values) < 2:
            raise DalibError(
                f"the training files' labels take one value ({shown(values)}); a classifier "
                "needs at least 2 classes"
            )
        return cls(values)

    @property
    def num_classes(self) -> int:
        return len(self.values)

    def encode(self, labels: np.ndarray, where: str) -> np.ndarray:
        """``labels`` as class indices; a label the training files lack stops with its row."""
        if (labels.dtype.kind == "U") != (self.values.dtype.kind == "U"):
            kind = "text" if labels.dtype.kind == "U" else "integers"
            raise DalibError(
                f"{where} has {kind} labels, the training files do not; use one coding in every "
                "file"
            )
        index = np.searchsorted(self.values, labels).clip(max=len(self.values) - 1)
        unknown = self.values[index] != labels
        if unknown.any():
            row = int(np.argmax(unknown))
            raise DalibError(
                f"{where}: label {labels[row]} (row {row + 1}, counting from 1) is not among the "
                f"training files' labels ({shown(self.values)}); a test file can only hold "
                "classes the source or target training file has"
            )
        return index.astype(np.int64)

    def record(self) -> dict[str, int]:
        """The mapping for the run record: each label, as text, to its class index."""
        return {str(value): index for index, value in enumerate(self.values.tolist())}
