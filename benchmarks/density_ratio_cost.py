"""Fit time of every density-ratio estimator against the number of samples per domain.

Gaussian source N(0, I) and target N(0.5, I) in d = 16 dimensions, n samples each; one
``fit_predict_weights`` per cell (single runs: the slow cells take minutes). KMM is timed as
with its defaults (one quadratic program up to ``KMM().max_samples`` source samples, one per
random block of at most that many above it) and, up to ``--max-single-qp`` samples, as one QP.

Usage: ``python benchmarks/density_ratio_cost.py`` writes
``benchmarks/results/density_ratio_cost.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import scipy
import sklearn
import torch
from dalib_runs import REPO, write_results

from dalib.weighting import KLIEP, KMM, ULSIF, ClassifierRatio

SIZES = [50, 100, 200, 400, 800]
DIM = 16


def estimators(n: int, max_single_qp: int) -> dict:
    chosen = {"classifier": ClassifierRatio(), "kliep": KLIEP(), "ulsif": ULSIF(), "kmm": KMM()}
    if KMM().max_samples < n <= max_single_qp:
        chosen["kmm, one QP"] = KMM(max_samples=None)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-single-qp", type=int, default=200)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if os.environ.get("OMP_NUM_THREADS") != "1":
        raise SystemExit("run with OMP_NUM_THREADS=1: the times are CPU times of one thread")
    load_start = os.getloadavg()[0]
    rows = []
    for n in SIZES:
        rng = np.random.default_rng(0)
        X_s, X_t = rng.normal(0, 1, (n, DIM)), rng.normal(0.5, 1, (n, DIM))
        for name, estimator in estimators(n, args.max_single_qp).items():
            start = time.process_time()
            estimator.fit_predict_weights(X_s, X_t)
            rows.append({"estimator": name, "n": n, "seconds": time.process_time() - start})
            print(json.dumps(rows[-1]), flush=True)
    names = list(dict.fromkeys(r["estimator"] for r in rows))
    cell = {(r["estimator"], r["n"]): r["seconds"] for r in rows}
    command = "OMP_NUM_THREADS=1 python benchmarks/density_ratio_cost.py" + (
        f" --max-single-qp {args.max_single_qp}" if args.max_single_qp != 200 else ""
    )
    lines = [
        "# Density-ratio estimators: fit time against sample size",
        "",
        f"Produced by `{command}` on {platform.machine()} CPU, one thread (1-minute load "
        f"average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end), "
        f"NumPy {np.__version__}, SciPy {scipy.__version__}, scikit-learn "
        f"{sklearn.__version__}. One `fit_predict_weights` per cell, n source and n target "
        f"samples, d = {DIM}; CPU seconds (— : not run). `kmm` is the default: one QP up to "
        f"{KMM().max_samples} source samples, one QP per random block of at most "
        f"{KMM().max_samples} above; `kmm, one QP` has `max_samples=None`.",
        "",
        "| estimator | " + " | ".join(f"n={n}" for n in SIZES) + " |",
        "|---|" + "---|" * len(SIZES),
    ]
    for name in names:
        values = [f"{cell[name, n]:.2f}" if (name, n) in cell else "—" for n in SIZES]
        lines.append(f"| {name} | " + " | ".join(values) + " |")
    md = "\n".join(lines) + "\n"
    write_results(args.out, "density_ratio_cost", md, rows)


if __name__ == "__main__":
    main()
