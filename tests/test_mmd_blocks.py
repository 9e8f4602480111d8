"""The three-block kernel path of MMD and JMMD against the joint-matrix computation it replaced.

``joint_mmd`` below re-states the previous implementation independently of the package: one
(N, N) kernel matrix over the concatenated batch, one ``exp`` per bandwidth, the biased value as
``sᵀ K s`` with signed weights ``s = [a, −b]``. Values and gradients must agree on random
inputs for every kernel, heuristic, estimator and weighting.
"""

import pytest
import torch
import torch.nn.functional as F

from dalib.discrepancy import JointMMD, KernelMMD, kernels


@pytest.fixture(params=["one exp per block", "groups of bandwidths"])
def exp_groups(request, monkeypatch):
    """Every test runs with the bank in one ``exp`` and split into groups of a few bandwidths
    (blocks here have 56-121 entries)."""
    if request.param == "groups of bandwidths":
        monkeypatch.setattr(kernels, "BATCH_ELEMENTS", 250)


def joint_sq_dists(z: torch.Tensor) -> torch.Tensor:
    sq = (z[:, None, :] - z[None, :, :]).pow(2).sum(dim=2)  # direct differences, (N, N, d)
    return sq.masked_fill(torch.eye(len(z), dtype=torch.bool), 0.0)


def bank_matrix(z: torch.Tensor, kernel: dict) -> torch.Tensor:
    """The joint kernel matrix, one exp per bandwidth, heuristics over off-diagonal pairs."""
    name = kernel["name"]
    if name == "polynomial":
        scale = kernel.get("scale") or 1.0 / z.shape[1]
        return (scale * z @ z.T + kernel.get("coef", 1.0)) ** kernel.get("degree", 2)
    sq = joint_sq_dists(z)
    r = sq if name == "gaussian" else torch.where(sq > 0, sq, 1.0).sqrt() * (sq > 0)
    if "sigmas" in kernel:
        scales = [2 * s * s if name == "gaussian" else s for s in kernel["sigmas"]]
    else:
        off = r.detach()[~torch.eye(len(z), dtype=torch.bool)]
        base = off.mean() if kernel.get("heuristic", "mean") == "mean" else off.median()
        scales = [base * m for m in kernel.get("multipliers", (0.25, 0.5, 1.0, 2.0, 4.0))]
    return sum(torch.exp(-r / s) for s in scales)


def joint_mmd(layers, kernels, estimator, w_s=None, w_t=None) -> torch.Tensor:
    n_s, n_t = len(layers[0][0]), len(layers[0][1])
    k = 1.0
    for (x_s, x_t), kernel in zip(layers, kernels, strict=True):
        k = k * bank_matrix(torch.cat([x_s, x_t]), kernel)
    a = torch.full((n_s,), 1.0 / n_s, dtype=k.dtype) if w_s is None else w_s / w_s.sum()
    b = torch.full((n_t,), 1.0 / n_t, dtype=k.dtype) if w_t is None else w_t / w_t.sum()
    if estimator == "biased":
        signed = torch.cat([a, -b])
        return signed @ k @ signed

    def u_term(block, w):
        return (w @ block @ w - (w**2 * block.diagonal()).sum()) / (1 - (w**2).sum())

    return u_term(k[:n_s, :n_s], a) + u_term(k[n_s:, n_s:], b) - 2 * a @ k[:n_s, n_s:] @ b


KERNELS = [
    {"name": "gaussian"},
    {"name": "gaussian", "heuristic": "median", "multipliers": [0.5, 1.0, 2.0]},
    {"name": "gaussian", "sigmas": [0.7, 3.0]},
    {"name": "laplacian"},
    {"name": "laplacian", "heuristic": "median"},
    {"name": "laplacian", "multipliers": [2.0**k for k in range(-16, 17)]},  # skada's DAN bank
    {"name": "polynomial", "degree": 3, "coef": 0.5},
]


def random_inputs(seed: int, n_s: int = 11, n_t: int = 8, d: int = 5):
    g = torch.Generator().manual_seed(seed)
    f_s = torch.randn(n_s, d, generator=g, dtype=torch.float64).requires_grad_()
    f_t = (1.5 * torch.randn(n_t, d, generator=g, dtype=torch.float64) + 0.4).requires_grad_()
    w_s = torch.rand(n_s, generator=g, dtype=torch.float64) + 0.1
    w_t = torch.rand(n_t, generator=g, dtype=torch.float64) + 0.1
    return f_s, f_t, w_s, w_t


def assert_same_value_and_gradient(new: torch.Tensor, old: torch.Tensor, inputs) -> None:
    assert new.item() == pytest.approx(old.item(), rel=1e-10, abs=1e-13)
    for got, want in zip(
        torch.autograd.grad(new, inputs), torch.autograd.grad(old, inputs), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("seed", [0, 1])
def test_mmd_blocks_equal_the_joint_matrix(kernel, estimator, weighted, seed, exp_groups):
    f_s, f_t, w_s, w_t = random_inputs(seed)
    weights = {"w_s": w_s, "w_t": w_t} if weighted else {}
    new = KernelMMD(kernel=kernel, estimator=estimator)(f_s, f_t, **weights)
    old = joint_mmd([(f_s, f_t)], [kernel], estimator, **weights)
    assert_same_value_and_gradient(new, old, (f_s, f_t))


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
@pytest.mark.parametrize("kernel", KERNELS[:4])
def test_jmmd_blocks_equal_the_joint_matrix(kernel, estimator, exp_groups):
    f_s, f_t, w_s, w_t = random_inputs(2)
    g = torch.Generator().manual_seed(3)
    logits_s = torch.randn(len(f_s), 4, generator=g, dtype=torch.float64).requires_grad_()
    logits_t = torch.randn(len(f_t), 4, generator=g, dtype=torch.float64).requires_grad_()
    new = JointMMD(kernel=kernel, estimator=estimator)(
        f_s, f_t, logits_s=logits_s, logits_t=logits_t, w_s=w_s, w_t=w_t
    )
    softmax = [(F.softmax(logits_s, dim=1), F.softmax(logits_t, dim=1))]
    output_kernel = {"name": "gaussian", "sigmas": [0.92]}
    old = joint_mmd([(f_s, f_t), *softmax], [kernel, output_kernel], estimator, w_s, w_t)
    assert_same_value_and_gradient(new, old, (f_s, f_t, logits_s, logits_t))


@pytest.mark.parametrize("kernel", KERNELS)
def test_linear_estimator_with_batched_exps_equals_one_exp_per_bandwidth(kernel, exp_groups):
    f_s, f_t, _, _ = random_inputs(4, n_s=9, n_t=12)
    m = 8
    s0, s1, t0, t1 = f_s[0:m:2], f_s[1:m:2], f_t[0:m:2], f_t[1:m:2]
    left, right = torch.cat([s0, t0, s0, s1]), torch.cat([s1, t1, t1, t0])
    if kernel["name"] == "polynomial":
        k = (kernel["coef"] + (left * right).sum(dim=1) / left.shape[1]) ** kernel["degree"]
    else:
        sq = (left - right).pow(2).sum(dim=1)
        r = sq if kernel["name"] == "gaussian" else sq.sqrt()
        if "sigmas" in kernel:
            scales = [2 * s * s for s in kernel["sigmas"]]
        else:
            base = r.detach().mean() if kernel.get("heuristic") != "median" else r.detach().median()
            scales = [base * m for m in kernel.get("multipliers", (0.25, 0.5, 1.0, 2.0, 4.0))]
        k = sum(torch.exp(-r / s) for s in scales)
    k_ss, k_tt, k_st, k_ts = k.chunk(4)
    old = (k_ss + k_tt - k_st - k_ts).mean()
    new = KernelMMD(kernel=kernel, estimator="linear")(f_s, f_t)
    assert_same_value_and_gradient(new, old, (f_s, f_t))


def test_float32_blocks_agree_with_the_float64_joint_matrix():
    f_s, f_t, w_s, w_t = random_inputs(5, n_s=64, n_t=48, d=32)
    with torch.no_grad():
        old = joint_mmd([(f_s, f_t)], [{"name": "gaussian"}], "biased", w_s, w_t)
        new = KernelMMD()(f_s.float(), f_t.float(), w_s=w_s.float(), w_t=w_t.float())
    assert new.dtype == torch.float32
    assert new.item() == pytest.approx(old.item(), rel=1e-5)
