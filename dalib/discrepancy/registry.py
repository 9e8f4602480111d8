"""The registry of discrepancy measures: ``discrepancy: {name: mmd, ...}`` in a config."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dalib.registry import Registry

if TYPE_CHECKING:
    from dalib.discrepancy.base import Discrepancy

DISCREPANCIES: Registry[Discrepancy] = Registry("discrepancy", "dalib.discrepancies")


def builtin_discrepancies() -> list[str]:
    """Names of the measures dalib itself ships (not those a user or a test registered)."""
    return [
        name
        for name, factory in DISCREPANCIES.entries(plugins=False).items()
        if factory.__module__.startswith("dalib.")
    ]
