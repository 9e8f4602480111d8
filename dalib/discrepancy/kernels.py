"""Kernels for MMD, selected by name: ``kernel: {name: gaussian, multipliers: [...]}``.

A kernel gives the (N, N) matrix over a joint batch (``matrix``) and the values on paired rows
(``rowwise``, for the linear-time estimator). Distance-based kernels compute one squared-distance
matrix and reuse it for every bandwidth of the bank; no (N, N, d) tensor is ever built.

Bandwidth heuristics are evaluated on the distances at hand (detached, so the bandwidth is not
a path for the gradient): the off-diagonal pairs of the joint batch for ``matrix``, the given
pairs for ``rowwise``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from dalib.discrepancy.base import pairwise_sq_dists
from dalib.errors import DalibError
from dalib.registry import Registry

KERNELS: Registry[Kernel] = Registry("kernel", "dalib.kernels")
Heuristic = Literal["mean", "median"]


class Kernel:
    """A positive-definite kernel k(x, y) on feature vectors."""

    def matrix(self, z: torch.Tensor) -> torch.Tensor:
        """``K[i, j] = k(z_i, z_j)`` for a (N, d) batch."""
        raise NotImplementedError

    def rowwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``k(a_i, b_i)`` for two (m, d) batches."""
        raise NotImplementedError


def _positive_bank(values: Sequence[float], what: str) -> list[float]:
    bank = [float(v) for v in values]
    if not bank or any(not v > 0 for v in bank):
        raise DalibError(f"kernel {what} must be a non-empty list of positive numbers, got {bank}")
    return bank


class _BandwidthBank(Kernel):
    """Sum of ``exp(-r / s)`` over a bank of scales ``s`` of a distance statistic ``r``.

    ``sigmas`` fixes the bandwidths; otherwise each scale is ``multiplier × heuristic(r)`` (the
    DAN recipe: Long et al., ICML 2015), the heuristic being the mean or the median of ``r``.
    """

    def __init__(
        self,
        multipliers: Sequence[float],
        sigmas: Sequence[float] | None,
        heuristic: Heuristic,
    ) -> None:
        if heuristic not in ("mean", "median"):
            raise DalibError(f"kernel heuristic must be 'mean' or 'median', got {heuristic!r}")
        self.multipliers = _positive_bank(multipliers, "multipliers")
        self.sigmas = None if sigmas is None else _positive_bank(sigmas, "sigmas")
        self.heuristic = heuristic

    def statistic(self, sq: torch.Tensor) -> torch.Tensor:
        """What the kernel exponentiates, from squared distances (zero on the diagonal)."""
        raise NotImplementedError

    def fixed_scales(self, sigmas: list[float]) -> list[float]:
        """The scale of each fixed bandwidth."""
        raise NotImplementedError

    def _bank(self, r: torch.Tensor, base: torch.Tensor | None) -> torch.Tensor:
        """The kernel sum on ``r``; ``base`` is the heuristic's value (unused with sigmas)."""
        if self.sigmas is not None:
            scales = self.fixed_scales(self.sigmas)
        else:
            base = base.clamp_min(torch.finfo(r.dtype).tiny)
            scales = [base * m for m in self.multipliers]
        return sum(torch.exp(-r / s) for s in scales)

    def matrix(self, z: torch.Tensor) -> torch.Tensor:
        n, base = len(z), None
        diagonal = torch.eye(n, dtype=torch.bool, device=z.device)
        # The expansion ‖a‖² + ‖b‖² - 2a·b leaves a round-off of order eps·‖z_i‖² on the
        # diagonal, which the Laplacian's square root magnifies to √eps·‖z_i‖ (a 1e-3 relative
        # error of float32 MMD on offset features); a self-distance is exactly zero.
        r = self.statistic(pairwise_sq_dists(z).masked_fill(diagonal, 0.0))
        if self.sigmas is None and n < 2:
            raise DalibError("a kernel bandwidth heuristic needs at least 2 samples")
        if self.sigmas is None and self.heuristic == "mean":
            base = r.detach().sum() / (n * (n - 1))  # the diagonal is zero
        elif self.sigmas is None:
            base = r.detach().masked_select(~diagonal).median()
        return self._bank(r, base)

    def rowwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        r = self.statistic((a - b).pow(2).sum(dim=1))
        pairs = r.detach()
        return self._bank(r, pairs.mean() if self.heuristic == "mean" else pairs.median())


@KERNELS.register("gaussian")
class GaussianKernel(_BandwidthBank):
    """``Σ_σ exp(-‖x-y‖² / (2σ²))``; with heuristics, ``2σ² = multiplier × stat(‖x-y‖²)``.

    The default bank, multipliers 2^-2 ... 2^2 of the mean squared distance, is DAN's.
    """

    def __init__(
        self,
        multipliers: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
        sigmas: Sequence[float] | None = None,
        heuristic: Heuristic = "mean",
    ) -> None:
        super().__init__(multipliers, sigmas, heuristic)

    def statistic(self, sq: torch.Tensor) -> torch.Tensor:
        return sq

    def fixed_scales(self, sigmas: list[float]) -> list[float]:
        return [2.0 * s * s for s in sigmas]


@KERNELS.register("laplacian")
class LaplacianKernel(_BandwidthBank):
    """``Σ_σ exp(-‖x-y‖ / σ)``; with heuristics, ``σ = multiplier × stat(‖x-y‖)``."""

    def __init__(
        self,
        multipliers: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
        sigmas: Sequence[float] | None = None,
        heuristic: Heuristic = "mean",
    ) -> None:
        super().__init__(multipliers, sigmas, heuristic)

    def statistic(self, sq: torch.Tensor) -> torch.Tensor:
        # sqrt with a finite gradient where the distance is zero (the diagonal)
        positive = sq > 0
        return torch.where(positive, torch.where(positive, sq, 1.0).sqrt(), 0.0)

    def fixed_scales(self, sigmas: list[float]) -> list[float]:
        return sigmas


@KERNELS.register("polynomial")
class PolynomialKernel(Kernel):
    """``(scale·⟨x, y⟩ + coef)^degree``, with ``scale = 1/d`` by default."""

    def __init__(self, degree: int = 2, coef: float = 1.0, scale: float | None = None) -> None:
        if degree < 1 or coef < 0 or (scale is not None and scale <= 0):
            raise DalibError(
                f"polynomial kernel needs degree >= 1, coef >= 0, scale > 0; "
                f"got {degree}, {coef}, {scale}"
            )
        self.degree, self.coef, self.scale = degree, coef, scale

    def _apply(self, inner: torch.Tensor, d: int) -> torch.Tensor:
        return ((self.scale or 1.0 / d) * inner + self.coef).pow(self.degree)

    def matrix(self, z: torch.Tensor) -> torch.Tensor:
        return self._apply(z @ z.T, z.shape[1])

    def rowwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self._apply((a * b).sum(dim=1), a.shape[1])
