"""γ calibrated without labels (``gamma: {name: balanced}``): the gradient ratio it promises."""

import copy

import numpy as np
import pytest
import torch

from dalib.calibration import BalancedGamma
from dalib.errors import DalibError
from dalib.network import Network
from dalib.objective import Objective
from tests.conftest import TOY, only_result, quiet_fit, run_dalib

K, D_IN = 3, 5


def network() -> Network:
    torch.manual_seed(0)
    return Network(K, (D_IN,), {"name": "mlp", "hidden_dims": [16, 8]})


def batch(n_s: int = 12, n_t: int = 10) -> dict:
    generator = torch.Generator().manual_seed(1)
    x_s, x_t = (
        torch.randn(n_s, D_IN, generator=generator),
        torch.randn(n_t, D_IN, generator=generator),
    )
    y_s = torch.randint(K, (n_s,), generator=generator)
    return {"source": [x_s, y_s], "target": [2.0 * x_t + 1.0, torch.zeros(n_t, dtype=torch.long)]}


def coral_norms(net: Network, data: dict) -> tuple[float, float]:
    """``(‖∂L_s/∂f‖, ‖∂D/∂f‖)`` for cross-entropy and CORAL, in closed form with NumPy.

    ``∂CE/∂f_s = (softmax(z) − onehot(y)) W / n_s``; with ``X̃`` the centred features and
    ``Δ = C_s − C_t`` (unbiased covariances), ``∂D/∂f_s = X̃_s Δ / (d² (n_s − 1))`` and
    ``∂D/∂f_t = −X̃_t Δ / (d² (n_t − 1))`` for ``D = ‖Δ‖²_F / (4d²)``.
    """
    with torch.no_grad():
        f_s = net.features(data["source"][0]).double().numpy()
        f_t = net.features(data["target"][0]).double().numpy()
    w = net.head.weight.detach().double().numpy()
    z = f_s @ w.T + net.head.bias.detach().double().numpy()
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(z)), data["source"][1].numpy()] -= 1.0
    source = np.linalg.norm(p @ w / len(z))
    d = f_s.shape[1]
    c_s, c_t = np.cov(f_s, rowvar=False), np.cov(f_t, rowvar=False)
    g_s = (f_s - f_s.mean(0)) @ (c_s - c_t) / (d * d * (len(f_s) - 1))
    g_t = -(f_t - f_t.mean(0)) @ (c_s - c_t) / (d * d * (len(f_t) - 1))
    return float(source), float(np.sqrt((g_s**2).sum() + (g_t**2).sum()))


def calibrated(net: Network, data: dict, ratio: float = 1.0, discrepancy="coral") -> Objective:
    objective = Objective(net, discrepancy, {"name": "balanced", "ratio": ratio, "batches": 1})
    objective.gamma.calibrate(objective, net, iter([data]))
    return objective


def test_the_calibrated_gamma_gives_the_stated_gradient_ratio_in_the_objective():
    net, data = network(), batch()
    objective = calibrated(net, data, ratio=0.25)
    source, discrepancy = coral_norms(net, data)
    record = objective.gamma.record()
    assert record["source_grad_norm"] == pytest.approx(source, rel=1e-5)
    assert record["discrepancy_grad_norm"] == pytest.approx(discrepancy, rel=1e-5)
    assert record["gamma"] == pytest.approx(0.25 * source / discrepancy, rel=1e-5)

    # the training objective itself: its γ·D pushes the features a quarter as hard as L_s
    features = []
    net.bottleneck.register_forward_hook(lambda module, inputs, out: features.append(out))
    terms = objective(net, data, progress=0.3)
    (f,) = features
    (grad_d,) = torch.autograd.grad(terms["gamma"] * terms["discrepancy"], f, retain_graph=True)
    (grad_s,) = torch.autograd.grad(terms["source_ce"], f)
    assert float(grad_d.norm() / grad_s.norm()) == pytest.approx(0.25, rel=1e-5)


def test_rescaling_the_features_moves_corals_gamma_by_the_fourth_power():
    """Features ``a`` times larger (the backbone's last layer scaled by ``a``, the head's weights
    by ``1/a``: the same logits) give ``‖∂L_s/∂f‖/a`` and ``a³‖∂D/∂f‖``, so ``γ₀/a⁴``."""
    a = 10.0
    net, data = network(), batch()
    scaled = copy.deepcopy(net)
    with torch.no_grad():
        last = scaled.backbone[-2]  # the last Linear (before its ReLU)
        last.weight.mul_(a), last.bias.mul_(a), scaled.head.weight.div_(a)
    plain, large = calibrated(net, data).gamma.record(), calibrated(scaled, data).gamma.record()
    assert large["source_grad_norm"] == pytest.approx(plain["source_grad_norm"] / a, rel=1e-4)
    assert large["discrepancy_grad_norm"] == pytest.approx(
        plain["discrepancy_grad_norm"] * a**3, rel=1e-4
    )
    assert large["gamma"] == pytest.approx(plain["gamma"] / a**4, rel=1e-4)


def test_calibration_averages_the_norms_over_batches_and_changes_no_state():
    net = Network(K, (D_IN,), {"name": "mlp", "hidden_dims": [16]}, bottleneck_dim=8)
    batches = [batch(), {k: [v[0][:8] * 0.5, v[1][:8]] for k, v in batch().items()}]
    objective = Objective(net, "coral", {"name": "balanced", "batches": 2, "ramp": "dann_ramp"})
    net.eval()
    before = copy.deepcopy(net.state_dict())
    rng = torch.get_rng_state()
    objective.gamma.calibrate(objective, net, iter([*batches, batch()]))  # uses the first two
    assert not net.training  # its mode restored
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # BN stats too
    assert torch.equal(torch.get_rng_state(), rng)
    singles = []
    for one in batches:
        single = Objective(net, "coral", {"name": "balanced", "batches": 1})
        single.gamma.calibrate(single, net, iter([one]))
        singles.append(single.gamma.record())
    record = objective.gamma.record()
    for key in ("source_grad_norm", "discrepancy_grad_norm"):
        assert record[key] == pytest.approx(np.mean([s[key] for s in singles]), rel=1e-6)
    assert record["batches"] == 2
    assert record["gamma_at_end"] == pytest.approx(record["gamma"] * (2 / (1 + np.exp(-10)) - 1))
    assert objective.gamma(0.0) == 0.0  # the ramp's start


def test_balanced_gamma_options_are_checked():
    net = network()
    with pytest.raises(DalibError, match="a calibrated gamma needs a discrepancy"):
        Objective(net, None, {"name": "balanced"})
    with pytest.raises(DalibError, match="ratio must be a finite number > 0, got 0"):
        Objective(net, "coral", {"name": "balanced", "ratio": 0})
    with pytest.raises(DalibError, match="unknown option 'scale' for gamma calibration"):
        Objective(net, "coral", {"name": "balanced", "scale": 2})
    with pytest.raises(DalibError, match="used before its calibration"):
        Objective(net, "coral", "balanced").gamma(0.5)


@pytest.mark.slow
def test_a_calibrated_run_equals_the_same_run_with_its_gamma_set_by_hand(tmp_path):
    """The measurement leaves the run's randomness, data order and BatchNorm statistics as they
    were: training with γ = γ₀ written as a number gives the very same numbers."""
    args = [
        "fit",
        "-c",
        str(TOY / "mmd.yaml"),
        "--trainer.max_epochs=1",
        "--data.iterations_per_epoch=20",
    ]
    run_dalib([*args, "--model.gamma={name: balanced, ratio: 0.5}"], tmp_path / "balanced")
    balanced = only_result(tmp_path / "balanced")
    gamma = balanced["gamma_calibration"]["gamma"]
    assert balanced["gamma_calibration"]["batches"] == 10
    assert balanced["metrics"]["train/gamma"] == pytest.approx(gamma)
    run_dalib([*args, f"--model.gamma={gamma!r}"], tmp_path / "by_hand")
    by_hand = only_result(tmp_path / "by_hand")
    assert by_hand["gamma_calibration"] is None
    assert by_hand["metrics"] == balanced["metrics"]


@pytest.mark.slow
def test_a_resumed_run_takes_gamma_from_the_checkpoint_without_measuring(tmp_path, monkeypatch):
    from dalib.data import DomainDataModule
    from dalib.module import DomainAdaptationModule

    def model() -> DomainAdaptationModule:
        gamma = {"name": "balanced", "ratio": 2.0}
        return DomainAdaptationModule(2, (2,), discrepancy="coral", gamma=gamma)

    def data() -> DomainDataModule:
        return DomainDataModule(iterations_per_epoch=10)

    first = model()
    trainer = quiet_fit(first, data(), max_epochs=1)
    measured = first.objective.gamma.record()
    trainer.save_checkpoint(tmp_path / "one.ckpt")

    def measure_again(*args, **kwargs):
        raise AssertionError("a resumed run measured gamma again")

    monkeypatch.setattr(BalancedGamma, "calibrate", measure_again)
    resumed = model()
    quiet_fit(resumed, data(), max_epochs=2, ckpt_path=tmp_path / "one.ckpt")
    assert resumed.objective.gamma.record() == measured
