"""Kernel maximum mean discrepancy (MMD²) and joint MMD, with three estimators.

MMD²(P, Q) = E k(s, s') + E k(t, t') − 2 E k(s, t). Estimators (Gretton et al., JMLR 2012):

- ``biased``: the V-statistic over all pairs, diagonal included; never negative.
- ``unbiased``: the U-statistic, diagonal excluded; unbiased, so it can be slightly negative
  when the distributions are (nearly) identical. Needs two samples per domain.
- ``linear``: the linear-time statistic on disjoint quadruples (s₂ᵢ, s₂ᵢ₊₁, t₂ᵢ, t₂ᵢ₊₁), as DAN
  uses it; O(n) time and memory, unbiased, noisier; uses the first ``2·⌊min(n_s, n_t)/2⌋``
  samples of each domain. It has no weighted form and refuses instance weights.

Instance weights make the expectations weighted means (weights normalised to sum to one; for
the U-statistic, pairs i ≠ j are weighted by w_i·w_j / (1 − Σ w²), which is 1/(n(n−1)) for
uniform weights). Uniform weights give exactly the unweighted value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from dalib.discrepancy.base import Discrepancy, check_features, normalised_weights
from dalib.discrepancy.kernels import KERNELS, Blocks, Kernel
from dalib.discrepancy.registry import DISCREPANCIES
from dalib.errors import DalibError
from dalib.registry import Spec

Estimator = Literal["biased", "unbiased", "linear"]
Layers = Sequence[tuple[torch.Tensor, torch.Tensor]]  # (source, target) per kernel


def _u_term(k: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Weighted mean of k over pairs i ≠ j."""
    denominator = 1.0 - w.pow(2).sum()
    if denominator <= 0:
        raise DalibError(
            "the unbiased MMD needs at least two samples with a positive weight in each domain; "
            "use the biased estimator for smaller batches"
        )
    return (w @ (k @ w) - (w.pow(2) * k.diagonal()).sum()) / denominator


class KernelMMD(Discrepancy):
    """MMD² between source and target features with one kernel (``kernel``, by name).

    Default: DAN's multi-kernel Gaussian bank (multipliers 2⁻²…2² of the mean pairwise squared
    distance), biased estimator. The kernel matrix is computed in its three blocks
    (source–source, target–target, source–target: 3n² entries, not the joint matrix's 4n²),
    each with one distance matrix and one batched ``exp`` for every bandwidth; no (n, n, d)
    tensor is built.
    """

    def __init__(self, kernel: Spec = "gaussian", estimator: Estimator = "biased") -> None:
        super().__init__()
        if estimator not in ("biased", "unbiased", "linear"):
            raise DalibError(
                f"unknown MMD estimator {estimator!r}; choose biased, unbiased or linear"
            )
        self.estimator = estimator
        self.supports_weights = estimator != "linear"
        self.kernels: list[Kernel] = [KERNELS.build(kernel)]

    def layers(self, f_s, f_t, logits_s, logits_t) -> Layers:
        """What each kernel compares: here, the features."""
        return [(f_s, f_t)]

    def forward(self, f_s, f_t, *, logits_s=None, logits_t=None, y_s=None, w_s=None, w_t=None):
        check_features(f_s, f_t)
        layers = self.layers(f_s, f_t, logits_s, logits_t)
        if self.estimator == "linear":
            self.refuse_weights(w_s, w_t)
            return self._linear(layers)
        k = self._blocks(layers)
        a = normalised_weights(w_s, f_s.shape[0], f_s)
        b = normalised_weights(w_t, f_t.shape[0], f_s)
        cross = a @ (k.st @ b)
        if self.estimator == "biased":
            return a @ (k.ss @ a) + b @ (k.tt @ b) - 2.0 * cross
        return _u_term(k.ss, a) + _u_term(k.tt, b) - 2.0 * cross

    def _blocks(self, layers: Layers) -> Blocks:
        """Source–source, target–target and source–target blocks of the joint kernel: the
        product of each layer's kernel."""
        k = None
        for kernel, (x_s, x_t) in zip(self.kernels, layers, strict=True):
            layer = kernel.blocks(x_s, x_t)
            k = layer if k is None else Blocks(*(a * b for a, b in zip(k, layer, strict=True)))
        return k

    def _linear(self, layers: Layers) -> torch.Tensor:
        """Mean of k(s, s') + k(t, t') − k(s, t') − k(s', t) over disjoint quadruples.

        The four pair sets are stacked into one batch of rows, so that a bandwidth heuristic
        sees all of them and every term uses the same kernel.
        """
        m = min(layers[0][0].shape[0], layers[0][1].shape[0]) // 2 * 2
        if m < 2:
            raise DalibError("the linear-time MMD needs at least 2 samples in each domain")
        k = None
        for kernel, (x_s, x_t) in zip(self.kernels, layers, strict=True):
            s0, s1, t0, t1 = x_s[0:m:2], x_s[1:m:2], x_t[0:m:2], x_t[1:m:2]
            layer_k = kernel.rowwise(torch.cat([s0, t0, s0, s1]), torch.cat([s1, t1, t1, t0]))
            k = layer_k if k is None else k * layer_k
        k_ss, k_tt, k_st, k_ts = k.chunk(4)
        return (k_ss + k_tt - k_st - k_ts).mean()


DISCREPANCIES.register("mmd")(KernelMMD)


@DISCREPANCIES.register("jmmd")
class JointMMD(KernelMMD):
    """Joint MMD of JAN (Long et al., ICML 2017) over features and softmax predictions.

    The joint kernel is the product of a kernel on the features (``kernel``) and one on the
    softmax outputs (``output_kernel``; default a Gaussian with σ = 0.92, as in the
    Transfer-Learning-Library's JAN). Gradients flow into both the features and the logits.
    """

    needs_logits = True

    def __init__(
        self,
        kernel: Spec = "gaussian",
        output_kernel: Spec = {"name": "gaussian", "sigmas": [0.92]},  # noqa: B006 - read only
        estimator: Estimator = "biased",
    ) -> None:
        super().__init__(kernel, estimator)
        self.kernels.append(KERNELS.build(output_kernel))

    def layers(self, f_s, f_t, logits_s, logits_t) -> Layers:
        logits_s, logits_t = self.require_logits(logits_s, logits_t, len(f_s), len(f_t))
        return [(f_s, f_t), (F.softmax(logits_s, dim=1), F.softmax(logits_t, dim=1))]
