#!/usr/bin/env bash
# The full protocols on a GPU machine, then their committed tables:
#   digits      benchmarks/sweeps/digits_full{,_u2m,_seeds}.yaml: source-only, DANN, CDAN, MDD on
#               MNIST->USPS and USPS->MNIST, seeds 0-2, 50k steps at batch 128 (24 runs)
#               -> benchmarks/results/digits_full.{md,json}
#   office31    benchmarks/sweeps/office31.yaml: 18 methods x 6 tasks x 3 seeds, ResNet-50,
#               20k steps at batch 32 (324 runs) -> benchmarks/results/office31.{md,json}
#   officehome  benchmarks/sweeps/officehome.yaml: 18 methods x 12 tasks x 3 seeds (648 runs)
#               -> benchmarks/results/officehome.{md,json}
# Usage: bash benchmarks/gpu_full.sh [--dry-run] [digits] [office31] [officehome]
# (no part named: all three, in that order). --dry-run prints the plan (runs per sweep, how many
# have finished) and the commands, and runs nothing. Each run gets one GPU (CUDA_VISIBLE_DEVICES,
# see docs/sweeps.md); the sweep runs as many at a time as the machine has GPUs. Needs the data
# under $DALIB_DATA (digits: MNIST and USPS; office31/officehome: the images, see the README).
# A stopped script resumes: finished runs are skipped, unfinished ones continue from their last
# step checkpoint (every 1,000 steps). Expected hours: benchmarks/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
dry_run=false
parts=()
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=true ;;
    digits|office31|officehome) parts+=("$arg") ;;
    *) echo "usage: bash benchmarks/gpu_full.sh [--dry-run] [digits] [office31] [officehome]" >&2
       exit 2 ;;
  esac
done
[ ${#parts[@]} -gt 0 ] || parts=(digits office31 officehome)

sweeps_of() {
  case "$1" in
    digits) echo benchmarks/sweeps/digits_full.yaml benchmarks/sweeps/digits_full_u2m.yaml \
                 benchmarks/sweeps/digits_full_seeds.yaml ;;
    *) echo "benchmarks/sweeps/$1.yaml" ;;
  esac
}
planned_of() { case "$1" in digits) echo 24 ;; office31) echo 324 ;; officehome) echo 648 ;; esac; }
output_of() { case "$1" in digits) echo digits_full ;; *) echo "$1" ;; esac; }

# shellcheck disable=SC2046  # the sweep files are words
python benchmarks/sweep_plan.py $(for part in "${parts[@]}"; do sweeps_of "$part"; done)
for part in "${parts[@]}"; do
  commands=()
  for sweep in $(sweeps_of "$part"); do commands+=("dalib sweep $sweep"); done
  commands+=("python benchmarks/publish.py runs/sweeps/$(output_of "$part") $(output_of "$part") \
--command 'bash benchmarks/gpu_full.sh $part' --planned $(planned_of "$part")")
  for command in "${commands[@]}"; do
    if $dry_run; then echo "would run: $command"; else echo "+ $command"; eval "$command"; fi
  done
done
