import warnings

import numpy as np
import ot
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.special import log_softmax

from dalib.discrepancy import DISCREPANCIES
from dalib.discrepancy.wasserstein import (
    DeepJDOT,
    EarthMoverDistance,
    SinkhornDistance,
    SlicedWasserstein,
)
from dalib.errors import DalibError


def samples(n_s: int = 9, n_t: int = 7, d: int = 3, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Source and shifted, wider target features, and positive instance weights."""
    rng = np.random.default_rng(seed)
    xs, xt = rng.normal(size=(n_s, d)), rng.normal(0.7, 1.3, size=(n_t, d))
    return xs, xt, rng.uniform(0.2, 2.0, n_s), rng.uniform(0.2, 2.0, n_t)


def value(measure, xs, xt, ws=None, wt=None) -> torch.Tensor:
    """The measure on float64 tensors made from NumPy arrays."""
    w_s, w_t = (None if w is None else torch.tensor(w) for w in (ws, wt))
    return measure(torch.tensor(xs), torch.tensor(xt), w_s=w_s, w_t=w_t)


def test_the_four_measures_are_registered_under_their_names():
    for name, cls in [
        ("emd", EarthMoverDistance),
        ("sinkhorn", SinkhornDistance),
        ("sliced_wasserstein", SlicedWasserstein),
        ("deepjdot", DeepJDOT),
    ]:
        assert isinstance(DISCREPANCIES.build(name, in_features=3, num_classes=2), cls)


@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean"])
def test_emd_equals_pots_numpy_result_unweighted_and_weighted(metric):
    xs, xt, ws, wt = samples()
    emd = EarthMoverDistance(metric=metric)
    cost = ot.dist(xs, xt, metric=metric)
    plain = ot.emd2(np.full(9, 1 / 9), np.full(7, 1 / 7), cost)
    weighted = ot.emd2(ws / ws.sum(), wt / wt.sum(), cost)
    assert value(emd, xs, xt).item() == pytest.approx(plain, rel=1e-6)
    assert value(emd, xs, xt, ws, wt).item() == pytest.approx(weighted, rel=1e-6)
    assert abs(weighted - plain) > 1e-3 * plain  # the weights do change the value


def test_emd_of_equal_sized_uniform_batches_is_the_best_assignment():
    """Birkhoff: with n points on each side the optimal plan is a permutation."""
    xs, xt, _, _ = samples(8, 8)
    cost = ((xs[:, None, :] - xt[None, :, :]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    got = value(EarthMoverDistance(), xs, xt).item()
    assert got == pytest.approx(cost[rows, cols].mean(), rel=1e-10)


def test_emd_that_cannot_converge_in_num_iter_max_says_so():
    xs, xt, _, _ = samples(40, 40)
    with pytest.raises(DalibError, match="raise num_iter_max"):
        value(EarthMoverDistance(num_iter_max=5), xs, xt)


@pytest.mark.parametrize("weighted", [False, True])
def test_sinkhorn_equals_pots_numpy_sinkhorn2_on_the_mean_normalised_cost(weighted):
    xs, xt, ws, wt = samples()
    ws, wt = (ws, wt) if weighted else (np.ones(9), np.ones(7))
    cost = ot.dist(xs, xt)
    scale = cost.mean()
    expected = scale * ot.sinkhorn2(
        ws / ws.sum(),
        wt / wt.sum(),
        cost / scale,
        0.05,
        method="sinkhorn_log",
        numItermax=10_000,
        stopThr=1e-5,
    )
    got = value(SinkhornDistance(reg=0.05), xs, xt, ws if weighted else None, wt)
    assert got.item() == pytest.approx(float(expected), rel=1e-6)


def test_sinkhorn_with_a_tiny_reg_is_finite_and_close_to_the_exact_cost():
    xs, xt, ws, wt = samples(20, 20)
    exact = value(EarthMoverDistance(), xs, xt, ws, wt).item()
    tiny = SinkhornDistance(reg=1e-3, num_iter_max=5000, stop_threshold=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # converges within num_iter_max
        got = value(tiny, xs, xt, ws, wt).item()
    assert np.isfinite(got)
    assert got == pytest.approx(exact, rel=1e-2)
    assert value(SinkhornDistance(), xs, xt, ws, wt).item() > got  # more blur, more cost


def test_sinkhorn_converges_in_float32_with_the_defaults_and_warns_when_it_cannot():
    xs, xt, _, _ = samples(64, 64, d=16)
    f_s, f_t = torch.tensor(xs, dtype=torch.float32), torch.tensor(xt, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert SinkhornDistance()(f_s, f_t).dtype == torch.float32
    with pytest.warns(UserWarning, match="raise num_iter_max or reg"):
        SinkhornDistance(reg=1e-3, num_iter_max=3)(f_s, f_t)


@pytest.mark.parametrize("p", [1, 2])
def test_sliced_equals_pots_numpy_result_with_the_same_seed_raised_to_p(p):
    xs, xt, ws, wt = samples(30, 25, d=5)
    expected = ot.sliced_wasserstein_distance(
        xs, xt, ws / ws.sum(), wt / wt.sum(), n_projections=64, p=p, seed=7
    )
    got = value(SlicedWasserstein(n_projections=64, p=p, seed=7), xs, xt, ws, wt)
    assert got.item() == pytest.approx(expected**p, rel=1e-10)


@pytest.mark.parametrize("p", [1, 2])
def test_sliced_of_equal_sized_uniform_batches_equals_pots_result(p):
    """Equal batch sizes without weights take the sorted-projection route, not POT's."""
    xs, xt, _, _ = samples(20, 20, d=6)
    expected = ot.sliced_wasserstein_distance(xs, xt, n_projections=32, p=p, seed=5)
    measure = SlicedWasserstein(n_projections=32, p=p, seed=5)
    assert value(measure, xs, xt).item() == pytest.approx(expected**p, rel=1e-10)
    assert value(measure, xs, xt).item() == pytest.approx(expected**p, rel=1e-10)  # kept


def test_sliced_projections_are_fixed_by_a_seed_and_fresh_without_one():
    xs, xt, _, _ = samples()
    fixed, fresh = SlicedWasserstein(seed=3), SlicedWasserstein()
    assert value(fixed, xs, xt).item() == value(fixed, xs, xt).item()
    assert value(fresh, xs, xt).item() != value(fresh, xs, xt).item()
    torch.manual_seed(1)
    first = value(fresh, xs, xt).item()
    torch.manual_seed(1)
    assert value(fresh, xs, xt).item() == first  # fresh projections follow torch's seed


def test_sliced_of_identical_batches_is_zero_with_a_finite_gradient():
    f = torch.randn(10, 4, dtype=torch.float64, requires_grad=True)
    sw = SlicedWasserstein()(f, f.detach().clone())
    sw.backward()
    assert sw.item() == 0 and torch.isfinite(f.grad).all()


def deepjdot_data(seed: int = 0) -> dict[str, np.ndarray]:
    xs, xt, ws, wt = samples(8, 6, d=4, seed=seed)
    rng = np.random.default_rng(seed + 1)
    return {
        "f_s": xs,
        "f_t": xt,
        "logits_s": rng.normal(size=(8, 3)),
        "logits_t": rng.normal(size=(6, 3)),
        "y_s": rng.integers(0, 3, 8),
        "w_s": ws,
        "w_t": wt,
    }


def test_deepjdot_equals_an_independent_computation():
    data = deepjdot_data()
    alpha, lambda_t = 0.5, 2.0  # both terms matter at this feature scale
    cost = (
        alpha * ot.dist(data["f_s"], data["f_t"])
        - lambda_t * log_softmax(data["logits_t"], axis=1).T[data["y_s"]]
    )
    a, b = data["w_s"] / data["w_s"].sum(), data["w_t"] / data["w_t"].sum()
    expected = (ot.emd(a, b, cost) * cost).sum()
    tensors = {key: torch.tensor(x) for key, x in data.items()}
    got = DeepJDOT(alpha=alpha, lambda_t=lambda_t)(
        tensors.pop("f_s"), tensors.pop("f_t"), **tensors
    )
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_deepjdot_gradient_reaches_features_and_target_logits_through_a_fixed_plan():
    data = {key: torch.tensor(x) for key, x in deepjdot_data().items()}
    for key in ("f_s", "f_t", "logits_s", "logits_t"):
        data[key].requires_grad_(True)
    lambda_t = 2.0
    jdot = DeepJDOT(alpha=0.5, lambda_t=lambda_t)
    jdot(data["f_s"], data["f_t"], **{k: v for k, v in data.items() if k[0] != "f"}).backward()
    for key in ("f_s", "f_t", "logits_t"):
        assert torch.isfinite(data[key].grad).all() and data[key].grad.abs().sum() > 0, key
    assert data["logits_s"].grad is None
    # With the plan γ constant, d/dlogits_t_j = lambda_t · Σ_i γ_ij (softmax(logits_t_j) - e_{y_i}).
    cost = (
        0.5 * ot.dist(data["f_s"], data["f_t"])
        - lambda_t * torch.log_softmax(data["logits_t"], 1).T[data["y_s"]]
    )
    a, b = data["w_s"] / data["w_s"].sum(), data["w_t"] / data["w_t"].sum()
    plan = ot.emd(a, b, cost.detach())
    one_hot = torch.nn.functional.one_hot(data["y_s"], 3).double()
    expected = lambda_t * (
        plan.sum(0)[:, None] * torch.softmax(data["logits_t"].detach(), 1) - plan.T @ one_hot
    )
    torch.testing.assert_close(data["logits_t"].grad, expected)


def test_deepjdot_needs_valid_source_labels():
    data = {key: torch.tensor(x) for key, x in deepjdot_data().items()}
    f_s, f_t = data.pop("f_s"), data.pop("f_t")
    with pytest.raises(DalibError, match="needs the source labels: pass y_s"):
        DeepJDOT()(f_s, f_t, **{**data, "y_s": None})
    with pytest.raises(DalibError, match=r"class indices in \[0, 3\)"):
        DeepJDOT()(f_s, f_t, **{**data, "y_s": data["y_s"] + 3})


MEASURES = {
    "emd": EarthMoverDistance,
    "emd_euclidean": lambda: EarthMoverDistance(metric="euclidean"),
    "sinkhorn": SinkhornDistance,
    "sliced": lambda: SlicedWasserstein(seed=0),
    "deepjdot": lambda: DeepJDOT(alpha=1.0, lambda_t=1.0),
}


@pytest.mark.parametrize("name", MEASURES)
def test_a_small_step_against_the_gradient_lowers_the_value(name):
    measure = MEASURES[name]()
    data = {key: torch.tensor(x) for key, x in deepjdot_data(seed=3).items()}
    f_s = data.pop("f_s").requires_grad_(True)
    f_t = data.pop("f_t")
    before = measure(f_s, f_t, **data)
    before.backward()
    step = 1e-3 * f_s.grad / f_s.grad.norm()
    after = measure(f_s.detach() - step, f_t, **data)
    assert after.item() < before.item()
    if name != "sinkhorn":  # the others' gradient is the exact one: check its first-order size
        assert before.item() - after.item() == pytest.approx(
            (f_s.grad * step).sum().item(), rel=1e-2
        )


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: EarthMoverDistance(metric="cosine"), "metric must be one of"),
        (lambda: EarthMoverDistance(num_iter_max=0), "num_iter_max must be >= 1"),
        (lambda: SinkhornDistance(reg=0.0), "reg must be a finite number > 0"),
        (lambda: SlicedWasserstein(n_projections=0), "n_projections must be >= 1"),
        (lambda: SlicedWasserstein(p=0.5), "p must be a finite number >= 1"),
        (lambda: DeepJDOT(alpha=-1.0), "alpha must be a finite number >= 0"),
    ],
)
def test_bad_options_are_refused(build, match):
    with pytest.raises(DalibError, match=match):
        build()
