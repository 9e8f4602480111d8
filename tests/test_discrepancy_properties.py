"""Properties every discrepancy shipped in ``dalib.discrepancy`` must have, run on each one.

A measure is checked the moment it is registered: the parameter list is the registry itself
(restricted to measures defined in the dalib package, so test doubles stay out). Each test runs
one check of the public kit, ``dalib.testing.check_discrepancy``, which says what each asserts.
"""

import pytest

from dalib.discrepancy import DISCREPANCIES, builtin_discrepancies
from dalib.testing import check_discrepancy

MEASURES = builtin_discrepancies()
FAST_CHECKS = ("value", "gradients", "weights", "errors", "dtypes")
# Fixed directions: with seed=None, float32 and float64 draw different random directions.
OPTIONS = {("sliced_wasserstein", "dtypes"): {"seed": 0}}


def assert_holds(name: str, check: str) -> None:
    """The check passes, or is skipped where the kit's contract says it does not apply."""
    report = check_discrepancy(name, checks=[check], **OPTIONS.get((name, check), {}))
    adversarial = DISCREPANCIES.build(name, in_features=8, num_classes=3).adversarial
    expected = "skipped" if adversarial and check in ("no_shift", "ddp") else "passed"
    assert report[check].status == expected, str(report)


def test_the_library_registers_its_measures():
    assert {
        "mmd",
        "jmmd",
        "coral",
        "dann",
        "cdan",
        "cdan_e",
        "wdgrl",
        "mdd",
        "emd",
        "sinkhorn",
        "sliced_wasserstein",
        "deepjdot",
    } <= set(MEASURES)


@pytest.mark.parametrize("check", FAST_CHECKS)
@pytest.mark.parametrize("name", MEASURES)
def test_property(name, check):
    assert_holds(name, check)


@pytest.mark.parametrize("check", ["no_shift", "shift"])
@pytest.mark.parametrize("name", MEASURES)
@pytest.mark.slow
def test_the_value_grows_with_the_shift(name, check):
    assert_holds(name, check)


@pytest.mark.parametrize("name", MEASURES)
@pytest.mark.ddp
def test_the_gathered_value_under_ddp_is_the_whole_batch_value(name):
    assert_holds(name, "ddp")
