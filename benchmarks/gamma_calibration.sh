#!/usr/bin/env bash
# Hand-set vs calibrated γ (gamma: {name: balanced}) on Office-Caltech10 SURF A->W, as committed
# and with another feature scale (benchmarks/sweeps/gamma_calibration_{hand,balanced}.yaml),
# 3 seeds, then benchmarks/results/gamma_calibration.{md,json}. Needs the SURF files under
# $DALIB_DATA (for example DALIB_DATA=../shared/data). About 30 runs of 20-60 s each, two at a
# time; an interrupted sweep resumes where it stopped when started again.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
nice -n 10 dalib sweep benchmarks/sweeps/gamma_calibration_hand.yaml
nice -n 10 dalib sweep benchmarks/sweeps/gamma_calibration_balanced.yaml
python benchmarks/gamma_calibration.py runs/sweeps/gamma_calibration \
  --command "bash benchmarks/gamma_calibration.sh"
