"""Knowledge distillation (Hinton, Vinyals and Dean, 2015): a student learns the teacher's
temperature-softened predictions besides the hard labels."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dalib.errors import DalibError
from dalib.network import Network


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``T²·KL(softmax(z_t/T) ‖ softmax(z_s/T))``, averaged over the batch.

    The ``T²`` keeps the gradient's scale independent of ``T``, so the term can be weighed
    against the hard-label cross-entropy (Hinton et al., section 2).
    """
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
    return temperature**2 * kl


DOMAINS = ("source", "target")


class Distillation(nn.Module):
    """The distillation term of the objective: ``distillation_loss`` on the batches of
    ``domains``, averaged. ``domains: [target]`` distils across domains: a teacher trained on
    the source labels the target batch, while the student is adapted there (with any ``D``).

    The teacher (``teacher``: a dalib ``.ckpt``) is a frozen submodule in eval mode: its weights
    are not trained, not in the optimiser, but are in the student's checkpoints, so that a
    student restores without the teacher's file. The file is read by ``load_teacher`` when
    training starts from scratch, never at construction (a model about to be restored from a
    checkpoint must not need it); ``build_teacher`` makes the empty teacher a checkpoint fills.
    """

    def __init__(
        self,
        teacher: str,
        num_classes: int,
        temperature: float = 4.0,
        weight: float = 1.0,
        domains: tuple[str, ...] | list[str] = ("source",),
    ) -> None:
        super().__init__()
        if not temperature > 0 or not weight >= 0:
            raise DalibError(
                f"distillation needs temperature > 0 and weight >= 0, got {temperature}, {weight}"
            )
        if not domains or any(d not in DOMAINS for d in domains):
            raise DalibError(f"distillation domains must be among {DOMAINS}, got {list(domains)}")
        self.path = teacher
        self.num_classes = num_classes
        self.temperature = temperature
        self.weight = weight
        self.domains = tuple(domains)
        self.teacher: Network | None = None

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], num_classes: int) -> Distillation:
        """From the config's ``distillation: {teacher: ..., temperature: ..., ...}``."""
        known = {"teacher", "temperature", "weight", "domains"}
        unknown = sorted(set(spec) - known)
        if unknown or "teacher" not in spec:
            raise DalibError(
                f"distillation takes teacher (a .ckpt path, required), temperature, weight, "
                f"domains; got {sorted(spec)}"
            )
        return cls(num_classes=num_classes, **spec)

    def load_teacher(self, device: torch.device | str = "cpu") -> None:
        """Read the teacher's network from its checkpoint file."""
        with torch.random.fork_rng(devices=[]):  # building it leaves the training's draws be
            teacher = Network.from_checkpoint(self.path, "teacher")
        if teacher.num_classes != self.num_classes:
            raise DalibError(
                f"the teacher in {self.path!r} predicts {teacher.num_classes} classes, "
                f"the student {self.num_classes}; distil between models of the same classes"
            )
        self.set_teacher(teacher.to(device))

    def build_teacher(self, config: Mapping[str, Any]) -> None:
        """An untrained teacher of ``config``'s architecture, for a checkpoint's weights."""
        with torch.random.fork_rng(devices=[]):
            self.set_teacher(Network.for_weights(config))

    def set_teacher(self, teacher: Network) -> None:
        self.teacher = teacher.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> Distillation:
        """The teacher stays in eval mode (its BatchNorm statistics, no dropout)."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def forward(
        self, logits: Mapping[str, torch.Tensor], inputs: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """The mean over ``domains`` of the student's distillation loss against the teacher."""
        if self.teacher is None:
            raise DalibError("the distillation teacher is not loaded: call load_teacher() first")
        with torch.no_grad():
            teacher_logits = {d: self.teacher.head(self.teacher.features(inputs[d], d))
                              for d in self.domains}  # fmt: skip
        losses = [
            distillation_loss(logits[d], teacher_logits[d], self.temperature) for d in self.domains
        ]
        return torch.stack(losses).mean()
