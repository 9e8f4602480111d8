"""Knowledge distillation: the term is Hinton's, and a distilled student follows its teacher."""

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from dalib import DomainAdaptationModule, DomainDataModule
from dalib.errors import DalibError
from dalib.transfer import distillation_loss
from tests.conftest import quiet_fit

BLOBS = {"name": "blobs", "shift": 1.0, "scale": 1.0}


def train(module, steps: int, dataset=BLOBS) -> pl.Trainer:
    data = DomainDataModule(dataset=dataset, iterations_per_epoch=steps)
    return quiet_fit(module, data, max_steps=steps)


@pytest.fixture(scope="module")
def teacher_checkpoint(tmp_path_factory):
    """A wide MLP trained on the overlapping blobs, saved as a dalib checkpoint."""
    torch.manual_seed(0)
    teacher = DomainAdaptationModule(
        num_classes=3, input_shape=(2,), backbone={"name": "mlp", "hidden_dims": [128, 128]}
    )
    trainer = train(teacher, 300)
    path = tmp_path_factory.mktemp("teacher") / "teacher.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_distillation_loss_is_temperature_squared_kl():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    p = F.softmax(teacher / 3.0, dim=1)
    q = F.softmax(student / 3.0, dim=1)
    expected = 9.0 * (p * (p.log() - q.log())).sum(dim=1).mean()
    torch.testing.assert_close(distillation_loss(student, teacher, 3.0), expected)
    assert distillation_loss(teacher, teacher, 3.0).abs() < 1e-6


def student(**options) -> DomainAdaptationModule:
    torch.manual_seed(1)
    return DomainAdaptationModule(
        num_classes=3, input_shape=(2,), backbone={"name": "mlp", "hidden_dims": [8]}, **options
    )


@pytest.mark.slow
def test_distilled_student_matches_its_teacher_far_better(teacher_checkpoint):
    teacher = DomainAdaptationModule.load_from_checkpoint(teacher_checkpoint).eval()
    data = DomainDataModule(dataset=BLOBS)
    x = torch.stack([x for x, _ in data.splits["source_train"]])
    with torch.no_grad():
        p_teacher = teacher(x).softmax(dim=1)

    def distance_to_teacher(module) -> float:
        """Mean total-variation distance between the two predictive distributions."""
        with torch.no_grad():
            p = module.eval()(x).softmax(dim=1)
        return float(0.5 * (p - p_teacher).abs().sum(dim=1).mean())

    plain = student()
    train(plain, 300)
    spec = {"teacher": str(teacher_checkpoint), "temperature": 4.0, "weight": 1.0}
    distilled = student(distillation=spec)
    train(distilled, 300)
    plain_gap, distilled_gap = distance_to_teacher(plain), distance_to_teacher(distilled)
    assert distilled_gap < 0.5 * plain_gap, (distilled_gap, plain_gap)


def test_cross_domain_distillation_term_on_both_batches(teacher_checkpoint):
    spec = {"teacher": str(teacher_checkpoint), "temperature": 2.0, "domains": ["source", "target"]}
    module = student(distillation=spec, discrepancy="dann").eval()
    module.start()
    teacher = DomainAdaptationModule.load_from_checkpoint(teacher_checkpoint).eval()
    g = torch.Generator().manual_seed(0)
    x_s, x_t = torch.randn(8, 2, generator=g), torch.randn(8, 2, generator=g) + 1
    batch = {"source": (x_s, torch.zeros(8).long()), "target": (x_t, torch.zeros(8).long())}
    terms = module.compute_losses(batch, progress=0.5)
    with torch.no_grad():
        expected = 0.5 * sum(distillation_loss(module(x), teacher(x), 2.0) for x in (x_s, x_t))
    torch.testing.assert_close(terms["distillation"].detach(), expected)
    teacher_parameters = module.objective.distillation.teacher.parameters()
    assert not any(p.requires_grad for p in teacher_parameters)
    groups = module.optimization.parameter_groups(module.network, module.objective)
    trained = {id(p) for group in groups for p in group["params"]}
    assert not trained & {id(p) for p in module.objective.distillation.teacher.parameters()}
    assert any(k.startswith("objective.distillation.teacher.") for k in module.state_dict())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"teacher": "missing.ckpt"}, "does not exist"),
        ({"teacher": "x", "temp": 2}, "distillation takes teacher"),
        ({"teacher": "x", "domains": ["both"]}, "domains must be among"),
    ],
)
def test_bad_distillation_options_are_clear_errors(spec, message):
    with pytest.raises(DalibError, match=message):
        student(distillation=spec).start()  # the teacher's file is read as a fit starts


def test_teacher_with_other_classes_is_refused(teacher_checkpoint):
    module = DomainAdaptationModule(
        num_classes=2, input_shape=(2,), distillation={"teacher": str(teacher_checkpoint)}
    )
    with pytest.raises(DalibError, match="predicts 3 classes, the student 2"):
        module.start()
