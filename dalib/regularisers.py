"""Feature regularisers R(f_s, f_t): terms added to any objective, beside (not instead of) D.

``model.regularisers: [{name: bsp, weight: 1e-4}, {name: afn, weight: 0.05, delta: 1.0}]``
adds ``Σ_k weight_k·R_k(f_s, f_t)`` to ``L``. They are neither a discrepancy nor a target loss:

- not a discrepancy: ``D`` is one slot, a measure of the *distance* between the domains that
  γ(t) schedules, model selection and the DDP gather know about; BSP and AFN measure no
  distance and are meant to be added *on top of* a ``D`` (BSP with DANN or CDAN);
- not a target loss: ``L_t`` sees only the target logits and labels; these read the features
  of both domains.

A list composes any number of them with any ``D`` and ``L_t``. Under data-parallel training
each process computes ``R`` on its own batch, as the single-GPU reference code does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from dalib.discrepancy.base import check_features
from dalib.errors import DalibError
from dalib.registry import Registry, Spec, split_spec

REGULARISERS: Registry[Regulariser] = Registry("regulariser", "dalib.regularisers")


class Regulariser(nn.Module):
    """``R(f_s, f_t) -> scalar tensor`` on the (n, d) source and target feature batches."""

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@REGULARISERS.register("bsp")
class BatchSpectralPenalty(Regulariser):
    """Batch Spectral Penalization (Chen, Wang, Long and Wang, "Transferability vs.
    Discriminability", ICML 2019): ``R = Σ_{i≤k} (σ_{s,i}² + σ_{t,i}²)``, the squares of
    the ``k`` largest singular values of the source and of the target feature batches.

    Adversarial alignment inflates the few top singular directions of the features, which carry
    transferability but hurt discriminability; penalising them lets the others grow. ``k = 1``
    as in the paper's experiments and in Transfer-Learning-Library's
    ``BatchSpectralPenalizationLoss`` (``tllib/alignment/bsp.py:46-50``); its weight there is
    ``--trade-off-bsp`` 2e-4 by default, 1e-4 on digits (``examples/.../bsp.sh:78``).
    """

    def __init__(self, k: int = 1) -> None:
        super().__init__()
        if k < 1:
            raise DalibError(f"bsp's k (how many top singular values) must be >= 1, got {k}")
        self.k = k

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        check_features(f_s, f_t)
        top = [torch.linalg.svdvals(f)[: self.k] for f in (f_s, f_t)]
        return sum(s.pow(2).sum() for s in top)


@REGULARISERS.register("afn")
class StepwiseAdaptiveFeatureNorm(Regulariser):
    """Stepwise Adaptive Feature Norm (Xu, Li, Yang and Lin, "Larger Norm More Transferable",
    ICCV 2019): ``R = mean_i (‖f_s,i‖ − (‖f_s,i‖⁰ + Δr))² + the same over f_t``, where
    ``‖f‖⁰`` is the norm at the current parameters taken as a constant (no gradient).

    Its value is always ``2·Δr²``; what matters is its gradient, ``−2Δr·f_i/(n·‖f_i‖)`` per
    sample: every step pulls each feature norm ``Δr`` further out, so task-specific features of
    large norm are learned progressively (the paper's "larger norm, more transferable").
    As Transfer-Learning-Library's ``AdaptiveFeatureNorm`` (``tllib/normalization/afn.py:53-58``),
    summed over the two domains (``examples/.../afn.py:169``, weight ``--trade-off-norm`` 0.05).
    ``delta`` = Δr: 1.0 by default, 0.3 / 0.1 on MNIST→USPS / USPS→MNIST (``afn.sh:78,80``).
    AFN's own bottleneck (Linear-BN-ReLU and a dropout that preserves the L2 norm, 1000-d) is
    not built here: dalib's bottleneck is used.
    """

    def __init__(self, delta: float = 1.0) -> None:
        super().__init__()
        if not (math.isfinite(delta) and delta > 0):
            raise DalibError(f"afn's delta (the norm increment Δr) must be > 0, got {delta}")
        self.delta = float(delta)

    def norm_step(self, f: torch.Tensor) -> torch.Tensor:
        norm = f.norm(p=2, dim=1)
        return (norm - (norm.detach() + self.delta)).pow(2).mean()

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        check_features(f_s, f_t)
        return self.norm_step(f_s) + self.norm_step(f_t)


def build_regularisers(specs: Sequence[Spec] | None) -> tuple[nn.ModuleDict, dict[str, float]]:
    """The regularisers of ``specs`` by name, and each one's ``weight`` (1.0 if not given)."""
    modules, weights = nn.ModuleDict(), {}
    for spec in specs or ():
        name, options = split_spec(spec, "regulariser")
        weight = options.pop("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight >= 0:
            raise DalibError(f"regulariser {name!r}: weight must be a number >= 0, got {weight!r}")
        if name in modules:
            raise DalibError(f"regulariser {name!r} is listed twice; give it once, with its weight")
        modules[name] = REGULARISERS.build({"name": name, **options})
        weights[name] = float(weight)
    return modules, weights
