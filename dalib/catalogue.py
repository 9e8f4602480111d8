"""Every kind of component a config selects by name: its registry and where a config names it.

``KINDS`` lists them; ``registry(kind)`` imports the package that registers a kind's entries
only when asked, so that ``dalib list kernels`` does not load the datasets.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dalib.describe import Description, describe
from dalib.errors import DalibError
from dalib.registry import Registry


@dataclass(frozen=True)
class Kind:
    """A kind of component: where its registry lives and where a config names one."""

    module: str  # the package that holds the registry
    attribute: str  # the registry in that package
    where: str  # the config keys that take a name of this kind
    context: tuple[str, ...] = ()  # parameters dalib fills in when it builds one
    also: tuple[str, ...] = ()  # other modules whose import registers entries


KINDS: dict[str, Kind] = {
    "discrepancies": Kind(
        "dalib.discrepancy", "DISCREPANCIES", "model.discrepancy", ("in_features", "num_classes")
    ),
    "kernels": Kind("dalib.discrepancy", "KERNELS", "the kernel options of mmd and jmmd"),
    "backbones": Kind("dalib.models", "BACKBONES", "model.backbone", ("input_shape",)),
    "datasets": Kind("dalib.data", "DATASETS", "data.dataset", also=("dalib.transfer",)),
    "target_losses": Kind(
        "dalib.target_losses", "TARGET_LOSSES", "model.target_loss", ("network",)
    ),
    "schedules": Kind(
        "dalib.schedules", "SCHEDULES", "model.gamma, model.lambda_t, model.reversal"
    ),
    "gamma_rules": Kind(
        "dalib.calibration", "GAMMA_RULES", "model.gamma (calibrated at the start)"
    ),
    "regularisers": Kind("dalib.regularisers", "REGULARISERS", "model.regularisers"),
    "schemes": Kind("dalib.schemes", "SCHEMES", "model.scheme"),
    "selection_scores": Kind(
        "dalib.selection", "SCORES", "model.selection, model.selection_fallback"
    ),
    "density_ratio_estimators": Kind(
        "dalib.weighting",
        "ESTIMATORS",
        "estimator of the dalib.weighting.ImportanceWeighting callback",
    ),
}


def kind_name(kind: str) -> str:
    """The name of ``kind`` in ``KINDS`` (``-`` may stand for ``_``); one line if unknown."""
    name = kind.replace("-", "_")
    if name in KINDS:
        return name
    close = difflib.get_close_matches(name, KINDS, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise DalibError(f"unknown kind {kind!r}{hint}; choose one of: {', '.join(KINDS)}")


def registry(kind: str) -> Registry[Any]:
    """The registry of ``kind``, its packages imported (which registers dalib's own entries)."""
    spec = KINDS[kind_name(kind)]
    for module in spec.also:
        importlib.import_module(module)
    return getattr(importlib.import_module(spec.module), spec.attribute)


def names_help() -> str:
    """The names of every kind and the config keys that take them, in one paragraph."""
    kinds = [
        f"{kind} ({spec.where}): {', '.join(registry(kind).names())}"
        for kind, spec in KINDS.items()
    ]
    return f"Components by name (`dalib list KIND NAME` shows one's options). {'; '.join(kinds)}."


def entry(kind: str, name: str) -> Callable[..., Any]:
    """The factory registered as ``name`` of ``kind``; one line with the close match if none."""
    return registry(kind).get(name)


def description(kind: str, name: str) -> Description:
    """The description of entry ``name`` of ``kind`` (for ``dalib list`` and the docs site)."""
    return describe(name, entry(kind, name), KINDS[kind_name(kind)].context)


def descriptions(kind: str) -> list[Description]:
    """The descriptions of every entry of ``kind``: dalib's and the installed plugins' (a plugin
    that cannot be imported is left out with a one-line warning)."""
    context = KINDS[kind_name(kind)].context
    return [describe(name, factory, context) for name, factory in registry(kind).entries().items()]
