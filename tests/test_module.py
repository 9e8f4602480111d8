import copy
import csv
import math

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import CSVLogger
from torch import nn

from dalib import DomainAdaptationModule, DomainDataModule
from dalib.errors import DalibError
from dalib.target_losses import UNLABELLED, EntropyMinimisation, LabelledCrossEntropy
from dalib.train_accuracy import TrainingAccuracy
from tests.conftest import quiet_fit


def paired_batch(n: int = 16, dim: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "source": (torch.randn(n, dim, generator=g), torch.randint(0, 2, (n,), generator=g)),
        "target": (torch.randn(n, dim, generator=g) + 1.0, torch.full((n,), UNLABELLED)),
    }


def grads_of(loss: torch.Tensor, params: list[nn.Parameter]) -> list[torch.Tensor]:
    return torch.autograd.grad(loss, params, allow_unused=True)


def test_source_only_is_plain_cross_entropy_even_with_batch_norm():
    torch.manual_seed(0)
    module = DomainAdaptationModule(num_classes=2, input_shape=(2,), bottleneck_dim=8)
    plain = nn.Sequential(
        copy.deepcopy(module.network.backbone),
        copy.deepcopy(module.network.bottleneck),
        copy.deepcopy(module.network.head),
    )
    batch = paired_batch()
    loss = module.compute_losses(batch, progress=0.5)["loss"]
    expected = F.cross_entropy(plain(batch["source"][0]), batch["source"][1])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    for got, want in zip(
        grads_of(loss, list(module.parameters())),
        grads_of(expected, list(plain.parameters())),
        strict=True,
    ):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("discrepancy", ["mmd", "dann"])
def test_gamma_zero_gives_the_loss_and_gradients_of_plain_cross_entropy(discrepancy):
    torch.manual_seed(0)
    module = DomainAdaptationModule(
        num_classes=2, input_shape=(2,), discrepancy=discrepancy, gamma=0.0
    )
    plain = nn.Sequential(
        copy.deepcopy(module.network.backbone), copy.deepcopy(module.network.head)
    )
    batch = paired_batch()
    terms = module.compute_losses(batch, progress=0.5)
    expected = F.cross_entropy(plain(batch["source"][0]), batch["source"][1])
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert terms["discrepancy"].item() > 0, "D is still computed and logged at γ = 0"
    network = [*module.network.backbone.parameters(), *module.network.head.parameters()]
    for got, want in zip(
        grads_of(terms["loss"], network), grads_of(expected, list(plain.parameters())), strict=True
    ):
        torch.testing.assert_close(got, want)


def test_the_feature_extractor_gets_a_nonzero_reversed_gradient_from_the_domain_loss():
    torch.manual_seed(0)
    module = DomainAdaptationModule(
        num_classes=2,
        input_shape=(2,),
        bottleneck_dim=8,
        discrepancy={"name": "dann", "hidden_dim": 16},
        gamma=1.0,
    )
    batch = paired_batch()
    extractor = [*module.network.backbone.parameters(), *module.network.bottleneck.parameters()]
    reversed_grads = grads_of(module.compute_losses(batch, 0.5)["discrepancy"], extractor)
    module.objective.discrepancy.grl.coeff = (
        -1.0
    )  # identity: the discriminator's own gradient direction
    plain_grads = grads_of(module.compute_losses(batch, 0.5)["discrepancy"], extractor)
    assert sum(g.abs().sum() for g in reversed_grads) > 0
    for got, plain in zip(reversed_grads, plain_grads, strict=True):
        torch.testing.assert_close(got, -plain)


def test_total_loss_weights_each_term_by_its_schedule():
    torch.manual_seed(0)
    module = DomainAdaptationModule(
        num_classes=2,
        input_shape=(2,),
        discrepancy="mmd",
        gamma={"name": "dann_ramp"},
        target_loss="entropy",
        lambda_t=0.3,
    )
    terms = module.compute_losses(paired_batch(), progress=0.2)
    gamma = 2 / (1 + math.exp(-2.0)) - 1
    expected = terms["source_ce"] + 0.3 * terms["target_loss"] + gamma * terms["discrepancy"]
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert terms["gamma"].item() == pytest.approx(gamma)


def test_entropy_and_labelled_cross_entropy():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0], [1.0, 3.0]])
    p = logits.softmax(1)
    expected = -(p * p.log()).sum(1).mean()
    assert EntropyMinimisation()(logits, torch.zeros(3)).item() == pytest.approx(expected.item())
    y = torch.tensor([UNLABELLED, 1, UNLABELLED])
    ce = LabelledCrossEntropy()(logits, y)
    assert ce.item() == pytest.approx(F.cross_entropy(logits[1:2], y[1:2]).item())
    assert LabelledCrossEntropy()(logits, torch.full((3,), UNLABELLED)).item() == 0.0


@pytest.mark.parametrize("alpha", [10.0, 50.0])
def test_learning_rates_follow_group_multipliers_and_the_inverse_decay(tmp_path, alpha):
    torch.manual_seed(0)
    module = DomainAdaptationModule(
        num_classes=2, input_shape=(2,), lr=0.02, backbone_lr_mult=0.1, discrepancy="dann",
        lr_decay_alpha=alpha,
    )  # fmt: skip
    trainer = quiet_fit(module, DomainDataModule(iterations_per_epoch=10), max_steps=20,
                        default_root_dir=tmp_path)  # fmt: skip
    backbone_group, rest_group = trainer.optimizers[0].param_groups
    decay = (1 + alpha) ** -0.75  # tllib's (1 + 0.001·step)^-0.75 after 1000·alpha steps
    assert backbone_group["lr"] == pytest.approx(0.002 * decay)
    assert rest_group["lr"] == pytest.approx(0.02 * decay)
    assert {id(p) for p in module.objective.discrepancy.parameters()} <= {
        id(p) for p in rest_group["params"]
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"discrepancy": "mdd2"}, "unknown discrepancy 'mdd2'"),
        ({"discrepancy": {"name": "mmd", "kernal": "x"}}, "unknown option 'kernal'"),
        ({"target_loss": "entropi"}, "did you mean 'entropy'"),
        ({"gamma": -0.5}, "gamma must be a finite number >= 0"),
        ({"lambda_t": float("nan")}, "lambda_t must be a finite number >= 0"),
        ({"backbone": "resnet9000"}, "unknown backbone"),
        ({"lr": 0.0}, "lr must be a finite number > 0"),
    ],
)
def test_bad_configuration_names_what_to_fix(kwargs, message):
    with pytest.raises(DalibError, match=message):
        DomainAdaptationModule(num_classes=2, input_shape=(2,), **kwargs)


def test_lenet_backbone_gives_800_features_for_28x28_digits():
    module = DomainAdaptationModule(
        num_classes=10, input_shape=(1, 28, 28), backbone="lenet", bottleneck_dim=500
    )
    assert module.network.backbone.out_features == 800
    assert module(torch.randn(4, 1, 28, 28)).shape == (4, 10)
    with pytest.raises(DalibError, match="lenet takes"):
        DomainAdaptationModule(num_classes=10, input_shape=(3, 32, 32), backbone="lenet")


def fit_steps(tmp_path, max_steps: int, ckpt_path=None, **trainer_options) -> pl.Trainer:
    """Train a toy DANN for ``max_steps`` steps from seed 0 (resuming from ``ckpt_path``)."""
    pl.seed_everything(0)
    module = DomainAdaptationModule(num_classes=2, input_shape=(2,), discrepancy="dann")
    data = DomainDataModule(iterations_per_epoch=10)
    return quiet_fit(
        module, data, ckpt_path=ckpt_path, max_steps=max_steps, enable_checkpointing=True,
        default_root_dir=tmp_path, **trainer_options,
    )  # fmt: skip


class GradientNorms(pl.Callback):
    """Listens to the hooks around backward and the optimiser step."""

    def __init__(self) -> None:
        self.norms: list[float] = []
        self.before_step = 0

    def on_after_backward(self, trainer, pl_module) -> None:
        self.norms.append(float(pl_module.network.head.weight.grad.norm()))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.before_step += 1


def test_lightnings_automatic_loop_steps_with_its_hooks_clipping_and_accumulation(tmp_path):
    listener = GradientNorms()
    plain = fit_steps(tmp_path / "plain", 15, callbacks=[listener])
    assert len(listener.norms) == listener.before_step == 15 and min(listener.norms) > 0
    # clipping at a threshold no gradient reaches changes nothing; accumulation over 2 batches
    # takes half as many optimiser steps per batch, each on the mean of two batches' gradients
    clipped = fit_steps(tmp_path / "clipped", 15, gradient_clip_val=1e9)
    for mine, theirs in zip(
        plain.lightning_module.parameters(), clipped.lightning_module.parameters(), strict=True
    ):
        assert torch.equal(mine, theirs)
    counter = GradientNorms()
    accumulated = fit_steps(
        tmp_path / "accumulated", 5, accumulate_grad_batches=2, callbacks=[counter]
    )
    assert accumulated.global_step == counter.before_step == 5 and len(counter.norms) == 10
    moved = [
        not torch.equal(a, b)
        for a, b in zip(
            plain.lightning_module.parameters(),
            accumulated.lightning_module.parameters(),
            strict=True,
        )
    ]
    assert any(moved)


def test_a_checkpoint_resumes_at_its_global_step(tmp_path):
    fit_steps(tmp_path, 10)
    (checkpoint,) = tmp_path.rglob("*.ckpt")

    class StartStep(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            self.step = trainer.global_step

    start = StartStep()
    resumed = fit_steps(tmp_path / "resumed", 20, ckpt_path=checkpoint, callbacks=[start])
    assert start.step == 10
    assert resumed.global_step == 20


def test_training_accuracy_is_over_the_steps_since_the_last_log(tmp_path):
    pl.seed_everything(0)
    module = DomainAdaptationModule(num_classes=2, input_shape=(2,), discrepancy="dann")
    module.train_source_acc.pending_limit = 2  # the metric also updates between logs
    hits = []
    compute_losses = module.compute_losses

    def recording(batch, progress):
        terms = compute_losses(batch, progress)
        hits.append((terms["logits_s"].argmax(1) == batch["source"][1]).float())
        return terms

    module.compute_losses = recording
    trainer = pl.Trainer(
        max_steps=20,
        log_every_n_steps=5,
        logger=CSVLogger(tmp_path),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, DomainDataModule(iterations_per_epoch=20))
    (metrics,) = tmp_path.rglob("metrics.csv")
    with metrics.open() as rows:
        logged = [float(row["train/source_acc"]) for row in csv.DictReader(rows)]
    expected = [torch.cat(hits[k : k + 5]).mean().item() for k in range(0, 20, 5)]
    assert logged == pytest.approx(expected)


def test_training_accuracy_between_two_logs_survives_a_checkpoint():
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 3, generator=g), torch.randint(0, 3, (8,), generator=g))
               for _ in range(5)]  # fmt: skip
    whole = TrainingAccuracy(3)
    for logits, labels in batches:
        whole.add(logits, labels)
    before = TrainingAccuracy(3)
    for logits, labels in batches[:3]:
        before.add(logits, labels)
    resumed = TrainingAccuracy(3)
    resumed.restore(before.state())  # what a checkpoint between two logs holds
    for logits, labels in batches[3:]:
        resumed.add(logits, labels)
    hits = sum(int((logits.argmax(1) == labels).sum()) for logits, labels in batches)
    assert resumed.compute_and_reset() == pytest.approx(hits / 40)
    assert whole.compute_and_reset() == pytest.approx(hits / 40)


def test_a_checkpoint_carries_the_training_accuracy_since_the_last_log():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(8, 2, generator=g), torch.randint(0, 2, (8,), generator=g)
    saved, loaded = (DomainAdaptationModule(num_classes=2, input_shape=(2,)) for _ in range(2))
    saved.train_source_acc.add(logits, labels)
    checkpoint: dict = {}
    saved.on_save_checkpoint(checkpoint)
    loaded.on_load_checkpoint(checkpoint)
    hits = int((logits.argmax(1) == labels).sum())
    assert loaded.train_source_acc.compute_and_reset() == pytest.approx(hits / 8)
