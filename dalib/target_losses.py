"""Target losses L_t, selected by name: what the target domain contributes besides D.

Target training labels reach the module only for the few samples a semi-supervised split keeps;
every other target label is replaced by ``UNLABELLED`` in the data module, so no loss here can
see a label it should not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dalib.registry import Registry

UNLABELLED = -1

TARGET_LOSSES: Registry[TargetLoss] = Registry("target loss")


class TargetLoss:
    """``L_t(logits_t, y_t) -> scalar``; ``y_t`` holds ``UNLABELLED`` where no label is known."""

    def __call__(self, logits_t: torch.Tensor, y_t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@TARGET_LOSSES.register("ce")
class LabelledCrossEntropy(TargetLoss):
    """Cross-entropy on the labelled target samples of the batch (semi-supervised DA).

    Averaged over the labelled samples only; a batch without any gives zero.
    """

    def __call__(self, logits_t: torch.Tensor, y_t: torch.Tensor) -> torch.Tensor:
        labelled = y_t != UNLABELLED
        if not labelled.any():
            return logits_t.sum() * 0.0
        return F.cross_entropy(logits_t[labelled], y_t[labelled])


@TARGET_LOSSES.register("entropy")
class EntropyMinimisation(TargetLoss):
    """Mean Shannon entropy of the target predictions (Grandvalet & Bengio, NeurIPS 2004)."""

    def __call__(self, logits_t: torch.Tensor, y_t: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits_t, dim=1)
        return -(log_p.exp() * log_p).sum(dim=1).mean()
