"""Kernel MMD and JMMD against independent NumPy computations written out as sums."""

import itertools

import numpy as np
import pytest
import torch

from dalib.discrepancy import DISCREPANCIES, JointMMD, KernelMMD
from dalib.errors import DalibError

RNG = np.random.default_rng(0)
XS, XT = RNG.normal(size=(7, 3)), RNG.normal(0.7, 1.3, size=(6, 3))


def gaussian(sigmas):
    return lambda a, b: sum(np.exp(-((a - b) ** 2).sum() / (2 * s * s)) for s in sigmas)


def laplacian(sigmas):
    return lambda a, b: sum(np.exp(-np.sqrt(((a - b) ** 2).sum()) / s) for s in sigmas)


def polynomial(degree, coef, scale):
    return lambda a, b: (scale * (a @ b) + coef) ** degree


def ref_biased(k, xs, xt, ws=None, wt=None):
    ws = np.full(len(xs), 1 / len(xs)) if ws is None else ws / ws.sum()
    wt = np.full(len(xt), 1 / len(xt)) if wt is None else wt / wt.sum()
    ss = sum(
        ws[i] * ws[j] * k(xs[i], xs[j]) for i, j in itertools.product(range(len(xs)), repeat=2)
    )
    tt = sum(
        wt[i] * wt[j] * k(xt[i], xt[j]) for i, j in itertools.product(range(len(xt)), repeat=2)
    )
    st = sum(ws[i] * wt[j] * k(xs[i], xt[j]) for i in range(len(xs)) for j in range(len(xt)))
    return ss + tt - 2 * st


def ref_unbiased(k, xs, xt):
    n, m = len(xs), len(xt)
    ss = sum(k(xs[i], xs[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    tt = sum(k(xt[i], xt[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    st = sum(k(a, b) for a in xs for b in xt) / (n * m)
    return ss + tt - 2 * st


def ref_linear(k, xs, xt):
    m = min(len(xs), len(xt)) // 2
    h = [
        k(xs[2 * i], xs[2 * i + 1]) + k(xt[2 * i], xt[2 * i + 1])
        - k(xs[2 * i], xt[2 * i + 1]) - k(xs[2 * i + 1], xt[2 * i])
        for i in range(m)
    ]  # fmt: skip
    return np.mean(h)


def mmd(xs, xt, **options) -> float:
    return KernelMMD(**options)(torch.tensor(xs), torch.tensor(xt)).item()


REFERENCES = {"biased": ref_biased, "unbiased": ref_unbiased, "linear": ref_linear}
KERNEL_CASES = [
    ({"name": "gaussian", "sigmas": [0.5, 1.0, 3.0]}, gaussian([0.5, 1.0, 3.0])),
    ({"name": "laplacian", "sigmas": [0.7, 2.0]}, laplacian([0.7, 2.0])),
    ({"name": "polynomial", "degree": 3, "coef": 0.5}, polynomial(3, 0.5, 1 / 3)),
]


@pytest.mark.parametrize("estimator", ["biased", "unbiased", "linear"])
@pytest.mark.parametrize(("kernel", "reference_kernel"), KERNEL_CASES)
def test_each_kernel_and_estimator_matches_the_written_out_sums(
    kernel, reference_kernel, estimator
):
    expected = REFERENCES[estimator](reference_kernel, XS, XT)
    assert mmd(XS, XT, kernel=kernel, estimator=estimator) == pytest.approx(expected, rel=1e-5)


def _joint_off_diagonal_sq(xs, xt):
    z = np.concatenate([xs, xt])
    return np.array([((a - b) ** 2).sum() for a, b in itertools.permutations(z, 2)])


@pytest.mark.parametrize("heuristic", ["mean", "median"])
def test_bandwidth_heuristics_scale_the_pairwise_squared_distances(heuristic):
    sq = _joint_off_diagonal_sq(XS, XT)
    base = sq.mean() if heuristic == "mean" else np.sort(sq)[(len(sq) - 1) // 2]  # lower median
    multipliers = [0.5, 1.0, 2.0]
    sigmas = [np.sqrt(base * m / 2) for m in multipliers]  # 2σ² = multiplier · base
    got = mmd(
        XS, XT, kernel={"name": "gaussian", "multipliers": multipliers, "heuristic": heuristic}
    )
    assert got == pytest.approx(ref_biased(gaussian(sigmas), XS, XT), rel=1e-6)


def test_laplacian_heuristic_scales_the_mean_distance():
    base = np.sqrt(_joint_off_diagonal_sq(XS, XT)).mean()
    got = mmd(XS, XT, kernel={"name": "laplacian", "multipliers": [1.0, 3.0]})
    expected = ref_biased(laplacian([base, 3 * base]), XS, XT)
    assert got == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("offset", [0.0, 10.0])
def test_float32_laplacian_mmd_matches_a_float64_computation(offset):
    """The Laplacian's square root magnifies the round-off of the squared distances: a diagonal
    left at eps·‖z‖² instead of 0 costs 1e-3 relative error on offset (ReLU-like) features."""
    rng = np.random.default_rng(1)
    xs, xt = rng.normal(offset, 1.0, size=(32, 16)), rng.normal(offset + 0.5, 1.2, size=(32, 16))
    z = np.concatenate([xs, xt])
    dist = np.sqrt(((z[:, None] - z[None]) ** 2).sum(axis=2))  # direct differences, float64
    base = dist.sum() / (64 * 63)  # the mean heuristic over the off-diagonal pairs
    k = sum(np.exp(-dist / (m * base)) for m in (0.25, 0.5, 1.0, 2.0, 4.0))
    w = np.concatenate([np.full(32, 1 / 32), np.full(32, -1 / 32)])
    got = KernelMMD(kernel="laplacian")(torch.tensor(xs).float(), torch.tensor(xt).float())
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(w @ k @ w, rel=1e-6)


def test_weighted_biased_estimator_matches_weighted_sums():
    ws, wt = RNG.uniform(0.1, 2, size=len(XS)), RNG.uniform(0.1, 2, size=len(XT))
    kernel = {"name": "gaussian", "sigmas": [1.0, 2.0]}
    got = KernelMMD(kernel=kernel)(
        torch.tensor(XS), torch.tensor(XT), w_s=torch.tensor(ws), w_t=torch.tensor(wt)
    )
    assert got.item() == pytest.approx(ref_biased(gaussian([1.0, 2.0]), XS, XT, ws, wt), rel=1e-6)


def test_weights_act_like_copies_of_samples():
    f_s, f_t = torch.tensor(XS), torch.tensor(XT)
    measure = KernelMMD(kernel={"name": "gaussian", "sigmas": [1.0]})
    weighted = measure(f_s, f_t, w_s=torch.tensor([2.0, 1, 1, 1, 1, 1, 1], dtype=torch.float64))
    assert weighted.item() == pytest.approx(
        measure(torch.cat([f_s, f_s[:1]]), f_t).item(), rel=1e-12
    )


def test_jmmd_multiplies_a_feature_kernel_and_a_softmax_kernel():
    logits_s, logits_t = RNG.normal(size=(7, 4)), RNG.normal(size=(6, 4))
    p_s = np.exp(logits_s) / np.exp(logits_s).sum(1, keepdims=True)
    p_t = np.exp(logits_t) / np.exp(logits_t).sum(1, keepdims=True)
    kf, kg = gaussian([1.0, 2.0]), gaussian([0.92])
    joint_s = [np.concatenate([a, b]) for a, b in zip(XS, p_s, strict=True)]
    joint_t = [np.concatenate([a, b]) for a, b in zip(XT, p_t, strict=True)]

    def k(a, b):
        return kf(a[:3], b[:3]) * kg(a[3:], b[3:])

    for estimator in ("biased", "unbiased", "linear"):
        measure = JointMMD(kernel={"name": "gaussian", "sigmas": [1.0, 2.0]}, estimator=estimator)
        got = measure(
            torch.tensor(XS), torch.tensor(XT),
            logits_s=torch.tensor(logits_s), logits_t=torch.tensor(logits_t),
        )  # fmt: skip
        assert got.item() == pytest.approx(REFERENCES[estimator](k, joint_s, joint_t), rel=1e-5)


@pytest.mark.parametrize("estimator", ["biased", "unbiased", "linear"])
@pytest.mark.slow
def test_identical_distributions_give_about_zero_and_a_mean_shift_grows_it(estimator):
    torch.manual_seed(0)
    n = 20_000 if estimator == "linear" else 1000  # the linear statistic is noisier, and O(n)
    values = []
    for shift in (0.0, 0.5, 1.0, 2.0):
        f_s, f_t = torch.randn(n, 4), torch.randn(n, 4) + shift
        values.append(KernelMMD(estimator=estimator)(f_s, f_t).item())
    assert abs(values[0]) < 0.05 * values[-1]
    assert values == sorted(values)
    if estimator == "biased":
        assert values[0] >= 0


def test_unbiased_estimator_can_go_below_zero_on_identical_distributions():
    torch.manual_seed(0)
    draws = [KernelMMD(estimator="unbiased")(torch.randn(50, 2), torch.randn(50, 2)).item()
             for _ in range(20)]  # fmt: skip
    assert min(draws) < 0 < max(draws)
    assert abs(np.mean(draws)) < 0.01


def test_gradient_pulls_the_domains_together():
    torch.manual_seed(0)
    f_s = torch.randn(64, 2, requires_grad=True)
    f_t = torch.randn(64, 2) + 2.0
    KernelMMD()(f_s, f_t).backward()
    assert torch.isfinite(f_s.grad).all()
    assert (-f_s.grad.mean(dim=0) > 0).all(), "descent moves the source features towards +2"


def test_laplacian_gradient_is_finite_on_the_diagonal_and_for_duplicates():
    f_s = torch.tensor([[0.0, 1.0], [0.0, 1.0], [2.0, 0.0]], requires_grad=True)
    KernelMMD(kernel="laplacian")(f_s, torch.tensor([[1.0, 1.0], [3.0, 0.0]])).backward()
    assert torch.isfinite(f_s.grad).all()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"estimator": "quadratic"}, "unknown MMD estimator"),
        ({"kernel": "rbf"}, "unknown kernel 'rbf'"),
        ({"kernel": {"name": "gaussian", "sigmas": [1.0, -1.0]}}, "positive numbers"),
        ({"kernel": {"name": "gaussian", "heuristic": "mode"}}, "heuristic must be"),
        ({"kernel": {"name": "polynomial", "degree": 0}}, "degree >= 1"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(DalibError, match=message):
        DISCREPANCIES.build({"name": "mmd", **options})


def test_estimators_that_need_two_samples_say_so():
    one = torch.randn(1, 3)
    with pytest.raises(DalibError, match="unbiased MMD needs at least two samples"):
        KernelMMD(kernel={"name": "gaussian", "sigmas": [1.0]}, estimator="unbiased")(one, one)
    with pytest.raises(DalibError, match="linear-time MMD needs at least 2 samples"):
        KernelMMD(estimator="linear")(one, torch.randn(5, 3))
    with pytest.raises(DalibError, match="does not take instance weights"):
        KernelMMD(estimator="linear")(one, one, w_s=torch.ones(1))


def test_linear_estimator_shares_one_heuristic_bandwidth_across_its_four_terms():
    m = min(len(XS), len(XT)) // 2
    pairs = [(XS[2 * i], XS[2 * i + 1]) for i in range(m)]
    pairs += [(XT[2 * i], XT[2 * i + 1]) for i in range(m)]
    pairs += [(XS[2 * i], XT[2 * i + 1]) for i in range(m)]
    pairs += [(XS[2 * i + 1], XT[2 * i]) for i in range(m)]
    base = np.mean([((a - b) ** 2).sum() for a, b in pairs])
    sigmas = [np.sqrt(base * mult / 2) for mult in (0.5, 2.0)]
    got = mmd(XS, XT, kernel={"name": "gaussian", "multipliers": [0.5, 2.0]}, estimator="linear")
    assert got == pytest.approx(ref_linear(gaussian(sigmas), XS, XT), rel=1e-6)
