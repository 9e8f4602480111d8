"""ADDA's two phases: which parameters each trains, the target encoder's start, its losses."""

import copy
import warnings

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from dalib.data import DomainDataModule
from dalib.errors import DalibError
from dalib.module import DomainAdaptationModule
from dalib.schemes.adda import AdversarialDiscriminativeAdaptation
from tests.test_resume import fit, kill_when, record


def adda_module(**options) -> DomainAdaptationModule:
    return DomainAdaptationModule(
        num_classes=2, input_shape=(2,), backbone={"name": "mlp", "hidden_dims": [16]},
        bottleneck_dim=8, unshared=0.0, discrepancy={"name": "dann", "hidden_dim": 16},
        scheme={"name": "adda", **options}, lr=0.05,
    )  # fmt: skip


class Snapshots(pl.Callback):
    def __init__(self) -> None:
        self.before, self.moved, self.target_equals_source = None, [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.before = {n: p.detach().clone() for n, p in pl_module.named_parameters()}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        """Before each step: whether the target encoder equals the source backbone."""
        network = pl_module.network
        pairs = zip(
            network.backbone.parameters(), network.target_backbone.parameters(), strict=True
        )
        self.target_equals_source.append(all(torch.equal(a, b) for a, b in pairs))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = dict(pl_module.named_parameters())
        self.moved.append({n for n, p in now.items() if not torch.equal(p, self.before[n])})


@pytest.mark.parametrize("adversary", ["inverted_labels", "reversal"])
def test_adda_trains_the_source_model_then_only_the_target_encoder_and_discriminator(
    tmp_path, adversary
):
    torch.manual_seed(0)
    module = adda_module(source_fraction=0.5, adversary=adversary, warm_up_steps=1)
    snapshots = Snapshots()
    trainer = pl.Trainer(
        max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        callbacks=[snapshots], default_root_dir=tmp_path,
    )  # fmt: skip
    data = DomainDataModule(dataset={"name": "moons", "angle": 35}, batch_size=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, data)
    names = {n for n, _ in module.named_parameters()}
    source = {n for n in names if n.split(".")[1] in ("backbone", "bottleneck", "head")}
    target = {n for n in names if n.startswith("network.target_backbone.")}
    critic = {n for n in names if n.startswith("objective.discrepancy.")}
    assert source | target | critic == names and target and critic
    # phase 1: the source model trains, the discriminator not; from the second step the target
    # encoder moves too, as it is set to the source backbone the previous step left
    assert snapshots.moved[:2] == [source, source | target]
    assert snapshots.moved[2:] == [target | critic, target | critic]  # phase 2: ADDA
    # the target encoder follows the source backbone up to the switch, then trains on its own
    assert snapshots.target_equals_source == [True, True, True, False]
    assert module.method == "adda+dann"
    if adversary == "reversal":  # steps 2 and 3 are adaptation steps 0 and 1 of the warm start
        expected = AdversarialDiscriminativeAdaptation.warm_start(1, 1, 2.0)
        assert module.objective.discrepancy.grl.scale == pytest.approx(expected)


def test_adda_losses_train_the_critic_and_the_encoder_each_on_its_own_loss():
    torch.manual_seed(0)
    module = adda_module()
    adversarial = module.objective.discrepancy
    f_s = torch.randn(8, 8) + 3.0  # the domains apart, so that batch statistics matter
    f_t = torch.randn(8, 8, requires_grad=True)
    d = adversarial.discriminator
    optimiser = torch.optim.SGD(d.parameters(), lr=0.1)
    for _ in range(50):  # a critic that tells the domains apart
        optimiser.zero_grad()
        adversarial(f_s, f_t.detach()).backward()
        optimiser.step()
    d.zero_grad(set_to_none=True)
    untouched = copy.deepcopy(d)  # training mode: BatchNorm uses the batch's statistics
    critic, encoder = AdversarialDiscriminativeAdaptation.adversarial_losses(adversarial, f_s, f_t)
    both = untouched(torch.cat([f_s, f_t])).squeeze(1)
    d_s, d_t = both[:8], both[8:]
    expected_critic = 0.5 * (
        F.binary_cross_entropy_with_logits(d_s, torch.ones(8))
        + F.binary_cross_entropy_with_logits(d_t, torch.zeros(8))
    )
    assert critic.item() == pytest.approx(expected_critic.item(), rel=1e-6)
    # inverted labels, -log d(f_t), with d normalising the batch of both domains as the critic
    # does; on the target features alone (their own statistics) it would be another number
    expected_encoder = -F.logsigmoid(d_t).mean()
    assert encoder.item() == pytest.approx(expected_encoder.item(), rel=1e-6)
    alone = copy.deepcopy(d)(f_t.detach()).squeeze(1)
    assert abs(-F.logsigmoid(alone).mean().item() - encoder.item()) > 0.1
    # the running statistics moved once, by the critic's pass only
    for ours, once in zip(d.buffers(), untouched.buffers(), strict=True):
        assert torch.equal(ours, once)
    critic.backward(retain_graph=True)
    assert f_t.grad is None  # the critic's loss reaches no feature, only the discriminator
    assert all(p.grad is not None for p in d.parameters())
    d.zero_grad(set_to_none=True)
    encoder.backward()
    assert f_t.grad.abs().sum() > 0  # the encoder's loss reaches the features only
    assert all(p.grad is None for p in d.parameters())


def test_the_reversal_adversary_is_dann_s_loss_with_the_warmed_up_reversal():
    """The Transfer-Learning-Library's form: one loss, DANN's, through the reversal layer whose
    coefficient follows its warm start; the encoder gets minus that coefficient times the
    gradient of the loss at the target features, the discriminator the loss's own gradient."""
    scheme_of = AdversarialDiscriminativeAdaptation
    # tllib/modules/grl.py:71-74 with lo=0, hi=2, alpha=1, max_iters=1000
    expected = [2 * 2 / (1 + np.exp(-i / 1000)) - 2 for i in (0, 500, 1000, 5000)]
    got = [scheme_of.warm_start(i, 1000, 2.0) for i in (0, 500, 1000, 5000)]
    assert got == pytest.approx(expected, rel=1e-12) and got[0] == 0 and got[-1] < 2
    torch.manual_seed(0)
    module = adda_module(adversary="reversal")
    adversarial = module.objective.discrepancy
    f_s, f_t = torch.randn(8, 8) + 3.0, torch.randn(8, 8, requires_grad=True)
    d = adversarial.discriminator
    plain = copy.deepcopy(d)
    adversarial.grl.scale = scheme_of.warm_start(300, 1000, 2.0)
    loss = adversarial(f_s, f_t)
    loss.backward()
    f_t_plain = f_t.detach().clone().requires_grad_(True)
    logits = plain(torch.cat([f_s, f_t_plain])).squeeze(1)
    expected_loss = 0.5 * (
        F.binary_cross_entropy_with_logits(logits[:8], torch.ones(8))
        + F.binary_cross_entropy_with_logits(logits[8:], torch.zeros(8))
    )
    expected_loss.backward()
    assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-6)
    coefficient = scheme_of.warm_start(300, 1000, 2.0)
    assert torch.allclose(f_t.grad, -coefficient * f_t_plain.grad, atol=1e-7)
    for ours, reference in zip(d.parameters(), plain.parameters(), strict=True):
        assert torch.allclose(ours.grad, reference.grad, atol=1e-7)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"unshared": None}, "set model.unshared: 0.0"),
        ({"discrepancy": "mmd"}, "needs a domain discriminator"),
        ({"target_loss": "entropy"}, "would ignore model.target_loss"),
        ({"scheme": {"name": "adda", "adversary": "gan"}}, "adversary must be one of"),
        ({"scheme": {"name": "adda", "warm_up_steps": 0}}, "must be > 0"),
    ],
)
def test_bad_adda_settings_are_one_line_errors(options, message):
    settings = {
        "num_classes": 2, "input_shape": (2,), "unshared": 0.0, "discrepancy": "dann",
        "scheme": "adda",
    }  # fmt: skip
    with pytest.raises(DalibError, match=message):
        DomainAdaptationModule(**{**settings, **options})


@pytest.mark.slow
def test_adda_killed_after_the_switch_resumes_to_the_uninterrupted_run(tmp_path):
    """Killed in phase 2 (the switch at step 120 of 240), resumed: the same phase, the same
    target encoder and discriminator, the uninterrupted run's numbers."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    whole.mkdir(), cut.mkdir()
    every = "--model.checkpoint_every_n_steps=7"
    assert fit(whole, every, config="adda").wait(timeout=300) == 0

    last = cut / "runs" / "toy" / "adda" / "version_0" / "checkpoints" / "last.ckpt"
    killed = kill_when(fit(cut, every, config="adda"), last, lambda c: c["global_step"] >= 130)
    assert 120 < killed["global_step"] < 240 and killed["global_step"] % 30 != 0

    resumed = fit(cut, every, "--ckpt_path=last", config="adda")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert record(cut, "adda") == record(whole, "adda")
