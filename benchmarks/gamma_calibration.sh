#!/usr/bin/env bash
# Hand-set vs calibrated γ (gamma: {name: balanced}), 3 seeds each, then
# benchmarks/results/gamma_calibration.{md,json}:
#   - Office-Caltech10 SURF, the 12 tasks as committed, and A->W with another feature scale
#     (raw counts into a plain network); two small synthetic review domains in svmlight form
#     (word counts, log1p; benchmarks/make_svmlight_domains.py writes them into runs/data)
#     (benchmarks/sweeps/gamma_calibration_{hand,balanced,balanced_r0.25}.yaml: 315 runs of
#     5-20 s);
#   - digits MNIST->USPS in the CPU setting of digits_cpu.yaml
#     (benchmarks/sweeps/gamma_calibration_digits_{hand,balanced,balanced_r0.25}.yaml: 21 runs of
#     1-3 min).
# Calibrated at two ratios: 1 (D's gradient on the features as large as the source loss's) and
# 0.25.
# Two runs at a time. Needs the SURF, MNIST and USPS files under $DALIB_DATA (for example
# DALIB_DATA=../shared/data). An interrupted sweep resumes where it stopped when started again.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
[ -f runs/data/svmlight_reviews/kitchen_test.svm ] ||
  python benchmarks/make_svmlight_domains.py --out runs/data/svmlight_reviews
for sweep in hand balanced balanced_r0.25 digits_hand digits_balanced digits_balanced_r0.25; do
  nice -n 10 dalib sweep "benchmarks/sweeps/gamma_calibration_$sweep.yaml"
done
python benchmarks/gamma_calibration.py runs/sweeps/gamma_calibration \
  --command "bash benchmarks/gamma_calibration.sh"
