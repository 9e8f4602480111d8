import math

import pytest
import torch
import torch.nn.functional as F

from dalib.discrepancy.conditional import (
    ConditionalDomainAdversarial,
    RandomizedMultilinearMap,
    conditional_entropy_adversarial,
    entropy_weights,
    multilinear_map,
)
from dalib.errors import DalibError

D, C = 5, 3


def batch(n_s: int = 6, n_t: int = 7, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "f_s": torch.randn(n_s, D, generator=g, dtype=torch.float64),
        "f_t": torch.randn(n_t, D, generator=g, dtype=torch.float64) + 1.0,
        "logits_s": 2 * torch.randn(n_s, C, generator=g, dtype=torch.float64),
        "logits_t": 2 * torch.randn(n_t, C, generator=g, dtype=torch.float64),
    }


def build(**options) -> ConditionalDomainAdversarial:
    torch.manual_seed(0)
    return ConditionalDomainAdversarial(D, C, hidden_dim=16, **options).double().eval()


def per_sample_bce(cdan: ConditionalDomainAdversarial, data: dict) -> tuple:
    """-log σ(d) on source (label 1), -log(1-σ(d)) on target (label 0), discriminator called
    directly on the outer product of the features and the softmax."""
    out = []
    for f, logits, sign in [
        (data["f_s"], data["logits_s"], 1),
        (data["f_t"], data["logits_t"], -1),
    ]:
        g = logits.softmax(1)
        h = (f[:, :, None] * g[:, None, :]).reshape(len(f), -1)
        out.append(-F.logsigmoid(sign * cdan.discriminator(h).squeeze(1)))
    return tuple(out)


def test_multilinear_map_is_the_flattened_outer_product():
    f, g = torch.randn(4, D), torch.randn(4, C)
    t = multilinear_map(f, g)
    assert t.shape == (4, D * C)
    torch.testing.assert_close(t, torch.einsum("nd,nc->ndc", f, g).flatten(1))
    assert t[2, 3 * C + 1] == f[2, 3] * g[2, 1]


def test_loss_is_the_conditional_discriminator_cross_entropy():
    cdan, data = build(), batch()
    loss_s, loss_t = per_sample_bce(cdan, data)
    expected = 0.5 * (loss_s.mean() + loss_t.mean())
    torch.testing.assert_close(cdan(**data), expected, rtol=1e-12, atol=0)


def test_instance_weights_are_weighted_means_per_domain():
    cdan, data = build(), batch()
    w_s = torch.tensor([0.0, 1, 2, 3, 0, 1], dtype=torch.float64)
    w_t = torch.arange(1.0, 8.0, dtype=torch.float64)
    loss_s, loss_t = per_sample_bce(cdan, data)
    expected = 0.5 * (w_s @ loss_s / w_s.sum() + w_t @ loss_t / w_t.sum())
    torch.testing.assert_close(cdan(**data, w_s=w_s, w_t=w_t), expected, rtol=1e-12, atol=0)


def test_randomized_map_is_a_fixed_scaled_gaussian_sketch():
    torch.manual_seed(0)
    m = 16384
    rmap = RandomizedMultilinearMap(D, C, output_dim=m).double()
    assert set(dict(rmap.named_buffers())) == {"r_f", "r_g"} and not list(rmap.parameters())
    assert rmap.r_f.shape == (D, m) and rmap.r_g.shape == (C, m)
    f = torch.randn(3, D, dtype=torch.float64)
    g = torch.randn(3, C, dtype=torch.float64).softmax(1)
    t = rmap(f, g)
    assert t.shape == (3, m)
    torch.testing.assert_close(t, (f @ rmap.r_f) * (g @ rmap.r_g) / math.sqrt(m))
    torch.testing.assert_close(rmap(f, g), t)  # fixed: no resampling between calls
    # The 1/√m scale keeps norms: E‖T(f, g)‖² = ‖f‖²·‖g‖² (relative sd √(8/m) ≈ 2%).
    ratio = t.pow(2).sum(1) / (f.pow(2).sum(1) * g.pow(2).sum(1))
    torch.testing.assert_close(ratio, torch.ones(3, dtype=torch.float64), rtol=0.1, atol=0)


def test_randomized_is_chosen_above_4096_and_sizes_the_discriminator():
    torch.manual_seed(0)
    small = ConditionalDomainAdversarial(64, 64, hidden_dim=8)  # 4096: the full map
    large = ConditionalDomainAdversarial(64, 65, hidden_dim=8, random_dim=32)
    forced = ConditionalDomainAdversarial(4, 2, hidden_dim=8, randomized=True, random_dim=32)
    assert small.random_map is None and small.discriminator[0].in_features == 4096
    assert large.random_map is not None and large.discriminator[0].in_features == 32
    assert forced.random_map is not None and "random_map.r_f" in forced.state_dict()
    f, logits = torch.randn(5, 4), torch.randn(5, 2)
    assert forced(f, f + 1, logits_s=logits, logits_t=logits).dim() == 0


def test_entropy_weights_are_one_plus_exp_minus_entropy():
    logits = torch.tensor(
        [[0.0, 0.0, 0.0], [30.0, 0.0, 0.0], [1.0, 2.0, -1.0]], dtype=torch.float64
    )
    p = logits.softmax(1)
    entropy = -(p * p.log()).sum(1)
    torch.testing.assert_close(entropy_weights(logits), 1 + torch.exp(-entropy))
    # uniform prediction: H = log 3, weight 4/3; a certain one: H ≈ 0, weight ≈ 2
    assert entropy_weights(logits)[0].item() == pytest.approx(1 + 1 / 3)
    assert entropy_weights(logits)[1].item() == pytest.approx(2.0, abs=1e-10)


def test_cdan_e_weights_each_domain_by_normalised_entropy_weights():
    torch.manual_seed(0)
    cdan_e = conditional_entropy_adversarial(D, C, hidden_dim=16).double().eval()
    assert cdan_e.entropy_conditioning
    data = batch()
    loss_s, loss_t = per_sample_bce(cdan_e, data)
    e_s, e_t = (
        1 + torch.exp((p * p.log()).sum(1))
        for p in (data["logits_s"].softmax(1), data["logits_t"].softmax(1))
    )
    # normalised to mean 1 within each domain, then averaged: Σ e·ℓ / Σ e per domain
    expected = 0.5 * ((e_s / e_s.mean()) @ loss_s / 6 + (e_t / e_t.mean()) @ loss_t / 7)
    torch.testing.assert_close(cdan_e(**data), expected, rtol=1e-12, atol=0)
    # with instance weights: the product w·e, normalised per domain
    w_s = torch.tensor([3.0, 1, 0, 1, 2, 1], dtype=torch.float64)
    expected = 0.5 * ((w_s * e_s) @ loss_s / (w_s * e_s).sum() + e_t @ loss_t / e_t.sum())
    torch.testing.assert_close(cdan_e(**data, w_s=w_s), expected, rtol=1e-12, atol=0)
    # and the entropy weighting matters: plain CDAN with the same discriminator differs
    cdan_e.entropy_conditioning = False
    assert abs(cdan_e(**data) - expected).item() > 1e-6


@pytest.mark.parametrize("entropy_conditioning", [False, True])
def test_features_get_minus_coeff_times_the_discriminator_loss_gradient(entropy_conditioning):
    cdan = build(grl_coeff=0.7, entropy_conditioning=entropy_conditioning)
    data = batch()
    for key in data:
        data[key].requires_grad_(True)
    params = list(cdan.discriminator.parameters())
    got = torch.autograd.grad(cdan(**data), [data["f_s"], data["f_t"], *params])
    logits_grads = torch.autograd.grad(cdan(**data), [data["logits_s"], data["logits_t"]],
                                       allow_unused=True)  # fmt: skip
    assert logits_grads == (None, None), "g is detached"
    # the critic's loss written out, on copies of the features that bypass the reversal layer
    plain = {k: v.detach().requires_grad_(k in ("f_s", "f_t")) for k, v in data.items()}
    loss_s, loss_t = per_sample_bce(cdan, plain)
    e_s, e_t = torch.ones(6, dtype=torch.float64), torch.ones(7, dtype=torch.float64)
    if entropy_conditioning:
        e_s, e_t = (
            1 + torch.exp((p * p.log()).sum(1))
            for p in (plain["logits_s"].softmax(1), plain["logits_t"].softmax(1))
        )
    loss = 0.5 * (e_s @ loss_s / e_s.sum() + e_t @ loss_t / e_t.sum())
    want = torch.autograd.grad(loss, [plain["f_s"], plain["f_t"], *params])
    for g, w in zip(got[:2], want[:2], strict=True):
        assert w.abs().sum() > 0
        torch.testing.assert_close(g, -0.7 * w, rtol=1e-10, atol=1e-12)
    for g, w in zip(got[2:], want[2:], strict=True):  # the discriminator descends its own loss
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_discriminator_parameters_descend_the_domain_loss():
    cdan, data = build(), batch()
    cdan.train()
    before = cdan(**data)
    before.backward()
    with torch.no_grad():
        for p in cdan.discriminator.parameters():
            p -= 1e-3 * p.grad
    assert cdan(**data).item() < before.item()


def test_mismatched_class_count_is_refused():
    data = batch()
    with pytest.raises(DalibError, match="num_classes"):
        build()(
            **{**data, "logits_s": data["logits_s"][:, :2], "logits_t": data["logits_t"][:, :2]}
        )
