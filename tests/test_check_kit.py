"""The public check kit, ``dalib.testing.check_discrepancy``, on measures defined here: a sound
one passes every check, each broken one fails the check that guards what it breaks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dalib.discrepancy import Discrepancy
from dalib.discrepancy.base import check_features, normalised_weights
from dalib.errors import DalibError
from dalib.testing import CHECKS, check_discrepancy


class Moments(Discrepancy):
    """Squared distance between the (weighted) per-feature means and variances."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, f_s, f_t, *, logits_s=None, logits_t=None, y_s=None, w_s=None, w_t=None):
        check_features(f_s, f_t)
        w_s = normalised_weights(w_s, len(f_s), f_s)
        w_t = normalised_weights(w_t, len(f_t), f_t)
        mean_s, mean_t = w_s @ f_s, w_t @ f_t
        var_s, var_t = w_s @ (f_s - mean_s) ** 2, w_t @ (f_t - mean_t) ** 2
        return self.scale * ((mean_s - mean_t).pow(2).sum() + (var_s - var_t).pow(2).sum())


class IgnoresWeights(Moments):
    """Says it takes weights, drops them."""

    def forward(self, f_s, f_t, **kwargs):
        return super().forward(f_s, f_t)


class DetachesTarget(Moments):
    def forward(self, f_s, f_t, **kwargs):
        return super().forward(f_s, f_t.detach(), **kwargs)


class ChecksNothing(Discrepancy):
    """Mean distance without input checks: mismatched widths broadcast or fail inside torch."""

    def forward(self, f_s, f_t, **kwargs):
        return (f_s.mean(0).sum() - f_t.mean(0).sum()).pow(2)


class AlwaysFloat64(Moments):
    def forward(self, f_s, f_t, **kwargs):
        return super().forward(f_s.double(), f_t.double(), **kwargs)


class SourceOnly(Moments):
    """The source's second moment: large without any shift, blind to the target."""

    def forward(self, f_s, f_t, **kwargs):
        return super().forward(f_s, f_t, **kwargs) * 0 + f_s.pow(2).mean() + 0 * f_t.sum()


class UnseededProjection(Moments):
    """Moments of a random projection drawn from an unseeded NumPy generator: each process of a
    data-parallel run (and each call) sees another one."""

    def forward(self, f_s, f_t, **kwargs):
        direction = np.random.default_rng().normal(size=(f_s.shape[1], 4))
        projection = torch.as_tensor(direction, dtype=f_s.dtype)
        return super().forward(f_s @ projection, f_t @ projection, **kwargs)


def test_a_sound_measure_defined_outside_dalib_passes_every_check():
    in_one_process = [check for check in CHECKS if check != "ddp"]
    report = check_discrepancy(Moments, checks=in_one_process, scale=2.0)
    report.raise_if_failed()
    assert [r.name for r in report.results] == in_one_process
    assert report.ok and all(r.status == "passed" for r in report.results), str(report)
    assert "check_discrepancy(Moments): 7 passed, 0 failed, 0 skipped" in str(report)


@pytest.mark.parametrize(
    ("measure", "check", "reason"),
    [
        (IgnoresWeights, "weights", "are they ignored?"),
        (DetachesTarget, "gradients", "no gradient reaches f_t"),
        (ChecksNothing, "errors", "mismatched widths was accepted"),
        (AlwaysFloat64, "dtypes", "torch.float32 features give a torch.float64 value"),
        (SourceOnly, "no_shift", "without a shift the value is"),
        (SourceOnly, "shift", "do not grow"),
    ],
)
def test_a_broken_measure_fails_the_check_that_guards_it(measure, check, reason):
    report = check_discrepancy(measure, checks=[check])
    assert report[check].status == "failed" and reason in report[check].detail, str(report)
    with pytest.raises(AssertionError, match=f"failed +{check}"):
        report.raise_if_failed()


@pytest.mark.ddp
def test_the_ddp_check_finds_a_measure_that_differs_between_processes():
    report = check_discrepancy(UnseededProjection, checks=["ddp"])
    assert report["ddp"].status == "failed", str(report)
    assert check_discrepancy(Moments, checks=["ddp"])["ddp"].status == "passed"


def test_an_adversarial_measure_is_not_expected_to_vanish_without_shift():
    report = check_discrepancy("dann", checks=["no_shift", "ddp"])
    assert [r.status for r in report.results] == ["skipped", "skipped"]
    assert report.ok and "critic's loss" in report["no_shift"].detail


def test_bad_arguments_get_one_line():
    with pytest.raises(DalibError, match="unknown discrepancy 'mmdd' \\(did you mean 'mmd'"):
        check_discrepancy("mmdd")
    with pytest.raises(DalibError, match="unknown check 'speed'"):
        check_discrepancy("mmd", checks=["speed"])
    with pytest.raises(DalibError, match="unknown option 'bandwidth' for discrepancy 'Moments'"):
        check_discrepancy(Moments, bandwidth=1.0)
    with pytest.raises(DalibError, match=r"subclasses dalib\.discrepancy\.Discrepancy"):
        check_discrepancy(torch.nn.Identity)


def test_a_measure_named_by_its_spec_is_checked():
    report = check_discrepancy("tests.test_check_kit:IgnoresWeights", checks=["value", "weights"])
    assert report.measure == "tests.test_check_kit:IgnoresWeights"
    assert [r.status for r in report.results] == ["passed", "failed"], str(report)
