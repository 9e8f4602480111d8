"""dalib's measures against the same measures in the libraries a user would pick instead.

Peers: pytorch-adapt and skada when installed (``pip install -e ".[peers]"``; nothing is
installed at run time, a missing peer's rows are left out and named), and re-statements of the
Transfer-Learning-Library's loss modules (tllib is not on the package index): its MK-MMD
(``tllib/alignment/dan.py``), JMMD (``tllib/alignment/jan.py``), CORAL
(``tllib/alignment/coral.py``) and MCC (``tllib/self_training/mcc.py``), written here from
their formulas and computed the way those modules compute them (one joint (2n)² kernel matrix
from an explicit (2n, 2n, d) difference tensor, weighted by an index matrix).

Every row pairs a dalib configuration with a peer's under that peer's documented normalisation,
so that the two values must agree (checked in float64 on every cell; the mapping is printed in
the table). Each cell times forward + backward in thread CPU time on one torch thread, dalib and
peer interleaved (alternating which goes first) for ``--repeats`` rounds; the ratio dalib/peer
of each round gives the median and the min–max. Peak memory (the resident-set growth of one
forward + backward in a fresh process) is measured at the largest n.

Usage: ``python benchmarks/peers.py [--repeats 7] [--quick]`` writes
``benchmarks/results/peers.{md,json}`` (``--quick``: n ≤ 128, d = 256, to ``peers_quick.*``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dalib.discrepancy import DISCREPANCIES
from dalib.target_losses import TARGET_LOSSES, UNLABELLED

REPO = Path(__file__).resolve().parents[1]
SIZES = [32, 128, 512]
WIDTHS = [256, 2048]
NUM_CLASSES = 10
MULTIPLIERS = [0.25, 0.5, 1.0, 2.0, 4.0]  # DAN's bank of 5 Gaussian kernels
TEMPERATURE = 2.5  # MCC's
#: The re-stated Transfer-Learning-Library MMDs build a (2n, 2n, d) tensor; above this many
#: elements (512 MiB of float32) their cells are not run.
MAX_JOINT_ELEMENTS = 2**27
HAS_PA = importlib.util.find_spec("pytorch_adapt") is not None
HAS_SKADA = importlib.util.find_spec("skada") is not None

Inputs = dict[str, torch.Tensor]
Fn = Callable[[Inputs], torch.Tensor]


@dataclass(frozen=True)
class Pair:
    """A dalib measure and a peer's, with the mapping between their values."""

    measure: str
    peer: str
    mapping: str  # how dalib's value follows from the peer's, as documented
    dalib: Callable[[int], Fn]  # d -> (inputs -> value)
    other: Callable[[int], Fn]
    expected: Callable[[float, int], float]  # (peer value, n) -> dalib value
    available: bool = True
    rtol: float = 1e-7
    uses_width: bool = True  # False: a loss on logits, timed once per n

    def runs(self, n: int, d: int) -> bool:
        if not self.available:
            return False
        if self.peer.startswith("TLL") and "mmd" in self.measure.lower():
            return (2 * n) ** 2 * d <= MAX_JOINT_ELEMENTS
        return True


def bandwidth(d: int) -> float:
    """A fixed bandwidth of the order of the squared distances of the inputs (≈ 2·d·1.1)."""
    return 2.0 * d


def gaussian_sigmas(d: int) -> list[float]:
    """σ of dalib's ``exp(-r/(2σ²))`` for pytorch-adapt's ``exp(-r·scale/bandwidth)``."""
    return [(bandwidth(d) / (2.0 * m)) ** 0.5 for m in MULTIPLIERS]


def laplacian_sigmas(d: int) -> list[float]:
    """skada's DAN bank, 2^(-8 + i/2) for i < 33, times a distance of the inputs' order."""
    return [2 ** (-8 + i / 2) * (2.0 * d) ** 0.5 for i in range(33)]


def dalib_measure(name: str, **options) -> Callable[[int], Fn]:
    def build(d: int) -> Fn:
        measure = DISCREPANCIES.build({"name": name, **options})
        return lambda x: measure(x["f_s"], x["f_t"], logits_s=x["logits_s"], logits_t=x["logits_t"])

    return build


def dalib_mmd(kernel: str, sigmas: Callable[[int], list[float]], **options) -> Callable:
    def build(d: int) -> Fn:
        return dalib_measure("mmd", kernel={"name": kernel, "sigmas": sigmas(d)}, **options)(d)

    return build


def dalib_jmmd(estimator: str, same_output_bank: bool = False) -> Callable[[int], Fn]:
    """JMMD with the 5-Gaussian feature bank; ``same_output_bank``: the softmax kernel uses it
    too (pytorch-adapt applies one bandwidth and one set of scales to every layer)."""

    def build(d: int) -> Fn:
        kernel = {"name": "gaussian", "sigmas": gaussian_sigmas(d)}
        options = {"output_kernel": kernel} if same_output_bank else {}
        return dalib_measure("jmmd", kernel=kernel, estimator=estimator, **options)(d)

    return build


def dalib_mcc(d: int) -> Fn:
    mcc = TARGET_LOSSES.build({"name": "mcc", "temperature": TEMPERATURE})
    return lambda x: mcc(x["logits_t"], x["unlabelled"])


# --- pytorch-adapt (layers.MMDLoss, CORALLoss, MCCLoss) ---------------------------------------


def pa_mmd(mmd_type: str, joint: bool = False) -> Callable[[int], Fn]:
    def build(d: int) -> Fn:
        from pytorch_adapt.layers import MMDLoss

        loss = MMDLoss(
            kernel_scales=torch.tensor(MULTIPLIERS), mmd_type=mmd_type, bandwidth=bandwidth(d)
        )
        if not joint:
            return lambda x: loss(x["f_s"], x["f_t"])
        return lambda x: loss(
            [x["f_s"], F.softmax(x["logits_s"], dim=1)], [x["f_t"], F.softmax(x["logits_t"], dim=1)]
        )

    return build


def pa_coral(d: int) -> Fn:
    from pytorch_adapt.layers import CORALLoss

    loss = CORALLoss()
    return lambda x: loss(x["f_s"], x["f_t"])


def pa_mcc(d: int) -> Fn:
    from pytorch_adapt.layers import MCCLoss

    loss = MCCLoss(T=TEMPERATURE)
    return lambda x: loss(x["logits_t"])


# --- skada (deep.losses) --------------------------------------------------------------------


def skada_dan(d: int) -> Fn:
    from skada.deep.losses import dan_loss

    def value(x: Inputs) -> torch.Tensor:
        sigmas = np.asarray(laplacian_sigmas(d), dtype=str(x["f_s"].dtype).split(".")[1])
        return dan_loss(x["f_s"], x["f_t"], sigmas=sigmas)

    return value


def skada_coral(d: int) -> Fn:
    from skada.deep.losses import deepcoral_loss

    return lambda x: deepcoral_loss(x["f_s"], x["f_t"])


def skada_mcc(d: int) -> Fn:
    from skada.deep.losses import mcc_loss

    return lambda x: mcc_loss(x["logits_t"], T=TEMPERATURE)


# --- Transfer-Learning-Library, re-stated ---------------------------------------------------


def tll_index_matrix(n: int, dtype: torch.dtype) -> torch.Tensor:
    """MK-MMD's weights on the joint matrix: 1/(n(n−1)) within a domain off the diagonal,
    −1/n² across (built once per batch size, as tllib caches it)."""
    same = (1.0 - torch.eye(n, dtype=dtype)) / (n * (n - 1))
    cross = torch.full((n, n), -1.0 / (n * n), dtype=dtype)
    return torch.cat([torch.cat([same, cross], 1), torch.cat([cross, same], 1)])


def tll_gaussian_sum(z: torch.Tensor, sigmas: list[float]) -> torch.Tensor:
    """Σ_σ exp(−‖z_i − z_j‖² / (2σ²)) from the explicit (N, N, d) differences."""
    sq = (z.unsqueeze(0) - z.unsqueeze(1)).pow(2).sum(2)
    return sum(torch.exp(-sq / (2 * s * s)) for s in sigmas)


def tll_mmd(joint: bool) -> Callable[[int], Fn]:
    """MK-MMD (dan.py) or, with ``joint``, JMMD (jan.py, no adversarial θ): ``Σ K·index +
    2/(n−1)``, the constant making up for the diagonal."""

    def build(d: int) -> Fn:
        cache: dict[tuple[int, torch.dtype], torch.Tensor] = {}

        def value(x: Inputs) -> torch.Tensor:
            n = x["f_s"].shape[0]
            key = (n, x["f_s"].dtype)
            if key not in cache:
                cache[key] = tll_index_matrix(n, x["f_s"].dtype)
            k = tll_gaussian_sum(torch.cat([x["f_s"], x["f_t"]]), gaussian_sigmas(d))
            if joint:
                g = F.softmax(torch.cat([x["logits_s"], x["logits_t"]]), dim=1)
                k = k * tll_gaussian_sum(g, [0.92])
            return (k * cache[key]).sum() + 2.0 / (n - 1)

        return value

    return build


def tll_coral(d: int) -> Fn:
    """``mean((C_s − C_t)²) + mean((μ_s − μ_t)²)`` with unbiased covariances."""

    def value(x: Inputs) -> torch.Tensor:
        moments = []
        for f in (x["f_s"], x["f_t"]):
            mean = f.mean(0, keepdim=True)
            centred = f - mean
            moments.append((mean, centred.t() @ centred / (len(f) - 1)))
        (mean_s, cov_s), (mean_t, cov_t) = moments
        return (mean_s - mean_t).pow(2).mean() + (cov_s - cov_t).pow(2).mean()

    return value


def tll_mcc(d: int) -> Fn:
    """Weights from the detached entropy with log(p + 1e-5), row-normalised confusion."""

    def value(x: Inputs) -> torch.Tensor:
        logits = x["logits_t"]
        batch, classes = logits.shape
        p = F.softmax(logits / TEMPERATURE, dim=1)
        h = -(p * torch.log(p + 1e-5)).sum(1).detach()
        w = 1 + torch.exp(-h)
        w = (batch * w / w.sum()).unsqueeze(1)
        c = (p * w).t() @ p
        c = c / c.sum(dim=1)
        return (c.sum() - c.trace()) / classes

    return value


PAIRS = [
    Pair("mmd, 5 Gaussians, unbiased", "pytorch-adapt", "dalib = 5 × MMDLoss (mean over kernels)",
         dalib_mmd("gaussian", gaussian_sigmas, estimator="unbiased"), pa_mmd("quadratic"),
         lambda v, n: 5 * v, HAS_PA),
    Pair("mmd, 5 Gaussians, linear", "pytorch-adapt", "dalib = 5 × MMDLoss (mean over kernels)",
         dalib_mmd("gaussian", gaussian_sigmas, estimator="linear"), pa_mmd("linear"),
         lambda v, n: 5 * v, HAS_PA),
    Pair("jmmd, 5×5 Gaussians, unbiased", "pytorch-adapt",
         "dalib = 25 × MMDLoss on [features, softmax] (mean over each layer's 5 kernels)",
         dalib_jmmd(estimator="unbiased", same_output_bank=True), pa_mmd("quadratic", joint=True),
         lambda v, n: 25 * v, HAS_PA),
    Pair("mmd, 33 Laplacians, biased", "skada",
         "dalib = dan_loss (rtol 1e-5: its cdist leaves √eps·‖x‖ on the diagonal)",
         dalib_mmd("laplacian", laplacian_sigmas), skada_dan, lambda v, n: v, HAS_SKADA,
         rtol=1e-5),
    Pair("mmd, 5 Gaussians, unbiased", "TLL (re-stated)",
         "dalib = MK-MMD − 2/(n−1) (tllib adds 2/(n−1))",
         dalib_mmd("gaussian", gaussian_sigmas, estimator="unbiased"), tll_mmd(joint=False),
         lambda v, n: v - 2 / (n - 1)),
    Pair("jmmd, 5 Gaussians × σ=0.92, unbiased", "TLL (re-stated)",
         "dalib = JMMD − 2/(n−1)", dalib_jmmd(estimator="unbiased"), tll_mmd(joint=True),
         lambda v, n: v - 2 / (n - 1)),
    Pair("coral", "pytorch-adapt", "dalib = CORALLoss", dalib_measure("coral"), pa_coral,
         lambda v, n: v, HAS_PA),
    Pair("coral", "skada", "dalib = deepcoral_loss", dalib_measure("coral"), skada_coral,
         lambda v, n: v, HAS_SKADA),
    Pair("coral, match_means", "TLL (re-stated)", "dalib = CorrelationAlignmentLoss / 4",
         dalib_measure("coral", match_means=True), tll_coral, lambda v, n: v / 4),
    Pair("mcc (T = 2.5)", "pytorch-adapt", "dalib = MCCLoss (ε in the entropy: rtol 1e-4)",
         dalib_mcc, pa_mcc, lambda v, n: v, HAS_PA, rtol=1e-4, uses_width=False),
    Pair("mcc (T = 2.5)", "skada", "dalib = mcc_loss (ε in the entropy: rtol 1e-4)",
         dalib_mcc, skada_mcc, lambda v, n: v, HAS_SKADA, rtol=1e-4, uses_width=False),
    Pair("mcc (T = 2.5)", "TLL (re-stated)", "dalib = MinimumClassConfusionLoss (rtol 1e-4)",
         dalib_mcc, tll_mcc, lambda v, n: v, rtol=1e-4, uses_width=False),
]  # fmt: skip


def make_inputs(n: int, d: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> Inputs:
    g = torch.Generator().manual_seed(seed)
    x = {
        "f_s": torch.randn(n, d, generator=g, dtype=dtype),
        "f_t": 1.1 * torch.randn(n, d, generator=g, dtype=dtype) + 0.3,
        "logits_s": 2 * torch.randn(n, NUM_CLASSES, generator=g, dtype=dtype),
        "logits_t": 2 * torch.randn(n, NUM_CLASSES, generator=g, dtype=dtype),
    }
    x = {k: v.requires_grad_() for k, v in x.items()}
    x["unlabelled"] = torch.full((n,), UNLABELLED)
    return x


def step(fn: Fn, x: Inputs) -> Callable[[], None]:
    """One forward + backward into every input that requires a gradient."""
    leaves = [v for v in x.values() if v.requires_grad]

    def run() -> None:
        value = fn(x)
        torch.autograd.grad(value, leaves, allow_unused=True)

    return run


def cpu_seconds(run: Callable[[], None], calls: int) -> float:
    start = time.thread_time()
    for _ in range(calls):
        run()
    return (time.thread_time() - start) / calls


def calls_for(run: Callable[[], None], target: float = 0.02) -> int:
    """Calls per timing so that one timing lasts about ``target`` CPU seconds."""
    run()
    return max(1, min(200, round(target / max(cpu_seconds(run, 1), 1e-6))))


def check_values(pair: Pair, n: int, d: int) -> float:
    """Relative difference of dalib's value from the peer's mapped value, in float64."""
    x = make_inputs(n, d, torch.float64)
    got = pair.dalib(d)(x).item()
    want = pair.expected(pair.other(d)(x).item(), n)
    error = abs(got - want) / max(abs(want), 1e-300)
    if not error <= pair.rtol:
        raise SystemExit(f"{pair.measure} vs {pair.peer} at n={n}, d={d}: {got} != {want}")
    return error


def time_cell(pair: Pair, n: int, d: int, repeats: int) -> dict:
    x = make_inputs(n, d)
    runs = {"dalib": step(pair.dalib(d), x), "peer": step(pair.other(d), x)}
    calls = {side: calls_for(run) for side, run in runs.items()}
    times: dict[str, list[float]] = {"dalib": [], "peer": []}
    for r in range(repeats):
        for side in ("dalib", "peer") if r % 2 == 0 else ("peer", "dalib"):
            times[side].append(cpu_seconds(runs[side], calls[side]))
    ratios = [a / b for a, b in zip(times["dalib"], times["peer"], strict=True)]
    return {
        "dalib_ms": 1e3 * statistics.median(times["dalib"]),
        "peer_ms": 1e3 * statistics.median(times["peer"]),
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "calls_per_timing": calls,
    }


def peak_kib(index: int, side: str, n: int, d: int) -> int:
    """Peak resident-set growth (KiB) of one forward + backward, in a fresh process: the
    kernel's peak counter (VmHWM) is reset after the imports and inputs, then read after."""
    code = (
        "import sys, torch; sys.path.insert(0, 'benchmarks'); import peers; "
        "torch.set_num_threads(1); "
        f"pair = peers.PAIRS[{index}]; x = peers.make_inputs({n}, {d}); "
        f"run = peers.step(pair.{'dalib' if side == 'dalib' else 'other'}({d}), x); "
        "status = lambda key: int(next(line.split()[1] for line in "
        "open('/proc/self/status') if line.startswith(key))); "
        "open('/proc/self/clear_refs', 'w').write('5'); before = status('VmRSS:'); run(); "
        "print(status('VmHWM:') - before)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip().splitlines()[-1])


def remeasure_peaks(result: dict) -> None:
    """Peak memory of the largest-n rows again, in place (``--peaks-only``)."""
    index = {(p.measure, p.peer): i for i, p in enumerate(PAIRS)}
    for row in result["rows"]:
        if "peak_kib" in row:
            i, d = index[(row["measure"], row["peer"])], row["d"] or NUM_CLASSES
            row["peak_kib"] = {side: peak_kib(i, side, row["n"], d) for side in ("dalib", "peer")}
            print(row["measure"], row["peer"], row["n"], row["d"], row["peak_kib"], flush=True)


def cells(pair: Pair, sizes: list[int], widths: list[int]) -> list[tuple[int, int]]:
    chosen = widths if pair.uses_width else [NUM_CLASSES]
    return [(n, d) for n in sizes for d in chosen if pair.runs(n, d)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="n <= 128, d = 256")
    parser.add_argument(
        "--rewrite", action="store_true", help="rewrite the md from the JSON, measuring nothing"
    )
    parser.add_argument(
        "--peaks-only", action="store_true", help="measure the peak memory of the JSON's rows again"
    )
    args = parser.parse_args()
    stem = "peers_quick" if args.quick else "peers"
    out = REPO / "benchmarks" / "results"
    if args.rewrite or args.peaks_only:
        result = json.loads((out / f"{stem}.json").read_text())
        if args.peaks_only:
            remeasure_peaks(result)
            result["peaks_command"] = (
                f"python benchmarks/peers.py --peaks-only{' --quick' * args.quick}"
            )
            result.pop("peaks_note", None)
            (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
        (out / f"{stem}.md").write_text(markdown(result))
        return
    torch.set_num_threads(1)
    sizes, widths = ([32, 128], [256]) if args.quick else (SIZES, WIDTHS)
    rows = []
    for index, pair in enumerate(PAIRS):
        if not pair.available:
            continue
        for n, d in cells(pair, sizes, widths):
            row = {"measure": pair.measure, "peer": pair.peer, "mapping": pair.mapping,
                   "n": n, "d": d if pair.uses_width else None}  # fmt: skip
            row["value_rel_diff"] = check_values(pair, n, d)
            row.update(time_cell(pair, n, d, args.repeats))
            if n == max(sizes):
                row["peak_kib"] = {side: peak_kib(index, side, n, d) for side in ("dalib", "peer")}
            rows.append(row)
            print(f"{pair.measure:38s} {pair.peer:16s} n={n:4d} d={row['d']}: "
                  f"{row['ratio_median']:.2f}x ({row['ratio_min']:.2f}-{row['ratio_max']:.2f})",
                  flush=True)  # fmt: skip
    command = (
        "python benchmarks/peers.py"
        + (" --quick" if args.quick else "")
        + (f" --repeats {args.repeats}" if args.repeats != 7 else "")
    )
    missing = [p for p, ok in (("pytorch-adapt", HAS_PA), ("skada", HAS_SKADA)) if not ok]
    result = {"command": command, "versions": versions(), "repeats": args.repeats,
              "sizes": sizes, "widths": widths, "missing_peers": missing, "rows": rows}  # fmt: skip
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{stem}.md").write_text(markdown(result))


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("pytorch_adapt", "skada"):
        if importlib.util.find_spec(name) is not None:
            found[name] = __import__(name).__version__
    return found


#: Why a cell can be slower than its peer, by (measure, peer); shown under every such cell.
NOTES: dict[tuple[str, str], str] = {
    ("mmd, 33 Laplacians, biased", "skada"): (
        "Within the noise of this machine (the min–max spans 1.0; the larger cells are "
        "0.71–0.97). At n = 32 the call is a fraction of a millisecond and per-operation "
        "overhead decides: dalib's Laplacian takes its NaN-free square root of each block "
        "in four operations where skada's cdist returns distances in one."
    ),
}


def markdown(result: dict) -> str:
    rows, sizes = result["rows"], result["sizes"]
    lines = [
        "# dalib against its peers: forward + backward, one thread, CPU time",
        "",
        f"Command: `{result['command']}` "
        f"({', '.join(f'{k} {v}' for k, v in result['versions'].items())})"
        + (f"; peak memory: `{result['peaks_command']}`" if "peaks_command" in result else "")
        + ".",
        "",
        "Measured on a loaded 2-core machine (other engineers' jobs and two background "
        "trainings at low priority): only the ratios within this one interleaved run count. "
        f"Each ratio is dalib/peer of thread CPU time in one round; {result['repeats']} rounds, "
        "dalib and peer alternating which goes first; median and min–max. Values agree in "
        "float64 on every cell under the mapping shown (relative difference in the JSON). "
        "Peak memory: growth of the peak resident set (VmHWM, reset after the imports and inputs) "
        "in one forward + backward in a fresh process, "
        f"at n = {max(sizes)}. TLL = the Transfer-Learning-Library's loss modules, re-stated "
        "in this script; its MMDs build a (2n, 2n, d) tensor and are not run above "
        f"{MAX_JOINT_ELEMENTS * 4 // 2**20} MiB of it. MCC takes logits only "
        f"({NUM_CLASSES} classes), so its cells have no d.",
        "",
    ]
    if "peaks_note" in result:
        lines += [f"No peak memory in this table: {result['peaks_note']}.", ""]
    if result["missing_peers"]:
        lines += [f"Not installed, rows left out: {', '.join(result['missing_peers'])}.", ""]
    lines += [
        "| measure | peer | mapping | n | d | dalib ms | peer ms | ratio median (min–max) "
        "| peak MiB dalib / peer |",
        "|---|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        peak = r.get("peak_kib")
        peak_text = f"{peak['dalib'] / 1024:.1f} / {peak['peer'] / 1024:.1f}" if peak else ""
        lines.append(
            f"| {r['measure']} | {r['peer']} | {r['mapping']} | {r['n']} | {r['d'] or '—'} | "
            f"{r['dalib_ms']:.3f} | {r['peer_ms']:.3f} | **{r['ratio_median']:.2f}** "
            f"({r['ratio_min']:.2f}–{r['ratio_max']:.2f}) | {peak_text} |"
        )
    slower = [r for r in rows if r["ratio_median"] > 1.0]
    lines += ["", f"Cells with a median ratio above 1.0: {len(slower)} of {len(rows)}.", ""]
    for r in slower:
        note = NOTES.get((r["measure"], r["peer"]), "no explanation recorded")
        lines.append(
            f"- {r['measure']} vs {r['peer']}, n = {r['n']}, d = {r['d'] or '—'}: "
            f"{r['ratio_median']:.2f} ({r['ratio_min']:.2f}–{r['ratio_max']:.2f}). {note}"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
