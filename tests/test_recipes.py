"""DEVELOPING.md's recipes, followed literally (issue 26, item 7): each test copies the working tree into a temporary
folder, makes the recipe's edits there (in the notebooks, then `nbdev-export`, as a developer would; params.yaml,
dvc.yaml and the tests' own files as text) and checks what the recipe promises, by running the copy's package in
subprocesses (`PYTHONPATH=<copy>`). Nothing here touches the repository itself. Each test takes 20-90 s on the
shared 2-core machine (most of it Python start-ups that import the copied package, and the copy's own tests): all are
marked slow."""
import json, os, shutil, subprocess, sys, textwrap
from pathlib import Path

import pytest

from conftest import copy_working_tree, run_env

PY = sys.executable
BIN = Path(PY).parent
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- helpers: a copy, its notebooks, its commands
def edit_cell(nb_path: Path, needle: str, old: str, new: str):
    "In the one cell of `nb_path` holding `needle`, replace the one occurrence of `old` by `new` (the notebook JSON, as a script would)."
    nb = json.loads(nb_path.read_text(encoding='utf-8'))
    cells = [c for c in nb['cells'] if needle in ''.join(c['source'])]
    assert len(cells) == 1, (nb_path.name, needle, len(cells))
    src = ''.join(cells[0]['source'])
    assert src.count(old) == 1, (nb_path.name, old, src.count(old))
    cells[0]['source'] = src.replace(old, new).splitlines(keepends=True)
    nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')


def edit_text(path: Path, old: str, new: str):
    "Replace the one occurrence of `old` in a text file."
    s = path.read_text(encoding='utf-8')
    assert s.count(old) == 1, (path.name, old, s.count(old))
    path.write_text(s.replace(old, new), encoding='utf-8')


def run(args, cwd: Path, ok: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    "A command in the copy, with the copy's diffaug first on the path (as HELPER_RULES and the runner do)."
    env = {**run_env(), 'PYTHONPATH': str(cwd), 'OMP_NUM_THREADS': '1', 'DIFFAUG_QUIET': '1'}
    r = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if ok: assert r.returncode == 0, f"{args}: exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-4000:]}"
    return r


def python(code: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    return run([PY, '-c', textwrap.dedent(code)], cwd, **kw)


def export(repo: Path) -> list:
    "`nbdev-export` in the copy; the package files it changed or added (git: the copy's files are staged)."
    run([BIN/'nbdev-export'], repo)
    out = run(['git', 'status', '--porcelain', '--', 'diffaug'], repo).stdout
    return sorted(l[3:] for l in out.splitlines() if l[1] != ' ')  # changed since staged ('AM'), or new ('??')


def runner_error(repo: Path, *args) -> str:
    "`python -m diffaug.pipeline ...` refused before any kernel: exit 2 and one `error:` line, returned."
    r = run([PY, '-m', 'diffaug.pipeline', *args], repo, ok=False)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith('error: '), (args, r.returncode, r.stderr[-3000:])
    return lines[0]


def repo_tests(repo: Path, *args) -> subprocess.CompletedProcess:
    "Some of the copy's own tests (the consistency checks a recipe must leave passing), run in the copy."
    return run([PY, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-p', 'no:randomly', *args], repo, ok=False)


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    "A toy split (3 classes, 2 shots) and the tiny SD model, made once for the synthesis runs."
    from diffaug.data import few_shot_split, save_split
    from diffaug.models import make_tiny_sd
    from diffaug.toy import make_toy_dataset
    d = tmp_path_factory.mktemp('recipes-toy')
    ds = make_toy_dataset(d/'toy', n_classes=3, n_per_class=3, size=32)
    split = save_split(few_shot_split(ds, 2, seed=0, test='none'), d/'split.json')
    return dict(split=Path(split), model=make_tiny_sd(d/'tiny-sd'), n_train=6)


def synthesize_in(repo: Path, toy: dict, out: Path, method: str, **kw) -> tuple[list, dict]:
    "The copy's `run_synthesis` on the tiny model; the set's metadata rows and info.json."
    args = dict(method=method, split=str(toy['split']), out=str(out), model=str(toy['model']), expansion=2, steps=2, batch_size=4,
                device='cpu', precision='fp32', **kw)
    python(f"import torch; torch.set_num_threads(1)\nfrom diffaug.methods import run_synthesis\nrun_synthesis(**{args!r})", repo)
    from diffaug.synthetic import read_metadata_csv
    return read_metadata_csv(out/'metadata.csv'), json.loads((out/'info.json').read_text())


# ---------------------------------------------------------------- A new parameter
@pytest.mark.slow  # subprocesses that import the copied package, and some of its own tests
def test_recipe_new_parameter(tmp_path, toy):
    """"A new parameter": one field (type, default, docment) in the stage's config class, its check in `check`, the code
    under `run_<stage>` reading it: three edits of one notebook (here `max_images` of the synthesis stage, in
    nbs/40_methods.ipynb), then `nbdev-export`. `--help`, the runner's checks, `setup_overrides` and info.json follow."""
    repo = copy_working_tree(tmp_path/'repo')
    nb = repo/'nbs'/'40_methods.ipynb'
    seed_line = "    seed:int=0 # the synthesis seed (one set per method; classification seeds vary separately)\n"
    edit_cell(nb, 'class SynthesisConfig(StageConfig)', seed_line,
              seed_line + "    max_images:int|None=None # at most this many images of the plan, >= 1 (None: all): a quick look at a method\n")
    edit_cell(nb, 'class SynthesisConfig(StageConfig)', "self.need_int('seed', 0);", "self.need_int('seed', 0); self.need_int('max_images', 1, none=True);")
    plan = "    items = plan_items(spec, sp, cfg.seed, cfg.expansion, mode if spec.family == 'img2img' else None, s, ss or None, cfg.gen_classes)\n"
    edit_cell(nb, 'def synthesize(cfg:SynthesisConfig', plan, plan + "    if cfg.max_images is not None: items = items[:cfg.max_images]\n")
    assert export(repo) == ['diffaug/methods.py']  # one notebook, one module: nothing else declares the parameter

    # --help reads the class
    r = run([PY, '-m', 'diffaug.pipeline', 'synthesis', '--help'], repo)
    assert "  max_images: int | None = None  # at most this many images of the plan" in r.stdout, r.stdout
    # the runner: an unknown key names the nearest, a bad value is refused (both before any kernel)
    assert "did you mean 'max_images'" in runner_error(repo, 'synthesis', '--set', 'max_image=3')
    assert 'max_images=0' in runner_error(repo, 'synthesis', '--set', 'max_images=0')
    # a paper setup may set it (setup_overrides reads the class), and a misspelt one is refused naming it
    (tmp_path/'check.yaml').write_text('synthesis:\n  max_images: 4\n')
    r = run([PY, '-m', 'diffaug.pipeline', 'setup', tmp_path/'check.yaml', '--print'], repo)
    assert '++synthesis.max_images=4' in r.stdout, r.stdout
    (tmp_path/'typo.yaml').write_text('synthesis:\n  max_imgs: 4\n')
    assert "did you mean 'max_images'" in runner_error(repo, 'setup', tmp_path/'typo.yaml', '--print')
    # the code reads it, and the set records it in info.json by itself (SynthesisConfig.record)
    rows, info = synthesize_in(repo, toy, tmp_path/'set', 'real-guidance', max_images=3)
    assert len(rows) == 3 and info['params']['max_images'] == 3, (len(rows), info['params'])
    # the chapter prints the class's help in a committed output: that output is stale now (`scripts/docs.py outputs 40_methods`)
    committed = json.dumps(json.loads((ROOT/'nbs'/'40_methods.ipynb').read_text())['cells'])
    assert "clip_min_prob: float = 0.0" in committed and 'max_images' not in committed
    # params.yaml and the setups need nothing: the repository's checks still hold without an edit there
    r = repo_tests(repo, 'tests/test_pipeline.py', '-k', 'holds_only_overrides or stage_help_lists')
    assert r.returncode == 0 and '2 passed' in r.stdout, r.stdout[-3000:]


# ---------------------------------------------------------------- A new compared method
REGISTRY_TEST = 'tests/test_pipeline.py::test_params_yaml_runs_come_from_the_registry'


def write_runs(repo: Path, new: str):
    "params.yaml's `runs` lists written out from the copy's `run_lists()`, and `classification.synthetic` given `new`'s set."
    import yaml
    got = json.loads(python("import json; from diffaug.method_table import run_lists; print(json.dumps(run_lists()))", repo).stdout)
    p = repo/'params.yaml'; text = p.read_text(encoding='utf-8')
    old = yaml.safe_load(text)['runs']
    for k, v in got.items():
        edit_text(p, f"  {k}: [{', '.join(old[k])}]", f"  {k}: [{', '.join(v)}]")
    edit_text(p, "    diff-ii: [data/annotated/diff-ii]\n", f"    diff-ii: [data/annotated/diff-ii]\n    {new}: [data/annotated/{new}]\n")
    return got


@pytest.mark.slow  # subprocesses that import the copied package, and some of its own tests
def test_recipe_new_compared_method(tmp_path, toy):
    """"A new compared method": one `MethodSpec` row in `METHODS` (nbs/39_method_table.ipynb), `nbdev-export`; every derived
    list of names has it; params.yaml's `runs` lists (4) and `classification.synthetic` (1 entry) are written out as the
    registry test says; `scripts/gen_setups.py` rewrites the setups that compare every method; DVC makes its synthesis stage;
    a set of it is made on the tiny model and opens in torchvision's ImageFolder."""
    repo = copy_working_tree(tmp_path/'repo')
    row = "    MethodSpec('real-filter', 'text2img', None, clip_filter=True, reference='He et al., ICLR 2023'),\n"
    edit_cell(repo/'nbs'/'39_method_table.ipynb', 'METHODS = {m.name: m for m in [', row,
              row + "    MethodSpec('soft-guidance', 'img2img', None, 'source', 'fixed', 0.3, (), reference='the recipe test'),\n")
    assert export(repo) == ['diffaug/method_table.py']
    r = python("""
        from diffaug.method_table import ALL_METHODS, run_lists
        from diffaug.classification import SYNTHETIC_METHODS, ClassificationConfig, method_names
        from diffaug.methods import SynthesisConfig
        L = run_lists()
        assert all('soft-guidance' in L[k] for k in ('methods', 'synthetic_methods', 'annotated_methods', 'oracle_methods')), L
        assert ALL_METHODS.index('soft-guidance') < ALL_METHODS.index('diff-ii') and 'soft-guidance' in SYNTHETIC_METHODS
        assert 'soft-guidance' in method_names()
        SynthesisConfig(method='soft-guidance', split='s.json', out='o', model='m').check(files=False)
        ClassificationConfig(method='soft-guidance', synthetic=['x'], split='s.json', out='o', model='resnet18', pretrained=False).check(files=False)
        print('ok')""", repo)
    assert r.stdout.strip() == 'ok'
    # params.yaml is data DVC reads: the registry test says what to write, and holds once it is written
    r = repo_tests(repo, REGISTRY_TEST)
    assert r.returncode == 1 and 'write run_lists() of diffaug.method_table' in r.stdout, r.stdout[-3000:]
    write_runs(repo, 'soft-guidance')
    r = repo_tests(repo, REGISTRY_TEST)
    assert r.returncode == 0, r.stdout[-3000:]
    # the setups: the generator's lists come from the registry; the ones that compare every method gain it
    r = repo_tests(repo, 'tests/test_pipeline.py::test_setup_files_come_from_the_generator')
    assert r.returncode == 1, r.stdout[-3000:]
    run([PY, 'scripts/gen_setups.py'], repo)
    changed = [l[3:] for l in run(['git', 'status', '--porcelain', '--', 'params'], repo).stdout.splitlines() if l[1] != ' ']
    assert changed and all('soft-guidance' in (repo/f).read_text() for f in changed), changed
    r = repo_tests(repo, 'tests/test_pipeline.py', '-k', 'setup_files_come_from_the_generator or setup_files_are_valid')
    assert r.returncode == 0 and '2 passed' in r.stdout, r.stdout[-3000:]
    # dvc.yaml needs no edit: its synthesis stage runs over runs.synthetic_methods
    r = run([BIN/'dvc', 'stage', 'list'], repo)
    assert 'synthesis@soft-guidance' in r.stdout, r.stdout
    # a set of it on the tiny model (no render branch: an img2img method renders as the others), read by ImageFolder
    out = tmp_path/'set'
    rows, info = synthesize_in(repo, toy, out, 'soft-guidance')
    assert len(rows) == 2 * toy['n_train'] and {x['method'] for x in rows} == {'soft-guidance'}
    assert {float(x['strength']) for x in rows} == {0.3} and info['method'] == 'soft-guidance'
    r = python(f"from torchvision.datasets import ImageFolder; print(len(ImageFolder({str(out)!r}, allow_empty=True)))", repo)
    assert int(r.stdout) == len(rows)


# ---------------------------------------------------------------- A new stage (and a method with stages of its own)
STAGE_NB = '''\
# %% [markdown]
# # recolor
#
# > A made-up method with a stage of its own (DEVELOPING.md's recipe test): each training image, its colour channels reordered.

# %%
#| default_exp recolor

# %%
#| export
from __future__ import annotations
from dataclasses import dataclass
from pathlib import Path
from PIL import Image

# %%
#| export
from diffaug.core import StageConfig
from diffaug.files import load_image
from diffaug.data import load_split
from diffaug.synthetic import SyntheticSetWriter

# %%
#| hide
from fastcore.test import test_eq, test_fail
import tempfile

# %%
#| export
@dataclass
class RecolorConfig(StageConfig):
    "Parameters of the `recolor` stage."
    split:str|None=None # the split JSON written by prepare (required)
    out:str|None=None # the synthetic set's folder (required)
    order:str='brg' # the new channel order, a permutation of "rgb"

    def check(self, files:bool=True):
        self.need(isinstance(self.order, str) and sorted(self.order) == ['b', 'g', 'r'], 'order', 'a permutation of "rgb"')
        self.need_path('split', 'file', files=files); self.need_path('out', 'dir', files=False)
        return self

def run_recolor(cfg:RecolorConfig|None=None, # the stage's parameters (None: the defaults, with `kw`)
                **kw, # parameters that override `cfg`'s
               )->dict:
    "The recolor stage: one synthetic image per training image, its channels in `order`, in the synthetic-set format."
    cfg = RecolorConfig.of(cfg, **kw).checked()
    # 1. the split and the writer
    sp = load_split(cfg.split)
    w = SyntheticSetWriter(cfg.out, sp.classes, 'recolor', info={'order': cfg.order})
    # 2. the images
    for j, it in enumerate(sp.items('train')):
        ch = dict(zip('rgb', load_image(sp.root/it['path']).split()))
        w.write(Image.merge('RGB', [ch[c] for c in cfg.order]), it['label'], f'{j:05d}', source_ids=[it['id']], seed=0)
    w.finalize()
    return {'written': len(sp.items('train'))}

# %%
test_fail(lambda: RecolorConfig(order='rgx', split='s.json', out='o').check(files=False), contains="order='rgx'")

# %% [markdown]
# ## Run the stage

# %%
from diffaug.fixtures import make_toy_split
_tmp = Path(tempfile.mkdtemp())
demo_params = {'split': str(make_toy_split(_tmp, n_classes=2, shots=2, per_class=3)), 'out': str(_tmp/'recolor')}

# %% tags=["parameters"]
params = None # this stage's parameters: its section of params.yaml; None here: the demo above

# %% tags=["run"]
if params is None: params = demo_params
result = run_recolor(RecolorConfig.from_params(params))
print(result)

# %%
test_eq(len(list(Path(params['out']).rglob('*.png'))), result['written'])
'''

DVC_STAGE = '''
  recolor:                     # nbs/74_recolor.ipynb: the recipe test's made-up method
    cmd: python -m diffaug.pipeline recolor --out reports/recolor/recolor.ipynb
    deps:
      - diffaug
      - nbs/74_recolor.ipynb
      - ${recolor.split}
      - ${prepare.root}
    params:
      - recolor
    outs:
      - ${recolor.out}
'''

STRUCTURE = ('imports_go_down or exported_module_has_its_chapter or do_not_reach_the_fixtures or one_name_per_stage '
             'or one_parameters_cell or holds_only_overrides or stage_help_lists or setup_files_are_valid')


@pytest.fixture(scope='module')
def stage_repo(tmp_path_factory):
    """The new-stage recipe followed in a copy: the notebook (written as a jupytext percent script and converted), its entry
    in `STAGES` (nbs/91_params.ipynb), its params.yaml section (paths only), its dvc.yaml stage; `nbdev-export`."""
    repo = copy_working_tree(tmp_path_factory.mktemp('stage')/'repo')
    script = repo.parent/'74_recolor.py'; script.write_text(STAGE_NB)
    run([BIN/'jupytext', '--to', 'ipynb', '-o', 'nbs/74_recolor.ipynb', script], repo)
    last = "                              \"train the mini world's species oracle (frozen in dvc.yaml)\"),\n"
    edit_cell(repo/'nbs'/'91_params.ipynb', 'STAGES = {', last,
              last + "    'recolor': Stage('74_recolor.ipynb', 'diffaug.recolor:RecolorConfig', ('split', 'out'), \"a made-up method's set (the recipe test)\"),\n")
    with open(repo/'params.yaml', 'a', encoding='utf-8') as f: f.write('\nrecolor:                      # nbs/74_recolor.ipynb\n  split: data/split.json\n  out: data/synthetic/recolor\n')
    with open(repo/'dvc.yaml', 'a', encoding='utf-8') as f: f.write(DVC_STAGE)
    changed = export(repo)
    assert changed == ['diffaug/_modidx.py', 'diffaug/params.py', 'diffaug/recolor.py'], changed
    return repo


@pytest.mark.slow  # subprocesses that import the copied package, and some of its own tests
def test_recipe_new_stage(stage_repo, toy, tmp_path):
    """"A new stage": the runner knows it (`STAGES`, `--help`, its checks before any kernel), runs its notebook's run view
    with papermill, DVC reads its stage, the repository's consistency tests hold, and its chapter runs under nbdev-test
    with committed outputs (`scripts/docs.py outputs`)."""
    repo = stage_repo
    r = run([PY, '-m', 'diffaug.pipeline', '--help'], repo)
    assert 'recolor' in r.stdout and 'nbs/74_recolor.ipynb' in r.stdout
    r = run([PY, '-m', 'diffaug.pipeline', 'recolor', '--help'], repo)
    assert "order: str = 'brg'  # the new channel order" in r.stdout, r.stdout
    assert "did you mean 'order'" in runner_error(repo, 'recolor', '--set', 'ordre=rgb')
    assert "order='rgx'" in runner_error(repo, 'recolor', '--set', 'order=rgx', '--set', f"split={toy['split']}")
    # the stage runs through the runner (papermill, the run view) and writes its set in the synthetic-set format
    out = tmp_path/'recolor'
    run([PY, '-m', 'diffaug.pipeline', 'recolor', '--quiet', '--set', f"split={toy['split']}", '--set', f'out={out}'], repo)
    from diffaug.synthetic import SyntheticSet
    assert len(SyntheticSet(out)) == toy['n_train']
    done = json.loads((repo/'reports'/'recolor'/'recolor.ipynb').read_text())
    assert done['metadata']['diffaug']['stage'] == 'recolor'
    # DVC reads the stage; the repository's checks of stages, sections, deps and imports hold
    assert 'recolor' in run([BIN/'dvc', 'stage', 'list'], repo).stdout.split()
    r = repo_tests(repo, 'tests/test_structure.py', 'tests/test_pipeline.py', '-k', STRUCTURE)
    assert r.returncode == 0 and '8 passed' in r.stdout, r.stdout[-3000:]
    # the chapter: nbdev-test runs it; its outputs are committed with `scripts/docs.py outputs`, which `--check` then accepts
    run([BIN/'nbdev-test', 'nbs/74_recolor.ipynb'], repo)
    assert run([PY, 'scripts/docs.py', 'outputs', '--check', '74_recolor'], repo, ok=False).returncode != 0  # no outputs yet
    run([PY, 'scripts/docs.py', 'outputs', '74_recolor'], repo)
    run([PY, 'scripts/docs.py', 'outputs', '--check', '74_recolor'], repo)


@pytest.mark.slow  # subprocesses that import the copied package, and some of its own tests
def test_recipe_method_with_stages_of_its_own(stage_repo, tmp_path):
    """"A method with stages of its own": its stage made by the new-stage recipe (`stage_repo`: it writes
    data/synthetic/recolor), one `OWN_STAGES` entry (nbs/39_method_table.ipynb); `run_lists` puts it after the synthesis
    methods, the classification stage accepts it, and params.yaml's lists (4) and `classification.synthetic` (1) are written
    out as for any method; the annotation stage reads data/synthetic/ whole, so dvc.yaml needs nothing more."""
    repo = shutil.copytree(stage_repo, tmp_path/'repo', symlinks=True)
    edit_cell(repo/'nbs'/'39_method_table.ipynb', 'OWN_STAGES = {', "OWN_STAGES = {'diff-ii': ('inversion', 'interpolation')}",
              "OWN_STAGES = {'diff-ii': ('inversion', 'interpolation'), 'recolor': ('recolor',)}")
    assert 'diffaug/method_table.py' in export(repo)
    got = write_runs(repo, 'recolor')
    assert got['methods'][-2:] == ['diff-ii', 'recolor'] and 'recolor' not in got['synthetic_methods']
    assert got['annotated_methods'][-2:] == got['oracle_methods'][-2:] == ['diff-ii', 'recolor']
    r = python("""
        from diffaug.classification import ClassificationConfig
        ClassificationConfig(method='recolor', synthetic=['x'], split='s.json', out='o', model='resnet18', pretrained=False).check(files=False)
        print('ok')""", repo)
    assert r.stdout.strip() == 'ok'
    r = repo_tests(repo, REGISTRY_TEST)
    assert r.returncode == 0, r.stdout[-3000:]
    stages = run([BIN/'dvc', 'stage', 'list'], repo).stdout.split()
    assert 'recolor' in stages and 'synthesis@recolor' not in stages


# ---------------------------------------------------------------- A new dataset importer
IMPORTER = '''
def import_shapes(raw:str|Path, # the folder holding shapes/ (or shapes/ itself)
                  root:str|Path, # the dataset root to write
                  split_path:str|Path|None=None, # write the official train/test split here
                  overwrite:bool=False, # replace an existing root
                  on_error:str='raise', # "raise" or "skip" unreadable images
                 )->Dataset:
    "Import the made-up Shapes dataset (the recipe test) from its native layout: classes.txt, labels.csv, images/."
    base = _find(raw, 'shapes', 'labels.csv')
    classes = [l.strip() for l in (base/'classes.txt').read_text(encoding='utf-8').splitlines() if l.strip()]
    with open(base/'labels.csv', newline='', encoding='utf-8') as f: rows = list(csv.DictReader(f))
    recs = [(classes.index(r['label']), base/'images'/r['file'], Path(r['file']).stem, r['split']) for r in rows]
    return _import(root, classes, recs, 'shape', split_path, overwrite, on_error)
'''

FIXTURE = '''
def _fx_shapes(out, n, k, rng, image):
    b, names = out/'shapes', FIXTURE_CLASSES['shapes'][:n]
    _lines(b/'classes.txt', names); (b/'images').mkdir(parents=True); rows = [['file', 'label', 'split']]
    for ci, nm in enumerate(names):
        for s in ('train', 'test'):
            for j in range(k):
                f = f'{nm}_{s}_{j:03d}.png'; image(ci, len(rows)).save(b/'images'/f); rows.append([f, nm, s])
    _lines(b/'labels.csv', [','.join(r) for r in rows])
'''


@pytest.mark.slow  # subprocesses that import the copied package, and some of its own tests
def test_recipe_new_dataset_importer(tmp_path):
    """"A new dataset importer": in nbs/05_importers.ipynb the function, its `IMPORTERS` entry (prepare's `source` choices
    derive from it), a fixture writer in `_FIXTURES` with its classes in `FIXTURE_CLASSES`; prepare's `source` docment names
    it; tests/test_importers.py learns its first classes, partitions and metaclass; `nbdev-export`. `prepare` then takes it."""
    repo = copy_working_tree(tmp_path/'repo')
    nb = repo/'nbs'/'05_importers.ipynb'
    imp = "IMPORTERS = {'cub': import_cub, 'aircraft': import_aircraft, 'pets': import_pets, 'cars': import_cars,\n"
    edit_cell(nb, imp, imp, IMPORTER.lstrip() + '\n' + imp)
    edit_cell(nb, imp, "'waterbirds': import_waterbirds}", "'waterbirds': import_waterbirds, 'shapes': import_shapes}")
    edit_cell(nb, 'FIXTURE_CLASSES = {', "    'waterbirds': [_CUB_FIRST[i]", "    'shapes': ['circle', 'square', 'triangle', 'star'],\n    'waterbirds': [_CUB_FIRST[i]")
    fx = "_FIXTURES = {'cub': _fx_cub,"
    edit_cell(nb, fx, fx, FIXTURE.lstrip() + '\n' + fx)
    edit_cell(nb, fx, "'waterbirds': _fx_waterbirds}", "'waterbirds': _fx_waterbirds, 'shapes': _fx_shapes}")
    edit_cell(repo/'nbs'/'06_prepare.ipynb', 'class PrepareConfig(StageConfig)', 'flowers102, waterbirds', 'flowers102, waterbirds, shapes')
    assert export(repo) == ['diffaug/_modidx.py', 'diffaug/importers.py', 'diffaug/prepare.py']
    # prepare knows it: its choices, --help, a native download through the stage's function and through the runner
    r = run([PY, '-m', 'diffaug.pipeline', 'prepare', '--help'], repo)
    assert 'waterbirds, shapes' in r.stdout
    assert "did you mean 'shapes'" in runner_error(repo, 'prepare', '--set', 'source=shape', '--set', 'raw=x')
    r = python(f"""
        from diffaug.importers import write_native_fixture
        from diffaug.prepare import run_prepare
        from diffaug.data import load_split
        raw = write_native_fixture('shapes', {str(tmp_path/'raw')!r}, n_classes=3, per_class=2)
        r = run_prepare(source='shapes', raw=str(raw), root={str(tmp_path/'data'/'shapes')!r}, split_path={str(tmp_path/'split.json')!r}, shots=1)
        sp = load_split(r['split'])
        print(sp.classes, sp.metaclass, sp.counts('train'), sp.counts('test'))""", repo)
    assert r.stdout.strip().splitlines()[-1] == "['circle', 'square', 'triangle'] shape {'circle': 1, 'square': 1, 'triangle': 1} {'circle': 2, 'square': 2, 'triangle': 2}", r.stdout
    # tests/test_importers.py runs every importer through prepare: it fails until it knows the new one, then holds
    r = repo_tests(repo, 'tests/test_importers.py', '-k', 'shapes or test_prepare_with_importer')
    assert r.returncode == 1, r.stdout[-3000:]
    t = repo/'tests'/'test_importers.py'
    edit_text(t, "{'cub', 'aircraft', 'pets', 'cars', 'flowers102', 'waterbirds'}", "{'cub', 'aircraft', 'pets', 'cars', 'flowers102', 'waterbirds', 'shapes'}")
    edit_text(t, "FIRST3 = {", "FIRST3 = {'shapes': ['circle', 'square', 'triangle'],\n          ")
    edit_text(t, "    with open(raw/'waterbird_complete95_forest2water2'/'metadata.csv'",
              "    if source == 'shapes':\n        with open(raw/'shapes'/'labels.csv', newline='', encoding='utf-8') as f: meta = list(csv.DictReader(f))\n"
              "        names = [l for l in (raw/'shapes'/'classes.txt').read_text().splitlines()]\n"
              "        return {Path(r['file']).stem: (r['split'], names.index(r['label']), None) for r in meta}\n"
              "    with open(raw/'waterbird_complete95_forest2water2'/'metadata.csv'")
    edit_text(t, "'flowers102': 'flower'}[source]", "'flowers102': 'flower', 'shapes': 'shape'}[source]")
    r = repo_tests(repo, 'tests/test_importers.py', '-k', 'shapes or test_prepare_with_importer')
    assert r.returncode == 0 and '3 passed' in r.stdout, r.stdout[-3000:]
