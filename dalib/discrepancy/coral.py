"""CORAL: the distance between the feature covariances of the two domains."""

from __future__ import annotations

import torch

from dalib.discrepancy.base import Discrepancy, check_features, normalised_weights
from dalib.discrepancy.registry import DISCREPANCIES
from dalib.errors import DalibError


def weighted_covariance(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance of ``x`` under weights ``w`` that sum to one.

    ``Σ w_i (x_i − μ)(x_i − μ)ᵀ / (1 − Σ w_i²)``: with uniform weights, the usual 1/(n − 1)
    sample covariance.
    """
    denominator = 1.0 - w.pow(2).sum()
    if denominator <= 0:
        raise DalibError(
            "CORAL needs at least two samples with a positive weight in each domain to estimate "
            "a covariance; use larger batches"
        )
    mean = w @ x
    centred = x - mean
    return mean, (centred.T * w) @ centred / denominator


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
        mean_s, cov_s = weighted_covariance(f_s, normalised_weights(w_s, len(f_s), f_s))
        mean_t, cov_t = weighted_covariance(f_t, normalised_weights(w_t, len(f_t), f_t))
        value = (cov_s - cov_t).pow(2).sum() / (4.0 * d * d)
        if self.match_means:
            value = value + (mean_s - mean_t).pow(2).sum() / (4.0 * d)
        return value
