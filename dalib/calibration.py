"""A γ that transfers: the discrepancy's weight calibrated, without labels, at the start of a run.

``gamma: {name: balanced, ratio: 1.0, batches: 10, ramp: 1.0}`` sets

    γ(p) = γ₀ · ramp(p),   γ₀ = ratio · mean_b ‖∂L_s/∂f‖ / mean_b ‖∂D/∂f‖

where ``f`` is the features of a paired training batch (source and target rows, the
classifier's input), ``‖·‖`` the Frobenius norm of the gradient over the whole batch, and the
means run over the first ``batches`` training batches, measured on the network as the run
starts (after ``init_from``), in training mode. So at the start, ``γ₀·D`` pushes the features
``ratio`` times as hard as the source loss does, whatever the scale of the features: a hand-set
γ does not transfer between networks or feature scales (CORAL's ``1/(4d²)``-normalised term
grows with the fourth power of the features' scale and its gradient with the third, the
source loss's gradient falls with the first, so its useful γ moves by ``a⁻⁴`` when the
features are ``a`` times larger). ``ramp`` (any γ schedule: a number, ``dann_ramp``...) then
shapes γ over training as usual; the ratio of the means is used, not the mean of per-batch
ratios, so that a batch where ``D`` is flat does not dominate.

The measurement changes nothing else: the random-number states, the BatchNorm statistics and
the training data's order are as without it. The measured norms are a buffer of the objective,
so they are in every checkpoint and a resumed run does not measure again. Under data-parallel
training each process measures its own batches and the means are averaged over processes, so
that every process uses the same γ₀.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from dalib.distributed import mean_over_processes
from dalib.errors import DalibError
from dalib.registry import Registry
from dalib.schedules import Schedule, make_schedule

if TYPE_CHECKING:
    import pytorch_lightning as pl

    from dalib.network import Network
    from dalib.objective import Objective

GAMMA_RULES: Registry[nn.Module] = Registry("gamma calibration", "dalib.gamma_rules")


@GAMMA_RULES.register("balanced")
class BalancedGamma(nn.Module):
    """``γ(p) = γ₀·ramp(p)`` with ``γ₀`` measured at the start (see the module's docstring).

    ``measured`` holds ``(mean ‖∂L_s/∂f‖, mean ‖∂D/∂f‖, batches measured)``, NaN until
    ``calibrate`` ran or a checkpoint restored it.
    """

    def __init__(
        self, ratio: float = 1.0, batches: int = 10, ramp: float | str | Mapping[str, Any] = 1.0
    ) -> None:
        super().__init__()
        if not (math.isfinite(ratio) and ratio > 0):
            raise DalibError(f"gamma balanced ratio must be a finite number > 0, got {ratio}")
        if isinstance(batches, bool) or not isinstance(batches, int) or batches < 1:
            raise DalibError(f"gamma balanced batches must be an integer >= 1, got {batches!r}")
        self.ratio = float(ratio)
        self.batches = batches
        self.ramp_spec = ramp
        self.ramp: Schedule = make_schedule(ramp, "gamma balanced ramp")
        self.register_buffer("measured", torch.full((3,), math.nan))

    @property
    def calibrated(self) -> bool:
        return not bool(torch.isnan(self.measured).any())

    @property
    def gamma_0(self) -> float:
        """``γ₀ = ratio · source gradient norm / discrepancy gradient norm``."""
        if not self.calibrated:
            raise DalibError(
                "gamma balanced is used before its calibration; it is measured when a fit "
                "starts from scratch (or restored from the run's checkpoint)"
            )
        source, discrepancy, _ = self.measured.tolist()
        return self.ratio * source / discrepancy

    def forward(self, progress: float) -> float:
        return self.gamma_0 * self.ramp(progress)

    def calibrate(self, objective: Objective, network: Network, batches: Iterator[Any]) -> None:
        """Measure the mean gradient norms on up to ``self.batches`` of ``batches`` (paired
        training batches on the network's device); leave the network and the random states as
        they were (an iterator that draws from them must do so lazily, as a generator does)."""
        sums, count = torch.zeros(2, dtype=torch.float64), 0  # float64: many batches
        device = next(network.parameters()).device
        modules = [network, objective]
        buffers = [{k: b.clone() for k, b in m.named_buffers()} for m in modules]
        training = [m.training for m in modules]
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for module in modules:
                module.train()
            for batch in batches:
                sums += torch.tensor(gradient_norms(objective, network, batch))
                count += 1
                if count == self.batches:
                    break
        for module, saved, mode in zip(modules, buffers, training, strict=True):
            for name, buffer in module.named_buffers():
                buffer.copy_(saved[name])
            module.train(mode)
        if count == 0:
            raise DalibError("gamma balanced: the training data gave no batch to calibrate on")
        means = mean_over_processes((sums / count).float().to(device)).cpu()
        source, discrepancy = means.tolist()
        if not (math.isfinite(discrepancy) and discrepancy > 0 and math.isfinite(source)):
            raise DalibError(
                f"gamma balanced cannot be calibrated: the discrepancy's gradient on the features "
                f"is {discrepancy:.3g} at the start (source loss's: {source:.3g}); set gamma to a "
                "number"
            )
        if source <= 0:
            raise DalibError(
                "gamma balanced cannot be calibrated: the source loss has no gradient on the "
                "features at the start; set gamma to a number"
            )
        self.measured.copy_(torch.tensor([source, discrepancy, float(count)]))

    def record(self) -> dict[str, Any]:
        """What ``result.json`` keeps of the calibration."""
        source, discrepancy, count = self.measured.tolist()
        return {
            "name": "balanced",
            "ratio": self.ratio,
            "ramp": self.ramp_spec,
            "batches": int(count),
            "source_grad_norm": source,
            "discrepancy_grad_norm": discrepancy,
            "gamma": self.gamma_0,
            "gamma_at_end": self(1.0),
        }


def gradient_norms(objective: Objective, network: Network, batch: Any) -> tuple[float, float]:
    """``(‖∂L_s/∂f‖, ‖∂D/∂f‖)`` on one paired batch, ``f`` the source and target features."""
    features, source_loss, discrepancy = objective.feature_terms(network, batch)
    (source_grad,) = torch.autograd.grad(source_loss, features, allow_unused=True)
    (discrepancy_grad,) = torch.autograd.grad(discrepancy, features, allow_unused=True)
    norms = [0.0 if g is None else float(g.norm()) for g in (source_grad, discrepancy_grad)]
    return norms[0], norms[1]


def make_gamma(spec: float | str | Mapping[str, Any]) -> Schedule | BalancedGamma:
    """A calibrated γ (``{name: balanced, ...}``) or any schedule ``make_schedule`` accepts."""
    name = spec.get("name") if isinstance(spec, Mapping) else spec
    if isinstance(name, str) and name in GAMMA_RULES.names():
        return GAMMA_RULES.build(spec)
    return make_schedule(spec, "gamma")


def calibrate_gamma(
    objective: Objective, network: Network, trainer: Callable[[], pl.Trainer]
) -> None:
    """Calibrate ``objective.gamma`` if it is calibrated (``BalancedGamma``) on the first
    training batches of the data module of ``trainer()`` (asked for only then: a γ set by hand
    needs no trainer)."""
    gamma = objective.gamma
    if not isinstance(gamma, BalancedGamma):
        return
    datamodule = trainer().datamodule
    if datamodule is None:
        raise DalibError("gamma balanced needs the training data as a data module to calibrate")
    device = next(network.parameters()).device

    def batches() -> Iterator[dict[str, list[torch.Tensor]]]:
        # a loader of its own, so the run's is untouched; built and iterated (which draws from
        # the RNG) only as calibrate asks for the first batch, with the RNG states forked
        for item in datamodule.train_dataloader():  # CombinedLoader: (batch, i, j)
            yield on_device(item[0], device)

    gamma.calibrate(objective, network, batches())


def on_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, list[torch.Tensor]]:
    """A paired batch ``{"source": (x, y[, index]), "target": (x, y)}`` on ``device``."""
    return {domain: [t.to(device) for t in tensors] for domain, tensors in batch.items()}


def gamma_record(objective: Objective) -> dict[str, Any] | None:
    """``result.json``'s ``gamma_calibration``: the calibration's record, ``None`` for a γ set
    by hand."""
    gamma = objective.gamma
    return gamma.record() if isinstance(gamma, BalancedGamma) else None
