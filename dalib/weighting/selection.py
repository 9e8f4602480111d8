"""Sample selection: top source samples by weight, outlier source classes, confident targets."""

from __future__ import annotations

import numpy as np
import torch

from dalib.errors import DalibError
from dalib.target_losses import check_confident_options, confident_mask


def select_top(weights, *, k: int | None = None, fraction: float | None = None) -> np.ndarray:
    """Indices of the ``k`` (or ``fraction`` of the) largest weights, largest first."""
    weights = np.asarray(weights, dtype=float)
    if (k is None) == (fraction is None):
        raise DalibError("select_top needs exactly one of k or fraction")
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise DalibError(f"fraction must be in (0, 1], got {fraction}")
        k = max(1, round(fraction * len(weights)))
    if not 1 <= k <= len(weights):
        raise DalibError(f"k must be between 1 and {len(weights)}, got {k}")
    return np.argsort(-weights, kind="stable")[:k]


def class_weights_from_target(probs_t, normalize_max: bool = True) -> np.ndarray:
    """PADA's class weights: the mean predicted target probability of each class.

    Divided by its maximum (so the most likely target class weighs 1) unless
    ``normalize_max`` is false. Source classes absent from the target get small weights.
    """
    probs_t = np.asarray(probs_t, dtype=float)
    if probs_t.ndim != 2 or len(probs_t) == 0:
        raise DalibError(f"probs_t must be a non-empty (n, classes) array, got {probs_t.shape}")
    gamma = probs_t.mean(axis=0)
    return gamma / gamma.max() if normalize_max else gamma


def drop_outlier_classes(y_s, class_weights, threshold: float = 0.1) -> np.ndarray:
    """Indices of source samples whose class weight is at least ``threshold``."""
    y_s, class_weights = np.asarray(y_s), np.asarray(class_weights, dtype=float)
    if y_s.min() < 0 or y_s.max() >= len(class_weights):
        raise DalibError(f"y_s must be class indices in [0, {len(class_weights)})")
    keep = np.flatnonzero(class_weights[y_s] >= threshold)
    if keep.size == 0:
        raise DalibError(f"no source class has weight >= {threshold}; lower the threshold")
    return keep


def select_confident(
    probs_t, threshold: float = 0.9, per_class: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Target samples whose top probability is at least ``threshold``, with their pseudo-labels.

    ``per_class`` keeps at most that many of the most confident samples of each pseudo-class,
    for class balance. Returns ``(indices, pseudo_labels)``, indices in increasing order.
    In training, the target loss ``pseudo_label`` applies the same selection to each batch.
    """
    probs_t = np.asarray(probs_t, dtype=float)
    if probs_t.ndim != 2:
        raise DalibError(f"probs_t must be an (n, classes) array, got {probs_t.shape}")
    check_confident_options(threshold, per_class)
    keep = confident_mask(torch.from_numpy(probs_t), threshold, per_class).numpy()
    indices = np.flatnonzero(keep)
    return indices, probs_t.argmax(axis=1)[indices]
