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


@pytest.mark.parametrize("n_s, n_t, d", [(6, 5, 40), (30, 25, 40)])
def test_gram_and_covariance_routes_give_the_numpy_value(n_s, n_t, d):
    """Fewer samples than features takes the n × n Gram route; more, the d × d covariances."""
    xs, xt = RNG.normal(size=(n_s, d)), RNG.normal(size=(n_t, d)) * 1.5
    ws = RNG.uniform(0.2, 3.0, size=n_s)
    cov_t = np.cov(xt, rowvar=False)
    for w, cov_s in [(None, np.cov(xs, rowvar=False)), (ws, np.cov(xs, rowvar=False, aweights=ws))]:
        expected = ((cov_s - cov_t) ** 2).sum() / (4 * d**2)
        got = CORAL()(
            torch.tensor(xs), torch.tensor(xt), w_s=None if w is None else torch.tensor(w)
        )
        assert got.item() == pytest.approx(expected, rel=1e-10)


def test_gram_route_gradient_matches_the_covariance_route():
    xs = torch.randn(6, 40, dtype=torch.float64, requires_grad=True)
    xt = torch.randn(5, 40, dtype=torch.float64, requires_grad=True)
    CORAL()(xs, xt).backward()
    grads = xs.grad.clone(), xt.grad.clone()
    xs.grad, xt.grad = None, None
    c_s, c_t = torch.cov(xs.T), torch.cov(xt.T)
    ((c_s - c_t).pow(2).sum() / (4 * 40**2)).backward()
    torch.testing.assert_close(grads, (xs.grad, xt.grad), rtol=1e-9, atol=1e-12)
