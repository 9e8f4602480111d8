"""The options reference protocols need: the reversal schedule, bottleneck and head options."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dalib.errors import DalibError
from dalib.module import DomainAdaptationModule
from dalib.network import Network
from dalib.objective import Objective
from dalib.schedules import DannRamp

RAMP = {"name": "dann_ramp", "alpha": 50.0}


def setup(discrepancy: dict, reversal, gamma=1.0) -> tuple[Network, Objective, dict]:
    torch.manual_seed(0)
    network = Network(3, (5,), backbone="identity", bottleneck_dim=8)
    objective = Objective(network, discrepancy, gamma=gamma, reversal=reversal)
    g = torch.Generator().manual_seed(1)
    batch = {
        "source": (torch.randn(16, 5, generator=g), torch.randint(0, 3, (16,), generator=g)),
        "target": (torch.randn(16, 5, generator=g) + 1.0, torch.zeros(16, dtype=torch.long)),
    }
    return network, objective, batch


def discrepancy_gradients(network, objective, batch, progress):
    """The gradients of the discrepancy term: into the network (through the reversal) and into
    the measure's own parameters (discriminator, adversarial head)."""
    terms = objective(network, batch, progress)
    own = [p for _, p in objective.named_trainable_parameters()]
    grads = torch.autograd.grad(terms["discrepancy"], [*network.bottleneck.parameters(), *own])
    n = len(list(network.bottleneck.parameters()))
    return torch.cat([g.flatten() for g in grads[:n]]), torch.cat([g.flatten() for g in grads[n:]])


@pytest.mark.parametrize(
    "discrepancy",
    [
        {"name": "dann", "hidden_dim": 16},
        {"name": "cdan", "hidden_dim": 16, "randomized": False},
        {"name": "mdd", "hidden_dim": 16, "dropout": 0.0, "grl_coeff": 0.1},
    ],
    ids=lambda d: d["name"],
)
def test_reversal_scales_the_features_gradient_and_leaves_the_discriminators_alone(discrepancy):
    constant = setup(discrepancy, reversal=1.0)
    ramped = setup(discrepancy, reversal=RAMP)
    ramped[1].load_state_dict(constant[1].state_dict())
    ramped[0].load_state_dict(constant[0].state_dict())
    for progress in (0.0, 0.004, 0.03):
        to_features, to_own = discrepancy_gradients(*constant, progress)
        ramped_features, ramped_own = discrepancy_gradients(*ramped, progress)
        rho = DannRamp(alpha=50.0)(progress)
        torch.testing.assert_close(ramped_own, to_own, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ramped_features, rho * to_features, rtol=1e-5, atol=1e-6)
        assert to_features.abs().sum() > 0 and to_own.abs().sum() > 0
    assert objective_reversal(ramped[1], ramped[0], ramped[2], 0.0) == 0.0


def objective_reversal(objective, network, batch, progress) -> float:
    return float(objective(network, batch, progress)["reversal"])


def test_gamma_scales_the_discriminator_too_and_reversal_follows_progress_not_calls():
    network, objective, batch = setup({"name": "dann", "hidden_dim": 16}, reversal=RAMP)
    _, own = discrepancy_gradients(network, objective, batch, 0.01)
    halved = setup({"name": "dann", "hidden_dim": 16}, reversal=RAMP, gamma=0.5)
    halved[1].load_state_dict(objective.state_dict())
    terms = halved[1](halved[0], batch, 0.01)
    loss_own = torch.autograd.grad(
        terms["loss"] - terms["source_ce"], [p for _, p in halved[1].named_trainable_parameters()]
    )
    torch.testing.assert_close(torch.cat([g.flatten() for g in loss_own]), 0.5 * own)
    # the schedule is evaluated at the progress given (a resumed run's), however often it ran
    for _ in range(3):
        objective(network, batch, 0.01)
    assert objective_reversal(objective, network, batch, 0.02) == pytest.approx(
        2 / (1 + torch.exp(torch.tensor(-1.0)).item()) - 1
    )


def test_reversal_on_a_measure_without_gradient_reversal_is_refused():
    network = Network(3, (5,), backbone="identity", bottleneck_dim=8)
    with pytest.raises(DalibError, match="reversal schedules the gradient reversal"):
        Objective(network, {"name": "mmd"}, reversal=RAMP)
    Objective(network, {"name": "mmd"}, reversal=1.0)  # the default is no schedule


def test_bottleneck_and_head_options_build_the_tll_mdd_layers_with_their_init():
    torch.manual_seed(0)
    network = Network(
        10, (1, 28, 28), backbone="lenet_fc", bottleneck_dim=1024,
        bottleneck_options={"dropout": 0.5, "init_std": 0.005, "init_bias": 0.1},
        head_options={"hidden_dim": 1024, "dropout": 0.5, "init_std": 0.01},
    )  # fmt: skip
    kinds = [type(m) for m in network.bottleneck]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout]
    assert network.bottleneck[3].p == 0.5
    weight = network.bottleneck[0].weight
    assert weight.shape == (1024, 500)
    assert abs(weight.std().item() - 0.005) < 0.0001 and abs(weight.mean().item()) < 0.0001
    assert torch.all(network.bottleneck[0].bias == 0.1)
    assert [type(m) for m in network.head] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert network.head[2].p == 0.5
    for layer in (network.head[0], network.head[3]):
        assert abs(layer.weight.std().item() - 0.01) < 0.0005
        assert torch.all(layer.bias == 0)
    assert network.head[3].out_features == 10
    network.eval()
    assert network(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_default_bottleneck_and_head_are_unchanged_and_no_bottleneck_is_a_linear_head():
    torch.manual_seed(0)
    plain = Network(10, (1, 28, 28), backbone="lenet_fc", bottleneck_dim=256)
    assert [type(m) for m in plain.bottleneck] == [nn.Linear, nn.BatchNorm1d, nn.ReLU]
    bound = 1 / 500**0.5  # PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert plain.bottleneck[0].weight.abs().max() <= bound
    assert plain.bottleneck[0].weight.std() > 0.5 * bound
    none = Network(10, (1, 28, 28), backbone="lenet_fc", bottleneck_dim=None)
    assert isinstance(none.bottleneck, nn.Identity)
    assert isinstance(none.head, nn.Linear) and none.head.in_features == 500
    assert none.config["bottleneck_options"] is None and none.config["head_options"] is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bottleneck_dim": 0}, "bottleneck_dim must be >= 1"),
        ({"bottleneck_options": {"dropout": 0.5}}, "bottleneck_options need a bottleneck"),
        ({"bottleneck_dim": 8, "bottleneck_options": {"drop": 0.5}}, "unknown bottleneck_options"),
        ({"bottleneck_dim": 8, "bottleneck_options": {"dropout": 1.0}}, r"dropout must be in"),
        ({"head_options": {"init_std": 0.0}}, "init_std must be a finite number > 0"),
        ({"head_options": {"dropout": 0.5}}, "dropout needs head_options.hidden_dim"),
        ({"head_options": {"hidden_dim": 0}}, "hidden_dim must be >= 1"),
    ],
)
def test_bad_bottleneck_and_head_options_are_refused_with_one_line(kwargs, message):
    with pytest.raises(DalibError, match=message):
        Network(3, (5,), backbone="identity", **kwargs)


def test_a_scratch_backbone_at_a_tenth_of_the_rate_and_the_logged_base_rate_of_a_deep_head():
    module = DomainAdaptationModule(
        10, (1, 28, 28), "lenet_fc", 1024, {"name": "mdd", "hidden_dim": 32},
        lr=0.01, backbone_lr_mult=0.1, head_options={"hidden_dim": 64, "dropout": 0.5},
    )  # fmt: skip
    optimizer, _ = module.optimization.build(module.network, module.objective, 100)
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert [rate[id(p)] for p in module.network.backbone.parameters()] == [pytest.approx(0.001)] * 6
    others = [*module.network.bottleneck.parameters(), *module.network.head.parameters()]
    others += [p for _, p in module.objective.named_trainable_parameters()]
    assert {rate[id(p)] for p in others} == {0.01}
    last = optimizer.param_groups[-1]  # the group training logs the base rate of
    assert any(p is module.network.head[3].weight for p in last["params"]) and last["lr_mult"] == 1


def test_a_network_with_head_options_is_rebuilt_from_its_checkpoint(tmp_path):
    module = DomainAdaptationModule(
        3, (5,), "identity", 8, bottleneck_options={"dropout": 0.5, "init_std": 0.1},
        head_options={"hidden_dim": 6, "dropout": 0.5, "init_std": 0.1},
    )  # fmt: skip
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    rebuilt = Network.from_checkpoint(path, "teacher")
    x = torch.randn(4, 5)
    module.network.eval(), rebuilt.eval()
    torch.testing.assert_close(rebuilt(x), module.network(x))
    for key in ("bottleneck_options", "head_options"):
        assert rebuilt.config[key] == module.network.config[key] is not None
