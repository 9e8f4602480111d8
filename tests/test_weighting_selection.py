"""Selection strategies: top weights, PADA class weights, confident pseudo-labels."""

import numpy as np
import pytest

from dalib.errors import DalibError
from dalib.weighting.selection import (
    class_weights_from_target,
    drop_outlier_classes,
    select_confident,
    select_top,
)


def test_select_top():
    w = np.array([0.1, 3.0, 0.5, 2.0, 1.0])
    assert select_top(w, k=2).tolist() == [1, 3]
    assert select_top(w, fraction=0.6).tolist() == [1, 3, 4]
    with pytest.raises(DalibError, match="exactly one"):
        select_top(w)
    with pytest.raises(DalibError, match="between 1 and 5"):
        select_top(w, k=6)


def test_partial_domain_class_weights_drop_absent_classes():
    rng = np.random.default_rng(0)
    # The target holds classes 0 and 2 only; predictions put little mass on 1 and 3.
    y_t = rng.choice([0, 2], 200)
    probs = np.full((200, 4), 0.05)
    probs[np.arange(200), y_t] = 0.85
    weights = class_weights_from_target(probs)
    np.testing.assert_allclose(weights, probs.mean(0) / probs.mean(0).max())
    assert weights[[0, 2]].min() > 0.8 and weights[[1, 3]].max() < 0.15
    y_s = np.repeat(np.arange(4), 5)
    keep = drop_outlier_classes(y_s, weights, threshold=0.5)
    assert set(y_s[keep]) == {0, 2} and len(keep) == 10
    with pytest.raises(DalibError, match="lower the threshold"):
        drop_outlier_classes(y_s, weights, threshold=2.0)


def test_select_confident_with_class_balance():
    probs = np.array(
        [[0.95, 0.05], [0.97, 0.03], [0.99, 0.01], [0.6, 0.4], [0.08, 0.92], [0.3, 0.7]]
    )
    idx, labels = select_confident(probs, threshold=0.9)
    assert idx.tolist() == [0, 1, 2, 4] and labels.tolist() == [0, 0, 0, 1]
    idx, labels = select_confident(probs, threshold=0.9, per_class=1)
    assert idx.tolist() == [2, 4] and labels.tolist() == [0, 1]
    idx, _ = select_confident(probs, threshold=0.999)
    assert idx.size == 0
