"""benchmarks/gpu_full.sh: the plan it prints names every run of its sweeps, and the tables'
planned counts match them."""

import re
import subprocess

import pytest

from dalib.sweep import load_sweep
from tests.conftest import REPO

SWEEPS = REPO / "benchmarks" / "sweeps"
METHODS = 18


@pytest.mark.parametrize(("benchmark", "tasks"), [("office31", 6), ("officehome", 12)])
def test_the_image_sweeps_run_every_method_config_on_every_domain_pair(benchmark, tasks):
    spec, runs = load_sweep(SWEEPS / f"{benchmark}.yaml")
    protocol = (REPO / "experiments" / benchmark / "protocol.yaml").resolve()
    methods = sorted((REPO / "experiments" / benchmark / "methods").glob("*.yaml"))
    assert len(methods) == METHODS
    assert {tuple(c.resolve() for c in run.configs) for run in runs} == {
        (protocol, m.resolve()) for m in methods
    }
    pairs = {(r.overrides["data.dataset"]["source"], r.overrides["data.dataset"]["target"])
             for r in runs}  # fmt: skip
    assert len(pairs) == tasks and all(s != t for s, t in pairs)
    assert len(runs) == METHODS * tasks * 3
    assert spec["overrides"]["model.selection"] == "last"


@pytest.mark.slow
def test_dry_run_prints_the_plan_and_publishes_each_table_with_its_planned_count():
    script = REPO / "benchmarks" / "gpu_full.sh"
    out = subprocess.run(["bash", str(script), "--dry-run"], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    planned: dict[str, int] = {}
    for runs, output in re.findall(r"^benchmarks/sweeps/\S+: (\d+) runs into runs/sweeps/(\S+) ",
                                   out, re.M):  # fmt: skip
        planned[output] = planned.get(output, 0) + int(runs)
    assert planned == {"digits_full": 24, "office31": 324, "officehome": 648}
    published = re.findall(r"^would run: python benchmarks/publish\.py runs/sweeps/(\S+) .* "
                           r"--planned (\d+)$", out, re.M)  # fmt: skip
    assert {k: int(v) for k, v in published} == planned
    assert "would run: dalib sweep benchmarks/sweeps/digits_full_seeds.yaml" in out
    assert "+ dalib" not in out  # a dry run runs nothing
