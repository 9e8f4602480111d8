"""Every shipped discrepancy trains inside the module and survives a checkpoint round trip."""

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning import Callback

from dalib import DomainAdaptationModule, DomainDataModule
from dalib.discrepancy import builtin_discrepancies
from tests.conftest import quiet_fit


@pytest.mark.parametrize("name", builtin_discrepancies())
@pytest.mark.slow
def test_measure_trains_and_reloads_from_a_checkpoint(name, tmp_path):
    pl.seed_everything(0, verbose=False)
    data = DomainDataModule(batch_size=16, iterations_per_epoch=4)
    model = DomainAdaptationModule(
        num_classes=data.num_classes, input_shape=data.input_shape, bottleneck_dim=16,
        discrepancy={"name": name}, gamma=1.0,
    )  # fmt: skip
    before = [p.detach().clone() for p in model.network.backbone.parameters()]
    trainer = pl.Trainer(max_epochs=2, default_root_dir=tmp_path, logger=False,
                         enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, data)
    assert torch.isfinite(trainer.callback_metrics["train/discrepancy"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.network.backbone.parameters(),
                                                     strict=True))  # fmt: skip
    (ckpt,) = tmp_path.rglob("*.ckpt")
    reloaded = DomainAdaptationModule.load_from_checkpoint(ckpt)
    x = torch.randn(5, 2)
    model.eval(), reloaded.eval()
    torch.testing.assert_close(reloaded(x), model(x))


class FirstGradients(Callback):
    """The gradients of the given parameters at the first optimiser step, before it steps."""

    def __init__(self, names: set[str]) -> None:
        self.names = names
        self.grads: torch.Tensor | None = None

    def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
        if self.grads is None:
            grads = [p.grad for n, p in module.named_parameters() if n in self.names]
            self.grads = torch.cat([g.detach().flatten() for g in grads])


def network_gradient(name: str, gamma: float) -> torch.Tensor:
    """The first step's gradient on the parameters that the prediction ``model(x)`` uses."""
    pl.seed_everything(0, verbose=False)
    data = DomainDataModule(batch_size=16, iterations_per_epoch=4)
    model = DomainAdaptationModule(
        num_classes=data.num_classes, input_shape=data.input_shape, bottleneck_dim=16,
        discrepancy={"name": name}, gamma=gamma,
    )  # fmt: skip
    named = list(model.named_parameters())
    used = torch.autograd.grad(
        model(torch.randn(4, *data.input_shape)).sum(), [p for _, p in named], allow_unused=True
    )
    recorder = FirstGradients({n for (n, _), g in zip(named, used, strict=True) if g is not None})
    quiet_fit(model, data, [recorder], max_steps=1)
    return recorder.grads


@pytest.mark.parametrize("name", builtin_discrepancies())
def test_gamma_times_d_sends_its_gradient_to_the_network(name):
    """Same seed, same first batch: the network's gradient at γ minus that at γ = 0 is
    γ·∂D/∂θ, non-zero and proportional to γ. A D computed on detached features gives zero."""
    at_0, at_1, at_2 = (network_gradient(name, gamma) for gamma in (0.0, 1.0, 2.0))
    from_d = at_1 - at_0
    assert from_d.norm() > 1e-4 * at_0.norm(), f"{name} sends no gradient to the network"
    torch.testing.assert_close(at_2 - at_0, 2 * from_d, rtol=0, atol=1e-3 * from_d.norm().item())
