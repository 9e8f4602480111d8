import math

import pytest

from dalib.errors import DalibError
from dalib.schedules import Constant, DannRamp, LinearWarmup, inverse_decay, make_schedule


def test_dann_ramp_follows_the_published_formula():
    ramp = DannRamp(max_value=2.0)
    assert ramp(0.0) == 0.0
    for p in (0.1, 0.37, 1.0):
        assert ramp(p) == pytest.approx(2.0 * (2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0))
    assert ramp(1.0) > 0.99 * 2.0


def test_linear_warmup_rises_then_stays():
    warm = LinearWarmup(max_value=0.5, warmup=0.2)
    assert [warm(p) for p in (0.0, 0.1, 0.2, 0.9)] == pytest.approx([0.0, 0.25, 0.5, 0.5])


def test_make_schedule_from_numbers_names_and_mappings():
    assert make_schedule(0.3, "gamma") == Constant(0.3)
    assert make_schedule("0.3", "gamma") == Constant(0.3)
    assert make_schedule("dann_ramp", "gamma") == DannRamp()
    assert make_schedule({"name": "linear_warmup", "warmup": 0.5}, "gamma") == LinearWarmup(
        warmup=0.5
    )


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "nan", True])
def test_negative_or_nan_weights_are_refused(bad):
    with pytest.raises(DalibError, match="gamma"):
        make_schedule(bad, "gamma")


def test_unknown_schedule_suggests_the_closest_name():
    with pytest.raises(DalibError, match="did you mean 'dann_ramp'"):
        make_schedule("dann_ramps", "gamma")


def test_inverse_decay_matches_the_anchor_formula():
    assert inverse_decay(0.0) == 1.0
    assert inverse_decay(0.5) == pytest.approx((1 + 10 * 0.5) ** -0.75)
