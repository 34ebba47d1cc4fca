#!/usr/bin/env bash
# Write requirements.lock: every package of the environment (diffaug's dependencies with the dev and docs extras)
# at one exact version, resolved by uv from pyproject.toml's ranges for Linux x86_64, Python 3.11 (this project's
# machines). scripts/install.sh installs exactly this file. Options go to `uv pip compile`:
#   bash scripts/lock.sh                      re-resolve, keeping every pin that still satisfies pyproject.toml
#   bash scripts/lock.sh --upgrade            move every package to the newest version the ranges allow
#   bash scripts/lock.sh --upgrade-package diffusers
# Then: bash scripts/install.sh && dvc status && dvc repro && git diff dvc.lock   (README: "Exact reproduction")
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh >/dev/null 2>&1 || true   # uv itself comes with the environment
[ -x .venv/bin/uv ] || .venv/bin/python -m pip install -q uv
eval ".venv/bin/uv pip compile -q pyproject.toml --extra dev --extra docs --python-version 3.11 \
  --python-platform x86_64-manylinux_2_28 --index-strategy unsafe-best-match --no-header --no-annotate \
  --custom-compile-command 'bash scripts/lock.sh' -o requirements.lock.new $(.venv/bin/python scripts/pip_sources.py) $*" \
  || { rm -f requirements.lock.new; exit 1; }
{ echo "# The environment, locked: every package at one exact version (Linux x86_64, Python 3.11)."
  echo "# Written by \`bash scripts/lock.sh\` from pyproject.toml's ranges; installed exactly by scripts/install.sh."
  echo "# Do not edit by hand: README, \"Exact reproduction\", says how to move it forward."
  grep -v '^#' requirements.lock.new | grep -v '^\s*$'; } > requirements.lock
rm -f requirements.lock.new
echo "requirements.lock: $(grep -c '==' requirements.lock) packages"
