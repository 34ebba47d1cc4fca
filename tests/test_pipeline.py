"The DVC pipeline end to end in a temporary copy of the repository, its determinism, and nbdev-export's idempotence."
import json, os, shutil, subprocess, sys, time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, copy_working_tree, run_env

PY = sys.executable


def sh(cmd, cwd, timeout=1500, check=True, env=None):
    t = time.time()
    r = subprocess.run(cmd, cwd=cwd, env={**run_env(), **(env or {})}, capture_output=True, text=True, timeout=timeout)
    print(f"$ {' '.join(map(str, cmd))}  ({time.time() - t:.0f} s, exit {r.returncode})")
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd} failed ({r.returncode}):\n--- stdout\n{r.stdout[-4000:]}\n--- stderr\n{r.stderr[-4000:]}")
    return r


def default_matrix(root: Path):
    p = yaml.safe_load((root/'params.yaml').read_text())
    return p['runs']['methods'], p['runs']['seeds']


REDUCED = {  # section -> overrides of the embedded default for the copy's run (see reduce_default)
    'runs': dict(methods=['original', 'mixup', 'cutmix', 'diff-mix', 'diff-ii'], synthetic_methods=['diff-mix'],
                 annotated_methods=['diff-mix', 'diff-ii'], seeds=[0, 1], oracle_methods=['diff-mix', 'diff-ii']),
    'concepts': dict(steps=20, checkpoint_every=10), 'concepts_ti': dict(steps=2, checkpoint_every=2),
    'synthesis': dict(expansion=1, steps=3), 'inversion': dict(steps=3), 'interpolation': dict(expansion=1, steps=3),
    # the default's classifier (resnet18 fine-tuned from models/backbone: the path the main job runs), at 32 px, 3 epochs
    'classification': dict(image_size=32, epochs=3, eval_every=1),
}


def reduce_default(root: Path):
    """Keep the copy's pipeline fast: the embedded default (the mini world, its shipped model and oracle, the OOD test
    images) with a reduced matrix (one compared synthetic method besides Diff-II, the baselines, two seeds) and little
    compute (few steps, one image per real image, a tiny classifier). tiny_model, prepare and suffixes keep the
    default's parameters: their outputs must be the committed ones. DIFFAUG_FULL_REPRO=1 runs the default as it is."""
    if os.environ.get('DIFFAUG_FULL_REPRO') == '1': return
    p = yaml.safe_load((root/'params.yaml').read_text())
    for sec, over in REDUCED.items(): p[sec].update(over)
    (root/'params.yaml').write_text(yaml.safe_dump(p, sort_keys=False))


def _build_reproduced(repo: Path):
    "`dvc repro` of the (reduced) embedded default in a fresh copy of the working tree (as after `git clone`)."
    copy_working_tree(repo)
    shutil.rmtree(repo/'reports', ignore_errors=True)  # no leftovers: everything must be produced here
    reduce_default(repo)
    tmp = repo.parent/'tmpdir'; tmp.mkdir()
    r = sh([Path(PY).parent/'dvc', 'repro'], repo, timeout=1800, env={'TMPDIR': str(tmp)})
    left = sorted(p.name for p in tmp.iterdir() if not p.name.startswith('torchinductor_'))  # torch's own compile cache, not ours
    assert not left, f"the pipeline left files in the temp folder: {left[:10]}"
    assert sorted(p.name for p in (repo/'nbs').iterdir()) == sorted(p.name for p in (ROOT/'nbs').iterdir() if p.name != '__pycache__')
    return r.stdout


@pytest.fixture(scope='session')
def reproduced(tmp_path_factory):
    """One `dvc repro` per test session, shared by the xdist workers (built by the first that needs it, under a file
    lock). The tree is read-only for the tests: a test that runs anything in it works on its own copy (`own_copy`)."""
    from filelock import FileLock
    base = tmp_path_factory.getbasetemp()
    if os.environ.get('PYTEST_XDIST_WORKER'): base = base.parent  # the folder the workers share
    repo, log = base/'reproduced'/'repo', base/'reproduced'/'repro.log'
    with FileLock(str(base/'reproduced.lock')):
        if not log.is_file():
            shutil.rmtree(repo.parent, ignore_errors=True)
            stdout = _build_reproduced(repo)
            log.write_text(stdout)
    return repo, log.read_text()


def own_copy(src: Path, dest: Path) -> Path:
    "A private copy of the reproduced tree (git, DVC cache and outputs) for a test that writes or runs DVC in it."
    shutil.copytree(src, dest, symlinks=True)
    return dest


@pytest.mark.slow
def test_dvc_repro_end_to_end(reproduced, tmp_path):
    src, stdout = reproduced
    root = own_copy(src, tmp_path/'repo')
    methods, seeds = default_matrix(root)
    assert "Running stage 'report'" in stdout
    table = (root/'reports/report/table.md').read_text()
    for m in methods: assert f'| {m} |' in table
    assert '±' in table
    assert (root/'reports/prepare/prepare.ipynb').is_file() and (root/'reports/report/report.ipynb').is_file()
    assert (root/'reports/classification/classification.ipynb').is_file()
    for m in methods:
        for s in seeds:
            d = root/f'reports/classification/{m}/s{s}'
            met = json.loads((d/'metrics.json').read_text())
            assert met['method'] == m and met['seed'] == s and 0 <= met['top1'] <= 100
            assert set(met['groups']) == {'landbird/land', 'landbird/water', 'waterbird/land', 'waterbird/water'}  # the OOD test images
            assert len((d/'epochs.csv').read_text().splitlines()) == 1 + yaml.safe_load((root/'params.yaml').read_text())['classification']['epochs']
    # the report's files agree with the runs and with metrics.json
    rep = root/'reports/report'
    for f in ('figure.png', 'gains.png', 'plane.png', 'curves.png', 'gains.md', 'groups.md', 'shots.md', 'claims.md', 'scores.csv', 'runs.csv'):
        assert (rep/f).is_file() and (rep/f).stat().st_size > 0, f
    mets = json.loads((rep/'metrics.json').read_text())
    runs = [json.loads((root/f'reports/classification/{m}/s{s}/metrics.json').read_text()) for m in methods for s in seeds]
    for m in methods:
        v = [r['top1'] for r in runs if r['method'] == m]
        assert abs(mets[m]['top1']['mean'] - sum(v) / len(v)) < 1e-3, m
        assert f"| {m} | {len(seeds)} |" in table
    for m in methods[1:]:
        d = [a['top1'] - b['top1'] for a in runs if a['method'] == m for b in runs if b['method'] == 'original' and b['seed'] == a['seed']]
        lo, hi = mets[m]['top1']['gain_ci']
        assert lo - 1e-3 <= sum(d) / len(d) <= hi + 1e-3 and f'| {m} | {len(seeds)} |' in (rep/'gains.md').read_text()
    assert '| diff-ii |' in (rep/'groups.md').read_text() and 'worst group' in (rep/'groups.md').read_text()
    assert (rep/'shots.md').read_text().startswith('The training split is balanced') and 'few_shot' not in mets['diff-ii']  # 5 shots each
    sc = (rep/'scores.csv').read_text().splitlines()
    assert sc[0].startswith('method,n,faithfulness') and {l.split(',')[0] for l in sc[1:]} == {'diff-mix', 'diff-ii'}
    for m in ('diff-mix', 'diff-ii'): assert 0 <= json.loads((root/f'reports/oracle/{m}/scores.json').read_text())['faithfulness'] <= 1
    assert 'diff-ii above original' in (rep/'claims.md').read_text()
    # the executed report holds its figures
    nb = json.loads((root/'reports/report/report.ipynb').read_text())
    assert sum('image/png' in o.get('data', {}) for c in nb['cells'] for o in c.get('outputs', [])) >= 4
    # DVC sees the metrics and considers everything up to date
    ms = sh([Path(PY).parent/'dvc', 'metrics', 'show', '--json'], root).stdout
    assert 'reports/report/methods/' in ms and 'top1' in ms
    st = sh([Path(PY).parent/'dvc', 'status'], root).stdout
    assert 'up to date' in st, st
    assert not list(root.rglob('*.failed.ipynb')) and not list(root.rglob('*.running.ipynb'))
    # outputs do not depend on where the repository sits (the same bytes, and DVC hashes, in any clone)
    here = str(src.resolve())  # where the pipeline ran
    leaks = [f for d in ('data', 'reports') for f in (root/d).rglob('*.json')
             if '.checkpoints' not in str(f) and here in f.read_text(errors='replace')]
    assert not leaks, leaks[:5]


@pytest.mark.slow
def test_same_seed_same_split_and_metrics(reproduced, tmp_path):
    "Prepare + classification run again (other folders, new processes) give byte-identical split and metrics."
    root = own_copy(reproduced[0], tmp_path/'repo')
    pipe = [PY, '-m', 'diffaug.pipeline']
    sh(pipe + ['prepare', '--set', 'root=again/dataset', '--set', 'split_path=again/split.json', '--out', 'again/prepare.ipynb', '--quiet'], root)
    a, b = json.loads((root/'data/split.json').read_text()), json.loads((root/'again/split.json').read_text())
    assert a['items'] == b['items'] and a['classes'] == b['classes']
    seed = default_matrix(root)[1][0]
    sh(pipe + ['classification', '--set', 'split=again/split.json', '--set', 'method=mixup', '--set', f'seed={seed}',
               '--set', 'out=again/mixup', '--out', 'again/mixup/classification.ipynb', '--quiet'], root)
    assert (root/'again/mixup/metrics.json').read_bytes() == (root/f'reports/classification/mixup/s{seed}/metrics.json').read_bytes()


def test_nbdev_export_leaves_package_unchanged(tmp_path):
    "On a copy of the working tree, `nbdev-export` reproduces diffaug/ exactly (nobody edited it by hand, nothing unexported)."
    root = copy_working_tree(tmp_path/'repo')
    sh([Path(PY).parent/'nbdev-export'], root)
    diff = sh(['git', 'diff', '--stat', '--', 'diffaug'], root).stdout  # working tree vs the copied files (staged)
    new = sh(['git', 'ls-files', '--others', '--exclude-standard', '--', 'diffaug'], root).stdout
    assert diff.strip() == '' and new.strip() == '', f"nbdev-export changed diffaug/ (run nbdev-export, commit the result):\n{diff}{new}"


def test_setup_files_are_valid(repo_root):
    "Every paper setup in params/ overrides only declared parameters, with values the stages' classes accept."
    from diffaug.params import setup_command, setup_overrides, set_dotted, load_yaml, check_cross_rules
    from diffaug.graph import STAGES, wire
    from diffaug.method_table import OWN_STAGES
    setups = sorted((repo_root/'params').glob('*.yaml'))
    assert len(setups) >= 20
    base = load_yaml((repo_root/'params.yaml').read_text())
    for f in setups:
        flat = setup_overrides(f, repo_root/'params.yaml')
        merged = json.loads(json.dumps(base))
        for k, v in flat.items(): set_dotted(merged, k, v)
        for stage in STAGES:
            if stage not in merged: continue
            runs = merged['runs']  # what dvc.yaml passes with --ref / foreach
            extra = {'annotation': {'methods': runs['annotated_methods']},
                     'synthesis': {'method': (runs['synthetic_methods'] or ['real-guidance'])[0]},
                     'classification': {'methods': runs['methods'], 'seeds': runs['seeds']},
                     'oracle': {'methods': runs['oracle_methods']},
                     'report': {'methods': runs['methods'], 'seeds': runs['seeds']}}.get(stage, {})
            cls = STAGES[stage].config_class()
            for m in (merged['runs']['synthetic_methods'] if stage == 'synthesis' else [None]):  # one run per synthetic method
                p = wire(merged, stage, {**merged[stage], **extra, **({'method': m} if m else {})})  # as the runner wires it
                cls.from_params(p, f"{f.name} [{stage}]").check(files=False)
            check_cross_rules(merged, stage, f.name)
        runs = merged['runs']
        assert set(runs['synthetic_methods']) <= set(runs['methods']), f.name
        assert set(runs['annotated_methods']) == set(runs['synthetic_methods']) | (set(OWN_STAGES) & set(runs['methods'])), f.name  # diff-ii and any method with stages of its own
        clf = wire(merged, 'classification')
        assert all(m in clf['synthetic'] for m in runs['methods'] if m in runs['annotated_methods']), f.name
        assert set(runs['oracle_methods']) <= set(runs['annotated_methods']), f.name
        cls = STAGES['classification'].config_class()
        for m in runs['methods']:
            cfg = cls.from_params({**clf, 'method': m, 'out': 'reports/classification/x'}).check(files=False)  # a clean clone has no data/annotated/ yet
            for p in cfg.synthetic_sets():  # each synthetic set is the annotation stage's output for a method this setup runs
                assert p.startswith('data/annotated/') and p.split('/')[-1] in runs['annotated_methods'], (f.name, m, p)
        assert clf['split'] == merged['prepare']['split_path'], f.name
        cmd = setup_command(f, repo_root/'params.yaml')
        assert cmd[:5] == ['dvc', 'exp', 'run', '-n', f.stem]
        assert 'expected' in f.read_text().lower(), f"{f.name}: write the paper's expected numbers beside the setup"


def test_every_setup_gives_dvc_a_path_for_each_dependency(repo_root):
    """DVC cannot depend on a null path: for params.yaml and every setup in params/ (applied as `setup` applies it), each
    `${section.key}` of a dependency or output in dvc.yaml resolves to a path (an optional input left null, e.g. the
    no-concepts ablation's `concepts`, must not be a DVC dependency)."""
    import re
    from diffaug.params import setup_overrides, set_dotted, load_yaml
    stages = _dvc_yaml(repo_root)
    refs = sorted({r for st in stages.values() for k in ('deps', 'outs') for d in st.get('do', st).get(k, [])
                   for r in re.findall(r'\$\{([\w.]+)\}', d if isinstance(d, str) else next(iter(d)))})
    refs = [r for r in refs if '.' in r]  # (not foreach's ${item})
    assert refs, 'dvc.yaml names no parameter in its dependencies'
    base = load_yaml((repo_root/'params.yaml').read_text())
    for f in [None, *sorted((repo_root/'params').glob('*.yaml'))]:
        merged = json.loads(json.dumps(base))
        if f is not None:
            for k, v in setup_overrides(f, repo_root/'params.yaml').items(): set_dotted(merged, k, v)
        for r in refs:
            v = merged
            for part in r.split('.'): v = v.get(part) if isinstance(v, dict) else None
            assert isinstance(v, str) and v, f"{f.name if f else 'params.yaml'}: dvc.yaml depends on ${{{r}}}, which is {v!r}"


def test_setup_files_come_from_the_generator(repo_root, tmp_path):
    "params/*.yaml are exactly what scripts/gen_setups.py writes (edit the script, not the files)."
    subprocess.run([sys.executable, str(repo_root/'scripts'/'gen_setups.py'), str(tmp_path)], check=True, capture_output=True)
    made = {p.name: p.read_text() for p in tmp_path.glob('*.yaml')}
    have = {p.name: p.read_text() for p in (repo_root/'params').glob('*.yaml')}
    assert sorted(made) == sorted(have)
    assert [n for n in made if made[n] != have[n]] == []



def test_scratch_setup_changes_only_the_classifier(repo_root):
    """params/miniworld-scratch.yaml runs every stage but classification with the default's effective parameters (so it
    makes the default's synthetic sets and its table differs by the classifier alone); its classifier is trained from
    scratch."""
    sys.path.insert(0, str(repo_root))
    from diffaug.experiments import effective, overrides
    base = effective({}, repo_root/'params.yaml')
    mine = effective(overrides(repo_root/'params'/'miniworld-scratch.yaml', repo_root/'params.yaml'), repo_root/'params.yaml')
    assert sorted(mine) == sorted(base)
    assert [s for s in base if s != 'classification' and mine[s] != base[s]] == []
    assert mine['classification']['pretrained'] is False and base['classification']['pretrained']

def _setup_cli(args, cwd, env=None):
    "`python -m diffaug.pipeline setup ARGS` in `cwd`: the finished process (this checkout's package)."
    return subprocess.run([PY, '-m', 'diffaug.pipeline', 'setup', *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**run_env(), 'PYTHONPATH': str(ROOT), **(env or {})})


def test_setup_file_takes_set_and_name(repo_root):
    "`setup params/<file>.yaml --set SECTION.KEY=VALUE --name NAME --print`: the override over the setup's value, the name in the command."
    r = _setup_cli(['params/cub-5shot-resnet50.yaml', '--set', 'concepts.steps=2', '--set', 'runs.seeds=[0]', '--name', 'cub-quick', '--print'], repo_root)
    assert r.returncode == 0 and r.stderr == '', r.stderr
    cmd = r.stdout.split()
    assert cmd[:5] == ['dvc', 'exp', 'run', '-n', 'cub-quick']
    assert "'++concepts.steps=2'" not in cmd and '++concepts.steps=2' in cmd and '++concepts.steps=35000' not in cmd  # not quoted, and over the setup's
    assert "'++runs.seeds=[0]'" in cmd and '++runs.seeds=[0, 1, 2]' not in r.stdout
    assert _setup_cli(['params/cub-5shot-resnet50.yaml', '--print'], repo_root).stdout.split()[:5] == ['dvc', 'exp', 'run', '-n', 'cub-5shot-resnet50']
    # an unknown key or section: one line, the nearest valid name, nothing printed or run
    for bad, near in (('concepts.step=2', "did you mean 'steps'?"), ('concept.steps=2', "did you mean 'concepts'?"), ('runs.seed=[0]', "did you mean 'seeds'?")):
        r = _setup_cli(['params/cub-5shot-resnet50.yaml', '--set', bad, '--print'], repo_root)
        assert r.returncode == 2 and r.stdout == '' and len(r.stderr.splitlines()) == 1, (bad, r.stdout, r.stderr)
        assert r.stderr.startswith('error: ') and near in r.stderr, (bad, r.stderr)
    r = _setup_cli(['params/cub-5shot-resnet50.yaml', '--ref', 'x=y.z', '--print'], repo_root)  # a stage's flag: refused, not ignored
    assert r.returncode == 2 and 'unrecognized arguments: --ref' in r.stderr


def test_setup_second_run_says_how_to_replace_or_keep(tmp_path):
    """A real (tiny) DVC experiment run by `setup`, then the same name again: refused before DVC runs, with `dvc exp remove`
    and `--name OTHER`; the name check agrees with `dvc exp list`; `--quiet` reaches the stage commands."""
    repo = tmp_path/'repo'; (repo/'params').mkdir(parents=True)
    (repo/'params.yaml').write_text('runs:\n  seeds: [0]\n')
    (repo/'params'/'tiny.yaml').write_text('runs:\n  seeds: [1]\n')
    (repo/'dvc.yaml').write_text("stages:\n  hello:\n    cmd: python -c \"import os; print('stage', os.environ.get('DIFFAUG_STAGE_QUIET') == '1' and 'quiet' or 'loud')\"\n"
                                 "    params: [runs.seeds]\n")
    genv = {'GIT_AUTHOR_NAME': 't', 'GIT_AUTHOR_EMAIL': 't@t', 'GIT_COMMITTER_NAME': 't', 'GIT_COMMITTER_EMAIL': 't@t'}
    for c in (['git', 'init', '-q'], [Path(PY).parent/'dvc', 'init', '-q'], ['git', 'add', '-A'], ['git', 'commit', '-qm', 'x']):
        sh(c, repo, env=genv)
    r = _setup_cli(['params/tiny.yaml'], repo, genv)
    assert r.returncode == 0 and "'++runs.seeds=[1]'" in r.stdout and 'stage loud' in r.stdout, r.stdout + r.stderr
    assert sh([Path(PY).parent/'dvc', 'exp', 'list', '--names-only'], repo).stdout.split() == ['tiny']
    r = _setup_cli(['params/tiny.yaml'], repo, genv)  # again: DVC would fail deep in its output
    assert r.returncode == 2 and r.stdout == '' and len(r.stderr.splitlines()) == 1, r.stdout + r.stderr
    assert r.stderr.startswith("error: experiment 'tiny' already exists") and '`dvc exp remove tiny`' in r.stderr and '--name OTHER' in r.stderr
    r = _setup_cli(['params/tiny.yaml', '--name', 'tiny-2', '--set', 'runs.seeds=[2]', '--quiet'], repo, genv)  # kept: another name; --quiet reaches the stage
    assert r.returncode == 0 and "'++runs.seeds=[2]'" in r.stdout and 'stage quiet' in r.stdout, r.stdout + r.stderr
    assert sorted(sh([Path(PY).parent/'dvc', 'exp', 'list', '--names-only'], repo).stdout.split()) == ['tiny', 'tiny-2']
    r = _setup_cli(['params/tiny.yaml', '--print'], repo, genv)  # --print runs nothing: no refusal
    assert r.returncode == 0 and r.stdout.startswith('dvc exp run -n tiny ')


def test_every_stage_notebook_has_one_parameters_cell(repo_root, caplog):
    "papermill's own parser reads each stage's parameters cell: exactly `params`, without warnings."
    import logging, nbformat
    from papermill.translators import PythonTranslator
    from diffaug.params import STAGES
    for st in {s.notebook for s in STAGES.values()}:
        cells = [c for c in nbformat.read(str(repo_root/'nbs'/st), as_version=4).cells if 'parameters' in c.metadata.get('tags', [])]
        assert len(cells) == 1, st
        with caplog.at_level(logging.WARNING, logger='papermill'):
            caplog.clear()
            names = [p.name for p in PythonTranslator.inspect(cells[0])]
        assert not caplog.records, f"{st}: {[r.getMessage() for r in caplog.records]}"
        assert names == ['params'], (st, names)


def _dvc_yaml(root):
    return yaml.safe_load((root/'dvc.yaml').read_text())['stages']


def test_one_name_per_stage_and_deps_cover_the_code(repo_root):
    """Each dvc.yaml stage starts through the runner under its own name (= params.yaml section = runner stage), and
    depends on its notebook and on every diffaug module its notebook can run: the whole package (function-level
    imports included), checked against the import graph of the notebook's module."""
    import ast, nbformat
    from diffaug.params import STAGES
    params = yaml.safe_load((repo_root/'params.yaml').read_text())
    def file_of(m): return repo_root/'diffaug'/(m.replace('.', '/') + '.py')  # 'miniworld.world' -> diffaug/miniworld/world.py
    def modules_of(mod):  # diffaug modules imported anywhere in a module (top level or inside functions), transitively
        seen, todo = set(), [mod]
        while todo:
            m = todo.pop()
            if m in seen: continue
            seen.add(m); pkg = m.split('.')[:-1]
            for node in ast.walk(ast.parse(file_of(m).read_text())):
                if isinstance(node, ast.Import): names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):  # `from .x import y` / `from ..x import y` resolved against the module's package
                    base = '.'.join(['diffaug', *pkg[:len(pkg) - node.level + 1], *([node.module] if node.module else [])]) if node.level else node.module or ''
                    names = [base] + [f'{base}.{a.name}' for a in node.names]
                else: continue
                todo += [n.removeprefix('diffaug.') for n in names if n.startswith('diffaug.') and file_of(n.removeprefix('diffaug.')).exists()]
        return seen
    for name, st in _dvc_yaml(repo_root).items():
        body = st.get('do', st)
        assert body['cmd'].split()[:4] == ['python', '-m', 'diffaug.pipeline', name], (name, body['cmd'])
        assert name in STAGES and name in params, name
        deps = body['deps']
        nb = f"nbs/{STAGES[name].notebook}"
        assert nb in deps, (name, nb)
        src = '\n'.join(c.source for c in nbformat.read(str(repo_root/nb), as_version=4).cells if c.cell_type == 'code')
        mod = __import__('re').search(r'^#\|\s*default_exp\s+(\S+)', src, __import__('re').M).group(1)
        need = {file_of(m).relative_to(repo_root).as_posix() for m in modules_of(mod)}
        covered = {d for d in need if d in deps or 'diffaug' in deps}
        assert covered == need, (name, sorted(need - covered))


def test_params_yaml_holds_only_overrides_and_wiring(repo_root):
    "Every key of a stage's section is a declared parameter; a value equal to its default is there only when dvc.yaml reads it."
    import re
    from diffaug.params import STAGES
    params = yaml.safe_load((repo_root/'params.yaml').read_text())
    used = set(re.findall(r'\$\{([\w.]+)\}', (repo_root/'dvc.yaml').read_text()))
    for sec, vals in params.items():
        if sec == 'runs': continue
        assert sec in STAGES, f"params.yaml section {sec!r} is not a stage"
        cls = STAGES[sec].config_class()
        cfg = cls.from_params(vals, f"params.yaml [{sec}]")
        docs = cls.fields_doc()
        same = sorted(k for k in vals if vals[k] == docs[k][1] and f"{sec}.{k}" not in used)
        assert not same, f"params.yaml [{sec}]: {same} repeat the declared defaults (delete them)"


def test_params_yaml_runs_come_from_the_registry(repo_root):
    """params.yaml's method lists (data DVC reads) are the methods registry's (`diffaug.method_table.run_lists`), and every
    method that makes a set has its set wired into the classification stage (by the stage graph, from
    runs.annotated_methods): a new method is one registry entry plus what this test names."""
    from diffaug.method_table import run_lists
    from diffaug.params import load_yaml
    from diffaug.graph import wire
    p = load_yaml((repo_root/'params.yaml').read_text())
    want = run_lists()
    assert {k: p['runs'][k] for k in want} == want, "params.yaml [runs]: write run_lists() of diffaug.method_table"
    assert set(wire(p, 'classification')['synthetic']) == set(want['annotated_methods'])


def test_bad_parameters_fail_before_any_kernel(repo_root, tmp_path, monkeypatch, capsys):
    """A bad value or key fails in the runner with one line naming it (exit 2, no traceback, no executed notebook).
    The first two cases run as a user would (a new process); the others call the same entry point in this process."""
    cases = [('synthesis', ['method=bogus'], 'method'), ('inversion', ['stepz=3'], "did you mean 'steps'"), ('synthesis', ['steps=-3'], 'steps'),
             ('interpolation', ['suffix_fraction=1.5'], 'suffix_fraction'), ('concepts', ['model=/no/such/model'], 'model'),
             ('classification', ['p=1.5'], 'p'),
             ('prepare', ['shots=0'], 'shots'), ('tiny_model', ['resolution=-1'], 'resolution')]
    empty = tmp_path/'empty-model'; empty.mkdir()
    cases.append(('inversion', [f'model={empty}'], 'unet'))
    from diffaug.splits import few_shot_split, save_split
    from diffaug.toy import make_toy_dataset  # a real split, so the files the checks read exist
    split = save_split(few_shot_split(make_toy_dataset(tmp_path/'toy', n_classes=2, n_per_class=3, size=16), k=2, seed=0, test='none'), tmp_path/'split.json')
    from diffaug.pipeline import main
    monkeypatch.chdir(repo_root); monkeypatch.setenv('DIFFAUG_QUIET', '1')
    for i, (stage, sets, expect) in enumerate(cases):
        if stage in ('concepts', 'inversion', 'synthesis', 'classification'): sets = sets + [f'split={split}']
        out = tmp_path/f'{stage}-{i}.ipynb'
        args = [stage, *sum([['--set', x] for x in sets], []), '--out', str(out)]
        if i < 2:
            r = subprocess.run([PY, '-m', 'diffaug.pipeline', *args], cwd=repo_root, env=run_env(), capture_output=True, text=True, timeout=300)
            code, err = r.returncode, r.stderr
        else:
            capsys.readouterr(); code = main(args); err = capsys.readouterr().err
        assert code == 2, (stage, sets, code, err[-2000:])
        lines = [l for l in err.splitlines() if l.strip()]
        assert len(lines) == 1 and lines[0].startswith('error: ') and expect in lines[0], (stage, sets, err[-2000:])
        assert not out.exists() and not out.with_name(out.stem + '.failed.ipynb').exists()


def test_stage_help_lists_the_declared_parameters(repo_root):
    r = subprocess.run([PY, '-m', 'diffaug.pipeline', 'interpolation', '--help'], cwd=repo_root, env=run_env(), capture_output=True, text=True)
    assert r.returncode == 0 and 'suffix_fraction' in r.stdout and 'InterpolationConfig' in r.stdout, r.stdout


def _git_tracked(root):
    out = subprocess.run(['git', 'ls-files'], cwd=root, capture_output=True, text=True, check=True).stdout.split('\n')
    return {p for p in out if p}


def test_committed_lock_describes_the_committed_code(repo_root):
    """`dvc status` in this tree (CI: a fresh clone): no git-tracked dependency, params section or command differs
    from dvc.lock. Outputs missing in a clone are fine (they are fetched by `dvc pull` or rebuilt by `dvc repro`)."""
    r = subprocess.run([str(Path(PY).parent/'dvc'), 'status', '--json'], cwd=repo_root, env=run_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    tracked = _git_tracked(repo_root)
    lock = yaml.safe_load((repo_root/'dvc.lock').read_text())['stages']
    outs = {o['path'].rstrip('/') for st in lock.values() for o in st.get('outs', [])}
    # a dependency that is, holds or sits in another stage's output (e.g. reports/classification) is not source: a clone lacks it
    is_out = lambda p: any(p == o or p.startswith(o + '/') or o.startswith(p.rstrip('/') + '/') for o in outs)
    is_tracked = lambda p: not is_out(p) and (p in tracked or any(f.startswith(p.rstrip('/') + '/') for f in tracked))
    bad = []
    for stage, changes in json.loads(r.stdout or '{}').items():
        for ch in changes:
            if isinstance(ch, str):
                if ch != 'always changed': bad.append((stage, ch))
                continue
            for p, what in (ch.get('changed deps') or {}).items():
                if p.endswith('.yaml') and isinstance(what, dict): bad.append((stage, p, what))  # params
                elif is_tracked(p) and what != 'deleted': bad.append((stage, p, what))
    assert not bad, "dvc.lock is not the lock of this code: run `dvc repro` and commit dvc.lock and reports/:\n" + '\n'.join(map(str, bad[:20]))


@pytest.mark.slow
def test_repro_matches_the_committed_lock(reproduced, repo_root):
    """Exact reproduction, tested: every stage the end-to-end run shares with the committed lock (same deps, same
    params) produced outputs with the committed hashes."""
    root, _ = reproduced
    committed = yaml.safe_load((repo_root/'dvc.lock').read_text())['stages']
    new = yaml.safe_load((root/'dvc.lock').read_text())['stages']
    key = lambda st: (st.get('cmd'), st.get('deps'), st.get('params'))
    shared = [s for s in new if s in committed and key(new[s]) == key(committed[s])]
    musts = ('tiny_model', 'prepare', 'suffixes') + (('concepts', 'concepts_ti', 'inversion', 'interpolation', 'classification', 'report')
                                                     if os.environ.get('DIFFAUG_FULL_REPRO') == '1' else ())
    for must in musts:
        assert must in shared, f"stage {must} ran with other deps or params than the committed lock: {must in committed}"
    diff = [(s, o['path']) for s in shared for o, c in zip(new[s].get('outs', []), committed[s].get('outs', []))
            if (o.get('md5'), o.get('path')) != (c.get('md5'), c.get('path'))]
    assert not diff, f"same inputs, other bytes: {diff}"


@pytest.mark.slow
def test_push_and_pull_through_a_remote(reproduced, tmp_path):
    "`dvc push` to a local-folder remote, `dvc pull` in a fresh clone: status clean, `dvc repro` runs nothing."
    root = own_copy(reproduced[0], tmp_path/'repo')
    dvc = str(Path(PY).parent/'dvc')
    env = {**run_env(), 'GIT_AUTHOR_NAME': 't', 'GIT_AUTHOR_EMAIL': 't@t', 'GIT_COMMITTER_NAME': 't', 'GIT_COMMITTER_EMAIL': 't@t'}
    g = lambda *a, cwd=root: subprocess.run(['git', *a], cwd=cwd, env=env, check=True, capture_output=True, text=True)
    g('add', '-A'); g('commit', '-qm', 'reproduced')
    remote = tmp_path/'remote'
    sh([dvc, 'remote', 'add', '--local', '-d', 'shared', str(remote)], root)
    sh([dvc, 'push'], root)
    clone = tmp_path/'clone'
    g('clone', '-q', str(root), str(clone), cwd=tmp_path)
    sh([dvc, 'remote', 'add', '--local', '-d', 'shared', str(remote)], clone)
    sh([dvc, 'pull'], clone)
    st = sh([dvc, 'status'], clone).stdout
    assert 'up to date' in st, st
    r = sh([dvc, 'repro'], clone)
    assert 'Running stage' not in r.stdout, r.stdout[-3000:]


def _run_until(cmd, cwd, ready, timeout=900):
    "Start `cmd` in its own process group; SIGKILL the group as soon as `ready()` holds. True when it was killed while running."
    import signal
    p = subprocess.Popen(cmd, cwd=cwd, env=run_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    t0 = time.time()
    while p.poll() is None and not ready() and time.time() - t0 < timeout: time.sleep(0.05)
    running = p.poll() is None
    try: os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError: pass
    p.wait()
    return running


def test_committed_lock_has_only_current_stages(repo_root):
    "dvc.lock holds an entry for each stage of dvc.yaml and none for stages it no longer has (scripts/prune_lock.py)."
    import importlib.util
    spec = importlib.util.spec_from_file_location('prune_lock', repo_root/'scripts'/'prune_lock.py')
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    assert m.stale(repo_root) == [], "stale dvc.lock entries: python scripts/prune_lock.py"
    lock = set(yaml.safe_load((repo_root/'dvc.lock').read_text())['stages'])
    assert m.current_stages(repo_root) <= lock, sorted(m.current_stages(repo_root) - lock)


def _lock_outs(root, stage):
    return [(o['path'], o['md5']) for o in yaml.safe_load((root/'dvc.lock').read_text())['stages'][stage]['outs']]


@pytest.mark.slow
@pytest.mark.xdist_group('repro-kill')  # beside the other DVC tests' group: the two share the reproduced tree, not a worker
@pytest.mark.parametrize('stage,scratch,pattern,need,keep', [
    ('synthesis@diff-mix', 'data/synthetic/diff-mix.partial', '**/*.png', 3, None),
    ('interpolation', 'data/synthetic/diff-ii.partial', '**/*.png', 3, None),
    ('concepts', 'data/concepts.checkpoints', 'step-*/state.json', 1, 'data/concepts.checkpoints'),
])
def test_killed_repro_resumes_and_ends_byte_identical(reproduced, tmp_path, stage, scratch, pattern, need, keep):
    """`dvc repro` killed mid-stage keeps its finished work (DVC deletes the output, not the scratch folder beside it);
    the next `dvc repro` resumes from it and ends with the bytes of the uninterrupted run (the reproduced tree's lock)."""
    root = own_copy(reproduced[0], tmp_path/'repo')
    if keep: shutil.rmtree(root/keep)  # the finished run's checkpoints: without them the forced run starts from step 0
    dvc = str(Path(PY).parent/'dvc')
    uninterrupted = _lock_outs(root, stage)
    done = lambda: len(list((root/scratch).glob(pattern))) if (root/scratch).is_dir() else 0
    assert _run_until([dvc, 'repro', '-f', '--no-run-cache', '-s', stage], root, lambda: done() >= need), f"{stage} finished before it could be killed"
    kept = done()
    assert kept >= need, f"the killed run left {kept} finished items in {scratch}"
    assert not any((root/o).exists() for o, _ in uninterrupted), f"{stage}: the killed run published its output"
    r = sh([dvc, 'repro', '-f', '--no-run-cache', '-s', stage], root)  # resumes (forced: else DVC checks the locked outputs out of its cache)
    assert f"Running stage '{stage}'" in r.stdout, r.stdout[-2000:]
    assert not (root/scratch).exists() or stage == 'concepts'  # published (concepts keep their checkpoints for later resumes)
    assert _lock_outs(root, stage) == uninterrupted


@pytest.mark.slow
def test_forced_rerun_writes_the_same_bytes(reproduced, tmp_path):
    "Rerunning a stage with the same inputs (`dvc repro -f -s`) writes byte-identical outputs: the same hashes in dvc.lock."
    root = own_copy(reproduced[0], tmp_path/'repo')
    dvc = str(Path(PY).parent/'dvc')
    # (concepts, synthesis and interpolation: see the kill test, which compares a resumed run with the uninterrupted one; classification:
    # test_same_seed_same_split_and_metrics; tiny_model, prepare and suffixes: test_repro_matches_the_committed_lock)
    stages = ('inversion', 'annotation', 'oracle', 'report')  # tiny_model: test_repro_matches_the_committed_lock (another run's bytes)
    before = {stage: _lock_outs(root, stage) for stage in stages}
    r = sh([dvc, 'repro', '-f', '--no-run-cache', '-s', *stages], root)  # one DVC process: each stage alone, forced
    for stage in stages:
        assert f"Running stage '{stage}" in r.stdout and _lock_outs(root, stage) == before[stage], stage


def test_stage_modules_import_no_heavy_library(repo_root):
    """The runner imports a stage's module to check its parameters before any kernel starts: importing it must not
    load diffusers, transformers, timm, lpips or accelerate (seconds each), only what the module's top needs (torch).
    The mini world's modules too: its model's parts (diffaug.miniworld.sd) import diffusers inside their functions."""
    code = ("import sys, importlib; from diffaug.pipeline import STAGES\n"
            "for k, s in STAGES.items():\n"
            "    s.config_class()\n"
            "print(sorted(m for m in ('diffusers', 'transformers', 'timm', 'lpips', 'accelerate') if m in sys.modules))")
    r = subprocess.run([PY, '-c', code], cwd=repo_root, env=run_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == '[]', r.stdout


def _resolved_dvc_stages(repo_root) -> dict:
    """{stage name (and method, for a foreach stage): {'deps', 'outs', 'params'}} of dvc.yaml, `${...}` resolved from
    params.yaml as DVC resolves them."""
    import re
    params = yaml.safe_load((repo_root/'params.yaml').read_text())
    def res(s, item=None):
        s = s.replace('${item}', item) if item else s
        def val(m):
            v = params
            for part in m.group(1).split('.'): v = v[part]
            return str(v)
        return re.sub(r'\$\{([\w.]+)\}', val, s)
    key = lambda d: d if isinstance(d, str) else next(iter(d))
    out = {}
    for name, st in _dvc_yaml(repo_root).items():
        items = [None] if 'foreach' in st else [None]
        if 'foreach' in st: items = params['runs'][st['foreach'].strip('${}').split('.')[1]]
        body = st.get('do', st)
        for it in items:
            outs = [res(key(d), it) for k in ('outs', 'metrics', 'plots') for d in body.get(k, [])]
            out[(name, it)] = {'deps': {res(key(d), it) for d in body['deps']}, 'outs': outs, 'params': set(body.get('params', []))}
    return out


def test_dvc_yaml_follows_the_stage_graph(repo_root):
    """dvc.yaml is held to the one declaration of the stage graph (`diffaug.graph.STAGES`): each stage depends on every
    path its inputs and reads name, writes only inside the paths its `outs` name (and each of them), and tracks the
    parameters of every value it takes from another stage that is not a path (the diffusion model)."""
    from diffaug.graph import STAGES, stage_paths, parse_ref
    params = yaml.safe_load((repo_root/'params.yaml').read_text())
    dvc = _resolved_dvc_stages(repo_root)
    assert {n for n, _ in dvc} == set(STAGES), sorted({n for n, _ in dvc} ^ set(STAGES))
    for (name, method), got in dvc.items():
        want = stage_paths(params, name, method)
        under = lambda p, folders: any(p == d or p.startswith(d.rstrip('/') + '/') for d in folders)
        assert all(under(d, got['deps']) for d in want['deps']), (name, method, [d for d in want['deps'] if not under(d, got['deps'])])
        inside = lambda p: any(under(p, [o]) or under(o, [p]) for o in want['outs'])  # (a file's folder: its stage's records too)
        assert all(inside(o) for o in got['outs']), (name, method, got['outs'], want['outs'])
        assert all(any(under(g, [o]) or under(o, [g]) for g in got['outs']) for o in want['outs']), (name, want['outs'])
        for key in got['params']:  # DVC refuses a parameter params.yaml does not write (e.g. one left at its class default)
            v = params
            for part in key.split('.'): v = v.get(part) if isinstance(v, dict) and part in v else KeyError
            assert v is not KeyError, f"dvc.yaml [{name}]: params lists {key!r}, which params.yaml does not write"
        for k, ref in STAGES[name].inputs.items():
            if k in STAGES[name].maybe_paths:
                s, key, _ = parse_ref(ref)
                assert {s, f'{s}.{key}'} & got['params'], f"dvc.yaml [{name}]: takes {k} from {ref}; list {ref} under params"


def test_params_yaml_writes_each_path_once(repo_root):
    """Each path is written once in params.yaml, in the section of the stage that writes it: no section sets an input
    the stage graph wires (nbs/90_graph.ipynb), and every `${stage.key}` value names a key."""
    from diffaug.graph import STAGES, resolve_value
    from diffaug.params import flatten
    params = yaml.safe_load((repo_root/'params.yaml').read_text())
    paths = [v for sec in params.values() if isinstance(sec, dict) for v in flatten(sec).values()
             if isinstance(v, str) and '/' in v and not v.startswith('${')]
    assert paths and not sorted({p for p in paths if paths.count(p) > 1}), sorted({p for p in paths if paths.count(p) > 1})
    for sec, body in params.items():
        if sec not in STAGES: continue
        assert not set(body) & set(STAGES[sec].inputs), f"params.yaml [{sec}]: {sorted(set(body) & set(STAGES[sec].inputs))} are wired"
        for k, v in body.items():
            got = resolve_value(params, v)
            assert not (isinstance(got, str) and got.startswith('${')), (sec, k, v)
            if isinstance(v, str) and v.startswith('${'): assert got, f"params.yaml [{sec}] {k}: {v} names nothing"
