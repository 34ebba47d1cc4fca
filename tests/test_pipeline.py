"The DVC pipeline end to end in a temporary copy of the repository, its determinism, and nbdev-export's idempotence."
import json, os, shutil, subprocess, sys, time
from pathlib import Path

import pytest
import yaml

from conftest import copy_working_tree, run_env

PY = sys.executable


def sh(cmd, cwd, timeout=1500, check=True):
    t = time.time()
    r = subprocess.run(cmd, cwd=cwd, env=run_env(), capture_output=True, text=True, timeout=timeout)
    print(f"$ {' '.join(map(str, cmd))}  ({time.time() - t:.0f} s, exit {r.returncode})")
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd} failed ({r.returncode}):\n--- stdout\n{r.stdout[-4000:]}\n--- stderr\n{r.stderr[-4000:]}")
    return r


def default_matrix(root: Path):
    p = yaml.safe_load((root/'params.yaml').read_text())
    return p['runs']['methods'], p['runs']['seeds']


def reduce_matrix(root: Path):
    """Keep the copy's pipeline fast: one seed, the three baselines plus one synthetic method and Diff-II (every
    stage still runs). DIFFAUG_FULL_REPRO=1 keeps the embedded default exactly as it is."""
    if os.environ.get('DIFFAUG_FULL_REPRO') == '1': return
    p = yaml.safe_load((root/'params.yaml').read_text())
    runs = p['runs']
    syn = runs.get('synthetic_methods') or []
    keep_syn = [m for m in ('diff-mix',) if m in syn][:1] or syn[:1]
    runs['methods'] = [m for m in runs['methods'] if m in ('original', 'mixup', 'cutmix', 'diff-ii') or m in keep_syn]
    if 'synthetic_methods' in runs: runs['synthetic_methods'] = keep_syn
    if runs.get('oracle_methods'): runs['oracle_methods'] = [m for m in runs['oracle_methods'] if m in keep_syn] or keep_syn
    runs['seeds'] = runs['seeds'][:1]
    (root/'params.yaml').write_text(yaml.safe_dump(p, sort_keys=False))


@pytest.fixture(scope='module')
def reproduced(repo_copy):
    "`dvc repro` of the embedded default in a fresh copy of the working tree (as after `git clone`)."
    shutil.rmtree(repo_copy/'reports', ignore_errors=True)  # no leftovers: everything must be produced here
    reduce_matrix(repo_copy)
    r = sh([Path(PY).parent/'dvc', 'repro'], repo_copy, timeout=1800)
    return repo_copy, r


@pytest.mark.slow
def test_dvc_repro_end_to_end(reproduced):
    root, r = reproduced
    methods, seeds = default_matrix(root)
    assert "Running stage 'report'" in r.stdout
    table = (root/'reports/report/table.md').read_text()
    for m in methods: assert f'| {m} |' in table
    assert '±' in table
    assert (root/'reports/prepare/prepare.ipynb').is_file() and (root/'reports/report/report.ipynb').is_file()
    for m in methods:
        for s in seeds:
            d = root/f'reports/classification/{m}-s{s}'
            assert (d/'classification.ipynb').is_file()
            met = json.loads((d/'metrics.json').read_text())
            assert met['method'] == m and met['seed'] == s and 0 <= met['top1'] <= 100
            assert len((d/'epochs.csv').read_text().splitlines()) == 1 + yaml.safe_load((root/'params.yaml').read_text())['classification']['epochs']
    # the executed report holds its figure
    nb = json.loads((root/'reports/report/report.ipynb').read_text())
    assert any('image/png' in o.get('data', {}) for c in nb['cells'] for o in c.get('outputs', []))
    # DVC sees the metrics and considers everything up to date
    ms = sh([Path(PY).parent/'dvc', 'metrics', 'show', '--json'], root).stdout
    assert 'reports/report/metrics.json' in ms and 'top1' in ms
    st = sh([Path(PY).parent/'dvc', 'status'], root).stdout
    assert 'up to date' in st, st
    assert not list(root.rglob('*.failed.ipynb')) and not list(root.rglob('*.running.ipynb'))
    # outputs do not depend on where the repository sits (the same bytes, and DVC hashes, in any clone)
    here = str(root.resolve())
    leaks = [f for d in ('data', 'reports') for f in (root/d).rglob('*.json')
             if '.checkpoints' not in str(f) and here in f.read_text(errors='replace')]
    assert not leaks, leaks[:5]


@pytest.mark.slow
def test_same_seed_same_split_and_metrics(reproduced):
    "Prepare + classification run again (other folders, new processes) give byte-identical split and metrics."
    root, _ = reproduced
    pipe = [PY, '-m', 'diffaug.pipeline']
    sh(pipe + ['prepare', '--set', 'root=again/dataset', '--set', 'split_path=again/split.json', '--out', 'again/prepare.ipynb', '--quiet'], root)
    a, b = json.loads((root/'data/split.json').read_text()), json.loads((root/'again/split.json').read_text())
    assert a['items'] == b['items'] and a['classes'] == b['classes']
    seed = default_matrix(root)[1][0]
    sh(pipe + ['classification', '--set', 'split=again/split.json', '--set', 'method=mixup', '--set', f'seed={seed}',
               '--set', 'out=again/mixup', '--out', 'again/mixup/classification.ipynb', '--quiet'], root)
    assert (root/'again/mixup/metrics.json').read_bytes() == (root/f'reports/classification/mixup-s{seed}/metrics.json').read_bytes()
    shutil.rmtree(root/'again')


def test_nbdev_export_leaves_package_unchanged(tmp_path):
    "On a copy of the working tree, `nbdev-export` reproduces diffaug/ exactly (nobody edited it by hand, nothing unexported)."
    root = copy_working_tree(tmp_path/'repo')
    sh([Path(PY).parent/'nbdev-export'], root)
    diff = sh(['git', 'diff', '--stat', '--', 'diffaug'], root).stdout  # working tree vs the copied files (staged)
    new = sh(['git', 'ls-files', '--others', '--exclude-standard', '--', 'diffaug'], root).stdout
    assert diff.strip() == '' and new.strip() == '', f"nbdev-export changed diffaug/ (run nbdev-export, commit the result):\n{diff}{new}"


def test_setup_files_are_valid(repo_root):
    "Every paper setup in params/ overrides only known parameters, with values the stages accept."
    from diffaug.pipeline import setup_command, setup_overrides, set_dotted, load_yaml, notebook_parameters, STAGES
    from diffaug.classification import TrainConfig
    from diffaug.concepts import check_concepts_params
    from diffaug.data import check_prepare_params
    setups = sorted((repo_root/'params').glob('*.yaml'))
    assert len(setups) >= 20
    base = load_yaml((repo_root/'params.yaml').read_text())
    for f in setups:
        flat = setup_overrides(f, repo_root/'params.yaml')
        merged = json.loads(json.dumps(base))
        for k, v in flat.items(): set_dotted(merged, k, v)
        for stage in STAGES:
            unknown = set(merged[stage]) - set(notebook_parameters(repo_root/'nbs'/STAGES[stage].notebook))
            assert not unknown, f"{f.name}: {stage} has unknown parameters {unknown}"
        check_concepts_params(**{**merged['concepts'], 'split': None})
        if merged['prepare']['source'] == 'miniworld': check_prepare_params(**merged['prepare'])
        runs = merged['runs']
        assert set(runs['synthetic_methods']) <= set(runs['methods']), f.name
        assert all(m in merged['classification']['synthetic'] for m in runs['methods'] if m in runs['synthetic_methods'] or m == 'diff-ii'), f.name
        assert set(runs['oracle_methods']) <= set(runs['synthetic_methods']) | {'diff-ii'}, f.name
        if 'diff-ii' in runs['methods']: assert merged['interpolation']['steps'] == merged['inversion']['steps'], f.name
        cls = {k: v for k, v in merged['classification'].items() if k not in ('split', 'eval_split')}
        for m in merged['runs']['methods']:
            cfg = TrainConfig(**{**cls, 'method': m}).check(files=False)  # a clean clone has no data/annotated/ yet
            for s in cfg.synthetic_sets():  # each synthetic set is the annotation stage's output for a method this setup runs
                assert s.startswith('data/annotated/') and s.split('/')[-1] in set(runs['synthetic_methods']) | {'diff-ii'}, (f.name, m, s)
        assert merged['classification']['split'] == merged['prepare']['split_path'], f.name
        cmd = setup_command(f, repo_root/'params.yaml')
        assert cmd[:5] == ['dvc', 'exp', 'run', '-n', f.stem]
        text = f.read_text()
        assert 'expected' in text.lower(), f"{f.name}: write the paper's expected numbers beside the setup"


def test_setup_files_come_from_the_generator(repo_root, tmp_path):
    "params/*.yaml are exactly what scripts/gen_setups.py writes (edit the script, not the files)."
    subprocess.run([sys.executable, str(repo_root/'scripts'/'gen_setups.py'), str(tmp_path)], check=True, capture_output=True)
    made = {p.name: p.read_text() for p in tmp_path.glob('*.yaml')}
    have = {p.name: p.read_text() for p in (repo_root/'params').glob('*.yaml')}
    assert sorted(made) == sorted(have)
    assert [n for n in made if made[n] != have[n]] == []


def test_papermill_reads_every_stage_parameter(repo_root, caplog):
    "papermill's own parser (`papermill --help-notebook`, its 'unknown parameter' warnings) reads each stage's parameters cell like ours."
    import logging, nbformat
    from papermill.translators import PythonTranslator
    from diffaug.pipeline import STAGES, notebook_parameters
    for st in {s.notebook for s in STAGES.values()}:
        nb = repo_root/'nbs'/st
        cell = next(c for c in nbformat.read(str(nb), as_version=4).cells if 'parameters' in c.metadata.get('tags', []))
        with caplog.at_level(logging.WARNING, logger='papermill'):
            caplog.clear()
            names = [p.name for p in PythonTranslator.inspect(cell)]
        assert not caplog.records, f"{st}: {[r.getMessage() for r in caplog.records]}"
        assert names == list(notebook_parameters(nb)), st
