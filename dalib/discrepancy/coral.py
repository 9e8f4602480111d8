"""CORAL: the distance between the feature covariances of the two domains."""

from __future__ import annotations

import math

import torch

from dalib.discrepancy.base import Discrepancy, check_features, normalised_weights
from dalib.discrepancy.registry import DISCREPANCIES
from dalib.errors import DalibError

TOO_FEW_SAMPLES = (
    "CORAL needs at least two samples with a positive weight in each domain to estimate a "
    "covariance; use larger batches"
)


def covariance_factor(x: torch.Tensor, w: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean ``μ`` and a factor ``A`` (n × d) of the unbiased covariance ``C = AᵀA``.

    ``C = Σ w_i (x_i − μ)(x_i − μ)ᵀ / (1 − Σ w_i²)`` for weights ``w`` scaled to sum to one;
    ``None`` (uniform weights) gives the usual 1/(n − 1) sample covariance and is checked
    without reading a tensor back from the device. ``A``'s rows are the centred samples scaled
    by ``√(w_i / (1 − Σ w²))``, so nothing of size d × d is formed here.
    """
    n = x.shape[0]
    if w is None:
        if n < 2:
            raise DalibError(TOO_FEW_SAMPLES)
        mean = x.mean(dim=0)
        return mean, (x - mean) / math.sqrt(n - 1)
    w = normalised_weights(w, n, x)
    denominator = 1.0 - w.pow(2).sum()
    if denominator <= 0:
        raise DalibError(TOO_FEW_SAMPLES)
    mean = w @ x
    return mean, (x - mean) * (w / denominator).sqrt()[:, None]


def covariance_distance(a_s: torch.Tensor, a_t: torch.Tensor) -> torch.Tensor:
    """``‖A_sᵀA_s − A_tᵀA_t‖²_F`` by the cheaper of two exact routes.

    With fewer samples than features (n_s + n_t < d, the usual deep-learning batch) it expands
    to ``‖A_sA_sᵀ‖² + ‖A_tA_tᵀ‖² − 2‖A_sA_tᵀ‖²`` (as ``⟨XᵀX, YᵀY⟩ = ‖XYᵀ‖²_F``): n × n Gram
    matrices, O(n²d) instead of the covariances' O(nd²). That sum of three terms can round below
    zero when the covariances agree to working precision; it is clamped at zero.
    """
    d = a_s.shape[1]
    if a_s.shape[0] + a_t.shape[0] >= d:
        return (a_s.T @ a_s - a_t.T @ a_t).pow(2).sum()
    gram = (a_s @ a_s.T).pow(2).sum() + (a_t @ a_t.T).pow(2).sum()
    return (gram - 2.0 * (a_s @ a_t.T).pow(2).sum()).clamp_min(0.0)


@DISCREPANCIES.register("coral")
class CORAL(Discrepancy):
    """Deep CORAL (Sun & Saenko, ECCV-W 2016): ``‖C_s − C_t‖²_F / (4d²)``.

    ``C`` is the unbiased (1/(n − 1)) covariance of each domain's features, ``d`` their width;
    this normalisation is the paper's (its Eq. 1). Libraries differ, so λ values do not
    transfer: the Transfer-Learning-Library's ``CorrelationAlignmentLoss`` returns
    ``‖C_s − C_t‖²_F / d² + ‖μ_s − μ_t‖² / d`` (no 1/4, plus a mean term), so its trade-off λ
    corresponds to γ = 4λ here with ``match_means: true`` giving the mean term a weight 4 times
    smaller than tllib's. ``match_means`` adds ``‖μ_s − μ_t‖² / (4d)`` to align the means too.
    With instance weights, means and covariances are weighted.
    """

    def __init__(self, match_means: bool = False) -> None:
        super().__init__()
        self.match_means = match_means

    def forward(self, f_s, f_t, *, logits_s=None, logits_t=None, y_s=None, w_s=None, w_t=None):
        check_features(f_s, f_t)
        d = f_s.shape[1]
        mean_s, a_s = covariance_factor(f_s, w_s)
        mean_t, a_t = covariance_factor(f_t, w_t)
        value = covariance_distance(a_s, a_t) / (4.0 * d * d)
        if self.match_means:
            value = value + (mean_s - mean_t).pow(2).sum() / (4.0 * d)
        return value
