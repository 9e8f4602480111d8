"""Target losses L_t, selected by name: what the target domain contributes besides D.

Target training labels reach the module only for the few samples a semi-supervised split keeps;
every other target label is replaced by ``UNLABELLED`` in the data module, so no loss here can
see a label it should not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dalib.errors import DalibError
from dalib.registry import Registry

UNLABELLED = -1

TARGET_LOSSES: Registry[TargetLoss] = Registry("target loss", "dalib.target_losses")


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


@TARGET_LOSSES.register("mcc")
class MinimumClassConfusion(TargetLoss):
    """Minimum Class Confusion (Jin et al., ECCV 2020): penalise target between-class confusion.

    With temperature-scaled predictions ``P = softmax(logits_t / T)`` (B × C) and uncertainty
    weights ``W_ii = B·(1 + exp(-H(p_i))) / Σ_k (1 + exp(-H(p_k)))`` (confident samples count
    more), the class correlation is ``C = Pᵀ W P``; each row is divided by its sum and the loss
    is the mean over classes of the off-diagonal row mass, ``Σ_j Σ_{j'≠j} C̃_jj' / C``. It is in
    [0, (C-1)/C]; zero when every prediction is one-hot. ``temperature`` 2.5 is the paper's.

    The weights ``W`` are constants of the gradient (computed from detached predictions), as
    in the paper's code (thuml/Versatile-Domain-Adaptation ``pytorch/train_image_office.py``
    line 173, ``loss.Entropy(target_softmax_out_temp).detach()``), the
    Transfer-Learning-Library (``tllib/self_training/mcc.py`` line 68) and pytorch-adapt's
    ``MCCLoss`` (skada 0.6's ``mcc_loss`` does not detach them). The entropy itself is exact
    (the references add 1e-5 inside the log, which moves ``W`` by about 1e-5).
    """

    def __init__(self, temperature: float = 2.5) -> None:
        if not temperature > 0:
            raise DalibError(f"mcc temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def __call__(self, logits_t: torch.Tensor, y_t: torch.Tensor) -> torch.Tensor:
        batch, num_classes = logits_t.shape
        log_p = F.log_softmax(logits_t / self.temperature, dim=1)
        p = log_p.exp()
        entropy = -(p.detach() * log_p.detach()).sum(dim=1)
        certainty = 1 + torch.exp(-entropy)
        weights = batch * certainty / certainty.sum()
        confusion = (p * weights.unsqueeze(1)).t() @ p
        confusion = confusion / confusion.sum(dim=1, keepdim=True)
        return (confusion.sum() - confusion.trace()) / num_classes


def confident_mask(probs_t: torch.Tensor, threshold: float, per_class: int | None) -> torch.Tensor:
    """Boolean mask of the rows whose top probability is at least ``threshold``; with
    ``per_class``, only the most confident ``per_class`` of each predicted class (ties: first
    row first). Vectorised, so it runs on the probabilities' device without a sync."""
    confidence, labels = probs_t.max(dim=1)
    keep = confidence >= threshold
    if per_class is None:
        return keep
    order = torch.argsort(-confidence, stable=True)
    one_hot = F.one_hot(labels[order], probs_t.shape[1]) * keep[order, None]
    rank = torch.empty_like(labels)
    rank[order] = one_hot.cumsum(dim=0).gather(1, labels[order, None]).squeeze(1)
    return keep & (rank <= per_class)


def check_confident_options(threshold: float, per_class: int | None) -> None:
    if not 0 <= threshold <= 1:
        raise DalibError(f"threshold must be in [0, 1], got {threshold}")
    if per_class is not None and per_class < 1:
        raise DalibError(f"per_class must be None or >= 1, got {per_class}")


@TARGET_LOSSES.register("pseudo_label")
class ConfidentPseudoLabels(TargetLoss):
    """Cross-entropy of each confident target prediction toward its own class (self-training
    with pseudo-labels, Lee, ICML-W 2013), the selection of ``weighting.select_confident``.

    A target sample counts when its top softmax probability is at least ``threshold``; with
    ``per_class``, only the ``per_class`` most confident of each predicted class in the batch
    (class balance: one easy class cannot fill the loss). The pseudo-labels and the selection
    are constants (no gradient through them). The sum over selected samples is divided by the
    batch size, as in FixMatch: a batch with few confident samples contributes little, and
    one with none gives zero. Target labels are never read.
    """

    def __init__(self, threshold: float = 0.9, per_class: int | None = None) -> None:
        check_confident_options(threshold, per_class)
        self.threshold = float(threshold)
        self.per_class = per_class

    def __call__(self, logits_t: torch.Tensor, y_t: torch.Tensor) -> torch.Tensor:
        probs = F.softmax(logits_t.detach(), dim=1)
        keep = confident_mask(probs, self.threshold, self.per_class)
        ce = F.cross_entropy(logits_t, probs.argmax(dim=1), reduction="none")
        return (ce * keep).sum() / logits_t.shape[0]
