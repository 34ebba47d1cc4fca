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
  # uv installs the same resolution about 5x faster than pip (20 s instead of 1.5-2 min here). It does not read pip's
  # configuration, so pip's find-links, constraint and index settings are handed over (with pip's rule: the newest
  # version on any index; bytecode compiled at install, as pip does: some environments never write it at import); pip is the fallback.
  uv_args=$(.venv/bin/python - <<'PY'
import os, shlex, subprocess, sys
out = subprocess.run([sys.executable, '-m', 'pip', 'config', 'list'], capture_output=True, text=True).stdout
flags = {'find-links': '--find-links', 'constraint': '--constraint', 'extra-index-url': '--extra-index-url', 'index-url': '--index-url'}
args = []
for line in out.splitlines():
    key, _, val = line.partition('=')
    name = key.split('.', 1)[-1]
    if name not in flags: continue
    for v in shlex.split(val.strip().strip("'\"")):
        path = v[len('file://'):] if v.startswith('file://') else v if v.startswith('/') else None
        if path is not None and not os.path.exists(path): continue  # pip skips a missing local index; uv would fail on it
        args += [flags[name], v]
print(shlex.join(args))
PY
)
  if .venv/bin/python -m pip install -q uv 2>/dev/null && eval ".venv/bin/uv pip install -q --python .venv/bin/python --index-strategy unsafe-best-match --compile-bytecode -e '.[dev]' $uv_args"; then :
  else .venv/bin/python -m pip install -q -e '.[dev]'; fi
  touch "$marker"
fi
