#!/usr/bin/env bash
# Office-Caltech10 SURF: every method config on the 12 tasks, 3 seeds, then the committed results
# benchmarks/results/office_caltech.{md,json}.  Needs the SURF files under $DALIB_DATA
# (for example DALIB_DATA=../shared/data).  --quick: two tasks, one seed, a few steps (a smoke
# check of a minute; its report goes to runs/reports/office_caltech_quick, nothing is committed).
# --only PATTERN...: only the runs whose id matches (e.g. 'mcd/*'), added to the committed table.
# An interrupted run resumes where it stopped when started again.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # one thread per run: small MLPs, no spin-waiting
if [ "${1:-}" = "--quick" ]; then
  dalib sweep benchmarks/sweeps/office_caltech_quick.yaml
  dalib report runs/sweeps/office_caltech_quick --out runs/reports/office_caltech_quick
  exit
fi
keep=()
if [ "${1:-}" = "--only" ]; then
  # Only the runs matching the patterns (e.g. 'mcd/*'); the other runs of the committed table
  # are kept as they are, and its header says which code version made which.
  dalib sweep benchmarks/sweeps/office_caltech.yaml "$@"
  keep=(--previous benchmarks/results/office_caltech.json --experiments experiments/office_caltech)
else
  dalib sweep benchmarks/sweeps/office_caltech.yaml
fi
python benchmarks/publish.py runs/sweeps/office_caltech office_caltech \
  --command "bash benchmarks/office_caltech.sh $*" --planned 648 "${keep[@]}" \
  --baseline "CORAL + linear SVM (Sun, Feng and Saenko, AAAI 2016)=48.8" \
  --baseline "JDA (Long et al., ICCV 2013)=46.3"
