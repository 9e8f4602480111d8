"""Each benchmark's configs are composed: ``experiments/<benchmark>/protocol.yaml`` (data,
backbone, optimiser, schedule, trainer) and ``methods/<method>.yaml`` (D, L_t, lambda/gamma and
what the method overrides), ``dalib fit -c protocol.yaml -c methods/<method>.yaml``; published
numbers are in ``reference.yaml``. Every composed pair resolves, as ``dalib fit`` parses it, to
the values pinned in ``tests/data/resolved_configs.json`` (written from the single-file configs
the pairs replaced, while both existed: ``python -m tests.test_composed_configs``), and records
the published number the old file carried.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

from dalib.data.datamodule import DomainDataModule
from dalib.lightning_cli import DalibCLI, reference_entry
from dalib.module import DomainAdaptationModule
from tests.conftest import REPO

BENCHMARKS = ("digits", "office31", "office_caltech", "officehome")
PINNED = REPO / "tests" / "data" / "resolved_configs.json"


class ParseOnly(DalibCLI):
    """``dalib fit``'s parser and checks, without building the model and data."""

    def instantiate_classes(self) -> None:
        pass


def resolve(*configs: Path) -> dict[str, Any]:
    """The parsed config (``-c`` in order) as plain data, with the recorded reference."""
    args = [arg for config in configs for arg in ("-c", str(config))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = ParseOnly(DomainAdaptationModule, DomainDataModule, run=False, args=args)
        resolved = yaml.safe_load(cli.parser.dump(cli.config, skip_none=False))
    resolved.pop("config", None)
    reference = resolved.pop("reference")
    method = resolved["model"]["method"]
    resolved["recorded_reference"] = reference_entry(cli.config.get("reference"), method)
    assert reference is not None, f"{configs} names no reference"
    return resolved


def composed_pairs() -> list[tuple[str, str]]:
    return [
        (b, p.stem)
        for b in BENCHMARKS
        for p in sorted((REPO / "experiments" / b / "methods").glob("*.yaml"))
    ]


PAIRS = [pytest.param(b, m, id=f"{b}/{m}") for b, m in composed_pairs()]


def composed(benchmark: str, method: str) -> dict[str, Any]:
    folder = REPO / "experiments" / benchmark
    return resolve(folder / "protocol.yaml", folder / "methods" / f"{method}.yaml")


@pytest.mark.slow
@pytest.mark.parametrize("benchmark,method", PAIRS)
def test_the_composed_pair_resolves_to_the_pinned_config(benchmark, method):
    pinned = json.loads(PINNED.read_text())[f"{benchmark}/{method}"]
    assert json.loads(json.dumps(composed(benchmark, method))) == pinned


def test_every_benchmark_has_a_protocol_every_method_a_published_entry():
    pinned = json.loads(PINNED.read_text())
    assert sorted(pinned) == sorted("/".join(pair) for pair in composed_pairs())
    for benchmark in BENCHMARKS:
        folder = REPO / "experiments" / benchmark
        table = yaml.safe_load((folder / "reference.yaml").read_text())
        methods = {p.stem for p in (folder / "methods").glob("*.yaml")}
        assert set(table) == methods, benchmark
        assert all(entry["source"] for entry in table.values()), benchmark
        protocol = yaml.safe_load((folder / "protocol.yaml").read_text())
        assert "method" not in protocol["model"] and protocol["reference"] == "reference.yaml"


def write_pinned(single_files: list[Path]) -> None:
    """Pin the resolution of the single-file configs ``experiments/<benchmark>/<method>.yaml``."""
    pinned = {f"{p.parent.name}/{p.stem}": resolve(p) for p in single_files}
    PINNED.write_text(json.dumps(pinned, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    write_pinned([Path(arg) for arg in sys.argv[1:]])
