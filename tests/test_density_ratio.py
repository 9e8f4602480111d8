"""Density-ratio estimators against the known ratio of two Gaussians."""

import numpy as np
import pytest
from scipy.stats import multivariate_normal, spearmanr
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.utils.estimator_checks import parametrize_with_checks

from dalib.errors import DalibError
from dalib.weighting import KLIEP, KMM, ULSIF, ClassifierRatio
from dalib.weighting.density_ratio import ESTIMATORS, gaussian_kernel

MU_T, SCALE_T = np.array([0.7, 0.0]), 0.8


def gaussians(n_s=300, n_t=300, seed=0):
    rng = np.random.default_rng(seed)
    X_s = rng.normal(0.0, 1.0, (n_s, 2))
    X_t = rng.normal(MU_T, SCALE_T, (n_t, 2))
    true = multivariate_normal(MU_T, SCALE_T**2 * np.eye(2)).pdf(X_s) / multivariate_normal(
        np.zeros(2), np.eye(2)
    ).pdf(X_s)
    return X_s, X_t, true


@pytest.mark.parametrize(
    "estimator, min_rank_corr",
    [(ClassifierRatio(), 0.9), (KLIEP(), 0.95), (ULSIF(), 0.93)],
)
def test_recovers_known_ratio(estimator, min_rank_corr):
    X_s, X_t, true = gaussians()
    w = estimator.fit_predict_weights(X_s, X_t)
    assert w.shape == (300,) and np.isclose(w.mean(), 1.0)
    assert spearmanr(w, true)[0] > min_rank_corr
    # Out-of-sample: weights on fresh source samples still follow the true ratio.
    X_new, _, true_new = gaussians(seed=1)
    assert spearmanr(estimator.predict_weights(X_new), true_new)[0] > min_rank_corr


def test_classifier_ratio_is_exact_for_a_mean_shift():
    """Equal covariances make the log-ratio linear: logistic regression is well specified."""
    rng = np.random.default_rng(0)
    X_s, X_t = rng.normal(0, 1, (2000, 1)), rng.normal(0.5, 1, (2000, 1))
    w = ClassifierRatio(normalize=False).fit(X_s, X_t).predict_weights(np.array([[0.0], [1.0]]))
    true = np.exp(0.5 * np.array([0.0, 1.0]) - 0.125)  # N(0.5,1)/N(0,1) at x = 0, 1
    np.testing.assert_allclose(w, true, rtol=0.15)


@pytest.mark.slow
def test_kmm_satisfies_constraints_and_matches_means():
    X_s, X_t, true = gaussians(n_s=120, n_t=120)
    kmm = KMM(B=5.0, normalize=False)
    beta = kmm.fit_predict_weights(X_s, X_t)
    n = len(X_s)
    assert beta.min() >= 0 and beta.max() <= 5.0 + 1e-9
    assert abs(beta.sum() - n) <= n * kmm.eps_ + 1e-6

    def mmd2(w):  # squared RKHS distance between the weighted source and the target mean
        w = w / w.sum()
        k = lambda a, b: gaussian_kernel(a, b, kmm.sigma_)  # noqa: E731
        return w @ k(X_s, X_s) @ w - 2 * w @ k(X_s, X_t).mean(1) + k(X_t, X_t).mean()

    assert mmd2(beta) < 0.5 * mmd2(np.ones(n))
    assert spearmanr(beta, true)[0] > 0.3  # KMM matches means; its weights are noisy per sample


@pytest.mark.slow
def test_kmm_above_max_samples_solves_one_qp_per_block_of_source_samples():
    X_s, X_t, true = gaussians(n_s=150, n_t=120)
    kmm = KMM(B=5.0, normalize=False, max_samples=50)
    beta = kmm.fit_predict_weights(X_s, X_t)
    blocks = np.array_split(np.random.default_rng(0).permutation(150), 3)
    for block in blocks:  # each block of 50 meets its own constraints
        assert abs(beta[block].sum() - 50) <= 50 * kmm.eps_ + 1e-6
    alone = KMM(sigma=kmm.sigma_, B=5.0, normalize=False, max_samples=None)
    alone = alone.fit_predict_weights(X_s[blocks[0]], X_t)  # the block's QP on its own
    np.testing.assert_allclose(beta[blocks[0]], alone, atol=1e-6)
    assert spearmanr(beta, true)[0] > 0.3


@pytest.mark.parametrize("estimator", [ClassifierRatio(), KLIEP(), ULSIF()])
def test_same_distribution_gives_weights_near_one(estimator):
    rng = np.random.default_rng(0)
    X_s, X_t = rng.normal(size=(400, 2)), rng.normal(size=(400, 2))
    w = estimator.fit_predict_weights(X_s, X_t)
    assert np.median(np.abs(w - 1)) < 0.15


def test_postprocessing_flattens_clips_and_normalises():
    X_s, X_t, _ = gaussians()
    raw = ULSIF(normalize=False).fit(X_s, X_t).predict_weights(X_s)
    flat = ULSIF(alpha=0.5, normalize=False).fit(X_s, X_t).predict_weights(X_s)
    np.testing.assert_allclose(flat, raw**0.5)
    assert np.allclose(ULSIF(alpha=0.0).fit_predict_weights(X_s, X_t), 1.0)
    clipped = ULSIF(clip=1.5, normalize=False).fit(X_s, X_t).predict_weights(X_s)
    np.testing.assert_allclose(clipped, np.minimum(raw, 1.5))
    normed = ULSIF().fit(X_s, X_t).predict_weights(X_s)
    np.testing.assert_allclose(normed, raw / raw.mean())


@pytest.mark.slow
def test_bad_input_is_refused():
    X_s, X_t, _ = gaussians(60, 60)
    with pytest.raises(DalibError, match="different feature dimensions"):
        KLIEP().fit(X_s, X_t[:, :1])
    with pytest.raises(DalibError, match="at least 2"):
        ULSIF().fit(X_s, X_t[:1])
    with pytest.raises(DalibError, match="infeasible"):
        KMM(B=0.01).fit(X_s, X_t)
    with pytest.raises(DalibError, match="NaN"):
        ClassifierRatio().fit(np.full((5, 2), np.nan), X_t)
    with pytest.raises(DalibError, match="not fitted"):
        ULSIF().predict_weights(X_s)
    with pytest.raises(DalibError, match="only weights the source samples"):
        KMM().fit(X_s, X_t).predict_weights(X_t)
    # Far-apart domains with a tiny bandwidth: every kernel weight underflows to zero.
    with pytest.raises(DalibError, match="weight zero"):
        ULSIF(sigma=1e-3).fit_predict_weights(X_s, X_t + 100.0)


def test_weights_in_a_scikit_learn_pipeline_correct_covariate_shift():
    """Misspecified linear fit under covariate shift: target-weighted training lowers the
    target error (Shimodaira's example: y = sinc-like curve, source wide, target shifted)."""
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler

    rng = np.random.default_rng(0)
    X_s, X_t = rng.normal(0.5, 0.5, (400, 1)), rng.normal(0.0, 0.3, (400, 1))

    def f(X):
        return -X[:, 0] + X[:, 0] ** 3

    y_s = f(X_s) + rng.normal(0, 0.1, 400)
    ratio = ClassifierRatio(
        # Quadratic features: the log-ratio of two Gaussians is quadratic, so this is exact.
        classifier=make_pipeline(
            PolynomialFeatures(2), StandardScaler(), LogisticRegression(max_iter=1000)
        )
    )
    w = ratio.fit_predict_weights(X_s, X_t)
    plain = LinearRegression().fit(X_s, y_s)
    weighted = LinearRegression().fit(X_s, y_s, sample_weight=w)
    err = lambda m: np.mean((m.predict(X_t) - f(X_t)) ** 2)  # noqa: E731
    true = np.exp(-(X_s[:, 0] ** 2) / 0.18 + (X_s[:, 0] - 0.5) ** 2 / 0.5)  # ∝ N(0,.3²)/N(.5,.5²)
    oracle = LinearRegression().fit(X_s, y_s, sample_weight=true)
    assert err(weighted) < 0.75 * err(plain)
    assert err(weighted) < 1.5 * err(oracle)


# A value other than the default for every constructor parameter of every estimator.
SETTINGS = {
    "classifier": {"classifier": LogisticRegression(C=0.3, max_iter=500)},
    "kmm": {"sigma": 0.8, "B": 20.0, "eps": 0.2, "max_samples": 15, "seed": 3},
    "kliep": {"max_iter": 300, "lr": 3e-3, "tol": 1e-6, "sigma": 0.8, "n_centers": 30, "seed": 3},
    "ulsif": {"lam": 1e-2, "sigma": 0.8, "n_centers": 30, "seed": 3},
}
POSTPROCESSING = {"alpha": 0.5, "clip": 2.0, "normalize": False}


@pytest.mark.parametrize("name", ESTIMATORS.names())
def test_clone_keeps_every_setting(name):
    settings = {**SETTINGS[name], **POSTPROCESSING}
    estimator = ESTIMATORS.get(name)(**settings)
    assert set(estimator.get_params(deep=False)) == set(settings), "a setting without a test value"
    copy = clone(estimator)
    for key, value in settings.items():
        kept = copy.get_params(deep=False)[key]
        if key == "classifier":  # clone copies a nested estimator with its parameters
            assert kept is not value and kept.get_params() == value.get_params()
        else:
            assert kept == value, key
    X_s, X_t, _ = gaussians(30, 30)
    np.testing.assert_array_equal(
        copy.fit_predict_weights(X_s, X_t), estimator.fit_predict_weights(X_s, X_t)
    )
    assert copy.predict_weights(X_s).max() <= 2.0  # clip survived the clone


def test_set_params_changes_the_weights():
    X_s, X_t, _ = gaussians(80, 80)
    estimator = ULSIF().set_params(alpha=0.0, n_centers=20)
    assert estimator.get_params()["n_centers"] == 20
    np.testing.assert_allclose(estimator.fit_predict_weights(X_s, X_t), 1.0)  # alpha 0: uniform


# Checks that fit an estimator as fit(X, y), y a 1-D target: these fit on two samples,
# fit(X_s, X_t), so y is refused as a target sample ("X_t must be a non-empty (n, d) array").
FITS_ON_X_AND_Y = "fit(X_s, X_t) takes two samples, not features and a 1-D target y"
NOT_APPLICABLE = dict.fromkeys(
    [
        "check_complex_data",
        "check_dict_unchanged",
        "check_dont_overwrite_parameters",
        "check_dtype_object",
        "check_estimator_sparse_array",
        "check_estimator_sparse_matrix",
        "check_estimator_sparse_tag",
        "check_estimators_dtypes",
        "check_estimators_empty_data_messages",
        "check_estimators_fit_returns_self",
        "check_estimators_nan_inf",
        "check_estimators_overwrite_params",
        "check_estimators_pickle",
        "check_f_contiguous_array_estimator",
        "check_fit2d_1feature",
        "check_fit2d_1sample",
        "check_fit2d_predict1d",
        "check_fit_check_is_fitted",
        "check_fit_idempotent",
        "check_fit_score_takes_y",
        "check_methods_sample_order_invariance",
        "check_methods_subset_invariance",
        "check_n_features_in",
        "check_n_features_in_after_fitting",
        "check_pipeline_consistency",
        "check_positive_only_tag_during_fit",
        "check_readonly_memmap_input",
    ],
    FITS_ON_X_AND_Y,
)


@parametrize_with_checks([ClassifierRatio(), KMM(), KLIEP(), ULSIF()])
def test_scikit_learn_estimator_checks(estimator, check):
    """scikit-learn's checks of the estimator API (parameters, cloning, repr, tags, unfitted
    errors); the ones that fit on (X, y) are skipped rather than run as expected failures,
    each of which costs a formatted traceback."""
    name = getattr(check, "func", check).__name__
    if name in NOT_APPLICABLE:
        pytest.skip(NOT_APPLICABLE[name])
    check(estimator)
