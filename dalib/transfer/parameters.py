"""Parameter-based transfer: stay near the starting weights (L2-SP) or tie θ_s and θ_t.

Starting from trained weights is ``Network.load_parts`` (``init_from``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Snapshot(nn.Module):
    """A frozen copy of a module's parameters (θ₀), and the distance ``½‖θ − θ₀‖²`` to it.

    The copy is buffers, saved in checkpoints: a run restored from one needs neither the
    checkpoint it started from nor to recompute θ₀. ``take`` copies the module's weights again
    (when training starts, after ``init_from`` has loaded them).
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.names = [name for name, _ in module.named_parameters()]
        for i, p in enumerate(module.parameters()):
            self.register_buffer(f"p{i}", p.detach().clone())

    def take(self, module: nn.Module) -> None:
        """θ₀ := ``module``'s parameters now."""
        with torch.no_grad():
            for start, p in zip(self.buffers(), module.parameters(), strict=True):
                start.copy_(p)

    def half_squared_distance(self, module: nn.Module) -> torch.Tensor:
        """``½ Σ ‖θ − θ₀‖²`` over the parameters of ``module`` (the snapshot's structure)."""
        return half_squared_distance(module, list(self.buffers()))


def half_squared_distance(
    module: nn.Module, reference: nn.Module | Sequence[torch.Tensor]
) -> torch.Tensor:
    """``½ Σ ‖θ − θ'‖²`` between ``module``'s parameters and ``reference``'s (same structure)."""
    others = list(reference.parameters()) if isinstance(reference, nn.Module) else list(reference)
    mine = list(module.parameters())
    return 0.5 * sum(((a - b) ** 2).sum() for a, b in zip(mine, others, strict=True))
