#!/usr/bin/env bash
# Issue 18's short controlled runs (CPU, one thread per run), then benchmarks/results/misses.md:
#   misses_wdgrl.yaml         WDGRL on MNIST->USPS in digits_cpu.yaml's setting, gamma 1 vs 0.01
#   misses_source_only.yaml   source-only MNIST->USPS, digits_cpu's model vs phase 1's config
#   misses_office_caltech_*   CORAL, JAN, DeepJDOT on 4 Office-Caltech SURF tasks, gamma swept,
#                             and source-only on the same tasks
# Needs MNIST, USPS and the SURF files under $DALIB_DATA. A stopped script resumes (finished runs
# are skipped, unfinished ones start again).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
for sweep in misses_wdgrl misses_source_only misses_office_caltech_source_only \
    misses_office_caltech_coral misses_office_caltech_jan misses_office_caltech_deepjdot; do
  nice -n 10 dalib sweep "benchmarks/sweeps/$sweep.yaml"
done
python benchmarks/misses.py
