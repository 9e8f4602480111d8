#!/usr/bin/env bash
# The selection-regret grids (benchmarks/sweeps/selection/), then the committed
# benchmarks/results/selection.{md,json} (benchmarks/selection.py, which also copies the finished
# runs' records into benchmarks/results/selection_runs/).
#   (no option)    DANN, CDAN, MCC, DAN on the 12 Office-Caltech10 SURF tasks: model.lr x weight x
#                  one method parameter, seeds 0-2 (4 x 288 runs, 20-25 s each on an idle core)
#   --digits       the same four grids on digits in the CPU setting (4 x 48 runs, ~5.5 min each)
#   --report-only  no training
# Needs the data under $DALIB_DATA (for example DALIB_DATA=../shared/data). An interrupted grid
# resumes where it stopped when started again.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
benchmark=office_caltech
case "${1:-}" in
  --digits) benchmark=digits_cpu ;;
  --report-only) benchmark="" ;;
  "") ;;
  *) echo "usage: $0 [--digits | --report-only]" >&2; exit 2 ;;
esac
if [ -n "$benchmark" ]; then
  for method in dann cdan mcc dan; do
    dalib sweep "benchmarks/sweeps/selection/${benchmark}_$method.yaml" || true
  done
fi
python benchmarks/selection.py --collect runs/sweeps/selection
