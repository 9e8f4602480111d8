#!/usr/bin/env bash
# Partial domain adaptation on Office-Caltech10 SURF: source-only, DANN and PADA-weighted DANN,
# 6 tasks x 3 seeds; needs DALIB_DATA with office_caltech10_surf/.
# Output: benchmarks/results/partial_da/report.{md,csv}.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1  # one thread per run: small MLPs, and no spinning threads on a shared CPU
dalib sweep benchmarks/sweeps/partial_da.yaml
dalib report runs/sweeps/partial_da --out benchmarks/results/partial_da
