#!/usr/bin/env bash
# Partial domain adaptation on Office-Caltech10 SURF: DANN vs PADA-weighted DANN, 6 tasks x 3
# seeds (needs DALIB_DATA with office_caltech10_surf/). Output: benchmarks/results/partial_da/.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1  # one thread per run: small MLPs, and no spinning threads on a shared CPU
dalib sweep benchmarks/sweeps/partial_da.yaml
dalib report runs/sweeps/partial_da --out benchmarks/results/partial_da
