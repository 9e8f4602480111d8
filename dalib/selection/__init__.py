"""Model selection without target labels: scores, and the callback that applies them."""

from dalib.selection.scores import SCORES, SELECTIONS, EvalOutputs, proxy_a_distance
from dalib.selection.tracker import SelectionTracker

__all__ = ["SCORES", "SELECTIONS", "EvalOutputs", "SelectionTracker", "proxy_a_distance"]
