"""BSP and AFN against independent computations, and as terms of the objective."""

import numpy as np
import pytest
import scipy.linalg
import torch

from dalib.errors import DalibError
from dalib.module import DomainAdaptationModule
from dalib.regularisers import REGULARISERS, build_regularisers


def features(seed: int, n: int = 24, d: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    f_s = torch.randn(n, d, generator=g, dtype=torch.float64)
    f_t = 2.0 * torch.randn(n + 5, d, generator=g, dtype=torch.float64) + 1.0
    return f_s, f_t


@pytest.mark.parametrize("k", [1, 3])
def test_bsp_is_the_sum_of_the_top_k_squared_singular_values_of_each_batch(k):
    f_s, f_t = features(0)
    expected = sum(
        np.sum(scipy.linalg.svd(f.numpy(), compute_uv=False)[:k] ** 2) for f in (f_s, f_t)
    )
    value = REGULARISERS.build({"name": "bsp", "k": k})(f_s, f_t)
    assert value.item() == pytest.approx(expected, rel=1e-10)


def test_bsp_gradient_is_twice_sigma_times_its_singular_vectors():
    """∂σ₁²/∂F = 2σ₁·u₁v₁ᵀ (a simple top singular value): from numpy's SVD, not autograd."""
    f_s, f_t = features(1)
    f_s.requires_grad_(True)
    REGULARISERS.build("bsp")(f_s, f_t).backward()
    u, s, vt = np.linalg.svd(f_s.detach().numpy(), full_matrices=False)
    expected = 2 * s[0] * np.outer(u[:, 0], vt[0])
    np.testing.assert_allclose(f_s.grad.numpy(), expected, rtol=1e-8, atol=1e-10)


def test_afn_value_is_two_delta_squared_and_its_gradient_enlarges_every_norm_by_the_step():
    f_s, f_t = features(2)
    delta = 0.3
    f_s.requires_grad_(True)
    f_t.requires_grad_(True)
    value = REGULARISERS.build({"name": "afn", "delta": delta})(f_s, f_t)
    assert value.item() == pytest.approx(2 * delta**2, rel=1e-12)
    value.backward()
    for f in (f_s, f_t):
        x = f.detach().numpy()
        norms = np.sqrt((x**2).sum(axis=1, keepdims=True))
        # d/df_i of mean_j (‖f_j‖ − ‖f_j‖⁰ − Δ)² at ‖f_j‖ = ‖f_j‖⁰: −2Δ·f_i/(n‖f_i‖)
        np.testing.assert_allclose(f.grad.numpy(), -2 * delta * x / (len(x) * norms), rtol=1e-10)
        # the stepwise norm step: a gradient step of size η moves each norm out by 2ηΔ/n
        eta = 0.5
        stepped = x - eta * f.grad.numpy()
        grown = np.sqrt((stepped**2).sum(axis=1)) - norms[:, 0]
        np.testing.assert_allclose(grown, 2 * eta * delta / len(x), rtol=1e-10)


def test_regularisers_are_terms_of_the_objective_with_their_weights():
    torch.manual_seed(0)
    module = DomainAdaptationModule(
        num_classes=3, input_shape=(4,), bottleneck_dim=8, discrepancy="dann",
        regularisers=[{"name": "bsp", "weight": 1e-2}, {"name": "afn", "delta": 0.5}],
    )  # fmt: skip
    assert module.method == "dann+bsp+afn"
    g = torch.Generator().manual_seed(0)
    batch = {
        "source": (torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)),
        "target": (torch.randn(16, 4, generator=g), torch.full((16,), -1)),
    }
    module.eval()  # deterministic BatchNorm and no dropout, so that features are recomputable
    terms = module.compute_losses(batch, progress=0.5)
    f = module.network.paired_features(batch["source"][0], batch["target"][0]).detach()
    f_s, f_t = f[:16].double().numpy(), f[16:].double().numpy()
    top = sum(np.linalg.svd(x, compute_uv=False)[0] ** 2 for x in (f_s, f_t))
    assert terms["bsp"].item() == pytest.approx(top, rel=1e-4)
    assert terms["afn"].item() == pytest.approx(2 * 0.5**2, rel=1e-5)
    rest = terms["source_ce"] + terms["gamma"] * terms["discrepancy"]
    expected = rest + 1e-2 * terms["bsp"] + 1.0 * terms["afn"]
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_a_regulariser_alone_uses_the_target_batch():
    module = DomainAdaptationModule(num_classes=2, input_shape=(3,), regularisers=["afn"])
    assert module.objective.uses_target_batch and module.method == "afn"


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ([{"name": "bsp", "k": 0}], "bsp.s k .how many top singular values. must be >= 1"),
        ([{"name": "afn", "delta": -1.0}], "delta .the norm increment"),
        ([{"name": "afn", "weight": -1}], "weight must be a number >= 0"),
        (["bsp", "bsp"], "listed twice"),
        (["bps"], "did you mean 'bsp'"),
    ],
)
def test_bad_regulariser_specs_are_one_line_errors(specs, message):
    with pytest.raises(DalibError, match=message):
        build_regularisers(specs)
