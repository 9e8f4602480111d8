"""Knowledge distillation (Hinton, Vinyals and Dean, 2015): a student learns the teacher's
temperature-softened predictions besides the hard labels."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dalib.errors import DalibError


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


class Teacher:
    """A trained dalib model (``.ckpt``), frozen and in eval mode, kept outside the student.

    Not an ``nn.Module`` attribute of the student on purpose: its weights are not trained, not
    in the student's optimiser and not in its checkpoints. It follows the input's device.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model.eval().requires_grad_(False)

    @classmethod
    def load(cls, checkpoint: str, num_classes: int) -> Teacher:
        from dalib.module import DomainAdaptationModule  # the teacher is a module like the student

        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise DalibError(f"teacher checkpoint {str(path)!r} does not exist; give a dalib .ckpt")
        model = DomainAdaptationModule.load_from_checkpoint(
            path, map_location="cpu", init_from=None, distillation=None
        )
        if model.hparams.num_classes != num_classes:
            raise DalibError(
                f"the teacher in {str(path)!r} predicts {model.hparams.num_classes} classes, "
                f"the student {num_classes}; distil between models of the same classes"
            )
        return cls(model)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        """The teacher's logits for ``x`` from ``domain`` (an unshared teacher picks its net)."""
        self.model.to(x.device)
        return self.model.head(self.model.features(x, domain))


DOMAINS = ("source", "target")


class Distillation:
    """The distillation term of the objective: ``distillation_loss`` on the batches of
    ``domains``, averaged. ``domains: [target]`` distils across domains: a teacher trained on
    the source labels the target batch, while the student is adapted there (with any ``D``)."""

    def __init__(
        self,
        teacher: str,
        num_classes: int,
        temperature: float = 4.0,
        weight: float = 1.0,
        domains: tuple[str, ...] | list[str] = ("source",),
    ) -> None:
        if not temperature > 0 or not weight >= 0:
            raise DalibError(
                f"distillation needs temperature > 0 and weight >= 0, got {temperature}, {weight}"
            )
        if not domains or any(d not in DOMAINS for d in domains):
            raise DalibError(f"distillation domains must be among {DOMAINS}, got {list(domains)}")
        self.teacher = Teacher.load(teacher, num_classes)
        self.temperature = temperature
        self.weight = weight
        self.domains = tuple(domains)

    @classmethod
    def from_spec(cls, spec: dict, num_classes: int) -> Distillation:
        """From the config's ``distillation: {teacher: ..., temperature: ..., ...}``."""
        known = {"teacher", "temperature", "weight", "domains"}
        unknown = sorted(set(spec) - known)
        if unknown or "teacher" not in spec:
            raise DalibError(
                f"distillation takes teacher (a .ckpt path, required), temperature, weight, "
                f"domains; got {sorted(spec)}"
            )
        return cls(num_classes=num_classes, **spec)

    def __call__(
        self, logits: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """The mean over ``domains`` of the student's distillation loss against the teacher."""
        losses = [
            distillation_loss(logits[d], self.teacher(inputs[d], d), self.temperature)
            for d in self.domains
        ]
        return torch.stack(losses).mean()
