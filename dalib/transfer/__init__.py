"""Classic transfer learning, composed with the domain-adaptation objective.

- ``Finetuning``: freeze parts by name or depth, unfreeze on a schedule (a callback); per-part
  learning rates are the module's ``lr_mults`` and ``layer_lr_decay``.
- ``cached_features`` (a dataset): a frozen backbone's features computed once, cached on disk.
- ``Distillation``: a teacher's softened predictions as a term of the objective.
- L2-SP and unshared source/target extractors: the module's ``l2_sp`` and ``unshared``.
"""

from dalib.transfer import feature_cache  # noqa: F401 - registers the cached_features dataset
from dalib.transfer.distillation import Distillation, distillation_loss
from dalib.transfer.finetuning import Finetuning
from dalib.transfer.layers import backbone_layers

__all__ = ["Distillation", "Finetuning", "backbone_layers", "distillation_loss"]
