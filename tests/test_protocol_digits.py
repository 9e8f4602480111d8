"""experiments/digits/PROTOCOL.md holds: every checked value, resolved as ``dalib fit`` resolves
the config (its CLI, on the real data), is what the table says.

The table's rows with a name in the "Check" column give the expected value as JSON in the
"dalib" column; ``CHECKS`` computes each from the built objects (the network's layers and
weights, the optimiser and its LR schedule, the objective's schedules, the data's splits), not
from the config text. The "all" table applies to every config, the others to their method.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from dalib.data.datamodule import DomainDataModule
from dalib.lightning_cli import DalibCLI
from dalib.models import output_layer
from dalib.module import DomainAdaptationModule
from tests.conftest import REPO, SHARED_DATA

PROTOCOL = REPO / "experiments" / "digits" / "PROTOCOL.md"
METHODS = ("source_only", "dann", "cdan", "mdd")
STEPS = (0, 1, 500, 1000, 5000, 20000, 49999)  # where schedules are compared with TLL's formulas


def tables() -> dict[str, dict[str, Any]]:
    """``{table: {check: expected}}`` from the sections ``## Checks: <table>`` of PROTOCOL.md."""
    found: dict[str, dict[str, Any]] = {}
    current = None
    for line in PROTOCOL.read_text().splitlines():
        if heading := re.match(r"^## Checks: (\w+)", line):
            current = found.setdefault(heading.group(1), {})
        elif current is not None and (row := re.match(r"^\|[^|]*\| `(\w+)` \| `([^`]*)` \|", line)):
            assert row.group(1) not in current, f"{row.group(1)} twice in one table"
            current[row.group(1)] = json.loads(row.group(2))
    return found


def resolve(method: str) -> DalibCLI:
    """The config as ``dalib fit`` builds it (model, data module, trainer), data set up."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = DalibCLI(
            DomainAdaptationModule, DomainDataModule, run=False,
            args=["-c", str(REPO / "experiments" / "digits" / "protocol.yaml"),
                  "-c", str(REPO / "experiments" / "digits" / "methods" / f"{method}.yaml"),
                  "--trainer.logger=false"],
        )  # fmt: skip
    cli.datamodule.setup("fit")
    return cli


def describe(module: nn.Module | None) -> list[str] | None:
    """A module's layers as ``Linear(500, 256)``, ``BatchNorm1d(256)``, ``Dropout(0.5)``, ..."""
    if module is None:
        return None
    layers = list(module) if isinstance(module, nn.Sequential) else [module]
    names = []
    for layer in layers:
        if isinstance(layer, nn.Linear):
            names.append(f"Linear({layer.in_features}, {layer.out_features})")
        elif isinstance(layer, nn.Conv2d):
            names.append(
                f"Conv2d({layer.in_channels}, {layer.out_channels}, {layer.kernel_size[0]})"
            )
        elif isinstance(layer, nn.BatchNorm1d):
            names.append(f"BatchNorm1d({layer.num_features})")
        elif isinstance(layer, nn.Dropout | nn.Dropout2d):
            names.append(f"{type(layer).__name__}({layer.p})")
        elif isinstance(layer, nn.MaxPool2d):
            names.append(f"MaxPool2d({layer.kernel_size})")
        elif not isinstance(layer, nn.Identity):
            names.append(type(layer).__name__)
    return names


def init_of(module: nn.Module | None) -> list[Any] | None:
    """Per Linear/Conv layer: ``{"std": s, "bias": b}`` for a Gaussian weight with a constant
    bias, ``"default"`` for PyTorch's U(±1/sqrt(fan_in)) initialisation."""
    if module is None:
        return None
    layers = [m for m in module.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    found: list[Any] = []
    for layer in layers:
        weight, bias = layer.weight.detach(), layer.bias.detach()
        bound = 1 / math.sqrt(weight[0].numel())
        if len(bias) > 1 and torch.all(bias == bias[0]):  # one bias: tell by its bound
            std = float(f"{weight.std().item():.1g}")  # one significant digit: 0.0099 is 0.01
            found.append({"std": std, "bias": round(bias[0].item(), 6)})
        else:
            uniform_std = bound / math.sqrt(3)
            assert weight.abs().max() <= bound and bias.abs().max() <= bound
            assert abs(weight.std().item() - uniform_std) < 0.1 * uniform_std
            found.append("default")
    return found


def discriminator(cli: DalibCLI) -> nn.Module | None:
    """The discrepancy's trained adversary: a domain discriminator or MDD's adversarial head."""
    measure = cli.model.objective.discrepancy
    return None if measure is None else getattr(measure, "discriminator", None) or measure.head


def attribute(cli: DalibCLI, name: str) -> Any:
    """An option of the discrepancy (``None`` where it has no such option, or there is none)."""
    return getattr(cli.model.objective.discrepancy, name, None)


def optimiser(cli: DalibCLI):
    total = cli.trainer.max_epochs * cli.datamodule.iterations_per_epoch
    return cli.model.optimization.build(cli.model.network, cli.model.objective, total)


def lr_decay(cli: DalibCLI) -> dict[str, float]:
    """The head's learning rate over the steps, as TLL's ``lr·(1 + lr_gamma·step)^-power``: the
    parameters fitted at step 1000 and checked at every step of ``STEPS``."""
    optimizer, scheduler = optimiser(cli)
    head = next(g for g in optimizer.param_groups if any(
        p is output_layer(cli.model.network.head).weight for p in g["params"]))  # fmt: skip
    lr = head["lr"]
    rates = {step: lr * scheduler.lr_lambdas[0](step) for step in STEPS}
    power = 0.75
    gamma = round(((rates[1000] / lr) ** (-1 / power) - 1) / 1000, 9)
    for step, rate in rates.items():
        assert rate == pytest.approx(lr * (1 + gamma * step) ** -power, rel=1e-9), step
    return {"lr": lr, "lr_gamma": gamma, "power": power}


def lr_mults(cli: DalibCLI) -> dict[str, float]:
    """The multiplier of every parameter's learning rate, per part (one value each)."""
    optimizer, _ = optimiser(cli)
    mult = {id(p): g["lr_mult"] for g in optimizer.param_groups for p in g["params"]}
    parts = {
        name: list(getattr(cli.model.network, name).parameters())
        for name in ("backbone", "bottleneck", "head")
    }
    parts["discrepancy"] = [p for _, p in cli.model.objective.named_trainable_parameters()]
    found = {}
    for name, params in parts.items():
        values = {mult[id(p)] for p in params}
        assert len(values) <= 1, (name, values)
        if values:
            found[name] = values.pop()
    return found


def reversal(cli: DalibCLI) -> dict[str, float] | None:
    """The coefficient the features' reversed gradient is multiplied by, as TLL's
    ``WarmStartGradientReverseLayer``: ``2(hi-lo)/(1+exp(-alpha·i/max_iters)) - (hi-lo) + lo``
    (tllib/modules/grl.py:70-74) at step i; parameters read at the last step, checked at all."""
    objective = cli.model.objective
    layers = objective.reversal_layers()
    if not layers:
        return None
    total = cli.trainer.max_epochs * cli.datamodule.iterations_per_epoch
    coeff = {step: layers[0].coeff * objective.reversal(step / total) for step in STEPS}
    expected = {"lo": 0.0, "hi": round(coeff[49999], 6), "alpha": 1.0, "max_iters": 1000}
    hi, lo = expected["hi"], expected["lo"]
    for step, value in coeff.items():
        tll = 2 * (hi - lo) / (1 + math.exp(-step / 1000)) - (hi - lo) + lo
        assert value == pytest.approx(tll, rel=1e-6, abs=1e-9), step
    return expected


def constant(schedule) -> float:
    values = {schedule(p) for p in (0.0, 0.01, 0.5, 1.0)}
    assert len(values) == 1, f"not constant: {values}"
    return values.pop()


def evaluated_on(cli: DalibCLI) -> str:
    """The split of the target accuracy: validation (and test) loader 1's data set."""
    dataset = cli.datamodule.val_dataloader()[1].dataset
    return next(name for name, split in cli.datamodule.splits.items() if split is dataset)


def pixel_range(cli: DalibCLI) -> list[float]:
    images = torch.stack([cli.datamodule.splits["source_train"][i][0] for i in range(256)])
    return [images.min().item(), images.max().item()]


CHECKS: dict[str, Callable[[DalibCLI], Any]] = {
    "task": lambda cli: cli.datamodule.pair.task,
    "source_train_size": lambda cli: len(cli.datamodule.splits["source_train"]),
    "source_val_size": lambda cli: len(cli.datamodule.splits["source_val"]),
    "target_train_size": lambda cli: len(cli.datamodule.splits["target_train"]),
    "target_test_size": lambda cli: len(cli.datamodule.splits["target_test"]),
    "input_shape": lambda cli: list(cli.datamodule.input_shape),
    "pixel_range": pixel_range,
    "batch_size": lambda cli: cli.datamodule.batch_size,
    "iterations_per_epoch": lambda cli: cli.datamodule.iterations_per_epoch,
    "max_epochs": lambda cli: cli.trainer.max_epochs,
    "total_steps": lambda cli: cli.trainer.max_epochs * cli.datamodule.iterations_per_epoch,
    "evaluated_on": evaluated_on,
    "selection": lambda cli: cli.model.hparams.selection,
    "seed": lambda cli: cli.config["seed_everything"],
    "backbone_layers": lambda cli: describe(cli.model.network.backbone),
    "backbone_init": lambda cli: init_of(cli.model.network.backbone),
    "bottleneck_layers": lambda cli: describe(cli.model.network.bottleneck),
    "bottleneck_init": lambda cli: init_of(cli.model.network.bottleneck),
    "head_layers": lambda cli: describe(cli.model.network.head),
    "head_init": lambda cli: init_of(cli.model.network.head),
    "discriminator_layers": lambda cli: describe(discriminator(cli)),
    "discriminator_init": lambda cli: init_of(discriminator(cli)),
    "entropy_conditioning": lambda cli: attribute(cli, "entropy_conditioning"),
    "margin": lambda cli: attribute(cli, "margin"),
    "optimizer": lambda cli: {
        "type": type(optimiser(cli)[0]).__name__,
        "momentum": optimiser(cli)[0].defaults["momentum"],
        "nesterov": optimiser(cli)[0].defaults["nesterov"],
    },
    "weight_decay": lambda cli: sorted({g["weight_decay"] for g in optimiser(cli)[0].param_groups}),
    "lr_decay": lr_decay,
    "lr_mults": lr_mults,
    "gamma": lambda cli: (
        None if attribute(cli, "adversarial") is None else constant(cli.model.objective.gamma)
    ),
    "reversal": reversal,
}


def test_the_tables_name_only_known_checks_and_every_method_has_its_table():
    found = tables()
    assert set(found) == {"all", *METHODS}
    for table in found.values():
        assert set(table) <= set(CHECKS), set(table) - set(CHECKS)
    for method in METHODS:  # every check is made for every config
        assert set(found["all"]) | set(found[method]) == set(CHECKS), method


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_the_config_resolves_to_the_protocol_table(method, monkeypatch):
    if not SHARED_DATA.is_dir():
        pytest.skip("needs ../shared/data")
    monkeypatch.setenv("DALIB_DATA", str(SHARED_DATA))
    torch.manual_seed(0)
    cli = resolve(method)
    expected = {**tables()["all"], **tables()[method]}
    wrong = {}
    for name, value in expected.items():
        got = json.loads(json.dumps(CHECKS[name](cli)))
        if got != value:
            wrong[name] = (value, got)
    assert not wrong, "PROTOCOL.md says (first) but the config resolves to (second): " + str(wrong)


def test_the_full_run_sweeps_run_the_protocol_first_then_u2m_then_more_seeds():
    from dalib.sweep import load_sweep

    sweeps = REPO / "benchmarks" / "sweeps"
    outputs, ids = set(), []
    for name in ("digits_full", "digits_full_u2m", "digits_full_seeds"):
        spec, runs = load_sweep(sweeps / f"{name}.yaml")
        outputs.add(spec["output"])
        assert spec["overrides"]["model.selection"] == "last"
        assert spec["overrides"]["model.checkpoint_every_n_steps"] == 1000
        for run in runs:
            settings = {**spec["overrides"], **run.overrides}
            assert "trainer.max_epochs" not in settings and "data.batch_size" not in settings
            u2m = run.task == "U2M"
            # TLL's lr on USPS->MNIST: 0.1 (ic/erm.sh:88, dann.sh:80, cdan.sh:81); MDD's
            # 0.01 on both (mdd.sh:81, 83)
            lr = settings.get("model.lr", 0.01)
            assert lr == (0.1 if u2m and run.method != "mdd" else 0.01), run.run_id
        ids.append([run.run_id for run in runs])
    assert outputs == {"runs/sweeps/digits_full"}  # one folder: one report over all of them
    assert ids[0] == [f"{m}/M2U/default/seed_0" for m in METHODS]
    assert ids[1] == [f"{m}/U2M/default/seed_0" for m in METHODS]
    assert sorted(ids[2]) == sorted(
        f"{m}/{t}/default/seed_{s}" for m in METHODS for t in ("M2U", "U2M") for s in (1, 2)
    )
