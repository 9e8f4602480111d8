"""Model-selection scores that see no target labels, and the proxy A-distance.

Each score takes what one validation pass produced: source validation logits and labels (the
held-out split of the labelled source data), target logits (unlabelled target samples), and the
features of both. A score is maximised or minimised as its entry in the ``SCORES`` registry
says; plugins add scores through the entry-point group ``dalib.selection_scores``.

- ``source_acc``: accuracy on held-out source data. Blind to the shift.
- ``iwcv``: importance-weighted cross-validation (Sugiyama, Krauledat & Müller, JMLR 2007): the
  source validation loss weighted by density ratios ``p_t(f)/p_s(f)`` from a domain classifier.
- ``dev``: deep embedded validation (You et al., ICML 2019): IWCV with the control variate that
  lowers its variance, ``mean(w·l) + η·mean(w) − η`` with ``η = −Cov(w·l, w)/Var(w)``.
- ``entropy``: mean entropy of the target predictions. Documented failure: a model that predicts
  one class for every target sample with confidence scores best.
- ``snd``: soft neighbourhood density (Saito et al., ICCV 2021): the mean entropy of each target
  sample's softmax-over-neighbours of cosine similarities between L2-normalised target class
  probabilities, temperature 0.05. Documented failure, also in the paper: a model that collapses
  every target sample onto one prediction makes all neighbourhoods uniform, which SND rates best.
- ``rv``: reverse validation (Zhong et al., ECML PKDD 2010; used to choose hyper-parameters by
  Ganin et al., JMLR 2016, §5.1.2): a reverse classifier is trained on the target samples with the
  model's pseudo-labels and scored by its accuracy on the held-out source split. Here the reverse
  classifier is a standardised multinomial logistic regression on the model's own features (the
  classifier's input), not a second adapted network as in Ganin et al.: it is linear like the
  model's head, deterministic, and cheap enough for every validation. A collapsed model gives one
  pseudo-label, a constant reverse classifier, and the source frequency of that class: low.
- ``oracle``: target accuracy with target labels, the upper bound that no honest protocol may
  use for selection; recorded beside the honest choices, never instead of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dalib.errors import DalibError
from dalib.registry import Registry

SND_TEMPERATURE = 0.05


@dataclass(frozen=True)
class EvalOutputs:
    """One validation pass: source held-out logits, labels, features; target logits, features."""

    source_logits: torch.Tensor
    source_labels: torch.Tensor
    source_features: torch.Tensor
    target_logits: torch.Tensor
    target_features: torch.Tensor

    @cached_property
    def density_ratios(self) -> np.ndarray:
        """``p_t/p_s`` at each source validation sample (computed once, shared by IWCV and DEV)."""
        return domain_density_ratios(self.source_features, self.target_features)


def require_source(out: EvalOutputs) -> None:
    """Stop a score that needs held-out source data where there is none."""
    if len(out.source_labels) == 0:
        raise DalibError(
            "no held-out source data (data.val_fraction is 0): the score needs source labels"
        )


def source_accuracy(out: EvalOutputs) -> float:
    require_source(out)
    return (out.source_logits.argmax(1) == out.source_labels).float().mean().item()


def target_entropy(out: EvalOutputs) -> float:
    log_p = F.log_softmax(out.target_logits.double(), dim=1)
    return -(log_p.exp() * log_p).sum(1).mean().item()


def soft_neighbourhood_density(
    logits: torch.Tensor, temperature: float = SND_TEMPERATURE, chunk: int = 1024
) -> float:
    """SND of target predictions; rows are processed in chunks, so memory stays O(chunk·n)."""
    p = F.normalize(F.softmax(logits.double(), dim=1), dim=1)
    n = p.shape[0]
    if n < 2:
        raise DalibError("SND needs at least two target samples")
    total = 0.0
    for start in range(0, n, chunk):
        rows = p[start : start + chunk] @ p.T / temperature
        index = torch.arange(start, start + rows.shape[0])
        rows[torch.arange(rows.shape[0]), index] = -torch.inf  # a sample is not its own neighbour
        log_q = F.log_softmax(rows, dim=1)
        q = log_q.exp()
        total += -(q * log_q.nan_to_num(neginf=0.0)).sum().item()
    return total / n


def out_of_fold_domain(
    x: np.ndarray, domain: np.ndarray, folds: int, seed: int, method: str
) -> np.ndarray:
    """Out-of-fold outputs of a standardised logistic-regression domain classifier."""
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return cross_val_predict(classifier, x, domain, cv=split, method=method)


def domain_density_ratios(
    source: torch.Tensor, target: torch.Tensor, seed: int = 0, folds: int = 2
) -> np.ndarray:
    """``p_t(x)/p_s(x)`` at each source sample, from a logistic-regression domain classifier.

    Probabilities are out-of-fold (``folds``-fold cross-fitting), so no sample is weighted by a
    classifier that saw it; the ratio is ``(n_s/n_t)·P(t|x)/P(s|x)``, the Bayes-rule density ratio.
    """
    if min(len(source), len(target)) < folds:
        raise DalibError(
            f"the domain classifier of IWCV/DEV needs at least {folds} samples of each domain, "
            f"got {len(source)} source and {len(target)} target; raise data.val_fraction or "
            "data.selection_samples"
        )
    xs, xt = source.double().numpy(), target.double().numpy()
    x = np.concatenate([xs, xt])
    d = np.concatenate([np.zeros(len(xs)), np.ones(len(xt))])
    p_t = out_of_fold_domain(x, d, folds, seed, method="predict_proba")[: len(xs), 1]
    p_t = np.clip(p_t, 1e-6, 1 - 1e-6)
    return (len(xs) / len(xt)) * p_t / (1 - p_t)


def _weighted_losses(out: EvalOutputs) -> tuple[np.ndarray, np.ndarray]:
    require_source(out)
    losses = F.cross_entropy(out.source_logits.double(), out.source_labels, reduction="none")
    weights = out.density_ratios
    return weights, weights * losses.numpy()


def iwcv_risk(out: EvalOutputs) -> float:
    _, weighted = _weighted_losses(out)
    return float(weighted.mean())


def dev_risk(out: EvalOutputs) -> float:
    weights, weighted = _weighted_losses(out)
    variance = weights.var(ddof=1)
    eta = 0.0 if variance == 0 else -np.cov(weighted, weights)[0, 1] / variance
    return float(weighted.mean() + eta * weights.mean() - eta)


def reverse_validation(out: EvalOutputs) -> float:
    """Source held-out accuracy of a classifier fitted to the target features and pseudo-labels.

    Pseudo-labels are ``argmax`` of the target logits; the reverse classifier is
    ``StandardScaler`` then ``LogisticRegression(C=1)`` (scikit-learn's L2-regularised
    multinomial log-loss, lbfgs), fitted on the unlabelled target split.
    """
    require_source(out)
    if len(out.target_features) < 2:
        raise DalibError("reverse validation needs at least two target samples")
    pseudo = out.target_logits.argmax(1).numpy()
    source_labels = out.source_labels.numpy()
    classes = np.unique(pseudo)
    if len(classes) == 1:  # a classifier fitted to one class predicts it everywhere
        return float((source_labels == classes[0]).mean())
    reverse = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    reverse.fit(out.target_features.double().numpy(), pseudo)
    return float((reverse.predict(out.source_features.double().numpy()) == source_labels).mean())


def proxy_a_distance(source: torch.Tensor, target: torch.Tensor, seed: int = 0) -> float:
    """``2(1 − 2ε)`` with ε the held-out error of a linear domain classifier (Ben-David et al.).

    Balanced classes (the larger domain is subsampled), 2-fold cross-validated error.
    """
    n = min(len(source), len(target))
    if n < 2:
        raise DalibError(f"the proxy A-distance needs two samples of each domain, got {n}")
    rng = np.random.default_rng(seed)
    xs = source.double().numpy()[rng.permutation(len(source))[:n]]
    xt = target.double().numpy()[rng.permutation(len(target))[:n]]
    x = np.concatenate([xs, xt])
    d = np.concatenate([np.zeros(n), np.ones(n)])
    error = float((out_of_fold_domain(x, d, 2, seed, method="predict") != d).mean())
    return 2.0 * (1.0 - 2.0 * min(error, 0.5))


@dataclass(frozen=True)
class Score:
    """A selection score: how to compute it and whether larger is better.

    The registry ``SCORES`` maps a name to a function (or class) that returns a ``Score``;
    a plugin's score is such a function too.
    """

    compute: Callable[[EvalOutputs], float]
    higher_is_better: bool

    @property
    def mode(self) -> str:
        return "max" if self.higher_is_better else "min"


SCORES: Registry[Score] = Registry("selection score", "dalib.selection_scores")
#: The choices of ``selection`` that are not scores: the last model, the best target accuracy.
NOT_SCORES = ("last", "oracle")


@SCORES.register("source_acc")
def source_acc() -> Score:
    """Accuracy on held-out source data (maximised); blind to the shift."""
    return Score(source_accuracy, higher_is_better=True)


@SCORES.register("iwcv")
def iwcv() -> Score:
    """Importance-weighted source validation loss (minimised; Sugiyama et al., 2007)."""
    return Score(iwcv_risk, higher_is_better=False)


@SCORES.register("dev")
def dev() -> Score:
    """Deep embedded validation: IWCV with a control variate (minimised; You et al., 2019)."""
    return Score(dev_risk, higher_is_better=False)


@SCORES.register("entropy")
def entropy() -> Score:
    """Mean entropy of the target predictions (minimised)."""
    return Score(target_entropy, higher_is_better=False)


@SCORES.register("snd")
def snd() -> Score:
    """Soft neighbourhood density of the target predictions (maximised; Saito et al., 2021)."""
    return Score(lambda out: soft_neighbourhood_density(out.target_logits), higher_is_better=True)


@SCORES.register("rv")
def rv() -> Score:
    """Reverse validation: source held-out accuracy of a classifier fitted to the target
    pseudo-labels (maximised; Zhong et al., 2010)."""
    return Score(reverse_validation, higher_is_better=True)


def check_selection(name: str, key: str = "selection") -> None:
    """``name`` must be ``last``, ``oracle`` or a selection score (a plugin's, or a spec)."""
    if name in NOT_SCORES:
        return
    if ":" in name or name in SCORES.names():
        SCORES.get(name)  # a spec or plugin that cannot be imported says so here
        return
    raise DalibError(
        f"unknown {key} {name!r}; choose one of: {', '.join([*NOT_SCORES, *SCORES.names()])}, "
        "or a 'package.module:Name' spec"
    )


def tracked_scores(*selected: str | None, every_score: bool = True) -> dict[str, Score]:
    """dalib's scores (with ``every_score``) and the ``selected`` ones (a plugin's score is
    computed when selected). Without ``every_score``, only the selected ones and ``source_acc``
    (which costs one comparison and gives the record's ``source_val_acc``): a run then pays for
    no costly score it does not select by, but its record cannot say what the others would have
    chosen."""
    names = [*SCORES.entries(plugins=False)] if every_score else ["source_acc"]
    names += [name for name in selected if name is not None and name not in (*NOT_SCORES, *names)]
    return {name: SCORES.build(name) for name in names}
