"""Target losses L_t, selected by name: what the target domain contributes besides D.

Most see only the target logits and labels (``TargetLoss``); a ``TeacherTargetLoss`` (the
``mean_teacher``) also reads the target inputs and holds a model of its own, which the
objective keeps in its ``state_dict`` and updates through its hooks; a ``TwoViewTargetLoss``
(``fixmatch``) sees the logits of two augmented views of each target sample.

Target training labels reach the module only for the few samples a semi-supervised split keeps;
every other target label is replaced by ``UNLABELLED`` in the data module, so no loss here can
see a label it should not.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from dalib.errors import DalibError
from dalib.network import Network
from dalib.registry import Registry

UNLABELLED = -1

TARGET_LOSSES: Registry[TargetLoss | TeacherTargetLoss | TwoViewTargetLoss] = Registry(
    "target loss", "dalib.target_losses"
)


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
        return confident_cross_entropy(logits_t, logits_t, self.threshold, self.per_class)


def confident_cross_entropy(
    pseudo_logits: torch.Tensor, logits: torch.Tensor, threshold: float, per_class: int | None
) -> torch.Tensor:
    """``(1/B)·Σ_i m_i·CE(argmax_c q_ic, logits_i)`` with ``q = softmax(pseudo_logits)`` a
    constant (detached) and ``m = confident_mask(q, threshold, per_class)``: the masked sum is
    divided by the whole batch ``B``, so unconfident rows count as zeros."""
    probs = F.softmax(pseudo_logits.detach(), dim=1)
    keep = confident_mask(probs, threshold, per_class)
    ce = F.cross_entropy(logits, probs.argmax(dim=1), reduction="none")
    return (ce * keep).sum() / logits.shape[0]


class TwoViewTargetLoss:
    """``L_t(logits_weak, logits_strong) -> scalar``: a target loss on two augmented views of
    each target sample, which the data module delivers with ``data.target_views``
    (``dalib.data.views``). The objective runs both views through the network with the source
    in one batch and passes their logits; target labels are not passed at all."""

    def __call__(self, logits_weak: torch.Tensor, logits_strong: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@TARGET_LOSSES.register("fixmatch")
class FixMatch(TwoViewTargetLoss):
    """FixMatch (Sohn et al., NeurIPS 2020, section 2.2): confident pseudo-labels from a weakly
    augmented view, trained on a strongly augmented view of the same target sample.

    ``L_t = (1/B)·Σ_i 1[max_c q_ic ≥ τ]·CE(argmax_c q_i, f(A(x_i)))`` with
    ``q = softmax(f(α(x_i)))`` on the weak view α (a constant: no gradient flows through the
    pseudo-label or the mask) and ``A`` the strong view (``data.target_views``,
    ``dalib.data.views``: RandAugment and Cutout). The masked sum is divided by the whole
    target batch ``B``, confident or not, as the reference code's
    ``tf.reduce_mean(loss_xeu * pseudo_mask)`` (google-research/fixmatch, fixmatch.py:113-118,
    ``>=`` at line 116). ``ConfidentPseudoLabels`` is the same loss with one view for both.

    ``D`` and the other terms see the weak view, and BatchNorm sees the source, weak and strong
    batches together, as the reference's single forward pass of labelled, weak and strong
    images (fixmatch.py:99-104). Its weight is ``lambda_t`` (the paper's λ_u = 1, fixmatch.py:167).

    Args:
        threshold: the confidence τ in [0, 1] the weak view's top probability must reach;
            0.95 is the paper's (section 4.1) and the reference's ``--confidence``
            (fixmatch.py:165).
    """

    def __init__(self, threshold: float = 0.95) -> None:
        check_confident_options(threshold, None)
        self.threshold = float(threshold)

    def __call__(self, logits_weak: torch.Tensor, logits_strong: torch.Tensor) -> torch.Tensor:
        return confident_cross_entropy(logits_weak, logits_strong, self.threshold, None)


class TeacherTargetLoss(nn.Module):
    """``L_t(logits_t, y_t, x_t, network) -> scalar``: a target loss that reads the target inputs
    and the student ``network``, and holds a teacher model of its own (a submodule: it is in the
    objective's ``state_dict``, so checkpoints hold it and resume restores it).

    Hooks, which ``Objective.start`` and ``Objective.before_batch`` call: ``start(network)`` as a
    run starts from scratch, ``before_batch(network, step)`` before each training batch with the
    number of optimiser steps taken so far (``trainer.global_step``).
    """

    def start(self, network: Network) -> None:
        """Take what a run from scratch starts with from ``network`` (its weights now)."""

    def before_batch(self, network: Network, step: int) -> None:
        """Catch up with ``network`` after ``step`` optimiser steps."""

    def forward(
        self, logits_t: torch.Tensor, y_t: torch.Tensor, x_t: torch.Tensor, network: Network
    ) -> torch.Tensor:
        raise NotImplementedError


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, alpha: float) -> None:
    """``θ' ← α·θ' + (1 − α)·θ`` for every floating-point entry of the state dicts (parameters
    and BatchNorm running statistics, as French et al.'s ``EMAWeightOptimizer.step`` averages the
    whole state dict, self-ensemble-visual-domain-adapt/optim_weight_ema.py:25-44); integer
    entries (BatchNorm's batch counter) are copied."""
    student_state = student.state_dict()
    for key, value in teacher.state_dict().items():
        if value.is_floating_point():
            value.mul_(alpha).add_(student_state[key], alpha=1 - alpha)
        else:
            value.copy_(student_state[key])


def masked_consistency(
    student_logits: torch.Tensor, teacher_probs: torch.Tensor, threshold: float
) -> torch.Tensor:
    """Self-ensembling's consistency (French, Mackiewicz and Fisher, ICLR 2018, section 3):
    ``(1/B)·Σ_i m_i·(1/C)·Σ_c (p_ic − q_ic)²`` with ``p = softmax(student_logits)``, ``q`` the
    teacher's probabilities (a constant) and the confidence mask ``m_i = [max_c q_ic > τ]``.
    Squared difference averaged over classes, masked, then averaged over the whole batch, as
    the reference code's ``compute_aug_loss`` does (self-ensemble-visual-domain-adapt,
    experiment_domainadapt_meanteacher.py, ``--loss var``); ``τ = 0`` keeps every sample
    (``max_c q_ic ≥ 1/C > 0``), Mean Teacher's unmasked consistency."""
    p = F.softmax(student_logits, dim=1)
    q = teacher_probs.detach()
    mask = (q.max(dim=1).values > threshold).to(p.dtype)
    return (((p - q) ** 2).mean(dim=1) * mask).mean()


@TARGET_LOSSES.register("mean_teacher")
class MeanTeacher(TeacherTargetLoss):
    """Mean Teacher / self-ensembling: consistency with an EMA teacher's target predictions.

    Mean Teacher (Tarvainen and Valpola, NeurIPS 2017), for domain adaptation as self-ensembling
    (French, Mackiewicz and Fisher, ICLR 2018): the student's target predictions are pulled
    toward those of a teacher whose weights are an exponential moving average of the student's,
    by ``masked_consistency`` (squared difference of the softmax outputs, on the target samples
    the teacher is confident about). Its weight is ``lambda_t`` (``--unsup_weight`` 3 in French
    et al.'s code); their class-balance term is not included.

    - The teacher is a copy of the network, built with it (so a checkpoint's weights fill it),
      set to the student's weights by ``start`` (after ``init_from``), then
      ``θ' ← α·θ' + (1 − α)·θ`` (``ema_update``) once per optimiser step. The update of step
      ``k`` is applied by ``before_batch`` as batch ``k + 1`` starts: a checkpoint written after
      step ``k`` holds the student ``θ_k``, the teacher before it and ``step`` (the last step the
      teacher took in), so a resumed run makes the same update; with gradient accumulation, a
      batch that did not step the optimiser does not update the teacher.
    - Its gradients are off and it stays in eval mode (BatchNorm uses its averaged running
      statistics, no dropout): its predictions are constants of the loss. French et al.'s code
      runs the teacher in train mode on a differently augmented view; dalib's data modules
      deliver one view, so here the student (train mode: dropout, batch statistics) and the
      teacher differ by that mode and by the averaging, not by augmentation.

    Args:
        network: the student, which the teacher copies (dalib passes it).
        alpha: the EMA decay α in [0, 1); 0.99 is ``--teacher_alpha`` of French et al.'s code
            (experiment_domainadapt_meanteacher.py).
        threshold: the confidence τ in [0, 1) the teacher's top probability must exceed;
            0.968 is that code's ``--confidence_thresh`` 0.96837722 (French et al., section
            3.2, confidence thresholding); 0 is Mean Teacher's unmasked consistency.
    """

    def __init__(self, network: Network, alpha: float = 0.99, threshold: float = 0.968) -> None:
        super().__init__()
        if not 0 <= alpha < 1:
            raise DalibError(f"mean_teacher alpha must be in [0, 1), got {alpha}")
        if not 0 <= threshold < 1:
            raise DalibError(f"mean_teacher threshold must be in [0, 1), got {threshold}")
        self.alpha = float(alpha)
        self.threshold = float(threshold)
        self.teacher = copy.deepcopy(network).requires_grad_(False).eval()
        #: the optimiser step whose student weights the teacher last took in
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True) -> MeanTeacher:
        """The teacher stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def start(self, network: Network) -> None:
        """The teacher starts as the student: ``θ'_0 = θ_0`` (``ema_update`` with α = 0)."""
        ema_update(self.teacher, network, 0.0)
        self.step.zero_()

    def before_batch(self, network: Network, step: int) -> None:
        """One EMA update when the optimiser has stepped since the teacher's last one."""
        if step > int(self.step):
            ema_update(self.teacher, network, self.alpha)
            self.step.fill_(step)

    def forward(
        self, logits_t: torch.Tensor, y_t: torch.Tensor, x_t: torch.Tensor, network: Network
    ) -> torch.Tensor:
        with torch.no_grad():
            teacher_probs = F.softmax(self.teacher.head(self.teacher.features(x_t, "target")), 1)
        return masked_consistency(logits_t, teacher_probs, self.threshold)
