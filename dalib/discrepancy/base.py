"""The one interface every discrepancy measure implements."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from dalib.errors import DalibError, check_instance_weights


class Discrepancy(nn.Module):
    """``D(f_s, f_t, *, logits_s, logits_t, y_s, w_s, w_t) -> scalar tensor``.

    The module calls every measure the same way and never branches on which one it is.
    Adversarial measures own their discriminator and gradient-reversal layer, so their
    parameters are trained by the same optimiser step as the rest of the model.

    Class attributes describe a measure to the shared property tests and to users:

    - ``needs_logits``: it uses ``logits_s`` and ``logits_t`` (and raises if they are missing);
    - ``supports_weights``: it takes instance weights ``w_s``, ``w_t``; a measure that cannot
      refuses them with a clear error instead of ignoring them;
    - ``adversarial``: its value is a learned critic's loss, not a fixed statistic of the two
      samples, so it need not grow with the shift before the critic is trained.
    """

    needs_logits: ClassVar[bool] = False
    supports_weights: ClassVar[bool] = True
    adversarial: ClassVar[bool] = False

    def name(self) -> str:
        return type(self).__name__

    def require_logits(
        self, logits_s: torch.Tensor | None, logits_t: torch.Tensor | None, n_s: int, n_t: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both logit batches, checked against the feature batch sizes."""
        if logits_s is None or logits_t is None:
            raise DalibError(
                f"{self.name()} needs the classifier outputs: pass logits_s and logits_t"
            )
        if (
            logits_s.dim() != 2
            or logits_s.shape[0] != n_s
            or logits_t.shape
            != (
                n_t,
                logits_s.shape[1],
            )
        ):
            raise DalibError(
                f"{self.name()}: logits must be ({n_s}, C) and ({n_t}, C) to match the features, "
                f"got {tuple(logits_s.shape)} and {tuple(logits_t.shape)}"
            )
        return logits_s, logits_t

    def refuse_weights(self, w_s: torch.Tensor | None, w_t: torch.Tensor | None) -> None:
        """For measures whose estimator has no weighted form."""
        if w_s is not None or w_t is not None:
            raise DalibError(
                f"{self.name()} does not take instance weights; use a measure that does "
                "(for example mmd with the biased estimator) or drop the weights"
            )

    def forward(
        self,
        f_s: torch.Tensor,
        f_t: torch.Tensor,
        *,
        logits_s: torch.Tensor | None = None,
        logits_t: torch.Tensor | None = None,
        y_s: torch.Tensor | None = None,
        w_s: torch.Tensor | None = None,
        w_t: torch.Tensor | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError


def check_features(f_s: torch.Tensor, f_t: torch.Tensor) -> None:
    """Source and target features must be non-empty (n, d) batches of the same width d."""
    if f_s.dim() != 2 or f_t.dim() != 2:
        raise DalibError(
            f"a discrepancy takes (batch, features) tensors, got source {tuple(f_s.shape)} "
            f"and target {tuple(f_t.shape)}; flatten the features first"
        )
    if f_s.shape[1] != f_t.shape[1]:
        raise DalibError(
            f"source features have {f_s.shape[1]} dimensions but target features have "
            f"{f_t.shape[1]}; both domains must go through the same feature extractor"
        )
    if f_s.shape[0] == 0 or f_t.shape[0] == 0:
        raise DalibError("a discrepancy needs at least one source and one target sample")


def normalised_weights(w: torch.Tensor | None, n: int, like: torch.Tensor) -> torch.Tensor:
    """Instance weights scaled to sum to one; ``None`` gives uniform weights ``1/n``."""
    if w is None:
        return torch.full((n,), 1.0 / n, dtype=like.dtype, device=like.device)
    check_instance_weights("instance weights", w, n)
    w = w.to(dtype=like.dtype)
    return w / w.sum()


def pairwise_sq_dists(x: torch.Tensor) -> torch.Tensor:
    """The (n, n) matrix of squared Euclidean distances, in O(n²) memory (no (n, n, d) tensor).

    Expanded as ‖a‖² + ‖b‖² - 2a·b, clamped at zero against round-off; unlike a square root of
    ``cdist`` it has a finite gradient on the diagonal.
    """
    sq_norms = x.pow(2).sum(dim=1)
    return (sq_norms[:, None] + sq_norms[None, :] - 2.0 * x @ x.T).clamp_min(0.0)


def cross_sq_dists(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The (n_x, n_y) matrix of squared Euclidean distances ``‖x_i − y_j‖²``, clamped at zero.

    The same expansion as POT's ``ot.dist`` (−2x·y + ‖x‖² + ‖y‖²), with the row norms taken by
    ``pow(2).sum`` instead of its ``einsum``, which torch runs as a batched matmul several
    times slower than this whole function on small CPU batches.
    """
    return (
        -2.0 * (x @ y.T) + x.pow(2).sum(dim=1)[:, None] + y.pow(2).sum(dim=1)[None, :]
    ).clamp_min(0.0)
