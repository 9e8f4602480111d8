"""experiments/{office31,officehome,office_caltech}/PROTOCOL.md hold: every checked value is
what the composed config (``protocol.yaml`` + ``methods/<method>.yaml``) resolves to as ``dalib
fit`` parses it.

The images are not in ``../shared/data`` and the ResNet-50 weights are not here, so the check
(for Office-Caltech too, to keep it one check)
reads the parsed config (``tests.test_composed_configs.resolve``), not built objects: each row's
"Check" is a dotted key, its "dalib" column the value as JSON. The "all" table applies to every
method file of the benchmark, the others to their method.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.conftest import REPO
from tests.test_composed_configs import composed

BENCHMARKS = ("office31", "officehome", "office_caltech")


def tables(benchmark: str) -> dict[str, dict[str, Any]]:
    """``{table: {dotted key: expected}}`` from the ``## Checks: <table>`` sections."""
    found: dict[str, dict[str, Any]] = {}
    current = None
    for line in (REPO / "experiments" / benchmark / "PROTOCOL.md").read_text().splitlines():
        if heading := re.match(r"^## Checks: (\w+)", line):
            current = found.setdefault(heading.group(1), {})
        elif current is not None and (
            row := re.match(r"^\|[^|]*\| `([\w.]+)` \| `([^`]*)` \|", line)
        ):
            assert row.group(1) not in current, f"{row.group(1)} twice in one table"
            current[row.group(1)] = json.loads(row.group(2))
    return found


def value(config: dict[str, Any], dotted: str) -> Any:
    for key in dotted.split("."):
        config = config[key]
    return config


def methods(benchmark: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "experiments" / benchmark / "methods").glob("*.yaml"))


def test_the_tables_name_methods_of_their_benchmark():
    for benchmark in BENCHMARKS:
        found = tables(benchmark)
        assert "all" in found and len(found["all"]) >= 8, benchmark
        assert set(found) - {"all"} <= set(methods(benchmark)), benchmark
        if benchmark != "office_caltech":  # TLL's per-method scripts; SURF has only "all"
            assert {"source_only", "dann", "cdan", "mdd"} <= set(found), benchmark


@pytest.mark.slow
@pytest.mark.parametrize(
    "benchmark,method",
    [pytest.param(b, m, id=f"{b}/{m}") for b in BENCHMARKS for m in methods(b)],
)
def test_the_config_resolves_to_the_protocol_table(benchmark, method):
    found = tables(benchmark)
    expected = {**found["all"], **found.get(method, {})}
    resolved = composed(benchmark, method)
    wrong = {k: (v, value(resolved, k)) for k, v in expected.items() if value(resolved, k) != v}
    assert not wrong, "PROTOCOL.md says (first) but the config resolves to (second): " + str(wrong)
