"""Collapse caught: MK-MMD at a large γ collapses a small network, and dalib says so."""

import re

import pytest
import torch

from dalib.collapse import collapse_signs
from dalib.errors import DalibError
from dalib.module import DomainAdaptationModule
from tests.conftest import TOY, only_result, run_dalib

# Toy MK-MMD (experiments/toy/mmd.yaml: MLP 64-64, a 32-d BatchNorm bottleneck) for 6 epochs of
# 50 steps: at γ = 100 its features are constant (all zero) from the second validation on.
SHORT = ["--trainer.max_epochs=6"]


def sums(features: torch.Tensor, source_pred, source_labels, target_pred, k: int = 3) -> dict:
    """The summed validation outputs ``collapse_signs`` reads, from plain predictions."""
    source_pred, source_labels = torch.tensor(source_pred), torch.tensor(source_labels)
    features = features.double()
    return {
        "feature_count": torch.tensor(float(len(features))),
        "feature_sum": features.sum(0),
        "feature_square_sum": features.pow(2).sum(0),
        "source_labels": torch.bincount(source_labels, minlength=k).double(),
        "source_correct": (source_pred == source_labels).double().sum(),
        "target_predicted": torch.bincount(torch.tensor(target_pred), minlength=k).double(),
    }


def test_each_sign_of_collapse_is_found_and_a_healthy_model_shows_none():
    torch.manual_seed(0)
    spread = torch.randn(60, 4) + 5.0  # variance 4 of mean square 104: a share of 0.04
    labels = [0] * 30 + [1] * 20 + [2] * 10  # the majority class: half of them
    right = labels
    mixed = [0, 1, 2] * 10
    assert collapse_signs(sums(spread, right, labels, mixed), train_acc=0.95) == {}

    point = torch.full((60, 4), 3.0) + 1e-3 * torch.randn(60, 4)  # share 1e-7
    assert list(collapse_signs(sums(point, right, labels, mixed), 0.95)) == ["features"]
    dead = torch.zeros(60, 4)  # dead ReLUs: no mean square at all
    assert list(collapse_signs(sums(dead, right, labels, mixed), 0.95)) == ["features"]

    guess = [0] * 60  # 0.5: the majority share, while training accuracy is 0.95
    found = collapse_signs(sums(spread, guess, labels, mixed), train_acc=0.95)
    assert list(found) == ["source accuracy"]
    assert "accuracy 0.500 is at chance (0.500, the majority class)" in found["source accuracy"]
    # not yet learned (training accuracy short of halfway from chance to 1): not collapse
    assert collapse_signs(sums(spread, guess, labels, mixed), train_acc=0.70) == {}
    assert collapse_signs(sums(spread, guess, labels, mixed), train_acc=None) == {}
    better = [0] * 30 + [1] * 2 + [0] * 28  # 0.533, above chance + 0.02
    assert collapse_signs(sums(spread, better, labels, mixed), train_acc=0.95) == {}

    one_class = collapse_signs(sums(spread, right, labels, [2] * 30), 0.95)
    assert one_class == {"target predictions": "all 30 unlabelled target samples are "
                         "predicted as class 2"}  # fmt: skip
    assert collapse_signs(sums(spread, right, labels, [2] * 19), 0.95) == {}  # too few to tell
    # a model that has learned nothing yet predicts one class everywhere: not collapse, unless
    # an earlier validation had learned the source (then it is)
    untrained = sums(spread, guess, labels, [0] * 30)
    assert collapse_signs(untrained, train_acc=0.5) == {}
    assert list(collapse_signs(untrained, 0.5, learned_before=True)) == ["target predictions"]


def test_on_collapse_takes_stop_or_warn():
    with pytest.raises(DalibError, match="unknown on_collapse 'ignore'; choose one of: stop, warn"):
        DomainAdaptationModule(2, (2,), on_collapse="ignore")


@pytest.mark.slow
def test_mmd_at_a_large_gamma_collapses_and_dalib_stops_with_one_line(capsys, tmp_path):
    args = ["fit", "-c", str(TOY / "mmd.yaml"), "--model.gamma=100", *SHORT]
    with pytest.raises(SystemExit) as stop:
        run_dalib(args, tmp_path)
    assert stop.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "dalib: error" in line]
    assert len(errors) == 1, errors
    match = re.fullmatch(
        r"dalib: error: training collapsed by step (\d+) \(epoch (\d+)\): the features' variance "
        r"is 0 of their mean square [^;]*; lower gamma or calibrate it "
        r"\(gamma: \{name: balanced\}\), or set model\.on_collapse=warn to train on; the earlier "
        r"checkpoints are kept",
        errors[0],
    )
    assert match, errors[0]
    # at a validation (every 50 steps) after the first, which was healthy; the exact one moves
    # with rounding (γ = 100 amplifies it), so any of the run's later validations may be it
    step, epoch = int(match.group(1)), int(match.group(2))
    assert step in range(100, 301, 50) and epoch == step // 50 - 1
    (run,) = (tmp_path / "toy" / "mmd").iterdir()
    assert not (run / "result.json").exists()
    assert (run / "metrics.csv").exists()  # the records written so far are kept
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == step - 50  # the validation's before the collapse


@pytest.mark.slow
def test_on_collapse_warn_trains_on_and_records_it(tmp_path):
    args = ["fit", "-c", str(TOY / "mmd.yaml"), "--model.gamma=100", "--model.on_collapse=warn"]
    run_dalib([*args, *SHORT], tmp_path)
    result = only_result(tmp_path)
    assert result["steps"] == 300
    first_step = result["collapse"][0]["step"]  # a later validation than the first (see above)
    assert first_step in range(100, 301, 50)
    assert [(e["step"], e["what"]) for e in result["collapse"]] == [
        (step, ["features"]) for step in range(first_step, 301, 50)
    ]  # recorded at every validation from then on, and training went on to the end
    first = result["collapse"][0]["message"]
    assert first.startswith(
        f"training collapsed by step {first_step} (epoch {first_step // 50 - 1}): the features' "
        "variance is 0"
    )
    assert result["target_acc"] < 0.6  # what the run reports: the collapsed model's accuracy


@pytest.mark.slow
def test_a_healthy_run_is_not_flagged(fit_toy):
    result = fit_toy("mmd", "--trainer.max_epochs=3")  # the committed γ = 1
    assert result["collapse"] == []
    assert result["target_acc"] > 0.8


def test_a_sign_stops_the_run_only_at_two_validations_in_a_row():
    from types import SimpleNamespace

    from dalib.collapse import CollapseError, CollapseGuard

    labels, mixed = [0] * 30 + [1] * 20 + [2] * 10, [0, 1, 2] * 10
    spread = torch.randn(60, 4, generator=torch.Generator().manual_seed(0)) + 5.0
    at_chance, healthy = sums(spread, [0] * 60, labels, mixed), sums(spread, labels, labels, mixed)
    guard = CollapseGuard("stop")
    trainer = SimpleNamespace(
        sanity_checking=False, global_step=0, current_epoch=0,
        strategy=SimpleNamespace(reduce=lambda value, reduce_op: value),
        callback_metrics={"train/source_acc": torch.tensor(0.95)},
    )  # fmt: skip
    for step, shown in [(10, at_chance), (20, healthy), (30, at_chance)]:  # transient: no stop
        trainer.global_step, guard._sums = step, dict(shown)
        guard.on_validation_epoch_end(trainer, None)
    trainer.global_step, guard._sums = 40, dict(at_chance)
    with pytest.raises(CollapseError, match=r"collapsed by step 40 .*source validation accuracy"):
        guard.on_validation_epoch_end(trainer, None)
