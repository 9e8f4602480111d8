"""Target losses against independent computations: MCC (Jin et al., ECCV 2020)."""

import numpy as np
import pytest
import torch

from dalib import DomainAdaptationModule
from dalib.errors import DalibError
from dalib.target_losses import TARGET_LOSSES, UNLABELLED


def mcc_numpy(logits: np.ndarray, temperature: float) -> float:
    """The paper's equations (1)-(6), one loop per sum."""
    batch, classes = logits.shape
    z = logits / temperature
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    h = np.array([-sum(q * np.log(q) for q in row) for row in p])
    w = batch * (1 + np.exp(-h)) / (1 + np.exp(-h)).sum()
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
