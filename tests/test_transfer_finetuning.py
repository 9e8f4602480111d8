"""Fine-tuning: frozen parts stay put, unfreezing follows its schedule, per-layer learning rates."""

import math
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch

from dalib import DomainAdaptationModule, DomainDataModule
from dalib.errors import DalibError
from dalib.optim import trained_parameters
from dalib.transfer import Finetuning, backbone_layers
from tests.conftest import REPO, only_result, quiet_fit, run_dalib


def fit(module, callbacks, steps: int, iterations_per_epoch: int = 4) -> pl.Trainer:
    data = DomainDataModule(iterations_per_epoch=iterations_per_epoch)
    return quiet_fit(module, data, callbacks, max_steps=steps)


def toy_module(**options) -> DomainAdaptationModule:
    torch.manual_seed(0)
    return DomainAdaptationModule(
        num_classes=2,
        input_shape=(2,),
        backbone={"name": "mlp", "hidden_dims": [16, 16, 16]},
        bottleneck_dim=8,
        discrepancy="dann",
        **options,
    )


def snapshot(module) -> dict[str, torch.Tensor]:
    """The network's and the objective's weights, named relative to each (``backbone.0.weight``,
    ``discrepancy.…``)."""
    state = {**module.network.state_dict(), **module.objective.state_dict()}
    return {k: v.detach().clone() for k, v in state.items()}


class Recorder(pl.Callback):
    """The module's state after every optimiser step."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.states.append(snapshot(pl_module))


def changed(before: dict, after: dict, prefix: str) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))


def test_frozen_parameters_and_batchnorm_statistics_do_not_change():
    module = toy_module()
    start = snapshot(module)
    fit(module, [Finetuning(freeze=["backbone", "bottleneck"])], steps=8)
    end = snapshot(module)
    # bottleneck.1 is a BatchNorm1d: frozen, it stays in eval mode, so its running statistics
    # (and num_batches_tracked) are untouched, not only its affine parameters
    for key in start:
        if key.startswith(("backbone.", "bottleneck.")):
            assert torch.equal(start[key], end[key]), key
    assert changed(start, end, "head.") and changed(start, end, "discrepancy.")
    assert all(p.requires_grad is False for p in module.network.backbone.parameters())


def test_unfreezing_happens_at_the_scheduled_step():
    module = toy_module()
    recorder = Recorder()
    callback = Finetuning(freeze=["backbone"], unfreeze_at={3: ["backbone"]}, interval="step")
    start = snapshot(module)
    fit(module, [callback, recorder], steps=6)
    moved = [changed(start, state, "backbone.") for state in recorder.states]
    assert moved == [False, False, False, True, True, True]  # the update of step 3 is the first


def test_gradual_unfreezing_releases_the_top_layer_first():
    module = toy_module()
    names = [name for name, _ in backbone_layers(module.network.backbone)]
    assert names == ["1", "3", "5"]  # the MLP's three linear layers, input first
    recorder = Recorder()
    fit(module, [Finetuning(freeze_depth=-1, unfreeze_every=2, interval="step"), recorder], 7)
    start = snapshot(toy_module())
    first_move = {
        name: next(
            i for i, s in enumerate(recorder.states) if changed(start, s, f"backbone.{name}.")
        )
        for name in names
    }
    assert first_move == {"5": 2, "3": 4, "1": 6}


def test_unfreezing_by_epoch_and_a_frozen_batchnorm_back_in_train_mode():
    module = toy_module()
    trainer_epochs = []

    class Modes(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args) -> None:
            trainer_epochs.append((trainer.current_epoch, pl_module.network.bottleneck[1].training))

    fit(module, [Finetuning(freeze=["bottleneck"], unfreeze_at={1: ["bottleneck"]}), Modes()], 8)
    assert trainer_epochs == [(0, False)] * 4 + [(1, True)] * 4


def test_layer_learning_rate_multipliers_are_applied():
    module = toy_module(
        lr=0.1,
        momentum=0.0,
        weight_decay=0.0,
        lr_schedule="constant",
        backbone_lr_mult=0.5,
        layer_lr_decay=0.1,
        lr_mults={"backbone.3": 0.2, "discrepancy": 3.0},
    )
    expected = {"backbone.1.": 0.5 * 0.01, "backbone.3.": 0.2, "backbone.5.": 0.5, "head.": 1.0}
    expected |= {"bottleneck.": 1.0, "discrepancy.": 3.0}
    optimizer, _ = module.optimization.build(module.network, module.objective, math.inf)
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    params = dict(trained_parameters(module.network, module.objective))
    before = {name: p.detach().clone() for name, p in params.items()}
    x = torch.randn(16, 2)
    batch = {"source": (x, torch.randint(0, 2, (16,))), "target": (x + 1, torch.zeros(16).long())}
    module.compute_losses(batch, progress=0.5)["loss"].backward()
    optimizer.step()
    for name, p in params.items():
        mult = next(m for prefix, m in expected.items() if name.startswith(prefix))
        assert group_of[id(p)]["lr"] == pytest.approx(0.1 * mult), name
        torch.testing.assert_close(p.detach(), before[name] - 0.1 * mult * p.grad, msg=name)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: toy_module(lr_mults={"backbone.9": 0.1}), "names no parameter"),
        (lambda: toy_module(layer_lr_decay=0.0), "layer_lr_decay must be"),
        (lambda: Finetuning(), "needs something to freeze"),
    ],
)
def test_bad_fine_tuning_options_are_clear_errors(make, message):
    with pytest.raises(DalibError, match=message):
        make()


@pytest.mark.parametrize(
    ("callback", "message"),
    [
        (Finetuning(freeze=["backbone.bodyy"]), "no module is named 'backbone.bodyy'"),
        (Finetuning(freeze_depth=4), "freeze_depth 4 exceeds the backbone's 3 layers"),
    ],
)
def test_bad_freeze_targets_are_clear_errors(callback, message):
    with pytest.raises(DalibError, match=message):
        fit(toy_module(), [callback], steps=1)


@pytest.mark.slow
def test_fine_tuning_config_runs_from_the_command_line(tmp_path):
    run_dalib(
        [
            "fit",
            "-c",
            str(REPO / "experiments" / "transfer" / "toy_gradual_dann.yaml"),
            "--trainer.max_epochs=3",
            "--data.iterations_per_epoch=5",
        ],
        tmp_path,
    )
    assert 0.0 <= only_result(tmp_path)["target_acc"] <= 1.0


def test_backbone_layers_of_torchvision_networks():
    mobilenet = DomainAdaptationModule(
        num_classes=3, input_shape=(3, 32, 32), backbone="mobilenet_v2"
    ).network.backbone
    names = [name for name, _ in backbone_layers(mobilenet)]
    assert names == [f"body.features.{i}" for i in range(19)]
    resnet = DomainAdaptationModule(num_classes=3, input_shape=(3, 32, 32), backbone="resnet18")
    names = [name for name, _ in backbone_layers(resnet.network.backbone)]
    assert names == ["body.conv1", "body.bn1"] + [f"body.layer{i}" for i in range(1, 5)]


WEIGHTS = REPO.parent / "shared" / "weights" / "mobilenet_v2_imagenet_torchvision.pt"


@pytest.mark.skipif(not WEIGHTS.is_file(), reason="../shared/weights is not beside this checkout")
def test_frozen_pretrained_mobilenet_gives_its_eval_features_in_train_mode():
    torch.manual_seed(0)
    module = DomainAdaptationModule(
        num_classes=3,
        input_shape=(3, 64, 64),
        backbone={"name": "mobilenet_v2", "checkpoint": str(WEIGHTS)},
    )
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        reference = module.eval().network.backbone(x)
        module.train()
        batch_statistics = module.network.backbone(
            x
        )  # BatchNorm normalising with the batch's statistics
        Finetuning(freeze_depth=17).setup(SimpleNamespace(world_size=1), module, "fit")
        assert module.training
        frozen_part = module.network.backbone.body.features[:17](x)  # train mode, BN frozen in eval
        eval_part = module.eval().network.backbone.body.features[:17](x)
    assert not torch.allclose(batch_statistics, reference, atol=1e-3)
    torch.testing.assert_close(frozen_part, eval_part)
