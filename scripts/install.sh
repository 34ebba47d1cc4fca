#!/usr/bin/env bash
# Create .venv (if missing) and install diffaug with its dev extras into it. Idempotent: when nothing changed
# since the last install (pyproject.toml older than the marker, package importable) it returns in a second.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv 2>/dev/null || { "$PY" -m pip install --user -q virtualenv && "$PY" -m virtualenv -q .venv; }
fi
marker=.venv/.diffaug-installed
if [ ! -f "$marker" ] || [ pyproject.toml -nt "$marker" ] || ! .venv/bin/python -c "import diffaug, pytest, jupytext, dvc, papermill" 2>/dev/null; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch "$marker"
fi
