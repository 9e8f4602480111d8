"""Adversarial discrepancies: a domain discriminator trained through a gradient-reversal layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dalib.discrepancy.base import Discrepancy, check_features, normalised_weights
from dalib.discrepancy.registry import DISCREPANCIES
from dalib.errors import DalibError

#: Hidden width of the adversarial heads (DANN, CDAN, MDD) by default. The
#: Transfer-Learning-Library and the CDAN and MDD authors' code use 1024, a discriminator bigger
#: than LeNet itself: at batch 32 on LeNet's 500-d features DANN then costs about 30% of a
#: step, at 128 under 10% with a margin for CDAN+E, the dearest
#: (``benchmarks/results/discrepancy_speed_lenet_only.md``; at 256 it was 9.3%, commit 973f726).
#: Configs that reproduce a paper pin ``hidden_dim: 1024``.
DEFAULT_HIDDEN_DIM = 128


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.coeff * grad, None


class GradientReversal(nn.Module):
    """Identity forward; multiplies the gradient by ``-coeff`` backward (Ganin & Lempitsky 2015).

    One backward pass then trains the discriminator to separate the domains and the feature
    extractor to confuse it. ``coeff`` is the measure's constant; ``scale`` is the value of the
    objective's ``reversal`` schedule ρ(p), which it sets before every step (1 unless a config
    sets one), so the features receive ``-coeff·scale`` times the gradient. The schedule is not
    held here: it is evaluated at the training progress, so a resumed run continues exactly.
    """

    def __init__(self, coeff: float = 1.0) -> None:
        super().__init__()
        self.coeff = coeff
        self.scale = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ReverseGradient.apply(x, self.coeff * self.scale)


class DomainDiscriminator(nn.Sequential):
    """An MLP from features to one domain logit (source = 1, target = 0).

    It ends in a raw logit, paired with ``binary_cross_entropy_with_logits``: a sigmoid followed
    by a log would saturate, and a softmax over a single logit is constant and gives no gradient.
    """

    def __init__(
        self, in_features: int, hidden_dim: int = DEFAULT_HIDDEN_DIM, num_hidden: int = 2
    ) -> None:
        if in_features <= 0 or hidden_dim <= 0 or num_hidden < 0:
            raise DalibError(
                "a domain discriminator needs in_features > 0, hidden_dim > 0, num_hidden >= 0, "
                f"got {in_features}, {hidden_dim}, {num_hidden}"
            )
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(num_hidden):
            layers += [nn.Linear(width, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU()]
            width = hidden_dim
        layers.append(nn.Linear(width, 1))
        super().__init__(*layers)


@DISCREPANCIES.register("dann")
class DomainAdversarial(Discrepancy):
    """DANN's domain loss (Ganin et al., JMLR 2016): the discriminator's cross-entropy.

    ``D = ½·[BCE(d(f_s), 1) + BCE(d(f_t), 0)]``, each term a (weighted) mean over its domain, with
    the features passed through a gradient-reversal layer. Minimising γ·D trains the
    discriminator; the reversed gradient pushes the feature extractor to make domains
    indistinguishable. At the optimum of a perfectly confused discriminator D = log 2.

    The discriminator has ``num_hidden=2`` hidden layers of ``hidden_dim`` (Linear, BatchNorm,
    ReLU), 128 wide by default so that it costs under 10% of a LeNet step; the
    Transfer-Learning-Library uses 1024 (``hidden_dim: 1024``, pinned by the paper configs).
    """

    adversarial = True

    def __init__(
        self,
        in_features: int,
        hidden_dim: int = DEFAULT_HIDDEN_DIM,
        num_hidden: int = 2,
        grl_coeff: float = 1.0,
    ) -> None:
        super().__init__()
        self.grl = GradientReversal(grl_coeff)
        self.discriminator = DomainDiscriminator(in_features, hidden_dim, num_hidden)

    def forward(self, f_s, f_t, *, logits_s=None, logits_t=None, y_s=None, w_s=None, w_t=None):
        check_features(f_s, f_t)
        n_s = f_s.shape[0]
        d = self.discriminator(self.grl(torch.cat([f_s, f_t]))).squeeze(1)
        d_s, d_t = d[:n_s], d[n_s:]
        loss_s = F.binary_cross_entropy_with_logits(d_s, torch.ones_like(d_s), reduction="none")
        loss_t = F.binary_cross_entropy_with_logits(d_t, torch.zeros_like(d_t), reduction="none")
        a = normalised_weights(w_s, n_s, d)
        b = normalised_weights(w_t, f_t.shape[0], d)
        return 0.5 * (a @ loss_s + b @ loss_t)
