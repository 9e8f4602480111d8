"""Kernels for MMD, selected by name: ``kernel: {name: gaussian, multipliers: [...]}``.

A kernel gives the three blocks of the kernel matrix over a source and a target batch
(``blocks``: source–source, target–target, source–target; never the (N, N) joint matrix, whose
cross block would be computed twice) and the values on paired rows (``rowwise``, for the
linear-time estimator). Distance-based kernels compute one squared-distance matrix per block
and evaluate the bandwidths of the bank in one batched ``exp`` over a (bandwidths, n, m)
stack, split into cache-sized groups when the stack is large (``BATCH_ELEMENTS``); no
(n, m, d) tensor is ever built.

Bandwidth heuristics are evaluated on the distances at hand (detached, so the bandwidth is not
a path for the gradient): the off-diagonal pairs of the joint batch for ``blocks`` (each
cross pair counted twice, as in the joint matrix), the given pairs for ``rowwise``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch

from dalib.errors import DalibError
from dalib.registry import Registry

KERNELS: Registry[Kernel] = Registry("kernel", "dalib.kernels")
#: Largest stack of bandwidths × pairs that one ``exp`` evaluates (512 KiB of float32, about a
#: core's L2 cache). Batching the bank saves per-operation overhead on small blocks, but a
#: stack that leaves the cache is slower than one ``exp`` per bandwidth: 1.4x for 5 and 3.5x
#: for 33 bandwidths at 512 × 512 (benchmarks/results/kernel_bank_exp.md).
BATCH_ELEMENTS = 2**17
Heuristic = Literal["mean", "median"]


class Blocks(NamedTuple):
    """The blocks ``k(s_i, s_j)``, ``k(t_i, t_j)`` and ``k(s_i, t_j)`` of a kernel matrix."""

    ss: torch.Tensor
    tt: torch.Tensor
    st: torch.Tensor


class Kernel:
    """A positive-definite kernel k(x, y) on feature vectors."""

    def blocks(self, x_s: torch.Tensor, x_t: torch.Tensor) -> Blocks:
        """The kernel matrix's blocks for a (n_s, d) source and a (n_t, d) target batch."""
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

    def _negative_scales(self, base: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """Minus the bank's scales, as a (K, 1, ..., 1) tensor that broadcasts over ``like``."""
        shape = (-1,) + (1,) * like.dim()
        if self.sigmas is not None:
            fixed = [-s for s in self.fixed_scales(self.sigmas)]
            return torch.tensor(fixed, dtype=like.dtype, device=like.device).view(shape)
        multipliers = torch.tensor(self.multipliers, dtype=like.dtype, device=like.device)
        return (base.clamp_min(torch.finfo(like.dtype).tiny) * -multipliers).view(shape)

    def blocks(self, x_s: torch.Tensor, x_t: torch.Tensor) -> Blocks:
        r = Blocks(*(self.statistic(sq) for sq in sq_dist_blocks(x_s, x_t)))
        base = None
        if self.sigmas is None:
            base = self._joint_heuristic(*(block.detach() for block in r))
        scales = self._negative_scales(base, r.st)
        return Blocks(*(bank_sum(block, scales) for block in r))

    def _joint_heuristic(
        self, r_ss: torch.Tensor, r_tt: torch.Tensor, r_st: torch.Tensor
    ) -> torch.Tensor:
        """Mean or (lower) median of ``r`` over the off-diagonal pairs of the joint batch."""
        n = r_ss.shape[0] + r_tt.shape[0]
        if self.heuristic == "mean":  # the diagonals are zero
            return (r_ss.sum() + r_tt.sum() + 2.0 * r_st.sum()) / (n * (n - 1))
        off_ss, off_tt = (r.masked_select(~_eye(r)) for r in (r_ss, r_tt))
        flat_st = r_st.reshape(-1)
        return torch.cat([off_ss, off_tt, flat_st, flat_st]).median()

    def rowwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        r = self.statistic((a - b).pow(2).sum(dim=1))
        pairs = r.detach()
        base = None
        if self.sigmas is None:
            base = pairs.mean() if self.heuristic == "mean" else pairs.median()
        return bank_sum(r, self._negative_scales(base, r))


def bank_sum(r: torch.Tensor, negative_scales: torch.Tensor) -> torch.Tensor:
    """``Σ_s exp(-r / s)`` for ``negative_scales`` = −s as (K, 1, ..., 1): one ``exp`` over the
    (K, *r.shape) stack of every scale, in groups of scales whose stack has at most
    ``BATCH_ELEMENTS`` entries."""
    total = None
    for group in negative_scales.split(max(1, BATCH_ELEMENTS // r.numel())):
        part = torch.exp(r / group).sum(dim=0) if len(group) > 1 else torch.exp(r / group[0])
        total = part if total is None else total + part
    return total


def _eye(square: torch.Tensor) -> torch.Tensor:
    return torch.eye(square.shape[0], dtype=torch.bool, device=square.device)


def sq_dist_blocks(x_s: torch.Tensor, x_t: torch.Tensor) -> Blocks:
    """Squared Euclidean distances in three blocks, ``‖a‖² + ‖b‖² − 2a·b`` clamped at zero.

    The squared norms are read off the diagonals of the two Gram matrices, so no separate
    norm is computed and every self-distance is exactly zero (``(g + g) − 2g``): the round-off
    of order eps·‖x‖² that the expansion otherwise leaves on the diagonal would be magnified
    by the Laplacian's square root to √eps·‖x‖ (a 1e-3 relative error of float32 MMD on
    offset features).
    """
    g_ss, g_tt, g_st = x_s @ x_s.T, x_t @ x_t.T, x_s @ x_t.T
    norms_s, norms_t = g_ss.diagonal(), g_tt.diagonal()

    def expand(a: torch.Tensor, b: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
        return torch.sub(a[:, None] + b[None, :], gram, alpha=2.0).clamp_min(0.0)

    return Blocks(expand(norms_s, norms_s, g_ss), expand(norms_t, norms_t, g_tt),
                  expand(norms_s, norms_t, g_st))  # fmt: skip


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

    def blocks(self, x_s: torch.Tensor, x_t: torch.Tensor) -> Blocks:
        d = x_s.shape[1]
        return Blocks(
            self._apply(x_s @ x_s.T, d), self._apply(x_t @ x_t.T, d), self._apply(x_s @ x_t.T, d)
        )

    def rowwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self._apply((a * b).sum(dim=1), a.shape[1])
