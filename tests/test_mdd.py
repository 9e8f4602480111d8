import math

import pytest
import torch

from dalib.discrepancy.mdd import MarginDisparityDiscrepancy, log_one_minus_softmax
from dalib.errors import DalibError

D, C = 5, 4


def batch(n_s: int = 9, n_t: int = 7, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    head = torch.randn(D, C, generator=g, dtype=torch.float64)
    f_s = torch.randn(n_s, D, generator=g, dtype=torch.float64)
    f_t = torch.randn(n_t, D, generator=g, dtype=torch.float64) + 1.0
    return {"f_s": f_s, "f_t": f_t, "logits_s": f_s @ head, "logits_t": f_t @ head}


def build(**options) -> MarginDisparityDiscrepancy:
    torch.manual_seed(0)
    mdd = MarginDisparityDiscrepancy(D, C, hidden_dim=32, **options).double()
    for layer in (mdd.head[0], mdd.head[3]):  # larger than the reference's N(0, 0.01²) start,
        torch.nn.init.normal_(layer.weight, 0.0, 0.5)  # so that the head is far from uniform
    return mdd.eval()


def paper_disparity(mdd, data, margin=4.0, w_s=None, w_t=None) -> torch.Tensor:
    """D_γ = γ·E_s log p'(ŷ_s) + E_t log(1 - p'(ŷ_t)), written out with softmax and log."""
    terms = []
    for f, logits, w in [
        (data["f_s"], data["logits_s"], w_s),
        (data["f_t"], data["logits_t"], w_t),
    ]:
        p = mdd.head(f).softmax(1)[torch.arange(len(f)), logits.argmax(1)]
        w = torch.ones(len(f), dtype=f.dtype) if w is None else w
        terms.append((w, p))
    (w_s, p_s), (w_t, p_t) = terms
    return margin * (w_s @ p_s.log()) / w_s.sum() + (w_t @ torch.log(1 - p_t)) / w_t.sum()


def test_value_is_minus_the_papers_disparity_and_never_negative():
    mdd, data = build(), batch()
    value = mdd(**data)
    torch.testing.assert_close(value, -paper_disparity(mdd, data), rtol=1e-12, atol=0)
    assert value.item() > 0
    # the margin weights the source term only
    two = build(margin=2.0)
    torch.testing.assert_close(two(**data), -paper_disparity(two, data, margin=2.0))


def test_instance_weights_give_weighted_means_per_domain():
    mdd, data = build(), batch()
    w_s = torch.tensor([0.0, 0, 1, 0, 0, 0, 0, 0, 0], dtype=torch.float64)  # one source sample
    w_t = torch.arange(1.0, 8.0, dtype=torch.float64)
    expected = -paper_disparity(mdd, data, w_s=w_s, w_t=w_t)
    torch.testing.assert_close(mdd(**data, w_s=w_s, w_t=w_t), expected, rtol=1e-12, atol=0)


def test_log_one_minus_softmax_is_exact_where_the_naive_form_overflows():
    logits = torch.tensor([[50.0, 0.0, 0.0], [1.0, 2.0, 3.0]], dtype=torch.float64)
    index = torch.tensor([0, 1])
    got = log_one_minus_softmax(logits, index)
    naive = torch.log(1 - logits.softmax(1)[torch.arange(2), index])
    assert naive[0] == -math.inf, "1 - p rounds to zero in float64"
    # 1 - p = 2e^-50 / (1 + 2e^-50)
    assert got[0].item() == pytest.approx(math.log(2) - 50 - math.log1p(2 * math.exp(-50)))
    torch.testing.assert_close(got[1], naive[1], rtol=1e-14, atol=0)
    logits.requires_grad_(True)
    (grad,) = torch.autograd.grad(log_one_minus_softmax(logits, index).sum(), logits)
    assert torch.isfinite(grad).all()


def test_features_get_minus_coeff_times_the_value_gradient_and_the_head_the_value_gradient():
    mdd, data = build(), batch()
    assert mdd.grl.coeff == 0.1
    for key in ("f_s", "f_t", "logits_s", "logits_t"):
        data[key].requires_grad_(True)
    params = list(mdd.head.parameters())
    got = torch.autograd.grad(mdd(**data), [data["f_s"], data["f_t"], *params])
    logits_grads = torch.autograd.grad(mdd(**data), [data["logits_s"], data["logits_t"]],
                                       allow_unused=True)  # fmt: skip
    assert logits_grads == (None, None), "no gradient through the argmax"
    # the value, -D_γ, written out on copies of the features that bypass the reversal layer
    plain = {k: v.detach().requires_grad_(k in ("f_s", "f_t")) for k, v in data.items()}
    want = torch.autograd.grad(-paper_disparity(mdd, plain), [plain["f_s"], plain["f_t"], *params])
    for g, w in zip(got[:2], want[:2], strict=True):
        assert w.abs().sum() > 0
        torch.testing.assert_close(g, -0.1 * w, rtol=1e-9, atol=1e-12)
    for g, w in zip(got[2:], want[2:], strict=True):  # the head descends -D_γ: it maximises D_γ
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)


def test_features_step_lowers_the_disparity_and_head_step_raises_it():
    mdd, data = build(grl_coeff=1.0), batch()
    f_s, f_t = data["f_s"].requires_grad_(True), data["f_t"].requires_grad_(True)
    params = list(mdd.head.parameters())
    value = mdd(**data)
    grad_f_s, grad_f_t, *grad_head = torch.autograd.grad(value, [f_s, f_t, *params])
    before = paper_disparity(mdd, data).item()
    with torch.no_grad():
        moved = {**data, "f_s": f_s - 1e-3 * grad_f_s, "f_t": f_t - 1e-3 * grad_f_t}
        assert paper_disparity(mdd, moved).item() < before  # features minimise D_γ
        for p, g in zip(params, grad_head, strict=True):
            p -= 1e-3 * g
        assert paper_disparity(mdd, data).item() > before  # the head maximises D_γ


def test_training_the_head_makes_it_agree_on_source_and_disagree_on_target():
    torch.manual_seed(0)
    mdd = MarginDisparityDiscrepancy(D, C, hidden_dim=32, dropout=0.0).double()
    data = batch(64, 64)
    optimizer = torch.optim.SGD(mdd.parameters(), lr=0.5)
    start = paper_disparity(mdd, data).item()
    for _ in range(100):
        optimizer.zero_grad()
        mdd(**data).backward()
        optimizer.step()
    assert paper_disparity(mdd, data).item() > start + 1.0


def test_the_head_follows_the_reference_architecture():
    torch.manual_seed(0)
    head = MarginDisparityDiscrepancy(256, 31, hidden_dim=1024).head  # the authors' width
    assert [type(m).__name__ for m in head] == ["Linear", "ReLU", "Dropout", "Linear"]
    assert head[0].out_features == 1024 and head[2].p == 0.5 and head[3].out_features == 31
    assert MarginDisparityDiscrepancy(256, 31).head[0].out_features == 128  # the cheap default
    assert head[0].weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert not head[3].bias.any()


def test_bad_configurations_are_refused():
    with pytest.raises(DalibError, match="num_classes"):
        MarginDisparityDiscrepancy(D, 1)
    with pytest.raises(DalibError, match="margin"):
        MarginDisparityDiscrepancy(D, C, margin=0.0)
    data = batch()
    with pytest.raises(DalibError, match="classes"):
        build()(
            **{**data, "logits_s": data["logits_s"][:, :3], "logits_t": data["logits_t"][:, :3]}
        )
