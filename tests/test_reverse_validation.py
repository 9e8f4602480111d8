"""Reverse validation (``rv``) against an independent computation and known answers."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.special import logsumexp

from dalib.selection.scores import SCORES, EvalOutputs


def outputs(source_labels, source_features, target_logits, target_features) -> EvalOutputs:
    source_features = np.asarray(source_features, dtype=float)
    source_logits = np.zeros((len(source_features), np.asarray(target_logits).shape[1]))
    arrays = (source_logits, source_labels, source_features, target_logits, target_features)
    return EvalOutputs(*(torch.as_tensor(np.asarray(a)) for a in arrays))


def logistic_regression(x: np.ndarray, y: np.ndarray, classes: int, c: float = 1.0) -> np.ndarray:
    """Multinomial logistic regression by direct minimisation of
    ``c·Σ −log softmax(xW + b)_y + ½‖W‖²`` (the intercept is not penalised)."""
    d = x.shape[1]
    onehot = np.eye(classes)[y]

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[: d * classes].reshape(d, classes), theta[d * classes :]
        z = x @ w + b
        log_p = z - logsumexp(z, axis=1, keepdims=True)
        residual = np.exp(log_p) - onehot
        loss = -c * (onehot * log_p).sum() + 0.5 * (w**2).sum()
        grad = np.concatenate([(c * x.T @ residual + w).ravel(), c * residual.sum(0)])
        return loss, grad

    theta = minimize(objective, np.zeros(d * classes + classes), jac=True, method="L-BFGS-B",
                     options={"gtol": 1e-10, "ftol": 1e-14, "maxiter": 10_000}).x  # fmt: skip
    return theta


def test_rv_equals_a_reverse_classifier_fitted_independently():
    rng = np.random.default_rng(0)
    classes, d = 3, 4
    centres = rng.normal(scale=1.5, size=(classes, d))
    target = centres[rng.integers(classes, size=80)] + rng.normal(size=(80, d)) + 0.7
    target_logits = target @ rng.normal(size=(d, classes))  # some model's view of the target
    source_labels = rng.integers(classes, size=50)
    source = centres[source_labels] + rng.normal(size=(50, d))
    scale = np.array([1e-3, 1e-3, 1.0, 1.0])  # features of unequal scales: standardising matters
    target, source = target * scale + 5.0, source * scale + 5.0
    # Independent: pseudo-labels, the target's standardisation, the fit, the source accuracy.
    pseudo = target_logits.argmax(1)
    mean, std = target.mean(0), target.std(0)
    theta = logistic_regression((target - mean) / std, pseudo, classes)
    w, b = theta[: d * classes].reshape(d, classes), theta[d * classes :]
    expected = (((source - mean) / std @ w + b).argmax(1) == source_labels).mean()
    got = SCORES.build("rv").compute(outputs(source_labels, source, target_logits, target))
    assert 0.2 < expected < 0.95  # a case where the reverse classifier is neither perfect nor void
    assert got == pytest.approx(expected, abs=1e-12)


def test_rv_scores_a_known_reverse_rule():
    # Target pseudo-labels split the line at 0; of the four held-out source samples, the one at
    # +2 labelled 0 is on the wrong side of the rule the target induces: 3 of 4 right.
    target = np.linspace(-3, 3, 40)[:, None]
    target_logits = np.hstack([-target, target])  # class 1 where x > 0
    source, source_labels = np.array([[-2.0], [-1.5], [2.0], [2.5]]), np.array([0, 0, 0, 1])
    assert SCORES.build("rv").compute(outputs(source_labels, source, target_logits, target)) == 0.75
    assert SCORES.build("rv").higher_is_better


def test_a_collapsed_model_gets_the_source_frequency_of_its_one_class():
    rng = np.random.default_rng(1)
    target = rng.normal(size=(30, 2))
    target_logits = np.tile([0.0, 5.0, 0.0], (30, 1))  # every target sample predicted class 1
    source_labels = np.array([1, 0, 2, 2, 1, 0, 0, 2])
    got = SCORES.build("rv").compute(
        outputs(source_labels, rng.normal(size=(8, 2)), target_logits, target)
    )
    assert got == 2 / 8
