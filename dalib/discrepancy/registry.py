"""The registry of discrepancy measures: ``discrepancy: {name: mmd, ...}`` in a config."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dalib.registry import Registry

if TYPE_CHECKING:
    from dalib.discrepancy.base import Discrepancy

DISCREPANCIES: Registry[Discrepancy] = Registry("discrepancy")
