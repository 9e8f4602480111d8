"""Parameter-based transfer: start from trained weights, stay near them (L2-SP, tied θ_s, θ_t)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from dalib.errors import DalibError


def load_submodules(module: nn.Module, checkpoint: str, prefixes: Sequence[str]) -> None:
    """Copy the weights of ``prefixes`` (``backbone``, ``bottleneck``...) from a dalib checkpoint.

    The checkpoint is a Lightning ``.ckpt`` written by ``dalib fit`` (or a plain state_dict of a
    ``DomainAdaptationModule``); each named part must exist in both with the same shapes.
    """
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise DalibError(f"init_from {str(path)!r} does not exist; give a dalib .ckpt file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # unpickling raises many types; all mean "not a checkpoint"
        raise DalibError(f"cannot read init_from {str(path)!r}: {type(error).__name__}") from error
    state = state.get("state_dict", state) if isinstance(state, dict) else None
    if not isinstance(state, dict):
        raise DalibError(f"init_from {str(path)!r} holds no state_dict")
    for prefix in prefixes:
        part = getattr(module, prefix, None)
        if not isinstance(part, nn.Module):
            raise DalibError(f"init_modules names {prefix!r}, which the module does not have")
        own = {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}
        try:
            part.load_state_dict(own, strict=True)
        except RuntimeError as error:
            first = str(error).split("\n")[1].strip() if "\n" in str(error) else str(error)
            raise DalibError(
                f"the {prefix} weights in {str(path)!r} do not fit this model ({first}); "
                f"use the same {prefix} settings as the run that wrote it"
            ) from None


class Snapshot(nn.Module):
    """A frozen copy of some parameters (buffers, not saved in checkpoints: the module rebuilds
    them from its config), and the distance ``½‖θ − θ₀‖²`` of a module's parameters to it."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.names = [name for name, _ in module.named_parameters()]
        for i, p in enumerate(module.parameters()):
            self.register_buffer(f"p{i}", p.detach().clone(), persistent=False)

    def half_squared_distance(self, module: nn.Module) -> torch.Tensor:
        """``½ Σ ‖θ − θ₀‖²`` over the parameters of ``module`` (the snapshot's structure)."""
        return half_squared_distance(
            module, [getattr(self, f"p{i}") for i in range(len(self.names))]
        )


def half_squared_distance(
    module: nn.Module, reference: nn.Module | Sequence[torch.Tensor]
) -> torch.Tensor:
    """``½ Σ ‖θ − θ'‖²`` between ``module``'s parameters and ``reference``'s (same structure)."""
    others = list(reference.parameters()) if isinstance(reference, nn.Module) else list(reference)
    mine = list(module.parameters())
    return 0.5 * sum(((a - b) ** 2).sum() for a, b in zip(mine, others, strict=True))
