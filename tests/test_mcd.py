"""MCD on the training-scheme extension point: its losses, its three steps, resume and DDP."""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from dalib.data import DomainDataModule
from dalib.errors import DalibError
from dalib.module import DomainAdaptationModule
from dalib.schemes import SCHEMES, mcd
from tests.conftest import REPO, TOY
from tests.test_resume import fit, kill_when, record


def test_classifier_discrepancy_and_mean_prediction_entropy_against_numpy_loops():
    g = torch.Generator().manual_seed(0)
    p1 = F.softmax(torch.randn(7, 5, generator=g, dtype=torch.float64), dim=1)
    p2 = F.softmax(torch.randn(7, 5, generator=g, dtype=torch.float64), dim=1)
    a, b = p1.numpy(), p2.numpy()
    n, k = a.shape
    expected = sum(sum(abs(a[i, j] - b[i, j]) for j in range(k)) / k for i in range(n)) / n
    assert mcd.classifier_discrepancy(p1, p2).item() == pytest.approx(expected, rel=1e-12)
    mean = [sum(a[i, j] for i in range(n)) / n for j in range(k)]
    entropy = -sum(np.log(m + 1e-6) for m in mean) / k
    assert mcd.mean_prediction_entropy(p1).item() == pytest.approx(entropy, rel=1e-12)


def toy_module(momentum: float = 0.9, **scheme) -> DomainAdaptationModule:
    return DomainAdaptationModule(
        num_classes=2, input_shape=(2,), backbone={"name": "mlp", "hidden_dims": [16]},
        bottleneck_dim=8, scheme={"name": "mcd", **scheme}, lr=0.05, momentum=momentum,
    )  # fmt: skip


def is_classifier(name: str) -> bool:
    return name.startswith(("network.head.", "scheme.head2."))


def test_mcd_makes_the_three_steps_with_the_right_parameters_frozen(monkeypatch, tmp_path):
    """Parameter snapshots around every optimiser step of one batch: A moves both parts, B only
    the classifiers (the features get no gradient), C only the features (the classifiers
    frozen, no gradient), ``num_k`` times; only the batch's last step counts as a global step."""
    steps = []
    real_step = mcd.optimizer_step

    def recording_step(module, index, *, counted):
        named = dict(module.named_parameters())
        before = {name: p.detach().clone() for name, p in named.items()}
        grads = {name for name, p in named.items() if p.grad is not None and p.grad.any()}
        real_step(module, index, counted=counted)
        moved = {name for name, p in named.items() if not torch.equal(p, before[name])}
        steps.append((index, counted, moved, grads))

    monkeypatch.setattr(mcd, "optimizer_step", recording_step)
    torch.manual_seed(0)
    module = toy_module(num_k=3, trade_off=1.0, entropy_weight=0.1)
    data = DomainDataModule(dataset={"name": "moons", "angle": 35}, batch_size=16)
    trainer = pl.Trainer(
        max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        default_root_dir=tmp_path,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, data)

    names = {name for name, _ in module.named_parameters()}
    classifiers = {name for name in names if is_classifier(name)}
    features = {name for name in names if name.startswith("network.") and name not in classifiers}
    assert "scheme.head2.weight" in classifiers and "network.backbone.1.weight" in features
    G, C = mcd.FEATURES, mcd.CLASSIFIERS
    assert [(index, counted) for index, counted, _, _ in steps] == [
        (G, False), (C, False),  # A
        (C, False),  # B
        (G, False), (G, False), (G, True),  # C, num_k = 3
    ]  # fmt: skip
    (_, _, a_g, grads_a), (_, _, a_c, _), (_, _, b, grads_b), *c = steps
    assert a_g == features and a_c == classifiers and grads_a == features | classifiers
    assert b == classifiers and grads_b == classifiers  # the features fixed: no gradient
    for _, _, moved, grads in c:
        assert moved == features and grads == features  # the classifiers frozen
    assert trainer.global_step == 1
    assert all(p.requires_grad for p in module.parameters())  # untoggled after C


def test_step_b_raises_the_target_discrepancy_and_step_c_lowers_it(monkeypatch, tmp_path):
    """With a trade-off that makes d dominate the source cross-entropy, B is gradient ascent on
    d for the classifiers and C descent for the features: d on 256 target samples after each
    optimiser step."""
    values = []
    real_step = mcd.optimizer_step

    def measuring_step(module, index, *, counted):
        real_step(module, index, counted=counted)
        x_t = module.measure_batch
        with torch.no_grad():
            f = module.network.features(x_t)
            p1 = F.softmax(module.network.head(f), dim=1)
            p2 = F.softmax(module.scheme.head2(f), dim=1)
        values.append(mcd.classifier_discrepancy(p1, p2).item())

    monkeypatch.setattr(mcd, "optimizer_step", measuring_step)
    torch.manual_seed(1)
    # no momentum: each step is its own gradient; a small step (lr·trade_off 0.25) that does not
    # overshoot the L1 discrepancy's kinks
    module = toy_module(momentum=0.0, num_k=2, trade_off=5.0)
    data = DomainDataModule(dataset={"name": "moons", "angle": 35}, batch_size=64)
    data.setup("fit")
    module.measure_batch = torch.stack([x for x, _ in data.splits["target_train"]][:256])
    trainer = pl.Trainer(
        max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        default_root_dir=tmp_path,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, data)
    _, after_a, after_b, *after_c = values
    assert after_b > after_a  # B: the classifiers maximise d (trade_off 5 outweighs the CE)
    assert after_c[-1] < after_b  # C: the features minimise it


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scheme": {"name": "mcd", "num_k": 0}}, "num_k .step C repeats. must be an integer"),
        ({"scheme": {"name": "mcd", "trade_off": -1.0}}, "trade_off must be a finite number"),
        ({"scheme": "mcd", "discrepancy": "dann"}, "would ignore model.discrepancy"),
        ({"scheme": "mcd", "regularisers": ["bsp"]}, "would ignore model.regularisers"),
        ({"scheme": "mdc"}, "did you mean 'mcd'"),
    ],
)
def test_bad_mcd_settings_are_one_line_errors(options, message):
    with pytest.raises(DalibError, match=message):
        DomainAdaptationModule(num_classes=2, input_shape=(2,), **options)


def test_the_scheme_registry_lists_standard_and_mcd_and_the_method_is_named():
    assert {"standard", "mcd"} <= set(SCHEMES.names())
    assert toy_module().method == "mcd"
    assert DomainAdaptationModule(num_classes=2, input_shape=(2,)).method == "source_only"


@pytest.mark.slow
def test_mcd_killed_inside_an_epoch_resumes_to_the_uninterrupted_run(tmp_path):
    """Both optimisers' states, both LR schedules, the second classifier and the step count
    (one per batch) come back: the resumed run ends with the uninterrupted run's numbers."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    whole.mkdir(), cut.mkdir()
    every = "--model.checkpoint_every_n_steps=7"
    assert fit(whole, every, config="mcd").wait(timeout=300) == 0

    last = cut / "runs" / "toy" / "mcd" / "version_0" / "checkpoints" / "last.ckpt"
    killed = kill_when(fit(cut, every, config="mcd"), last, lambda c: c["global_step"] >= 70)
    assert killed["global_step"] % 30 != 0 and killed["global_step"] < 8 * 30
    assert len(killed["optimizer_states"]) == 2 and "scheme.head2.weight" in killed["state_dict"]

    resumed = fit(cut, every, "--ckpt_path=last", config="mcd")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert record(cut, "mcd") == record(whole, "mcd")
    assert record(whole, "mcd")["steps"] == 8 * 30


def parameters_of(module: pl.LightningModule) -> dict[str, torch.Tensor]:
    """The trained parameters (not BatchNorm's running statistics, which each DDP process
    keeps from its own batches, for every method, unless ``sync_batchnorm``)."""
    return {name: p.detach().clone() for name, p in module.named_parameters()}


class SaveWeights(pl.Callback):
    """Each process's parameters at the start and end of training, and its step count."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = parameters_of(pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        end = parameters_of(pl_module)
        state = {"steps": trainer.global_step, "start": self.start, "end": end}
        torch.save(state, os.path.join(self.out_dir, f"rank{trainer.global_rank}.pt"))


@pytest.mark.ddp
def test_mcd_on_two_cpu_processes_keeps_the_replicas_identical(tmp_path):
    """Seven backward passes per batch, some leaving parts unused: DDP (find_unused_parameters)
    all-reduces every one, so both processes end with the same weights, trained."""
    callback = {"class_path": f"{__name__}.SaveWeights", "init_args": {"out_dir": str(tmp_path)}}
    command = [
        sys.executable, "-m", "dalib.cli", "fit", "-c", str(TOY / "mcd.yaml"),
        "--trainer.accelerator=cpu", "--trainer.devices=2",
        "--trainer.strategy=ddp_find_unused_parameters_true", "--trainer.max_epochs=2",
        "--data.iterations_per_epoch=3", "--data.batch_size=16",
        f"--trainer.callbacks+={json.dumps(callback)}", "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["steps"] == ranks[1]["steps"] == 6
    assert "scheme.head2.weight" in ranks[0]["end"]
    for name, value in ranks[0]["end"].items():
        assert torch.equal(value, ranks[1]["end"][name]), name
    for name in ("network.backbone.1.weight", "network.head.weight", "scheme.head2.weight"):
        assert torch.equal(ranks[0]["start"][name], ranks[1]["start"][name]), name
        assert not torch.equal(ranks[0]["end"][name], ranks[0]["start"][name]), name
