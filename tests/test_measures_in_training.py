"""Every shipped discrepancy trains inside the module and survives a checkpoint round trip."""

import pytest
import pytorch_lightning as pl
import torch

from dalib import DomainAdaptationModule, DomainDataModule
from dalib.discrepancy import builtin_discrepancies


@pytest.mark.parametrize("name", builtin_discrepancies())
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
