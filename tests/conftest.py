"Shared pytest fixtures: the repository root, a disposable copy of the working tree, one torch thread."
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


@pytest.fixture(scope='session')
def repo_copy(tmp_path_factory) -> Path:
    "One copy of the working tree per test session (tests that run the pipeline share it)."
    return copy_working_tree(tmp_path_factory.mktemp('clone')/'repo')
