"""Every config in experiments/ parses and trains a few steps on CPU (the catalogue's quick mode).

Digits and Office-Caltech10 configs run on the real data in ``../shared/data`` (skipped where it
is absent); the svmlight example runs on the files benchmarks/make_svmlight_domains.py writes;
Office-31 and Office-Home configs run on a tiny tree of real JPEG files with their
ResNet-50 left untrained (no download here) and 32x32 crops: everything else is the config's.
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from dalib.data.images import BENCHMARKS
from tests.conftest import REPO, SHARED_DATA, only_result, run_dalib

CONFIGS = sorted((REPO / "experiments").glob("*/*.yaml"))
QUICK = [
    "--trainer.max_epochs=1",
    "--data.iterations_per_epoch=2",
    "--trainer.limit_val_batches=1",
    "--data.selection_samples=64",
    "--trainer.enable_checkpointing=false",
]
IMAGE_BENCHMARKS = {"office31", "officehome"}
REAL_DATA = ("name: digits", "office_caltech10")  # datasets in ../shared/data
MADE_DATA = "svmlight_reviews"  # benchmarks/make_svmlight_domains.py writes it


def image_tree(root: Path, name: str) -> Path:
    """The benchmark's first two domains, one real JPEG per class each, under ``root``."""
    benchmark = BENCHMARKS[name]
    rng = np.random.default_rng(0)
    for domain in list(benchmark.domains.values())[:2]:
        for label in range(benchmark.num_classes):
            folder = root / benchmark.folder / domain / f"class_{label:03d}"
            folder.mkdir(parents=True)
            pixels = rng.integers(0, 255, (40, 40, 3)).astype(np.uint8)
            Image.fromarray(pixels).save(folder / "0.jpg")
    return root


def test_the_catalogue_covers_every_method_on_every_benchmark():
    methods = {
        "source_only", "dan", "jan", "coral", "dann", "cdan", "cdan_e", "mdd", "mcc",
        "deepjdot", "wdgrl", "swd", "dann_semi",
    }  # fmt: skip
    for benchmark in ("digits", "office_caltech", "office31", "officehome"):
        found = {p.stem for p in (REPO / "experiments" / benchmark).glob("*.yaml")}
        assert methods <= found, f"{benchmark} lacks {sorted(methods - found)}"
        for path in (REPO / "experiments" / benchmark).glob("*.yaml"):
            config = yaml.safe_load(path.read_text())
            assert config["model"]["method"] == path.stem
            assert config["reference"]["source"], f"{path} names no paper"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
@pytest.mark.slow
def test_config_trains_a_few_steps(config, tmp_path, monkeypatch):
    benchmark = config.parent.name
    overrides = list(QUICK)
    if any(name in config.read_text() for name in REAL_DATA):
        if not SHARED_DATA.is_dir():
            pytest.skip("needs ../shared/data")
        monkeypatch.setenv("DALIB_DATA", str(SHARED_DATA))
    if MADE_DATA in config.read_text():  # data a committed script makes, seeded
        make = runpy.run_path(str(REPO / "benchmarks" / "make_svmlight_domains.py"))
        make["write_domains"](tmp_path / "data" / MADE_DATA)
        monkeypatch.setenv("DALIB_DATA", str(tmp_path / "data"))
    if benchmark in IMAGE_BENCHMARKS:
        dataset = yaml.safe_load(config.read_text())["data"]["dataset"]
        root = image_tree(tmp_path / "data", dataset["name"])
        first, second = list(BENCHMARKS[dataset["name"]].domains)[:2]
        small = {**dataset, "source": first, "target": second, "root": str(root)}
        small.update(resize=36, crop=32)
        overrides += [
            f"--data.dataset={json.dumps(small)}",
            "--model.backbone.weights=null",
            "--data.batch_size=4",
            "--data.num_workers=0",
        ]
        if "target_labels_per_class" in config.read_text():
            overrides.append("--data.target_labels_per_class=1")
    if "strategy: ddp" in config.read_text():
        # one process here: tests/test_distributed.py runs real multi-process DDP
        overrides += ["--trainer.devices=1", "--trainer.strategy=auto"]
    save_dir = tmp_path / "runs"
    run_dalib(["fit", "-c", str(config), *overrides], save_dir)
    record = only_result(save_dir)
    assert record["method"] == yaml.safe_load(config.read_text())["model"].get(
        "method", record["method"]
    )
    assert record["steps"] == 2
    assert 0.0 <= record["target_acc"] <= 1.0
