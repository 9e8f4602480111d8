#!/usr/bin/env bash
# Digits MNIST->USPS and USPS->MNIST: every digits method config, 3 seeds, then the committed
# results benchmarks/results/digits.{md,json}.  Needs MNIST and USPS under $DALIB_DATA (for
# example DALIB_DATA=../shared/data).
#   (no option)  the Transfer-Learning-Library protocol of the configs: 20 epochs of 2,500
#                iterations at batch 128 per domain (a GPU job: 50k steps per run, 114 runs)
#   --cpu        5 epochs of 500 iterations at batch 32, the convolutional LeNet with a 500-d
#                bottleneck (benchmarks/sweeps/digits_cpu.yaml): 1/80 of the protocol's samples,
#                what a CPU affords
#   --tll-short  the protocol for a twentieth of its steps, 4 methods, seed 0 (DANN, CDAN, MDD on
#                USPS->MNIST: seeds 0-2)
#                (benchmarks/sweeps/digits_tll_short.yaml): how much of the gap to the published
#                numbers the protocol closes, about 3 h of CPU time
#   --quick      one seed, a few steps: a smoke check of a few minutes, nothing committed
#   --only PATTERN...  (after --cpu, or alone) only the runs whose id matches, e.g. 'mcd/*': the
#                other runs of the committed table are kept, its header says which code made which
# An interrupted run resumes where it stopped when started again.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
case "${1:-}" in
  --quick)
    dalib sweep benchmarks/sweeps/digits_quick.yaml
    dalib report runs/sweeps/digits_quick --out runs/reports/digits_quick
    exit ;;
  --tll-short)
    dalib sweep benchmarks/sweeps/digits_tll_short.yaml
    dalib sweep benchmarks/sweeps/digits_tll_short_seeds.yaml
    python benchmarks/publish.py runs/sweeps/digits_tll_short digits_tll_short \
      --command "bash benchmarks/digits.sh --tll-short" --planned 14
    exit ;;
  --cpu) sweep=digits_cpu ;;
  "" | --only) sweep=digits ;;
  *) echo "usage: bash benchmarks/digits.sh [--cpu | --tll-short | --quick] [--only PATTERN...]" >&2
     exit 2 ;;
esac
command="bash benchmarks/digits.sh $*"
[ "${1:-}" = "--only" ] || shift $(($# > 0))
keep=()
if [ "${1:-}" = "--only" ]; then
  # Only the runs matching the patterns (e.g. 'mcd/*'); the other runs of the committed table
  # are kept as they are, and its header says which code version made which.
  dalib sweep "benchmarks/sweeps/$sweep.yaml" "$@"
  keep=(--previous benchmarks/results/digits.json --experiments experiments/digits)
else
  dalib sweep "benchmarks/sweeps/$sweep.yaml"
fi
python benchmarks/publish.py "runs/sweeps/$sweep" digits \
  --command "$command" --planned 114 "${keep[@]}"  # 19 methods x 2 tasks x 3 seeds
