#!/usr/bin/env bash
# Install everything (once) and run the main job: `dvc repro` of the pipeline in dvc.yaml with params.yaml.
# The embedded default is the paper in miniature: the mini world's 5-shot comparison of every method, every seed of
# runs.seeds (params.yaml), with out-of-distribution test images, on the shipped model and oracle, offline on a CPU
# (README: time per stage).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"   # DVC stage commands call `python`: this environment's
if [ ! -d .dvc ]; then dvc init -q; fi
start=$(date +%s)
dvc repro "$@"
echo; echo "== reports/report/summary.md ($(( ($(date +%s) - start) / 60 )) min) =="; cat reports/report/summary.md
echo; echo "== reports/report/claims.md =="; cat reports/report/claims.md
