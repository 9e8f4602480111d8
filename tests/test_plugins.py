"""A third-party package adds a discrepancy and a dataset without touching dalib.

The package is built in a temporary folder and installed with ``pip install -e`` into a
throw-away virtual environment that sees the development environment's packages (a ``.pth``
file adds its site-packages), so the development environment is left as it was. ``dalib fit``
and ``dalib sweep`` then use the plugin's entries by their entry-point names; a second fit
selects them by ``"package.module:Name"`` spec with the package importable but not installed.
"""

import csv
import json
import math
import os
import re
import subprocess
import sys
import sysconfig
import textwrap
import venv
from importlib import metadata
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

DOC = REPO / "docs" / "plugins.md"


def doc_blocks(language: str) -> list[str]:
    """The fenced ``language`` blocks of docs/plugins.md: the plugin is the documented one."""
    return re.findall(rf"^```{language}\n(.*?)^```$", DOC.read_text(), re.MULTILINE | re.DOTALL)


def config(path: Path, save_dir: Path, discrepancy: str, dataset: str) -> Path:
    path.write_text(
        textwrap.dedent(f"""
        seed_everything: 0
        trainer:
          max_epochs: 2
          log_every_n_steps: 1
          enable_progress_bar: false
          enable_model_summary: false
          logger:
            class_path: pytorch_lightning.loggers.CSVLogger
            init_args: {{save_dir: {save_dir}, name: plugin}}
        model:
          backbone: {{name: mlp, hidden_dims: [16]}}
          discrepancy: {{name: "{discrepancy}", scale: 2.0}}
        data:
          dataset: {{name: "{dataset}", shift: 3.0}}
          batch_size: 16
          iterations_per_epoch: 3
        """)
    )
    return path


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> Path:
    """The plugin project of docs/plugins.md: pyproject.toml with the entry points, the package."""
    root = tmp_path_factory.mktemp("plugin")
    pyproject, measures, data = doc_blocks("toml")[0], *doc_blocks("python")[:2]
    (root / "pyproject.toml").write_text(pyproject)
    (root / "tinyplug").mkdir()
    (root / "tinyplug" / "__init__.py").write_text("")
    (root / "tinyplug" / "measures.py").write_text(measures)
    (root / "tinyplug" / "data.py").write_text(data)
    return root


@pytest.fixture(scope="module")
def python_with_plugin(plugin, tmp_path_factory) -> Path:
    """The interpreter of a throw-away venv with the plugin installed by ``pip install -e``."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site_dir = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    development = sysconfig.get_paths()["purelib"]  # torch, Lightning, pip, setuptools, dalib
    (site_dir / "development.pth").write_text(f"import site; site.addsitedir({development!r})\n")
    install = [python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index"]
    done = subprocess.run([*install, "-e", str(plugin)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    with pytest.raises(metadata.PackageNotFoundError):  # the development environment is as it was
        metadata.distribution("dalib-tinyplug")
    return python


def dalib(python: Path, args: list[str], cwd: Path, pythonpath: list[Path]) -> None:
    """``dalib <args>`` run by ``python`` (``-m dalib.cli`` is what the console script runs)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in [REPO, *pythonpath])
    done = subprocess.run(
        [python, "-m", "dalib.cli", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]


def check_run(result_path: Path, method: str) -> None:
    """The record names the plugin's measure and data; its value is logged, finite, positive."""
    record = json.loads(result_path.read_text())
    assert record["method"] == method
    assert record["dataset"] == "gaussians" and record["task"] == "shift 3"
    assert math.isfinite(record["metrics"]["train/discrepancy"])
    with open(result_path.parent / "metrics.csv") as file:
        logged = [
            float(r["train/discrepancy"]) for r in csv.DictReader(file) if r["train/discrepancy"]
        ]
    assert len(logged) == 6 and all(v > 0 for v in logged)  # every step of 2 epochs x 3


def test_installed_plugin_in_fit_and_sweep(python_with_plugin, tmp_path):
    path = config(tmp_path / "plugin.yaml", tmp_path / "runs", "mean_gap", "gaussians")
    dalib(python_with_plugin, ["fit", "-c", str(path)], tmp_path, [])
    (result,) = (tmp_path / "runs").rglob("result.json")
    check_run(result, "mean_gap")

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"output: {tmp_path / 'sweep'}\nmethods: [{path}]\nseeds: [1]\n")
    dalib(python_with_plugin, ["sweep", str(sweep)], tmp_path, [])
    (result,) = (tmp_path / "sweep").rglob("result.json")
    check_run(result, "mean_gap")
    assert json.loads(result.read_text())["seed"] == 1


def test_spec_selects_a_plugin_that_is_not_installed(plugin, tmp_path):
    spec_measure, spec_data = "tinyplug.measures:MeanGap", "tinyplug.data:shifted_gaussians"
    path = config(tmp_path / "spec.yaml", tmp_path / "runs", spec_measure, spec_data)
    dalib(Path(sys.executable), ["fit", "-c", str(path)], tmp_path, [plugin])
    (result,) = (tmp_path / "runs").rglob("result.json")
    check_run(result, spec_measure)
