import math

import pytest
import torch
import torch.nn.functional as F

from dalib.discrepancy import DomainAdversarial, GradientReversal


def test_gradient_reversal_is_identity_forward_and_negates_backward():
    x = torch.randn(4, 3, requires_grad=True)
    y = GradientReversal(coeff=0.5)(x)
    assert torch.equal(y, x)
    (y * torch.arange(3.0)).sum().backward()
    assert torch.equal(x.grad, -0.5 * torch.arange(3.0).expand(4, 3))


def test_domain_loss_is_the_discriminator_cross_entropy():
    torch.manual_seed(0)
    dann = DomainAdversarial(in_features=3, hidden_dim=8).eval()
    f_s, f_t = torch.randn(5, 3), torch.randn(7, 3)
    d_s, d_t = dann.discriminator(f_s).squeeze(1), dann.discriminator(f_t).squeeze(1)
    # -log σ(d) on source (label 1) and -log(1-σ(d)) on target (label 0), averaged per domain
    expected = 0.5 * (-F.logsigmoid(d_s).mean() - F.logsigmoid(-d_t).mean())
    assert dann(f_s, f_t).item() == pytest.approx(expected.item(), rel=1e-6)


def test_an_untrained_discriminator_is_near_chance():
    torch.manual_seed(0)
    dann = DomainAdversarial(in_features=16, hidden_dim=32)
    loss = dann(torch.randn(256, 16), torch.randn(256, 16))
    assert loss.item() == pytest.approx(math.log(2), abs=0.15)


def test_features_get_minus_coeff_times_the_discriminator_loss_gradient():
    torch.manual_seed(0)
    dann = DomainAdversarial(in_features=4, hidden_dim=8, grl_coeff=0.7).double()
    f_s = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    f_t = (torch.randn(5, 4, dtype=torch.float64) + 1.0).requires_grad_(True)
    params = list(dann.discriminator.parameters())
    got = torch.autograd.grad(dann(f_s, f_t), [f_s, f_t, *params])
    # the critic's loss written out, on copies of the features that bypass the reversal layer
    plain_s, plain_t = f_s.detach().requires_grad_(True), f_t.detach().requires_grad_(True)
    d = dann.discriminator(torch.cat([plain_s, plain_t])).squeeze(1)
    loss = 0.5 * (-F.logsigmoid(d[:6]).mean() - F.logsigmoid(-d[6:]).mean())
    want = torch.autograd.grad(loss, [plain_s, plain_t, *params])
    for g, w in zip(got[:2], want[:2], strict=True):
        assert w.abs().sum() > 0
        torch.testing.assert_close(g, -0.7 * w, rtol=1e-10, atol=1e-12)
    for g, w in zip(got[2:], want[2:], strict=True):  # the discriminator descends its own loss
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_weighted_domain_loss_with_uniform_weights_equals_the_unweighted_loss():
    torch.manual_seed(0)
    dann = DomainAdversarial(in_features=3, hidden_dim=8).eval()
    f_s, f_t = torch.randn(5, 3), torch.randn(4, 3)
    assert dann(f_s, f_t, w_s=torch.full((5,), 0.2), w_t=torch.full((4,), 7.0)).item() == (
        pytest.approx(dann(f_s, f_t).item(), rel=1e-6)
    )
