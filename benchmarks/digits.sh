#!/usr/bin/env bash
# Digits MNIST->USPS and USPS->MNIST: every digits method config, 3 seeds, then the committed
# results benchmarks/results/digits.{md,json}.  Needs MNIST and USPS under $DALIB_DATA (for
# example DALIB_DATA=../shared/data).
#   (no option)  the full Transfer-Learning-Library schedule, 20 epochs of 500 iterations (a GPU
#                run: about 10k steps per run, 78 runs)
#   --cpu        5 epochs of 500 iterations (benchmarks/sweeps/digits_cpu.yaml), what a CPU affords
#   --quick      one seed, a few steps: a smoke check of a few minutes, nothing committed
# An interrupted run resumes where it stopped when started again.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
case "${1:-}" in
  --quick)
    dalib sweep benchmarks/sweeps/digits_quick.yaml
    dalib report runs/sweeps/digits_quick --out runs/reports/digits_quick
    exit ;;
  --cpu) sweep=digits_cpu ;;
  "") sweep=digits ;;
  *) echo "usage: bash benchmarks/digits.sh [--cpu | --quick]" >&2; exit 2 ;;
esac
dalib sweep "benchmarks/sweeps/$sweep.yaml"
python benchmarks/publish.py "runs/sweeps/$sweep" digits \
  --command "bash benchmarks/digits.sh ${1:-}" --planned 78
