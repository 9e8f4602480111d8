"""Target losses against independent computations: MCC (Jin et al., ECCV 2020)."""

import numpy as np
import pytest
import torch

from dalib import DomainAdaptationModule
from dalib.errors import DalibError
from dalib.target_losses import TARGET_LOSSES, UNLABELLED


def softmax_numpy(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits / temperature
    p = np.exp(z - z.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def entropy_weights_numpy(logits: np.ndarray, temperature: float) -> np.ndarray:
    """The paper's uncertainty weights W_ii = B·(1 + e^{-H_i}) / Σ_k (1 + e^{-H_k})."""
    h = np.array([-sum(q * np.log(q) for q in row) for row in softmax_numpy(logits, temperature)])
    return len(logits) * (1 + np.exp(-h)) / (1 + np.exp(-h)).sum()


def mcc_numpy(logits: np.ndarray, temperature: float, w: np.ndarray | None = None) -> float:
    """The paper's equations (1)-(6), one loop per sum; ``w`` fixes the weights W."""
    batch, classes = logits.shape
    p = softmax_numpy(logits, temperature)
    w = entropy_weights_numpy(logits, temperature) if w is None else w
    c = np.zeros((classes, classes))
    for j in range(classes):
        for k in range(classes):
            c[j, k] = sum(p[i, j] * w[i] * p[i, k] for i in range(batch))
    c_norm = c / c.sum(axis=1, keepdims=True)
    return sum(c_norm[j, k] for j in range(classes) for k in range(classes) if j != k) / classes


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_mcc_equals_the_papers_formula(temperature):
    logits = torch.randn(24, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mcc = TARGET_LOSSES.build({"name": "mcc", "temperature": temperature})
    labels = torch.full((24,), UNLABELLED)
    got = float(mcc(logits, labels))
    assert got == pytest.approx(mcc_numpy(logits.numpy(), temperature), abs=1e-10)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_mcc_gradient_treats_the_entropy_weights_as_constants_as_the_reference_does(temperature):
    """Central differences of the paper's formula with W frozen at the current logits (the
    reference detaches W: tllib/self_training/mcc.py line 68)."""
    logits = torch.randn(12, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    logits.requires_grad_()
    mcc = TARGET_LOSSES.build({"name": "mcc", "temperature": temperature})
    (grad,) = torch.autograd.grad(mcc(logits, torch.full((12,), UNLABELLED)), logits)
    x = logits.detach().numpy()
    w = entropy_weights_numpy(x, temperature)
    expected, step = np.zeros_like(x), 1e-6
    for i, j in np.ndindex(*x.shape):
        up, down = x.copy(), x.copy()
        up[i, j] += step
        down[i, j] -= step
        expected[i, j] = (mcc_numpy(up, temperature, w) - mcc_numpy(down, temperature, w)) / (
            2 * step
        )
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-6, atol=1e-9)


def test_mcc_is_zero_for_confident_predictions_and_large_for_confused_ones():
    mcc = TARGET_LOSSES.build("mcc")
    labels = torch.full((30,), UNLABELLED)
    confident = 100.0 * torch.nn.functional.one_hot(torch.arange(30) % 3, 3).double()
    assert float(mcc(confident, labels)) < 1e-6
    uniform = torch.zeros(30, 3, dtype=torch.float64)
    assert float(mcc(uniform, labels)) == pytest.approx(2 / 3)


def test_mcc_gradient_sharpens_predictions():
    logits = torch.randn(16, 4, generator=torch.Generator().manual_seed(1), requires_grad=True)
    mcc = TARGET_LOSSES.build("mcc")
    before = float(mcc(logits, torch.full((16,), UNLABELLED)))
    mcc(logits, torch.full((16,), UNLABELLED)).backward()
    with torch.no_grad():
        after = float(mcc(logits - 5.0 * logits.grad, torch.full((16,), UNLABELLED)))
    assert after < before


def test_mcc_in_the_module_with_options_and_bad_temperature():
    model = DomainAdaptationModule(
        num_classes=2, input_shape=(2,), target_loss={"name": "mcc", "temperature": 2.0}
    )
    assert model.method == "mcc"
    with pytest.raises(DalibError, match="temperature must be > 0"):
        DomainAdaptationModule(
            num_classes=2, input_shape=(2,), target_loss={"name": "mcc", "temperature": 0}
        )
