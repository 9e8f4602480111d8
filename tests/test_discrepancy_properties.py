"""Properties every discrepancy shipped in ``dalib.discrepancy`` must have, run on each one.

A measure is checked the moment it is registered: the parameter list is the registry itself
(restricted to measures defined in the dalib package, so test doubles stay out).
"""

import pytest
import torch

from dalib.discrepancy import DISCREPANCIES, Discrepancy, builtin_discrepancies
from dalib.errors import DalibError

D, C = 8, 3  # feature width and number of classes of the test batches
MEASURES = builtin_discrepancies()


def build(name: str) -> Discrepancy:
    torch.manual_seed(0)
    return DISCREPANCIES.build(name, in_features=D, num_classes=C).double()


def batch(n_s: int = 24, n_t: int = 20, shift: float = 1.0, seed: int = 0) -> dict:
    """Features, and logits that depend on them, as a classifier's would.

    The target is shifted in mean and spread (``x·(1 + shift/2) + shift``), so that measures of
    first moments (MMD, OT) and of second moments (CORAL) all see the shift.
    """
    g = torch.Generator().manual_seed(seed)
    f_s = torch.randn(n_s, D, generator=g, dtype=torch.float64)
    f_t = torch.randn(n_t, D, generator=g, dtype=torch.float64) * (1 + shift / 2) + shift
    head = torch.randn(D, C, generator=g, dtype=torch.float64)
    return {
        "f_s": f_s,
        "f_t": f_t,
        "logits_s": f_s @ head,
        "logits_t": f_t @ head,
        "y_s": (f_s @ head).argmax(1),
    }


def call(measure: Discrepancy, data: dict, **extra) -> torch.Tensor:
    data = {**data, **extra}
    return measure(data.pop("f_s"), data.pop("f_t"), **data)


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


@pytest.mark.parametrize("name", MEASURES)
def test_value_is_a_finite_scalar_and_gradients_reach_both_domains(name):
    measure = build(name)
    data = batch()
    data["f_s"].requires_grad_(True)
    data["f_t"].requires_grad_(True)
    value = call(measure, data)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    for f in (data["f_s"], data["f_t"]):
        assert torch.isfinite(f.grad).all()
        assert f.grad.abs().sum() > 0, f"{name} sends no gradient to the features"


@pytest.mark.parametrize("name", MEASURES)
def test_uniform_weights_give_the_unweighted_value(name):
    data = batch()
    n_s, n_t = len(data["f_s"]), len(data["f_t"])
    w_s, w_t = torch.full((n_s,), 2.5, dtype=torch.float64), torch.ones(n_t, dtype=torch.float64)
    measure = build(name)
    if not measure.supports_weights:
        with pytest.raises(DalibError, match="does not take instance weights"):
            call(measure, data, w_s=w_s, w_t=w_t)
        return
    plain = call(build(name), data)
    weighted = call(build(name), data, w_s=w_s, w_t=w_t)
    torch.testing.assert_close(weighted, plain, rtol=1e-10, atol=1e-12)


def rows(data: dict, index) -> dict:
    return {key: value[index] for key, value in data.items()}


def held_out_value_of_a_trained_critic(name: str, shift: float, n: int = 512) -> float:
    """An adversarial measure's value on ``n`` held-out samples per domain, after 100 Adam steps
    on its own parameters (discriminator, critic or head) with minibatches of 64 from another
    ``n`` samples of the same two distributions (one classifier labels them all)."""
    data = batch(2 * n, 2 * n, shift=shift)
    measure = build(name).train()
    optimizer = torch.optim.Adam(measure.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        optimizer.zero_grad()
        call(measure, rows(data, torch.randint(0, n, (64,), generator=g))).backward()
        optimizer.step()
    return call(measure.eval(), rows(data, slice(n, None))).item()


@pytest.mark.parametrize("name", MEASURES)
@pytest.mark.slow
def test_a_growing_shift_gives_a_growing_value(name):
    if build(name).adversarial:
        # The value is a critic's loss, which an untrained critic cannot make depend on the
        # shift; trained, the critic separates the domains better the more they differ, so its
        # loss on held-out samples falls (without a shift it does no better than chance).
        losses = [held_out_value_of_a_trained_critic(name, s) for s in (0.0, 0.5, 2.0)]
        assert losses[0] > losses[1] > losses[2], losses
        assert losses[0] - losses[2] > 0.5, losses
        return
    measure = build(name)
    values = [call(measure, batch(200, 200, shift=s)).item() for s in (0.0, 0.5, 2.0)]
    assert values[0] < values[1] < values[2], values
    assert abs(values[0]) < 0.25 * values[2], "identical distributions give about zero"


@pytest.mark.parametrize("name", MEASURES)
def test_bad_batches_are_refused_with_a_clear_error(name):
    measure = build(name)
    data = batch()
    with pytest.raises(DalibError, match="dimensions"):
        call(measure, {**data, "f_t": data["f_t"][:, :-1]})
    with pytest.raises(DalibError, match="at least one"):
        call(measure, {**data, "f_t": data["f_t"][:0], "logits_t": data["logits_t"][:0]})
    n_t = len(data["f_t"])
    for w_s, w_t in [
        (torch.zeros(len(data["f_s"]), dtype=torch.float64), None),  # sums to zero
        (None, torch.full((n_t,), -1.0, dtype=torch.float64)),  # negative
        (None, torch.ones(n_t + 1, dtype=torch.float64)),  # one weight too many
    ]:
        with pytest.raises(DalibError, match="weight"):
            call(measure, data, w_s=w_s, w_t=w_t)
    if measure.needs_logits:
        with pytest.raises(DalibError, match="logits"):
            call(measure, {**data, "logits_s": None, "logits_t": None})
