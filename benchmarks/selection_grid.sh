#!/usr/bin/env bash
# The selection-regret grids (benchmarks/sweeps/selection/): DANN, CDAN, MCC and DAN on the 12
# Office-Caltech10 SURF tasks, model.lr x weight x one method parameter, seeds 0-2 (4 x 288
# runs, about 25 s each on one idle core), then the committed benchmarks/results/selection.{md,json}.
# Needs the SURF files under $DALIB_DATA (for example DALIB_DATA=../shared/data). An interrupted
# grid resumes where it stopped when started again; --report-only skips the training.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
if [ "${1:-}" != "--report-only" ]; then
  for method in dann cdan mcc dan; do
    dalib sweep "benchmarks/sweeps/selection/office_caltech_$method.yaml" || true
  done
fi
python benchmarks/selection.py
