#!/usr/bin/env bash
# Install everything (once) and run the main job: `dvc repro` of the pipeline in dvc.yaml with params.yaml.
# The embedded default is a plumbing check (toy data, tiny model, CPU, a few minutes), not a result.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"   # DVC stage commands call `python`: this environment's
if [ ! -d .dvc ]; then dvc init -q; fi
dvc repro "$@"
echo; echo "== reports/report/table.md =="; cat reports/report/table.md
