"""Kernel maximum mean discrepancy with a bank of Gaussian kernels."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dalib.discrepancy.base import (
    Discrepancy,
    check_features,
    normalised_weights,
    pairwise_sq_dists,
)
from dalib.discrepancy.registry import DISCREPANCIES
from dalib.errors import DalibError


@DISCREPANCIES.register("mmd")
class GaussianMMD(Discrepancy):
    """Squared MMD with the sum of Gaussian kernels ``exp(-‖x-y‖² / (2σ²))``, biased estimator.

    MMD²(P, Q) = E k(s, s') + E k(t, t') - 2 E k(s, t), estimated by the V-statistic (all pairs,
    diagonal included), which is never negative. With instance weights the expectations are
    weighted means; uniform weights give the unweighted value.

    Bandwidths: ``sigmas`` fixes them; otherwise σ² = base · m for m in ``multipliers``, where
    ``base`` is the mean pairwise squared distance over the joint batch (detached), as DAN does
    (Long et al., ICML 2015). One (n, n) distance matrix is computed and reused for every kernel.
    """

    def __init__(
        self,
        multipliers: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
        sigmas: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        bank = sigmas if sigmas is not None else multipliers
        if len(bank) == 0 or any(not float(b) > 0 for b in bank):
            raise DalibError(f"MMD bandwidths and multipliers must be positive, got {list(bank)}")
        self.multipliers = [float(m) for m in multipliers]
        self.sigmas = None if sigmas is None else [float(s) for s in sigmas]

    def kernel(self, sq_dist: torch.Tensor) -> torch.Tensor:
        """Sum of the Gaussian kernels of the bank, evaluated on squared distances."""
        if self.sigmas is not None:
            variances = [s * s for s in self.sigmas]
        else:
            base = sq_dist.detach().mean().clamp_min(torch.finfo(sq_dist.dtype).tiny)
            variances = [base * m for m in self.multipliers]
        return sum(torch.exp(-sq_dist / (2.0 * v)) for v in variances)

    def forward(self, f_s, f_t, *, logits_s=None, logits_t=None, y_s=None, w_s=None, w_t=None):
        check_features(f_s, f_t)
        n_s = f_s.shape[0]
        joint = torch.cat([f_s, f_t])
        k = self.kernel(pairwise_sq_dists(joint))
        a = normalised_weights(w_s, n_s, joint)
        b = normalised_weights(w_t, f_t.shape[0], joint)
        signed = torch.cat([a, -b])
        return signed @ k @ signed
