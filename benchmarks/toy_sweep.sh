#!/usr/bin/env bash
# The committed example of `dalib sweep` + `dalib report`: a γ ablation of MMD and DANN beside
# source-only on rotated moons, 3 seeds, DEV model selection. Output: benchmarks/results/toy_sweep/.
set -euo pipefail
cd "$(dirname "$0")/.."
dalib sweep benchmarks/sweeps/toy_baseline.yaml
dalib sweep benchmarks/sweeps/toy_gamma.yaml
dalib report runs/sweeps/toy --out benchmarks/results/toy_sweep --plots
