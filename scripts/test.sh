#!/usr/bin/env bash
# Install everything (once) and run every test: every notebook executed as nbdev-test does, its committed outputs
# compared with what it prints now (scripts/docs.py outputs --check), then pytest (which also runs
# `dvc repro` end to end in a temporary copy of the repository). Exits non-zero if anything fails.
# Options are passed to pytest, e.g. `bash scripts/test.sh -m "not slow"` for the quick subset.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh || { echo "install failed" >&2; exit 1; }
bash scripts/install_browser.sh || { echo "Chromium install failed (docs browser test)" >&2; exit 1; }
export PATH="$PWD/.venv/bin:$PATH"
export DIFFAUG_QUIET=1
start=$(date +%s)
scratch=$(mktemp -d); trap 'rm -rf "$scratch"' EXIT  # the notebooks' demo folders go here, not into the machine's /tmp
echo "== every notebook in nbs/, executed as nbdev-test does; its committed outputs must be current =="
TMPDIR="$scratch" python scripts/docs.py outputs --check --jobs "${NBDEV_WORKERS:-2}"; nb=$?
echo "notebooks: exit $nb after $(( $(date +%s) - start )) s"
echo "== pytest (${PYTEST_WORKERS:-2} workers: the tests of a file share a worker, the longest groups start first) =="
python -m pytest -q -n "${PYTEST_WORKERS:-2}" --dist loadgroup --no-loadscope-reorder --timeout 1800 --durations=25 "$@"; py=$?
echo "pytest: exit $py; total $(( $(date +%s) - start )) s"
if [ $nb -ne 0 ] || [ $py -ne 0 ]; then exit 1; fi
