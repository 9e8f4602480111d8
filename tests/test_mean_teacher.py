"""The ``mean_teacher`` target loss: its EMA update, its consistency, its frozen teacher, and a
killed run that resumes with the teacher of the uninterrupted one."""

import math

import pytest
import torch
from torch import nn

from dalib.network import Network
from dalib.objective import Objective
from dalib.target_losses import MeanTeacher, ema_update, masked_consistency
from tests.test_resume import fit, kill_when, record

ALPHA = 0.9


def network() -> Network:
    torch.manual_seed(0)
    return Network(3, (4,), {"name": "mlp", "hidden_dims": [8]}, bottleneck_dim=6)


def objective(net: Network, threshold: float = 0.0) -> Objective:
    spec = {"name": "mean_teacher", "alpha": ALPHA, "threshold": threshold}
    return Objective(net, target_loss=spec)


def batch() -> dict:
    torch.manual_seed(1)
    return {
        "source": (torch.randn(5, 4), torch.randint(0, 3, (5,))),
        "target": (torch.randn(7, 4), torch.full((7,), -1)),
    }


def sgd_step(net: Network, obj: Objective) -> None:
    optimiser = torch.optim.SGD(net.parameters(), lr=0.5)
    obj(net, batch(), 0.5)["loss"].backward()
    optimiser.step()
    optimiser.zero_grad()


def clone(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_ema_update_averages_parameters_and_batchnorm_statistics():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    student(torch.randn(10, 3))  # moves the student's running statistics and batch counter
    before, now = clone(teacher), clone(student)
    ema_update(teacher, student, 0.75)
    after = teacher.state_dict()
    for key in ("0.weight", "0.bias", "1.weight", "1.running_mean", "1.running_var"):
        pairs = zip(before[key].flatten().tolist(), now[key].flatten().tolist(), strict=True)
        expected = [0.75 * a + 0.25 * b for a, b in pairs]
        assert after[key].flatten().tolist() == pytest.approx(expected, rel=1e-6, abs=1e-7), key
    assert int(after["1.num_batches_tracked"]) == 1


def test_the_teacher_starts_as_the_student_and_takes_one_update_per_optimiser_step():
    net = network()
    obj = objective(net)
    sgd_step(net, obj)  # the weights a run starts from (init_from) after the teacher was built
    obj.start(net)
    teacher = obj.target_loss.teacher
    theta = [clone(net)]
    for step in (1, 2):
        sgd_step(net, obj)
        theta.append(clone(net))
        obj.before_batch(net, step)
        obj.before_batch(net, step)  # a batch that did not step the optimiser: no update
    # θ'_2 = α²·θ_0 + α(1−α)·θ_1 + (1−α)·θ_2
    weights = [ALPHA**2, ALPHA * (1 - ALPHA), 1 - ALPHA]
    for key, value in teacher.state_dict().items():
        if value.is_floating_point():
            expected = sum(w * t[key] for w, t in zip(weights, theta, strict=True))
            torch.testing.assert_close(value, expected, msg=key)
    assert int(obj.target_loss.step) == 2
    assert not torch.equal(theta[0]["head.weight"], theta[2]["head.weight"])


def test_the_consistency_is_the_masked_mean_squared_softmax_difference():
    student = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, -1.0]])
    teacher = torch.tensor([[0.95, 0.03, 0.02], [0.2, 0.5, 0.3]])

    def softmax(row):
        exps = [math.exp(v) for v in row]
        return [e / sum(exps) for e in exps]

    squared = [sum((p - q) ** 2 for p, q in zip(softmax(s), t, strict=True)) / 3
               for s, t in zip(student.tolist(), teacher.tolist(), strict=True)]  # fmt: skip
    # τ = 0.9: only the first sample's teacher is confident; the mean is over both samples
    assert masked_consistency(student, teacher, 0.9).item() == pytest.approx(squared[0] / 2)
    assert masked_consistency(student, teacher, 0.0).item() == pytest.approx(sum(squared) / 2)
    # strictly above τ, as the reference code's torch.gt
    assert masked_consistency(student, teacher, 0.95).item() == 0.0


def test_the_teacher_gets_no_gradient_and_is_not_trained():
    net = network()
    obj = objective(net)
    terms = obj(net, batch(), 0.5)
    assert terms["target_loss"] > 0  # student (train mode) and teacher (eval mode) differ
    terms["target_loss"].backward()
    teacher = obj.target_loss.teacher
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert net.head.weight.grad is not None and net.head.weight.grad.abs().sum() > 0
    assert not any("teacher" in name for name, _ in obj.named_trainable_parameters())
    assert not teacher.training
    obj.train()
    assert not teacher.training


def test_the_teacher_is_in_the_objectives_state_dict():
    net = network()
    obj = objective(net)
    sgd_step(net, obj)
    obj.before_batch(net, 1)
    state = obj.state_dict()
    assert "target_loss.teacher.head.weight" in state and "target_loss.step" in state
    restored = objective(network())
    restored.load_state_dict(state)
    torch.testing.assert_close(
        restored.target_loss.teacher.head.weight, obj.target_loss.teacher.head.weight
    )
    for (key, a), b in zip(obj.state_dict().items(), restored.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=key)
    assert int(restored.target_loss.step) == 1


def test_options_are_checked():
    for options in ({"alpha": 1.0}, {"alpha": -0.1}, {"threshold": 1.0}):
        with pytest.raises(Exception, match="mean_teacher"):
            MeanTeacher(network(), **options)


@pytest.mark.slow
def test_a_killed_run_resumes_with_the_uninterrupted_runs_teacher(tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    whole.mkdir(), cut.mkdir()
    every = "--model.checkpoint_every_n_steps=7"  # inside epochs: the teacher's update is pending
    assert fit(whole, every, config="mean_teacher").wait(timeout=300) == 0

    last = cut / "runs" / "toy" / "mean_teacher" / "version_0" / "checkpoints" / "last.ckpt"
    process = fit(cut, every, config="mean_teacher")
    killed = kill_when(process, last, lambda ckpt: ckpt["global_step"] >= 70)
    assert killed["global_step"] % 30 != 0 and killed["global_step"] < 8 * 30
    assert int(killed["state_dict"]["objective.target_loss.step"]) == killed["global_step"] - 1

    resumed = fit(cut, every, "--ckpt_path=last", config="mean_teacher")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert record(cut, "mean_teacher") == record(whole, "mean_teacher")
    ends = [torch.load(run / last.relative_to(cut), weights_only=True)["state_dict"]
            for run in (whole, cut)]  # fmt: skip
    teacher = [k for k in ends[0] if k.startswith("objective.target_loss.")]
    assert teacher
    for key in teacher:
        torch.testing.assert_close(ends[1][key], ends[0][key], rtol=0, atol=0, msg=key)
