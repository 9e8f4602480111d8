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


def test_features_get_the_reversed_gradient_of_the_discriminator_loss():
    torch.manual_seed(0)
    dann = DomainAdversarial(in_features=4, hidden_dim=8)
    f_s = torch.randn(6, 4, requires_grad=True)
    f_t = torch.randn(6, 4) + 1.0
    dann(f_s, f_t).backward()
    through_grl = f_s.grad.clone()
    f_s.grad = None
    dann.grl.coeff = -1.0  # a reversal of -1 is the identity: the plain discriminator gradient
    dann(f_s, f_t).backward()
    assert through_grl.abs().sum() > 0
    torch.testing.assert_close(through_grl, -f_s.grad)


def test_weighted_domain_loss_with_uniform_weights_equals_the_unweighted_loss():
    torch.manual_seed(0)
    dann = DomainAdversarial(in_features=3, hidden_dim=8).eval()
    f_s, f_t = torch.randn(5, 3), torch.randn(4, 3)
    assert dann(f_s, f_t, w_s=torch.full((5,), 0.2), w_t=torch.full((4,), 7.0)).item() == (
        pytest.approx(dann(f_s, f_t).item(), rel=1e-6)
    )
