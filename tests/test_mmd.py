import itertools

import numpy as np
import pytest
import torch

from dalib.discrepancy import GaussianMMD
from dalib.errors import DalibError


def reference_mmd2(xs: np.ndarray, xt: np.ndarray, sigmas: list[float]) -> float:
    """The biased MMD² written out as its three double sums, in float64 loops."""

    def k(a, b):
        d2 = float(((a - b) ** 2).sum())
        return sum(np.exp(-d2 / (2 * s * s)) for s in sigmas)

    ss = np.mean([k(a, b) for a, b in itertools.product(xs, xs)])
    tt = np.mean([k(a, b) for a, b in itertools.product(xt, xt)])
    st = np.mean([k(a, b) for a, b in itertools.product(xs, xt)])
    return ss + tt - 2 * st


def test_matches_an_independent_computation_with_fixed_bandwidths():
    rng = np.random.default_rng(0)
    xs, xt = rng.normal(size=(7, 3)), rng.normal(0.7, 1.3, size=(5, 3))
    sigmas = [0.5, 1.0, 3.0]
    got = GaussianMMD(sigmas=sigmas)(torch.tensor(xs), torch.tensor(xt))
    assert got.item() == pytest.approx(reference_mmd2(xs, xt, sigmas), rel=1e-10)


def test_default_bandwidths_come_from_the_mean_squared_distance():
    rng = np.random.default_rng(1)
    xs, xt = rng.normal(size=(6, 4)), rng.normal(1.0, size=(6, 4))
    joint = np.concatenate([xs, xt])
    mean_d2 = np.mean([((a - b) ** 2).sum() for a, b in itertools.product(joint, joint)])
    multipliers = [0.5, 1.0, 2.0]
    sigmas = [np.sqrt(mean_d2 * m) for m in multipliers]
    got = GaussianMMD(multipliers=multipliers)(torch.tensor(xs), torch.tensor(xt))
    assert got.item() == pytest.approx(reference_mmd2(xs, xt, sigmas), rel=1e-8)


def test_same_distribution_gives_about_zero_and_a_shift_gives_more():
    torch.manual_seed(0)
    mmd = GaussianMMD()
    same = mmd(torch.randn(500, 2), torch.randn(500, 2))
    shifted = mmd(torch.randn(500, 2), torch.randn(500, 2) + 1.0)
    assert 0 <= same.item() < 0.02
    assert shifted.item() > 10 * same.item()


def test_uniform_weights_give_the_unweighted_value_and_weights_act_like_copies():
    torch.manual_seed(0)
    mmd = GaussianMMD(sigmas=[1.0])
    f_s, f_t = torch.randn(5, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    plain = mmd(f_s, f_t)
    assert mmd(f_s, f_t, w_s=torch.full((5,), 3.0), w_t=torch.ones(4)).item() == pytest.approx(
        plain.item(), rel=1e-12
    )
    weighted = mmd(f_s, f_t, w_s=torch.tensor([2.0, 1, 1, 1, 1], dtype=torch.float64))
    duplicated = mmd(torch.cat([f_s, f_s[:1]]), f_t)
    assert weighted.item() == pytest.approx(duplicated.item(), rel=1e-12)


def test_gradient_pulls_the_domains_together():
    torch.manual_seed(0)
    f_s = torch.randn(64, 2, requires_grad=True)
    f_t = torch.randn(64, 2) + 2.0
    GaussianMMD()(f_s, f_t).backward()
    step = -f_s.grad.mean(dim=0)  # descent direction of the source features
    assert torch.isfinite(f_s.grad).all()
    assert (step > 0).all(), "moving the source features downhill must move them towards +2"


def test_mismatched_feature_sizes_are_refused():
    with pytest.raises(DalibError, match=r"source features have 3 dimensions but target .* 4"):
        GaussianMMD()(torch.randn(5, 3), torch.randn(5, 4))


@pytest.mark.parametrize("bad", [[1.0, -1.0, 1.0], [float("nan"), 1.0, 1.0], [0.0, 0.0, 0.0]])
def test_bad_instance_weights_are_refused(bad):
    with pytest.raises(DalibError, match="weight"):
        GaussianMMD()(torch.randn(3, 2), torch.randn(3, 2), w_s=torch.tensor(bad))
