"Shared pytest fixtures and helpers: the repository root, copies of the working tree, one torch thread, the xdist groups."
import os, shutil, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def pytest_configure(config):
    os.environ.setdefault('DIFFAUG_QUIET', '1')
    try:
        import torch; torch.set_num_threads(1)  # a 2-core machine shared with other jobs
    except ImportError: pass


# xdist groups, longest first (one worker builds the reproduced tree while the other works through the files; the kill
# tests, which need that tree, come last); a group not named here runs in between.
FIRST = ('tests/test_pipeline.py', 'tests/test_own_data.py', 'tests/test_miniworld.py', 'tests/test_docs.py', 'tests/test_methods.py')
LAST = ('repro-kill',)


def _group(item):
    m = item.get_closest_marker('xdist_group')
    return m.args[0] if m and m.args else m.kwargs.get('name', 'default') if m else item.nodeid.split('::')[0]


def pytest_itemcollected(item):
    """With pytest-xdist (the test command runs `-n 2 --dist loadgroup --no-loadscope-reorder`) the tests of one file run
    on one worker, so a module's fixtures (a tiny model, a trained concept folder) are built once;
    `@pytest.mark.xdist_group(name)` moves tests into a group of their own."""
    if not item.get_closest_marker('xdist_group'): item.add_marker(pytest.mark.xdist_group(_group(item)))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    "Groups are queued longest first: FIRST, then the others, then LAST."
    rank = lambda g: FIRST.index(g) if g in FIRST else len(FIRST) + 1 + LAST.index(g) if g in LAST else len(FIRST)
    items.sort(key=lambda it: rank(_group(it)))  # stable: the tests of a group keep their order


def _git_files(root: Path, *opts) -> set:
    out = subprocess.run(['git', 'ls-files', '-z', *opts], cwd=root, capture_output=True, check=True).stdout.decode()
    return {p for p in out.split('\0') if p and (root/p).is_file()}


def working_tree_files(root: Path = ROOT) -> list:
    """Files git tracks plus untracked, non-ignored ones (what a fresh clone would hold once committed), except
    untracked files under data/ and reports/: pipeline outputs whose DVC .gitignore entry may be missing mid-development."""
    new = {p for p in _git_files(root, '--others', '--exclude-standard') if not p.startswith(('data/', 'reports/'))}
    return sorted(_git_files(root, '--cached') | new)


def copy_working_tree(dest: Path, root: Path = ROOT) -> Path:
    "Copy the working tree into `dest`, make it a git repository (files staged, nothing committed)."
    dest.mkdir(parents=True, exist_ok=True)
    for rel in working_tree_files(root):
        (dest/rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root/rel, dest/rel)
    env = {**os.environ, 'GIT_AUTHOR_NAME': 't', 'GIT_AUTHOR_EMAIL': 't@t', 'GIT_COMMITTER_NAME': 't', 'GIT_COMMITTER_EMAIL': 't@t'}
    subprocess.run(['git', 'init', '-q'], cwd=dest, check=True, env=env)
    subprocess.run(['git', 'add', '-A'], cwd=dest, check=True, env=env)
    return dest


def run_env() -> dict:
    "The environment for subprocesses: this interpreter's bin/ first on PATH (DVC stage commands call `python`)."
    return {**os.environ, 'PATH': f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", 'DIFFAUG_QUIET': '1'}


@pytest.fixture(scope='session')
def repo_root() -> Path:
    return ROOT
