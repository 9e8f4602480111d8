"""The training-scheme extension point: the documented third-party example works as written."""

import re
import warnings

import pytest
import pytorch_lightning as pl

from dalib.data import DomainDataModule
from dalib.errors import DalibError
from dalib.module import DomainAdaptationModule
from dalib.schemes import SCHEMES
from tests.conftest import REPO


def trainer(max_steps: int) -> pl.Trainer:
    return pl.Trainer(
        max_steps=max_steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
    )  # fmt: skip


@pytest.fixture
def docs_scheme():
    """Register the scheme of docs/methods_and_schemes.md (its code block, run as written)."""
    text = (REPO / "docs" / "methods_and_schemes.md").read_text()
    code = re.search(r"A third-party scheme:\n\n```python\n(.*?)```", text, re.S).group(1)
    if "my_scheme" not in SCHEMES.names():
        exec(code, {})
    return "my_scheme"


def test_the_documented_scheme_makes_inner_steps_but_counts_one_per_batch(docs_scheme):
    module = DomainAdaptationModule(
        num_classes=2, input_shape=(2,), discrepancy="mmd",
        scheme={"name": docs_scheme, "inner_steps": 3},
    )  # fmt: skip
    steps = []
    original = module.optimizers

    def counting_optimizers(*args, **kwargs):
        steps.append(1)
        return original(*args, **kwargs)

    module.optimizers = counting_optimizers
    fit = trainer(max_steps=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit.fit(module, DomainDataModule(dataset={"name": "moons", "angle": 35}, batch_size=16))
    assert fit.global_step == 4 and module.method == "my_scheme+mmd"
    assert len(steps) >= 4 * 3  # the inner steps each asked for the optimiser


def test_a_manual_scheme_that_counts_no_step_stops_with_a_clear_error(docs_scheme):
    module = DomainAdaptationModule(
        num_classes=2, input_shape=(2,), scheme={"name": docs_scheme, "inner_steps": 2}
    )
    module.scheme.training_step = lambda module, batch, batch_idx: {}
    with warnings.catch_warnings(), pytest.raises(DalibError, match="counted 0 optimiser steps"):
        warnings.simplefilter("ignore")
        trainer(max_steps=2).fit(
            module, DomainDataModule(dataset={"name": "moons", "angle": 35}, batch_size=16)
        )
