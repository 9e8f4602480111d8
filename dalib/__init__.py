"""dalib: domain adaptation as one objective, ``L = L_s + λ·L_t + γ·D(h(X_s), h(X_t))``.

The names below load on first use (PEP 562), so that ``import dalib.<module>`` and the ``dalib``
command pay only for the modules they use. ``dalib.__version__`` is the installed distribution's
version (``dalib-lightning``: ``dalib`` on the package index is another project).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dalib.data import DATASETS, DomainDataModule
    from dalib.discrepancy import DISCREPANCIES, Discrepancy
    from dalib.errors import DalibError
    from dalib.module import DomainAdaptationModule
    from dalib.regularisers import REGULARISERS
    from dalib.schedules import SCHEDULES
    from dalib.schemes import SCHEMES
    from dalib.target_losses import TARGET_LOSSES

#: The distribution that installs the import package ``dalib``.
DISTRIBUTION = "dalib-lightning"
#: ``__version__`` where dalib is imported from a source tree that is not installed.
UNKNOWN_VERSION = "0+unknown"

#: Each public name and the module that defines it.
EXPORTS = {
    "DATASETS": "dalib.data",
    "DISCREPANCIES": "dalib.discrepancy",
    "REGULARISERS": "dalib.regularisers",
    "SCHEDULES": "dalib.schedules",
    "SCHEMES": "dalib.schemes",
    "TARGET_LOSSES": "dalib.target_losses",
    "DalibError": "dalib.errors",
    "Discrepancy": "dalib.discrepancy",
    "DomainAdaptationModule": "dalib.module",
    "DomainDataModule": "dalib.data",
}
__all__ = [
    "DATASETS",
    "DISCREPANCIES",
    "REGULARISERS",
    "SCHEDULES",
    "SCHEMES",
    "TARGET_LOSSES",
    "DalibError",
    "Discrepancy",
    "DomainAdaptationModule",
    "DomainDataModule",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value = installed_version()
        globals()[name] = value
        return value
    if name not in EXPORTS:
        raise AttributeError(f"module 'dalib' has no attribute {name!r}")
    value = getattr(importlib.import_module(EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *EXPORTS, "__version__"})


def installed_version() -> str:
    """The version pip recorded for ``DISTRIBUTION`` (from its git tag), or ``UNKNOWN_VERSION``."""
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return UNKNOWN_VERSION
