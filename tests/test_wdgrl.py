import pytest
import torch

from dalib.discrepancy.wdgrl import WassersteinDistanceGuided
from dalib.errors import DalibError

D = 4


def pair(n_s: int = 32, n_t: int = 24, shift: float = 2.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    f_s = torch.randn(n_s, D, generator=g, dtype=torch.float64)
    f_t = torch.randn(n_t, D, generator=g, dtype=torch.float64) + shift
    return f_s, f_t


def build(**options) -> WassersteinDistanceGuided:
    """A small critic with the paper's 5 critic steps per step unless ``options`` say otherwise."""
    torch.manual_seed(0)
    options = {"critic_steps": 5, **options}
    return WassersteinDistanceGuided(D, hidden_dim=16, **options).double()


def critic_grad(wdgrl: WassersteinDistanceGuided, x: torch.Tensor) -> torch.Tensor:
    """∇h(x) of the one-hidden-layer ReLU critic, written out: W1ᵀ (w2 ⊙ 1[W1 x + b1 > 0])."""
    first, _, last = wdgrl.critic
    active = (x @ first.weight.T + first.bias > 0).to(x.dtype)
    return (active * last.weight) @ first.weight


def estimate(wdgrl, f_s, f_t, w_s=None, w_t=None) -> torch.Tensor:
    """W = weighted mean critic score on source minus that on target, critic called directly."""
    w_s = torch.ones(len(f_s), dtype=f_s.dtype) if w_s is None else w_s
    w_t = torch.ones(len(f_t), dtype=f_t.dtype) if w_t is None else w_t
    h_s, h_t = wdgrl.critic(f_s).squeeze(1), wdgrl.critic(f_t).squeeze(1)
    return w_s @ h_s / w_s.sum() - w_t @ h_t / w_t.sum()


def test_penalty_points_are_the_features_and_points_between_source_target_pairs():
    f_s, f_t = pair(n_s=5, n_t=3)
    points = WassersteinDistanceGuided.penalty_points(f_s, f_t)
    assert points.shape == (5 + 3 + 5, D)
    torch.testing.assert_close(points[:8], torch.cat([f_s, f_t]))
    for i, x in enumerate(points[8:]):
        src, tgt = f_s[i], f_t[i % 3]  # pairs cycle through the smaller batch
        alpha = (x - tgt) @ (src - tgt) / (src - tgt).pow(2).sum()
        assert 0 <= alpha <= 1
        torch.testing.assert_close(x, tgt + alpha * (src - tgt))


def test_value_is_the_penalty_minus_the_wasserstein_estimate():
    wdgrl = build().eval()
    f_s, f_t = pair()
    w_s = torch.linspace(0.0, 2.0, len(f_s), dtype=torch.float64)
    torch.manual_seed(1)
    value = wdgrl(f_s, f_t, w_s=w_s)
    torch.manual_seed(1)
    points = wdgrl.penalty_points(f_s, f_t)
    with torch.no_grad():
        norms = critic_grad(wdgrl, points).norm(dim=1)
        expected = 10.0 * (norms - 1).pow(2).mean() - estimate(wdgrl, f_s, f_t, w_s=w_s)
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-12)
    # and the penalty method itself, on points away from the ReLU kinks
    torch.testing.assert_close(
        wdgrl.gradient_penalty(points), (norms - 1).pow(2).mean(), rtol=1e-12, atol=1e-12
    )


def test_gradient_penalty_vanishes_for_a_unit_norm_linear_critic():
    wdgrl = build(num_hidden=0)
    (linear,) = wdgrl.critic
    points = torch.randn(50, D, dtype=torch.float64)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, -2.0, 2.0, 4.0]], dtype=torch.float64) / 5)
    assert wdgrl.gradient_penalty(points).item() == pytest.approx(0.0, abs=1e-12)
    with torch.no_grad():
        linear.weight.mul_(3.0)  # ‖∇h‖ = 3 everywhere: GP = (3 - 1)²
    assert wdgrl.gradient_penalty(points).item() == pytest.approx(4.0, rel=1e-12)


def test_inner_critic_steps_learn_the_shift():
    wdgrl = build(critic_steps=5, critic_lr=1e-2).train()
    f_s, f_t = pair(64, 64, shift=2.0)  # W₁ between the two Gaussians: ‖shift‖ = 4
    with torch.no_grad():
        before = estimate(wdgrl, f_s, f_t).item()
    for _ in range(10):
        wdgrl(f_s, f_t)  # 4 inner Adam steps each, no backward
    with torch.no_grad():
        after = estimate(wdgrl, f_s, f_t).item()
    assert after > before + 1.0, (before, after)
    assert after < 4.5, "the penalty keeps the critic about 1-Lipschitz"


def test_no_inner_steps_in_eval_mode_with_one_critic_step_or_without_gradients():
    f_s, f_t = pair()
    for wdgrl, context in [
        (build().eval(), torch.enable_grad()),
        (build(critic_steps=1).train(), torch.enable_grad()),
        (build().train(), torch.no_grad()),
    ]:
        state = {k: v.clone() for k, v in wdgrl.state_dict().items()}
        with context:
            wdgrl(f_s, f_t)
        for k, v in wdgrl.state_dict().items():
            assert torch.equal(v, state[k]), k


def test_inner_steps_leave_the_critics_accumulated_gradients_alone():
    wdgrl = build().train()
    f_s, f_t = pair()
    marks = [torch.full_like(p, 7.0) for p in wdgrl.critic.parameters()]
    for p, mark in zip(wdgrl.critic.parameters(), marks, strict=True):
        p.grad = mark.clone()
    wdgrl(f_s, f_t)
    for p, mark in zip(wdgrl.critic.parameters(), marks, strict=True):
        assert torch.equal(p.grad, mark)


def test_features_get_the_gradient_that_decreases_the_estimate():
    wdgrl = build().eval()
    f_s, f_t = pair()
    f_s.requires_grad_(True)
    wdgrl(f_s, f_t).backward()
    through_grl = f_s.grad.clone()
    (dw,) = torch.autograd.grad(estimate(wdgrl, f_s, f_t), f_s)
    assert through_grl.abs().sum() > 0
    torch.testing.assert_close(through_grl, dw)  # +∂W/∂f: the GRL flipped the -W of the value
    with torch.no_grad():  # a small descent step on f_s lowers W under the same critic
        assert estimate(wdgrl, f_s - 0.05 * through_grl, f_t) < estimate(wdgrl, f_s, f_t)
    f_s.grad = None
    wdgrl.grl.coeff = -1.0  # identity: the gradient of the value itself
    wdgrl(f_s, f_t).backward()
    torch.testing.assert_close(through_grl, -f_s.grad)


def test_critic_gets_the_gradient_that_increases_its_objective():
    wdgrl = build().eval()
    f_s, f_t = pair()
    params = list(wdgrl.critic.parameters())
    torch.manual_seed(3)
    grads = torch.autograd.grad(wdgrl(f_s, f_t), params)
    torch.manual_seed(3)
    uniform = (torch.full((n,), 1.0 / n, dtype=torch.float64) for n in (32, 24))
    objective = wdgrl.critic_objective(f_s, f_t, *uniform)
    for got, want in zip(grads, torch.autograd.grad(-objective, params), strict=True):
        torch.testing.assert_close(got, want)
    assert sum(g.abs().sum() for g in grads) > 0


def test_state_dict_holds_the_critic_only_and_dtype_changes_rebuild_the_inner_optimiser():
    wdgrl = WassersteinDistanceGuided(D, hidden_dim=16, critic_steps=5).train()
    f_s, f_t = (f.float() for f in pair())
    wdgrl(f_s, f_t)  # builds the inner Adam on float32 parameters
    assert set(wdgrl.state_dict()) == {f"critic.{k}" for k in wdgrl.critic.state_dict()}
    fresh = WassersteinDistanceGuided(D, hidden_dim=16)
    fresh.load_state_dict(wdgrl.state_dict())
    wdgrl.double()
    value = wdgrl(*pair())
    assert value.dtype == torch.float64 and torch.isfinite(value)


def test_seeded_calls_are_reproducible():
    f_s, f_t = pair()
    torch.testing.assert_close(build().train()(f_s, f_t), build().train()(f_s, f_t), rtol=0, atol=0)


def test_inference_mode_is_refused_with_a_clear_error_and_no_grad_works():
    wdgrl = build().eval()
    f_s, f_t = pair()
    with torch.no_grad():
        assert torch.isfinite(wdgrl(f_s, f_t))
    with torch.inference_mode(), pytest.raises(DalibError, match="inference_mode"):
        wdgrl(f_s, f_t)


@pytest.mark.parametrize(
    ("option", "value"), [("critic_steps", 0), ("critic_lr", 0.0), ("gp_weight", -1.0)]
)
def test_bad_options_are_refused(option, value):
    with pytest.raises(DalibError, match=option):
        WassersteinDistanceGuided(D, **{option: value})
