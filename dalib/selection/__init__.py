"""Model selection without target labels: scores, and the callback that applies them."""

from dalib.selection.scores import SCORES, EvalOutputs, Score, proxy_a_distance
from dalib.selection.tracker import SelectionTracker

__all__ = ["SCORES", "EvalOutputs", "Score", "SelectionTracker", "proxy_a_distance"]
