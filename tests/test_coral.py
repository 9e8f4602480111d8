import numpy as np
import pytest
import torch

from dalib.discrepancy import CORAL
from dalib.errors import DalibError

RNG = np.random.default_rng(0)


def test_matches_the_closed_form_with_numpy_covariances():
    xs, xt = RNG.normal(size=(20, 5)), RNG.normal(size=(15, 5)) * 2.0
    expected = ((np.cov(xs, rowvar=False) - np.cov(xt, rowvar=False)) ** 2).sum() / (4 * 5**2)
    assert CORAL()(torch.tensor(xs), torch.tensor(xt)).item() == pytest.approx(expected, rel=1e-10)


def test_mean_term_is_optional_and_scaled_by_4d():
    xs, xt = RNG.normal(size=(20, 5)), RNG.normal(size=(15, 5)) + 1.0
    plain = CORAL()(torch.tensor(xs), torch.tensor(xt)).item()
    with_means = CORAL(match_means=True)(torch.tensor(xs), torch.tensor(xt)).item()
    mean_term = ((xs.mean(0) - xt.mean(0)) ** 2).sum() / (4 * 5)
    assert with_means == pytest.approx(plain + mean_term, rel=1e-10)


def test_weighted_covariance_matches_numpy_reliability_weights():
    xs, xt = RNG.normal(size=(12, 4)), RNG.normal(size=(10, 4))
    ws = RNG.uniform(0.2, 3.0, size=12)
    expected_cs = np.cov(xs, rowvar=False, aweights=ws)  # numpy's unbiased weighted covariance
    expected = ((expected_cs - np.cov(xt, rowvar=False)) ** 2).sum() / (4 * 4**2)
    got = CORAL()(torch.tensor(xs), torch.tensor(xt), w_s=torch.tensor(ws))
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_equal_covariances_give_zero_whatever_the_means():
    x = torch.randn(30, 6, dtype=torch.float64)
    assert CORAL()(x, x + 5.0).item() == pytest.approx(0.0, abs=1e-20)


def test_one_sample_per_domain_is_refused():
    with pytest.raises(DalibError, match="at least two samples"):
        CORAL()(torch.randn(1, 3), torch.randn(4, 3))
