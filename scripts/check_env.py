"""Is the environment the lock? `python scripts/check_env.py` compares every package pinned in requirements.lock with
the version installed in this interpreter's environment, and the lock with pyproject.toml's ranges.

Exit 0 when both agree; else one line per difference and exit 1. scripts/install.sh runs it after installing;
tests/test_environment.py holds the same two rules."""
import re, sys, tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def pins(lock: Path = ROOT/'requirements.lock') -> dict:
    "{canonical name: version} of every `name==version` line of the lock."
    out = {}
    for line in lock.read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if not line: continue
        m = re.fullmatch(r'([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;]+)', line)
        if not m: raise SystemExit(f"{lock}: not an exact pin: {line!r} (write the lock with `bash scripts/lock.sh`)")
        out[canonicalize_name(m[1])] = m[3]
    return out


def installed_mismatches(lock: Path = ROOT/'requirements.lock') -> list:
    "Each locked package whose installed version differs, as 'name: lock X, installed Y'."
    bad = []
    for name, want in pins(lock).items():
        try: have = metadata.version(name)
        except metadata.PackageNotFoundError: have = None
        if have != want: bad.append(f"{name}: lock {want}, installed {have or 'nothing'}")
    return bad


def requirements(pyproject: Path = ROOT/'pyproject.toml', extras=('dev', 'docs')) -> list:
    "pyproject.toml's requirements: the dependencies and the given extras' (the project's own extras left out)."
    proj = tomllib.loads(pyproject.read_text())['project']
    reqs = [Requirement(r) for r in proj['dependencies']]
    for e in extras: reqs += [Requirement(r) for r in proj.get('optional-dependencies', {}).get(e, [])]
    return [r for r in reqs if canonicalize_name(r.name) != canonicalize_name(proj['name'])]


def stale_pins(lock: Path = ROOT/'requirements.lock', pyproject: Path = ROOT/'pyproject.toml') -> list:
    "Each requirement of pyproject.toml that the lock lacks or pins outside its range."
    p, bad = pins(lock), []
    for r in requirements(pyproject):
        v = p.get(canonicalize_name(r.name))
        if v is None: bad.append(f"{r.name}: required by pyproject.toml ({r}), not in the lock")
        elif not r.specifier.contains(v, prereleases=True): bad.append(f"{r.name}: lock {v}, outside pyproject.toml's {r}")
    return bad


if __name__ == '__main__':
    bad = [f"requirements.lock is not current with pyproject.toml: {b}" for b in stale_pins()]
    bad += [f"installed environment differs from requirements.lock: {b}" for b in installed_mismatches()]
    for b in bad: print(b, file=sys.stderr)
    if bad: print("run `bash scripts/lock.sh` (after changing pyproject.toml), then `bash scripts/install.sh`", file=sys.stderr)
    sys.exit(1 if bad else 0)
