"""Density-ratio estimators ``w(x) ≈ p_t(x) / p_s(x)`` with a scikit-learn interface.

Every estimator is fitted on unlabelled samples of both domains, ``fit(X_s, X_t)``, and returns
weights with ``predict_weights(X)``. The post-processing options are shared: ``alpha`` flattens
(``w ** alpha``; 0 gives uniform weights), ``clip`` caps each weight, and ``normalize`` rescales
the weights of ``X`` to mean 1 (self-normalisation).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import LinearConstraint, minimize
from scipy.spatial.distance import cdist
from sklearn.base import BaseEstimator, clone
from sklearn.linear_model import LogisticRegression

from dalib.errors import DalibError
from dalib.registry import Registry


def check_domains(X_s, X_t, min_target: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Both domains as finite 2-D float arrays of the same width, the target large enough."""
    X_s, X_t = np.asarray(X_s, dtype=float), np.asarray(X_t, dtype=float)
    for name, X in [("X_s", X_s), ("X_t", X_t)]:
        if X.ndim != 2 or X.shape[0] == 0:
            raise DalibError(f"{name} must be a non-empty (n, d) array, got shape {X.shape}")
        if not np.isfinite(X).all():
            raise DalibError(f"{name} contains NaN or infinite values; clean the features first")
    if X_s.shape[1] != X_t.shape[1]:
        raise DalibError(
            f"source and target have different feature dimensions ({X_s.shape[1]} vs "
            f"{X_t.shape[1]}); both domains need the same features"
        )
    if X_t.shape[0] < min_target:
        raise DalibError(
            f"the target has {X_t.shape[0]} samples, this estimator needs at least {min_target}"
        )
    return X_s, X_t


def gaussian_kernel(A: np.ndarray, B: np.ndarray, sigma: float) -> np.ndarray:
    """``exp(-|a - b|² / (2σ²))`` for every pair of rows."""
    return np.exp(-cdist(A, B, "sqeuclidean") / (2.0 * sigma**2))


def median_bandwidth(X: np.ndarray) -> float:
    """The median heuristic: the median pairwise distance of (up to 1000 of) the rows."""
    X = X[np.random.default_rng(0).permutation(len(X))[:1000]]
    distances = cdist(X, X)[np.triu_indices(len(X), 1)]
    positive = distances[distances > 0]
    return float(np.median(positive)) if positive.size else 1.0


class DensityRatioEstimator(BaseEstimator):
    """Base class: ``fit(X_s, X_t)``, then ``predict_weights(X)``; subclasses give ``_ratio``.

    As scikit-learn requires, each constructor names every parameter (the post-processing ones
    included) and only stores them, so ``get_params``, ``set_params`` and ``sklearn.base.clone``
    see them all.
    """

    min_target = 2

    def __init__(self, *, alpha: float = 1.0, clip: float | None = None, normalize: bool = True):
        self.alpha = alpha
        self.clip = clip
        self.normalize = normalize

    def fit(self, X_s, X_t) -> DensityRatioEstimator:
        X_s, X_t = check_domains(X_s, X_t, self.min_target)
        self.n_features_in_ = X_s.shape[1]
        self._fit(X_s, X_t)
        return self

    def predict_weights(self, X) -> np.ndarray:
        """Weights for the rows of ``X`` (usually the source samples), post-processed."""
        if not hasattr(self, "n_features_in_"):
            raise DalibError(f"{type(self).__name__} is not fitted; call fit(X_s, X_t) first")
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise DalibError(
                f"X must have shape (n, {self.n_features_in_}) like the fitted data, got {X.shape}"
            )
        return self.postprocess(self._ratio(X))

    def fit_predict_weights(self, X_s, X_t) -> np.ndarray:
        """Fit, then return the weights of the source samples."""
        return self.fit(X_s, X_t).predict_weights(X_s)

    def postprocess(self, w: np.ndarray) -> np.ndarray:
        """Flatten, clip and self-normalise raw ratios; refuse NaN or all-zero weights."""
        w = np.asarray(w, dtype=float)
        if not np.isfinite(w).all():
            raise DalibError(
                f"{type(self).__name__} produced NaN or infinite weights; "
                "try a larger bandwidth or regularisation, or set clip"
            )
        w = np.maximum(w, 0.0) ** self.alpha
        if self.clip is not None:
            if self.clip <= 0:
                raise DalibError(f"clip must be > 0, got {self.clip}")
            w = np.minimum(w, self.clip)
        if not (w > 0).any():
            raise DalibError(
                f"{type(self).__name__} gave every sample weight zero; "
                "the domains may not overlap: try a larger bandwidth or alpha < 1"
            )
        return w / w.mean() if self.normalize else w

    def _fit(self, X_s: np.ndarray, X_t: np.ndarray) -> None:
        raise NotImplementedError

    def _ratio(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class ClassifierRatio(DensityRatioEstimator):
    """A probabilistic domain classifier: ``w(x) = n_s/n_t · P(t|x) / P(s|x)``.

    ``classifier`` is any scikit-learn classifier with ``predict_proba`` (a pipeline too);
    logistic regression by default.
    """

    def __init__(
        self,
        classifier=None,
        *,
        alpha: float = 1.0,
        clip: float | None = None,
        normalize: bool = True,
    ):
        super().__init__(alpha=alpha, clip=clip, normalize=normalize)
        self.classifier = classifier

    def _fit(self, X_s, X_t):
        base = LogisticRegression(max_iter=1000) if self.classifier is None else self.classifier
        if not hasattr(base, "predict_proba"):
            raise DalibError(f"classifier {base!r} has no predict_proba; use a probabilistic one")
        self.classifier_ = clone(base).fit(
            np.vstack([X_s, X_t]), np.r_[np.zeros(len(X_s)), np.ones(len(X_t))]
        )
        self.prior_ = len(X_s) / len(X_t)

    def _ratio(self, X):
        p_t = np.clip(self.classifier_.predict_proba(X)[:, 1], 1e-12, 1 - 1e-12)
        return self.prior_ * p_t / (1.0 - p_t)


class KMM(DensityRatioEstimator):
    """Kernel Mean Matching (Huang et al., 2007), a quadratic program solved by SLSQP.

    Minimises ``½ βᵀKβ - κᵀβ`` over the source weights with ``0 ≤ β ≤ B`` and
    ``|Σβ - n_s| ≤ n_s·ε`` (``ε = (√n_s - 1)/√n_s`` by default). KMM is transductive: it
    weights the fitted source samples only, so ``predict_weights`` accepts those samples.

    Cost: SLSQP works on a dense n_s × n_s problem, about O(n_s³) per iteration, with hundreds
    of iterations (``benchmarks/results/density_ratio_cost.md``). Above ``max_samples`` source
    samples the source is split at random (``seed``) into near-equal blocks of at most
    ``max_samples``, and each block is matched to the whole target by its own QP, as in
    ensemble KMM (Miao et al., 2015), with the bandwidth of the whole data: the cost then grows
    linearly with n_s. ``None``: one QP.
    """

    min_target = 1

    def __init__(
        self,
        sigma: float | None = None,
        B: float = 1000.0,
        eps: float | None = None,
        max_samples: int | None = 200,
        seed: int = 0,
        *,
        alpha: float = 1.0,
        clip: float | None = None,
        normalize: bool = True,
    ):
        super().__init__(alpha=alpha, clip=clip, normalize=normalize)
        self.sigma = sigma
        self.B = B
        self.eps = eps
        self.max_samples = max_samples
        self.seed = seed

    def _fit(self, X_s, X_t):
        n_s = len(X_s)
        if self.max_samples is not None and self.max_samples < 2:
            raise DalibError(f"KMM max_samples must be None or >= 2, got {self.max_samples}")
        self.sigma_ = median_bandwidth(np.vstack([X_s, X_t])) if self.sigma is None else self.sigma
        if not self.sigma_ > 0:
            raise DalibError(f"KMM needs a kernel bandwidth sigma > 0, got {self.sigma_}")
        blocks = 1 if self.max_samples is None else -(-n_s // self.max_samples)
        order = np.random.default_rng(self.seed).permutation(n_s) if blocks > 1 else np.arange(n_s)
        self.weights_ = np.empty(n_s)
        for block in np.array_split(order, blocks):
            self.weights_[block] = self._solve(X_s[block], X_t)
        self._X_s = X_s

    def _solve(self, X_s: np.ndarray, X_t: np.ndarray) -> np.ndarray:
        """KMM's QP for one set of source samples against the target."""
        n_s, n_t = len(X_s), len(X_t)
        eps = (np.sqrt(n_s) - 1) / np.sqrt(n_s) if self.eps is None else float(self.eps)
        if self.B * n_s < n_s * (1 - eps):
            raise DalibError(
                f"KMM constraints are infeasible: B={self.B} cannot reach sum(beta) >= "
                f"{n_s * (1 - eps):.4g}; raise B or eps"
            )
        K = gaussian_kernel(X_s, X_s, self.sigma_)
        kappa = n_s / n_t * gaussian_kernel(X_s, X_t, self.sigma_).sum(axis=1)
        result = minimize(
            lambda b: (0.5 * b @ K @ b - kappa @ b) / n_s,  # scaled for the solver
            np.ones(n_s),
            jac=lambda b: (K @ b - kappa) / n_s,
            method="SLSQP",
            bounds=[(0.0, self.B)] * n_s,
            constraints=[LinearConstraint(np.ones((1, n_s)), n_s * (1 - eps), n_s * (1 + eps))],
            options={"maxiter": 1000, "ftol": 1e-9},
        )
        if not result.success:
            raise DalibError(
                f"KMM's quadratic program failed ({result.message}); "
                "try another sigma, a larger B or eps"
            )
        self.eps_ = eps
        return np.clip(result.x, 0.0, self.B)

    def _ratio(self, X):
        if X.shape != self._X_s.shape or not np.array_equal(X, self._X_s):
            raise DalibError(
                "KMM only weights the source samples it was fitted on; "
                "use fit_predict_weights, or ClassifierRatio/KLIEP/ULSIF for new samples"
            )
        return self.weights_


class _KernelRatio(DensityRatioEstimator):
    """``w(x) = Σ_l α_l k(x, c_l)`` with Gaussian kernels centred on target samples."""

    def __init__(
        self,
        sigma: float | None = None,
        n_centers: int = 100,
        seed: int = 0,
        *,
        alpha: float = 1.0,
        clip: float | None = None,
        normalize: bool = True,
    ):
        super().__init__(alpha=alpha, clip=clip, normalize=normalize)
        self.sigma = sigma
        self.n_centers = n_centers
        self.seed = seed

    def _centers(self, X_s, X_t):
        self.sigma_ = median_bandwidth(np.vstack([X_s, X_t])) if self.sigma is None else self.sigma
        if not self.sigma_ > 0:
            raise DalibError(f"the kernel bandwidth sigma must be > 0, got {self.sigma_}")
        pick = np.random.default_rng(self.seed).permutation(len(X_t))[: self.n_centers]
        self.centers_ = X_t[pick]
        return gaussian_kernel(X_s, self.centers_, self.sigma_), gaussian_kernel(
            X_t, self.centers_, self.sigma_
        )

    def _ratio(self, X):
        return gaussian_kernel(X, self.centers_, self.sigma_) @ self.alpha_


class KLIEP(_KernelRatio):
    """KLIEP (Sugiyama et al., 2008): maximise ``Σ_t log w(x_t)`` with mean source weight 1.

    Solved by projected gradient ascent on ``α ≥ 0`` with the normalisation as a projection.
    """

    def __init__(
        self,
        max_iter: int = 2000,
        lr: float = 1e-3,
        tol: float = 1e-8,
        sigma: float | None = None,
        n_centers: int = 100,
        seed: int = 0,
        *,
        alpha: float = 1.0,
        clip: float | None = None,
        normalize: bool = True,
    ):
        super().__init__(sigma, n_centers, seed, alpha=alpha, clip=clip, normalize=normalize)
        self.max_iter = max_iter
        self.lr = lr
        self.tol = tol

    def _fit(self, X_s, X_t):
        K_s, K_t = self._centers(X_s, X_t)
        b = K_s.mean(axis=0)
        alpha = np.ones(K_t.shape[1]) / (b @ np.ones(K_t.shape[1]))

        def project(a):
            a = a + (1 - b @ a) * b / (b @ b)
            a = np.maximum(a, 0.0)
            return a / (b @ a)

        objective = np.log(K_t @ alpha).mean()
        for _ in range(self.max_iter):
            grad = K_t.T @ (1.0 / (K_t @ alpha))
            candidate = project(alpha + self.lr * grad)
            value = np.log(K_t @ candidate).mean()
            if value < objective:
                break
            converged = value - objective < self.tol
            alpha, objective = candidate, value
            if converged:
                break
        self.alpha_ = alpha


class ULSIF(_KernelRatio):
    """uLSIF (Kanamori et al., 2009): least-squares fit of the ratio, in closed form.

    ``α = max(0, (K_sᵀK_s/n_s + λI)⁻¹ mean_t K_t)`` with ridge ``lam``.
    """

    def __init__(
        self,
        lam: float = 1e-3,
        sigma: float | None = None,
        n_centers: int = 100,
        seed: int = 0,
        *,
        alpha: float = 1.0,
        clip: float | None = None,
        normalize: bool = True,
    ):
        super().__init__(sigma, n_centers, seed, alpha=alpha, clip=clip, normalize=normalize)
        self.lam = lam

    def _fit(self, X_s, X_t):
        K_s, K_t = self._centers(X_s, X_t)
        H = K_s.T @ K_s / len(X_s) + self.lam * np.eye(K_s.shape[1])
        self.alpha_ = np.maximum(np.linalg.solve(H, K_t.mean(axis=0)), 0.0)


ESTIMATORS: Registry[DensityRatioEstimator] = Registry(
    "density-ratio estimator", "dalib.density_ratios"
)
ESTIMATORS.register("classifier")(ClassifierRatio)
ESTIMATORS.register("kmm")(KMM)
ESTIMATORS.register("kliep")(KLIEP)
ESTIMATORS.register("ulsif")(ULSIF)
