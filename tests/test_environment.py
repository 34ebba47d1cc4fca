"""The environment is part of the lock: requirements.lock pins every package, scripts/install.sh installs exactly it,
and it stays within pyproject.toml's ranges (scripts/check_env.py holds the rules; these tests hold it)."""
import importlib.util, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('check_env', ROOT/'scripts'/'check_env.py')
check_env = importlib.util.module_from_spec(spec); spec.loader.exec_module(check_env)

KEY = ('torch', 'torchvision', 'diffusers', 'transformers', 'tokenizers', 'dvc', 'timm', 'peft', 'accelerate', 'numpy',
       'safetensors', 'papermill', 'nbdev')


def test_the_lock_pins_every_key_package():
    pins = check_env.pins()
    assert not [k for k in KEY if k not in pins], [k for k in KEY if k not in pins]
    assert len(pins) > 100  # the whole environment, not only the direct dependencies


def test_the_installed_environment_is_the_lock():
    "What scripts/install.sh installed (this interpreter's environment) is exactly requirements.lock."
    assert check_env.installed_mismatches() == []


def test_the_lock_is_current_with_pyproject():
    "Every requirement of pyproject.toml (with the dev and docs extras) is pinned within its range."
    assert check_env.stale_pins() == []


def test_the_checks_can_fail(tmp_path):
    "A pin other than the installed version, and a range the lock's pin is outside of, are each named."
    import torch
    lock = tmp_path/'requirements.lock'
    lock.write_text(f"# a comment\ntorch==0.0.1\nnumpy=={__import__('numpy').__version__}\n")
    assert check_env.installed_mismatches(lock) == [f"torch: lock 0.0.1, installed {check_env.metadata.version('torch')}"]
    lock.write_text("numpy==1.0.0\n")
    py = tmp_path/'pyproject.toml'
    py.write_text('[project]\nname = "x"\ndependencies = ["numpy>=2", "tqdm"]\n[project.optional-dependencies]\ndev = ["x[docs]"]\n')
    assert check_env.stale_pins(lock, py) == ["numpy: lock 1.0.0, outside pyproject.toml's numpy>=2",
                                              "tqdm: required by pyproject.toml (tqdm), not in the lock"]
    lock.write_text("numpy>=1\n")
    with pytest.raises(SystemExit, match='not an exact pin'): check_env.pins(lock)


def test_check_env_command_agrees():
    r = subprocess.run([sys.executable, str(ROOT/'scripts'/'check_env.py')], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_a_run_records_its_environment():
    "The versions each run records (executed notebooks' metadata, results/<name>/run.json) are the installed ones."
    from diffaug.core import environment
    env = environment()
    for k in KEY[:10]: assert env[k] == check_env.pins()[k], k
    assert env['python'] == '.'.join(map(str, sys.version_info[:3]))
