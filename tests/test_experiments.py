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

COMPOSED = ("digits", "office_caltech", "office31", "officehome")  # protocol.yaml + methods/
CONFIGS = [
    *((REPO / "experiments" / b / "protocol.yaml", m)
      for b in COMPOSED for m in sorted((REPO / "experiments" / b / "methods").glob("*.yaml"))),
    *((c,) for c in sorted((REPO / "experiments").glob("*/*.yaml"))
      if c.parent.name not in COMPOSED),
]  # fmt: skip
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
        "deepjdot", "wdgrl", "swd", "dann_semi", "dann_bsp", "afn", "mcd", "adda",
    }  # fmt: skip
    for benchmark in ("digits", "office_caltech", "office31", "officehome"):
        folder = REPO / "experiments" / benchmark
        found = {p.stem for p in (folder / "methods").glob("*.yaml")}
        assert methods <= found, f"{benchmark} lacks {sorted(methods - found)}"
        references = yaml.safe_load((folder / "reference.yaml").read_text())
        for path in (folder / "methods").glob("*.yaml"):
            config = yaml.safe_load(path.read_text())
            assert config["model"]["method"] == path.stem
            assert references[path.stem]["source"], f"{path} names no paper"


@pytest.mark.parametrize("configs", CONFIGS, ids=lambda c: f"{c[0].parent.name}/{c[-1].stem}")
@pytest.mark.slow
def test_config_trains_a_few_steps(configs, tmp_path, monkeypatch):
    benchmark = configs[0].parent.name
    text = "\n".join(c.read_text() for c in configs)
    overrides = list(QUICK)
    if any(name in text for name in REAL_DATA):
        if not SHARED_DATA.is_dir():
            pytest.skip("needs ../shared/data")
        monkeypatch.setenv("DALIB_DATA", str(SHARED_DATA))
    if MADE_DATA in text:  # data a committed script makes, seeded
        make = runpy.run_path(str(REPO / "benchmarks" / "make_svmlight_domains.py"))
        make["write_domains"](tmp_path / "data" / MADE_DATA)
        monkeypatch.setenv("DALIB_DATA", str(tmp_path / "data"))
    if benchmark in IMAGE_BENCHMARKS:
        dataset = yaml.safe_load(configs[0].read_text())["data"]["dataset"]
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
        if "target_labels_per_class" in text:
            overrides.append("--data.target_labels_per_class=1")
    if "strategy: ddp" in text:
        # one process here: tests/test_distributed.py runs real multi-process DDP
        overrides += ["--trainer.devices=1", "--trainer.strategy=auto"]
    save_dir = tmp_path / "runs"
    run_dalib(["fit", *(a for c in configs for a in ("-c", str(c))), *overrides], save_dir)
    record = only_result(save_dir)
    assert record["method"] == yaml.safe_load(configs[-1].read_text())["model"].get(
        "method", record["method"]
    )
    assert record["steps"] == 2
    if len(configs) == 2:  # the published number comes from the benchmark's reference table
        table = yaml.safe_load((configs[0].parent / "reference.yaml").read_text())
        assert record["reference"] == table[configs[-1].stem]
    assert 0.0 <= record["target_acc"] <= 1.0
