"""The check kit: the properties dalib asserts of its own discrepancy measures, for any measure.

``check_discrepancy("mmd")`` or ``check_discrepancy(MyMeasure, option=value)`` runs each check
in ``CHECKS`` on seeded synthetic batches (8 features, 3 classes, logits from a fixed linear
head) and returns a ``Report`` of what passed, failed or was skipped, and why;
``report.raise_if_failed()`` turns a failure into an ``AssertionError`` (for a test):

- ``value``: a finite scalar;
- ``gradients``: finite, non-zero gradients into both domains' features;
- ``weights``: uniform instance weights give the unweighted value and non-uniform ones change it
  (or, for ``supports_weights = False``, weights are refused with a ``DalibError``);
- ``errors``: a ``DalibError`` for mismatched widths, an empty batch, zero, negative or
  miscounted weights, and missing logits (``needs_logits``);
- ``no_shift``: about zero when both domains come from one distribution (under a quarter of the
  value at the largest shift); skipped for adversarial measures, whose value is a critic's loss;
- ``shift``: grows with the shift between the domains (shifts 0, 0.5, 2 of mean and spread).
  For an adversarial measure: after 100 Adam steps of its own parameters, the held-out loss
  falls as the shift grows, by more than 0.5 from no shift to the largest;
- ``dtypes``: float32 and float64 both give a finite value of the input's dtype with finite
  gradients, and the two agree within 1%;
- ``ddp``: under data-parallel training (two processes, gloo) the measure on the gathered batch
  (``dalib.distributed.gather_inputs``) has the value and gradients of one process on the whole
  batch; skipped without ``torch.distributed``, and for adversarial measures (never gathered).
"""

from __future__ import annotations

import math
import multiprocessing
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dalib.discrepancy import DISCREPANCIES, Discrepancy
from dalib.distributed import gather_inputs
from dalib.errors import DalibError
from dalib.registry import Registry

CHECKS = ("value", "gradients", "weights", "errors", "no_shift", "shift", "dtypes", "ddp")
FEATURES, CLASSES = 8, 3  # width of the test features, number of classes of their logits
SHIFTS = (0.0, 0.5, 2.0)
WORLD = 2  # processes of the ddp check
Status = Literal["passed", "failed", "skipped"]
Batch = dict[str, torch.Tensor]


class Skip(Exception):
    """A check that does not apply to this measure; the message says why."""


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    detail: str


@dataclass(frozen=True)
class Report:
    """The outcome of every check run on one measure."""

    measure: str
    results: tuple[CheckResult, ...]

    def __getitem__(self, check: str) -> CheckResult:
        return next(result for result in self.results if result.name == check)

    @property
    def failed(self) -> list[CheckResult]:
        return [result for result in self.results if result.status == "failed"]

    @property
    def ok(self) -> bool:
        """No check failed (skipped ones do not count)."""
        return not self.failed

    def raise_if_failed(self) -> None:
        """``AssertionError`` with the whole report if any check failed."""
        if self.failed:
            raise AssertionError(str(self))

    def __str__(self) -> str:
        counts = {s: sum(r.status == s for r in self.results) for s in ("passed", "failed")}
        skipped = len(self.results) - sum(counts.values())
        lines = [
            f"check_discrepancy({self.measure}): {counts['passed']} passed, "
            f"{counts['failed']} failed, {skipped} skipped"
        ]
        lines += [f"  {r.status:<8} {r.name:<10} {r.detail}" for r in self.results]
        return "\n".join(lines)


def check_discrepancy(
    measure: str | Callable[..., Discrepancy],
    *,
    checks: Iterable[str] = CHECKS,
    **options: Any,
) -> Report:
    """Run ``checks`` on ``measure``: a registered name, or a ``Discrepancy`` class (or factory)
    built with ``options`` as a config would (``in_features`` and ``num_classes`` are passed to
    a constructor that names them)."""
    unknown = [check for check in checks if check not in CHECKS]
    if unknown:
        raise DalibError(f"unknown check {unknown[0]!r}; choose from: {', '.join(CHECKS)}")
    probe = Probe(*builder(measure, options))
    results = []
    for check in checks:
        try:
            results.append(CheckResult(check, "passed", CHECK_FUNCTIONS[check](probe)))
        except Skip as reason:
            results.append(CheckResult(check, "skipped", str(reason)))
        except Exception as error:  # any exception is the measure failing the check
            detail = " ".join(str(error).split()) or type(error).__name__
            results.append(CheckResult(check, "failed", detail))
    return Report(probe.name, tuple(results))


def builder(
    measure: str | Callable[..., Discrepancy], options: Mapping[str, Any]
) -> tuple[str, Callable[[], Discrepancy]]:
    """The measure's name and a function that builds it afresh, seeded, in float64."""
    if isinstance(measure, str):
        name, registry = measure, DISCREPANCIES
        registry.get(name)  # one line with the close match if there is no such measure
    else:
        name = getattr(measure, "__name__", repr(measure))
        registry = Registry("discrepancy", DISCREPANCIES.group)
        registry.register(name)(measure)

    def build() -> Discrepancy:
        torch.manual_seed(0)
        built = registry.build({"name": name, **options}, in_features=FEATURES, num_classes=CLASSES)
        if not isinstance(built, Discrepancy):
            raise DalibError(
                f"{name} built a {type(built).__name__}; a measure subclasses "
                "dalib.discrepancy.Discrepancy"
            )
        return built.double()

    return name, build


def batch(
    n_s: int = 24, n_t: int = 20, shift: float = 1.0, seed: int = 0, dtype=torch.float64
) -> Batch:
    """Features, and logits that depend on them, as a classifier's would.

    The target is shifted in mean and spread (``x·(1 + shift/2) + shift``), so that measures of
    first moments (MMD, OT) and of second moments (CORAL) all see the shift.
    """
    g = torch.Generator().manual_seed(seed)
    f_s = torch.randn(n_s, FEATURES, generator=g, dtype=torch.float64)
    f_t = torch.randn(n_t, FEATURES, generator=g, dtype=torch.float64) * (1 + shift / 2) + shift
    head = torch.randn(FEATURES, CLASSES, generator=g, dtype=torch.float64)
    data = {"f_s": f_s, "f_t": f_t, "logits_s": f_s @ head, "logits_t": f_t @ head}
    data = {key: value.to(dtype) for key, value in data.items()}
    return {**data, "y_s": (f_s @ head).argmax(1)}


def call(measure: Discrepancy, data: Mapping[str, torch.Tensor | None], **extra) -> torch.Tensor:
    """``measure(f_s, f_t, **rest)`` with torch's generator seeded: every call draws alike."""
    data = {**data, **extra}
    torch.manual_seed(0)
    return measure(data.pop("f_s"), data.pop("f_t"), **data)


def rows(data: Batch, index) -> Batch:
    return {key: value[index] for key, value in data.items()}


def expect(condition: bool, failure: str) -> None:
    if not condition:
        raise AssertionError(failure)


def expect_error(measure: Discrepancy, data: Batch, fragment: str, case: str, **extra) -> None:
    """``measure`` refuses ``case`` with a ``DalibError`` whose message has ``fragment``."""
    try:
        call(measure, data, **extra)
    except DalibError as error:
        expect(fragment in str(error), f"{case}: the DalibError does not say {fragment!r}")
        return
    raise AssertionError(f"{case} was accepted; raise a DalibError that says {fragment!r}")


class Probe:
    """A measure under test, with the values several checks share computed once."""

    def __init__(self, name: str, build: Callable[[], Discrepancy]) -> None:
        self.name = name
        self.build = build
        self.measure = build()

    @cached_property
    def values_by_shift(self) -> list[float]:
        """The value at each of ``SHIFTS``, 200 samples per domain."""
        return [call(self.measure, batch(200, 200, shift=s)).item() for s in SHIFTS]

    def held_out_value_of_a_trained_critic(self, shift: float, n: int = 512) -> float:
        """An adversarial measure's value on ``n`` held-out samples per domain, after 100 Adam
        steps on its own parameters with minibatches of 64 from another ``n`` samples of the
        same two distributions."""
        data = batch(2 * n, 2 * n, shift=shift)
        measure = self.build().train()
        optimizer = torch.optim.Adam(measure.parameters(), lr=1e-2)
        g = torch.Generator().manual_seed(0)
        for _ in range(100):
            optimizer.zero_grad()
            call(measure, rows(data, torch.randint(0, n, (64,), generator=g))).backward()
            optimizer.step()
        return call(measure.eval(), rows(data, slice(n, None))).item()


def check_value(probe: Probe) -> str:
    value = call(probe.measure, batch())
    expect(value.dim() == 0, f"the value has shape {tuple(value.shape)}; return a scalar")
    expect(bool(torch.isfinite(value)), f"the value is {value.item()}")
    return f"a finite scalar ({value.item():.4g})"


def check_gradients(probe: Probe) -> str:
    data = batch()
    data["f_s"].requires_grad_(True)
    data["f_t"].requires_grad_(True)
    value = call(probe.measure, data)
    expect(value.requires_grad, "the value has no gradient (computed on detached tensors?)")
    value.backward()
    for domain in ("f_s", "f_t"):
        grad = data[domain].grad
        expect(grad is not None and bool(grad.abs().sum() > 0), f"no gradient reaches {domain}")
        expect(bool(torch.isfinite(grad).all()), f"the gradient of {domain} is not finite")
    return "finite, non-zero gradients into f_s and f_t"


def check_weights(probe: Probe) -> str:
    data = batch()
    n_s, n_t = len(data["f_s"]), len(data["f_t"])
    uniform = {
        "w_s": torch.full((n_s,), 2.5, dtype=torch.float64),
        "w_t": torch.ones(n_t, dtype=torch.float64),
    }
    if not probe.measure.supports_weights:
        expect_error(probe.build(), data, "weight", "instance weights (supports_weights=False)")
        return "refused with a DalibError (supports_weights = False)"
    plain = call(probe.build(), data)
    weighted = call(probe.build(), data, **uniform)
    torch.testing.assert_close(weighted, plain, rtol=1e-10, atol=1e-12)
    varied = {"w_s": torch.linspace(0.2, 3.0, n_s, dtype=torch.float64)}
    reweighted = call(probe.build(), data, **varied).item()
    expect(
        abs(reweighted - plain.item()) > 1e-6 * abs(plain.item()),
        "non-uniform source weights do not change the value: are they ignored?",
    )
    return "uniform weights give the unweighted value, non-uniform ones change it"


def check_errors(probe: Probe) -> str:
    measure, data = probe.measure, batch()
    n_s, n_t = len(data["f_s"]), len(data["f_t"])
    expect_error(measure, {**data, "f_t": data["f_t"][:, :-1]}, "dimensions", "mismatched widths")
    empty = {**data, "f_t": data["f_t"][:0], "logits_t": data["logits_t"][:0]}
    expect_error(measure, empty, "at least one", "an empty target batch")
    for case, weights in [
        ("source weights that sum to zero", {"w_s": torch.zeros(n_s, dtype=torch.float64)}),
        ("negative target weights", {"w_t": torch.full((n_t,), -1.0, dtype=torch.float64)}),
        ("one target weight too many", {"w_t": torch.ones(n_t + 1, dtype=torch.float64)}),
    ]:
        expect_error(measure, data, "weight", case, **weights)
    if measure.needs_logits:
        missing = {**data, "logits_s": None, "logits_t": None}
        expect_error(measure, missing, "logits", "missing logits (needs_logits=True)")
    return "bad batches, weights and missing logits refused with a DalibError"


def check_no_shift(probe: Probe) -> str:
    if probe.measure.adversarial:
        raise Skip("adversarial: the value is a critic's loss, not zero without a shift")
    values = probe.values_by_shift
    expect(
        abs(values[0]) < 0.25 * values[-1],
        f"without a shift the value is {values[0]:.4g}, not small against "
        f"{values[-1]:.4g} at shift {SHIFTS[-1]}",
    )
    return f"{values[0]:.3g} without a shift, {values[-1]:.3g} at shift {SHIFTS[-1]}"


def check_shift(probe: Probe) -> str:
    if probe.measure.adversarial:
        losses = [probe.held_out_value_of_a_trained_critic(s) for s in SHIFTS]
        shown = ", ".join(f"{v:.3g}" for v in losses)
        expect(losses[0] > losses[1] > losses[2], f"held-out critic losses {shown} do not fall")
        expect(losses[0] - losses[2] > 0.5, f"held-out critic losses {shown} fall by under 0.5")
        return f"held-out loss of a trained critic falls with the shift: {shown}"
    values = probe.values_by_shift
    shown = ", ".join(f"{v:.3g}" for v in values)
    expect(values[0] < values[1] < values[2], f"values {shown} at shifts {SHIFTS} do not grow")
    return f"{shown} at shifts {', '.join(map(str, SHIFTS))}"


def check_dtypes(probe: Probe) -> str:
    values = {}
    for dtype in (torch.float32, torch.float64):
        data = batch(dtype=dtype)
        data["f_s"].requires_grad_(True)
        value = call(probe.build().to(dtype), data)
        expect(value.dtype == dtype, f"{dtype} features give a {value.dtype} value")
        expect(bool(torch.isfinite(value)), f"the {dtype} value is {value.item()}")
        value.backward()
        expect(bool(torch.isfinite(data["f_s"].grad).all()), f"a non-finite {dtype} gradient")
        values[dtype] = value.item()
    single, double = values[torch.float32], values[torch.float64]
    expect(
        math.isclose(single, double, rel_tol=1e-2, abs_tol=1e-6),
        f"float32 gives {single:.6g}, float64 {double:.6g} (a measure that draws random numbers "
        "in the input's dtype draws other ones in each: fix its seed option to check this)",
    )
    return f"float32 {single:.6g}, float64 {double:.6g}"


def check_ddp(probe: Probe) -> str:
    if not dist.is_available() or not dist.is_gloo_available():
        raise Skip("needs torch.distributed (with the gloo backend)")
    if "fork" not in multiprocessing.get_all_start_methods():
        raise Skip("needs the fork start method of multiprocessing")
    if probe.measure.adversarial:
        raise Skip("adversarial: never gathered (DDP averages a critic's per-sample mean exactly)")
    data = distributed_batch(probe.measure.supports_weights)
    for key in ("f_s", "f_t"):
        data[key].requires_grad_(True)
    whole = call(probe.build(), data)
    whole.backward()
    with tempfile.TemporaryDirectory() as folder:
        mp.start_processes(
            ddp_worker, args=(probe.build, data, folder), nprocs=WORLD, start_method="fork"
        )
        shares = [torch.load(Path(folder) / f"rank{r}.pt") for r in range(WORLD)]
    for rank, share in enumerate(shares):
        torch.testing.assert_close(share["value"], whole.detach(), rtol=1e-6, atol=1e-9)
        for key in ("f_s", "f_t"):
            own = data[key].grad.chunk(WORLD)[rank]
            # every process's loss reaches each process's rows: WORLD × the gradient of one
            torch.testing.assert_close(share[key] / WORLD, own, rtol=1e-6, atol=1e-9)
    return f"{WORLD} processes on the gathered batch: the value and gradients of one"


def distributed_batch(weighted: bool, n: int = 8 * WORLD) -> Batch:
    """``n`` samples of each domain (and source weights if ``weighted``), split by rank."""
    data = batch(n, n)
    if weighted:
        data["w_s"] = torch.linspace(0.2, 3.0, n, dtype=torch.float64)
    return data


def ddp_worker(rank: int, build: Callable[[], Discrepancy], data: Batch, folder: str) -> None:
    """Process ``rank``: the measure on the gathered shards, its value and feature gradients."""
    torch.set_num_threads(1)
    init = f"file://{folder}/init"
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        measure = build()
        share = {key: value.detach().chunk(WORLD)[rank].clone() for key, value in data.items()}
        for key in ("f_s", "f_t"):
            share[key].requires_grad_(True)
        value = call(measure, gather_inputs(measure, share))
        value.backward()
        result = {"value": value.detach(), "f_s": share["f_s"].grad, "f_t": share["f_t"].grad}
        torch.save(result, Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


CHECK_FUNCTIONS: dict[str, Callable[[Probe], str]] = {
    "value": check_value,
    "gradients": check_gradients,
    "weights": check_weights,
    "errors": check_errors,
    "no_shift": check_no_shift,
    "shift": check_shift,
    "dtypes": check_dtypes,
    "ddp": check_ddp,
}
