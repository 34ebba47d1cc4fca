"""DEVELOPING.md's recipes, followed literally (issue 26, item 7), in ONE copy of the working tree (the module fixture
`copy`): a new parameter (nbs/40_methods), a new compared method (nbs/39_method_table, params.yaml's `runs`, the setups),
a new stage (a new chapter, nbs/91_params, params.yaml, dvc.yaml) and a new importer (nbs/05_importers,
nbs/05b_native_fixtures, nbs/06_prepare, tests/test_importers.py) touch different files, so their edits are made together (in the notebooks, then one
`nbdev-export`, as a developer would; params.yaml, dvc.yaml and the tests' own files as text); the fifth, a method with
stages of its own, builds on the new stage and is applied on top by its test (a second export). Each test checks what its
recipe promises, by running the copy's package in subprocesses (`PYTHONPATH=<copy>`). Nothing here touches the
repository itself.

Time (~60 s for the file on the shared 2-core machine; ~220 s with a copy per recipe and nested pytest sessions) goes to
Python start-ups that import the copied package (diffaug.splits imports torch: ~2 s each) and to the runs of the new
chapter, so the checks are batched: `in_copy` runs named steps in one subprocess of the copy: runner command lines (`diffaug.pipeline.main(argv)`, which is all
`python -m diffaug.pipeline` does), scripts (runpy), some of the copy's own test functions (called directly with their
fixtures, instead of a nested pytest session) and snippets. The fixture runs most recipes' steps in one such process
and the tests check what they returned. The recipe steps run as commands where the recipe names one (`nbdev-export`,
`dvc stage list`, `nbdev-test`, the stage's papermill run through the runner, `scripts/gen_setups.py`,
`scripts/docs.py outputs`: the last two by runpy). Checks given up for time, and why:
- tests/test_pipeline.py::test_setup_files_come_from_the_generator is not run before and after `gen_setups.py` (each run
  runs the generator again): before, that the generator rewrites some setup files is what it would fail on; after,
  params/ is the generator's output by construction.
- test_stage_help_lists_the_declared_parameters runs `python -m diffaug.pipeline interpolation --help` in a subprocess:
  its condition is checked on `main(['interpolation', '--help'])` in the batch instead.
- `scripts/docs.py outputs --check 74_recolor` is not run before the outputs are written (one more execution of the
  chapter): `diffaug.doctools.stale_outputs`, what `--check` applies, is applied to the chapter as it was and as
  `outputs` wrote it; `--check` itself runs after, and must accept.
Known gap (as before): the method-with-own-stages test stops before its recipe's last step, `scripts/gen_setups.py`.
With an own-stages method in the regenerated setups, the repository's test_setup_files_are_valid fails (it expects
`annotated_methods` = the synthesis methods + diff-ii), so the setups' checks are made before that recipe is applied."""
import inspect, json, subprocess, sys, textwrap
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


IN_COPY = r"""
import contextlib, importlib, inspect, io, json, logging, runpy, sys, tempfile
from pathlib import Path
sys.path.insert(0, 'tests')

def caught(f):
    "f() with its standard output and error caught, and its exit code (SystemExit caught): [code, stdout, stderr]."
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        try: code = f()
        except SystemExit as x: code = x.code if isinstance(x.code, int) else 0 if x.code is None else 1
    return [code or 0, o.getvalue(), e.getvalue()]

def cli(argv):  # what `python -m diffaug.pipeline ARGV` does: sys.exit(main(ARGV))
    from diffaug.pipeline import main
    return caught(lambda: main(argv))

def script(argv):  # `python ARGV[0] ARGV[1:]`
    def go(): sys.argv = list(argv); runpy.run_path(argv[0], run_name='__main__')
    return caught(go)

class Caplog:  # pytest's caplog, as far as the called tests use it
    def __init__(self): self.records = []
    def clear(self): self.records.clear()
    @contextlib.contextmanager
    def at_level(self, level, logger=None):
        lg, h = logging.getLogger(logger), logging.Handler(); h.emit = self.records.append; old = lg.level
        lg.setLevel(level); lg.addHandler(h)
        try: yield
        finally: lg.removeHandler(h); lg.setLevel(old)

def test(spec):  # "tests/test_x.py::test_name" or "...::test_name[param]": the function, called with its fixtures
    file, name = spec.split('::'); param = name[name.index('[') + 1:-1] if '[' in name else None; name = name.split('[')[0]
    try:
        import conftest
        fn = getattr(importlib.import_module(Path(file).stem), name)
        fixtures = {'repo_root': lambda: conftest.ROOT, 'tmp_path': lambda: Path(tempfile.mkdtemp()), 'caplog': Caplog}
        fn(**{p: fixtures[p]() if p in fixtures else param for p in inspect.signature(fn).parameters})
        return 'passed'
    except BaseException as x: return f"{type(x).__name__}: {x}"[:3000]

out, res = {}, {}
for name, kind, arg in json.loads(sys.argv[1]):
    res[name] = cli(arg) if kind == 'cli' else script(arg) if kind == 'script' else test(arg) if kind == 'test' else exec(arg)
print('\n' + json.dumps({'steps': res, 'out': out}))
"""


def in_copy(repo: Path, steps: dict) -> tuple[dict, dict]:
    """Named steps in one subprocess of the copy (one import of its package, which costs ~2 s), in order; each is
    ('cli', argv): `diffaug.pipeline.main(argv)` (all `python -m diffaug.pipeline` does), its [exit code, stdout, stderr];
    ('script', argv): `python argv...` (runpy), caught the same way; ('test', a pytest node id): one of the copy's own test
    functions called with its fixtures, 'passed' or the exception; ('code', source): run, it may fill the dict `out`.
    Returns {name: result} and `out`."""
    job = [(n, k, list(map(str, a)) if k in ('cli', 'script') else textwrap.dedent(a) if k == 'code' else a) for n, (k, a) in steps.items()]
    r = run([PY, '-c', IN_COPY, json.dumps(job)], repo)
    got = json.loads(r.stdout.strip().splitlines()[-1])
    return got['steps'], got['out']


def cli(*argv): return ('cli', argv)
def own_tests(*ids): return {t: ('test', t) for t in ids}


def refused(res) -> str:
    "A runner command refused before any kernel: exit 2 and one `error:` line, returned."
    code, _, err = res
    lines = [l for l in err.splitlines() if l.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith('error: '), (code, err[-3000:])
    return lines[0]


def passed(results: dict, *tests):
    "The copy's own tests `tests` (node ids, as `in_copy` ran them) passed."
    bad = {t: results.get(t, 'not run') for t in tests if results.get(t) != 'passed'}
    assert not bad, bad


def modidx_syms(text: str) -> dict:
    "{module: {symbol: location}} of a diffaug/_modidx.py text (nbdev's index of the exported names)."
    ns = {}; exec(text, ns)
    return ns['d']['syms']


def export(repo: Path) -> tuple[list, dict]:
    """`nbdev-export` in the copy: the package files it changed or added, and the names nbdev's index (_modidx.py) gained
    or lost, by module."""
    was = {p: p.read_bytes() for p in (repo/'diffaug').rglob('*.py')}
    run([BIN/'nbdev-export'], repo)
    now = {p: p.read_bytes() for p in (repo/'diffaug').rglob('*.py')}
    changed = sorted(str(p.relative_to(repo)) for p in now if was.get(p) != now[p])
    old, new = (modidx_syms(d[repo/'diffaug'/'_modidx.py'].decode()) for d in (was, now))
    return changed, {m: sorted(set(new.get(m, {})) ^ set(old.get(m, {}))) for m in set(old) | set(new) if new.get(m) != old.get(m)}


WRITE_RUNS = inspect.getsource(edit_text) + r"""
import yaml
from diffaug.method_table import run_lists
p = Path('params.yaml'); got = run_lists(); old = yaml.safe_load(p.read_text(encoding='utf-8'))['runs']
for k, v in got.items(): edit_text(p, f"  {k}: [{', '.join(old[k])}]", f"  {k}: [{', '.join(v)}]")
"""


def write_runs(*new) -> tuple:
    """The step (for `in_copy`) that writes params.yaml's `runs` lists out from the copy's `run_lists()` (the
    classification stage takes each annotated method's set from the stage graph): the text edits a developer makes."""
    return ('code', f"NEW = {list(new)!r}\n" + WRITE_RUNS)


METHOD_FACTS = ('code', """
    from diffaug.method_table import ALL_METHODS, run_lists
    from diffaug.classification import SYNTHETIC_METHODS, ClassificationConfig, method_names
    from diffaug.methods import SynthesisConfig
    out.update(runs=run_lists(), all_methods=list(ALL_METHODS), synthetic_methods=list(SYNTHETIC_METHODS), method_names=list(method_names()))
    def ok(f):
        try: f(); return 'ok'
        except Exception as e: return repr(e)
    out['accepts'] = {
        'synthesis soft-guidance': ok(lambda: SynthesisConfig(method='soft-guidance', split='s.json', out='o', model='m').check(files=False)),
        **{f'classification {m}': ok(lambda: ClassificationConfig(method=m, synthetic=['x'], split='s.json', out='o', model='resnet18', pretrained=False).check(files=False))
           for m in ('soft-guidance', 'recolor')}}
""")

REGISTRY_TEST = 'tests/test_pipeline.py::test_params_yaml_runs_come_from_the_registry'
STAGE_HELP = 'tests/test_pipeline.py::test_stage_help_lists_the_declared_parameters'
# the repository's consistency checks the recipes must leave passing (test_pipeline's and test_structure's; and STAGE_HELP)
CHECKS = [REGISTRY_TEST] + [f'tests/test_pipeline.py::test_{t}' for t in (
    'params_yaml_holds_only_overrides_and_wiring', 'setup_files_are_valid', 'dvc_yaml_follows_the_stage_graph', 'params_yaml_writes_each_path_once',
    'every_stage_notebook_has_one_parameters_cell', 'one_name_per_stage_and_deps_cover_the_code')] + [
    f'tests/test_structure.py::test_{t}' for t in ('imports_go_down_the_table', 'every_exported_module_has_its_chapter', 'stages_do_not_reach_the_fixtures')]
IMPORTER_TESTS = ['tests/test_importers.py::test_prepare_with_importer', 'tests/test_importers.py::test_prepare_needs_the_raw_download_folder[shapes]',
                  'tests/test_importers.py::test_native_fixture_through_prepare[shapes]']


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    "A toy split (2 classes, 1 shot): the stage's and the synthesis runs' input."
    from diffaug.splits import few_shot_split, save_split
    from diffaug.toy import make_toy_dataset
    d = tmp_path_factory.mktemp('recipes-toy')
    ds = make_toy_dataset(d/'toy', n_classes=2, n_per_class=2, size=32)
    return dict(dir=d, split=Path(save_split(few_shot_split(ds, 1, seed=0, test='none'), d/'split.json')), n_train=2)


# ---------------------------------------------------------------- the recipes' edits
# the made-up stage and importer
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
from diffaug.splits import load_split
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
      - ${prepare.split_path}
      - ${prepare.root}
    params:
      - recolor
    outs:
      - ${recolor.out}
'''

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



# (1) A new parameter: `max_images` of the synthesis stage, three edits of nbs/40_methods.ipynb
def new_parameter(repo: Path):
    nb = repo/'nbs'/'40_methods.ipynb'
    seed_line = "    seed:int=0 # the synthesis seed (one set per method; classification seeds vary separately)\n"
    edit_cell(nb, 'class SynthesisConfig(StageConfig)', seed_line,
              seed_line + "    max_images:int|None=None # at most this many images of the plan, >= 1 (None: all): a quick look at a method\n")
    edit_cell(nb, 'class SynthesisConfig(StageConfig)', "        self.need_int('seed', 0)\n",
              "        self.need_int('seed', 0)\n        self.need_int('max_images', 1, none=True)\n")
    plan = ("    items = plan_items(spec, sp, cfg.seed, cfg.expansion, mode if spec.family == 'img2img' else None, s, ss or None,\n"
            "                       cfg.gen_classes)\n")
    edit_cell(nb, 'def synthesize(cfg:SynthesisConfig', plan, plan + "    if cfg.max_images is not None: items = items[:cfg.max_images]\n")


# (2) A new compared method: one `MethodSpec` row in nbs/39_method_table.ipynb
def new_compared_method(repo: Path):
    row = "    MethodSpec('real-filter', 'text2img', None, clip_filter=True, reference='He et al., ICLR 2023'),\n"
    edit_cell(repo/'nbs'/'39_method_table.ipynb', 'METHODS = {m.name: m for m in [', row,
              row + "    MethodSpec('soft-guidance', 'img2img', None, 'source', 'fixed', 0.3, (), reference='the recipe test'),\n")


# (3) A new stage: the chapter (a jupytext percent script, converted), its `STAGES` entry (nbs/90_graph.ipynb: its inputs
# named by the stage they come from), its params.yaml section (what it writes), its dvc.yaml stage
def new_stage(repo: Path):
    script = repo.parent/'74_recolor.py'; script.write_text(STAGE_NB)
    run([BIN/'jupytext', '--to', 'ipynb', '-o', 'nbs/74_recolor.ipynb', script], repo)
    last = "                              \"train the mini world's species oracle (frozen in dvc.yaml)\", outs=('out',)),\n"
    edit_cell(repo/'nbs'/'90_graph.ipynb', 'STAGES = {', last,
              last + "    'recolor': Stage('74_recolor.ipynb', 'diffaug.recolor:RecolorConfig', ('split', 'out'), \"a made-up method's set (the recipe test)\",\n"
                     "                     inputs={'split': SPLIT}, reads=ROOT, outs=('out',)),\n")
    with open(repo/'params.yaml', 'a', encoding='utf-8') as f: f.write('\nrecolor:                      # nbs/74_recolor.ipynb\n  out: data/synthetic/recolor\n')
    with open(repo/'dvc.yaml', 'a', encoding='utf-8') as f: f.write(DVC_STAGE)


# (4) A method with stages of its own: its stage is (3)'s (it writes data/synthetic/recolor); one `OWN_STAGES` entry
def method_with_stages(repo: Path):
    edit_cell(repo/'nbs'/'39_method_table.ipynb', 'OWN_STAGES = {', "OWN_STAGES = {'diff-ii': ('inversion', 'interpolation')}",
              "OWN_STAGES = {'diff-ii': ('inversion', 'interpolation'), 'recolor': ('recolor',)}")


# (5) A new dataset importer: in nbs/05_importers.ipynb the function, its `IMPORTERS` entry; in nbs/05b_native_fixtures.ipynb
# a fixture writer in `_FIXTURES` with its classes in `FIXTURE_CLASSES`; prepare's `source` docment (nbs/06_prepare.ipynb) names it
def new_importer(repo: Path):
    nb, fxnb = repo/'nbs'/'05_importers.ipynb', repo/'nbs'/'05b_native_fixtures.ipynb'
    imp = "IMPORTERS = {'cub': import_cub, 'aircraft': import_aircraft, 'pets': import_pets, 'cars': import_cars,\n"
    edit_cell(nb, imp, imp, IMPORTER.lstrip() + '\n' + imp)
    edit_cell(nb, imp, "'waterbirds': import_waterbirds}", "'waterbirds': import_waterbirds, 'shapes': import_shapes}")
    edit_cell(fxnb, 'FIXTURE_CLASSES = {', "    'waterbirds': [_CUB_FIRST[i]", "    'shapes': ['circle', 'square', 'triangle', 'star'],\n    'waterbirds': [_CUB_FIRST[i]")
    fx = "_FIXTURES = {'cub': _fx_cub,"
    edit_cell(fxnb, fx, fx, FIXTURE.lstrip() + '\n' + fx)
    edit_cell(fxnb, fx, "'waterbirds': _fx_waterbirds}", "'waterbirds': _fx_waterbirds, 'shapes': _fx_shapes}")
    edit_cell(repo/'nbs'/'06_prepare.ipynb', 'class PrepareConfig(StageConfig)', 'flowers102, waterbirds', 'flowers102, waterbirds, shapes')


# ---------------------------------------------------------------- what the fixture runs in the copy, recipe by recipe
def method_steps() -> dict:
    "The method recipe's: the derived lists, the registry test, params.yaml written out, the generator; then the checks."
    return {'facts': METHOD_FACTS, 'registry before': ('test', REGISTRY_TEST), 'write runs': write_runs('soft-guidance'),
            'gen_setups': ('script', ['scripts/gen_setups.py']), **own_tests(*CHECKS), 'interpolation --help': cli('interpolation', '--help')}


def parameter_steps(d: Path) -> dict:
    "The parameter recipe's: the runner's help and checks, a setup file that sets it and one that misspells it."
    (d/'check.yaml').write_text('synthesis:\n  max_images: 4\n')
    (d/'typo.yaml').write_text('synthesis:\n  max_imgs: 4\n')
    return {'synthesis --help': cli('synthesis', '--help'), 'max_image=3': cli('synthesis', '--set', 'max_image=3'),
            'max_images=0': cli('synthesis', '--set', 'max_images=0'), 'setup': cli('setup', d/'check.yaml', '--print'),
            'setup typo': cli('setup', d/'typo.yaml', '--print')}


def sets_step(d: Path, toy: dict) -> tuple:
    """Synthetic sets made by the copy's `run_synthesis` on a tiny SD model (made here): real-guidance with the new
    `max_images=3` (its plan holds 4 images), and the new method soft-guidance (2 images); ImageFolder's count of it."""
    kw = dict(split=str(toy['split']), model=str(d/'tiny-sd'), steps=2, batch_size=4, device='cpu', precision='fp32')
    return ('code', f"""
        import torch; torch.set_num_threads(1)
        from diffaug.models import make_tiny_sd
        from diffaug.methods import run_synthesis
        from torchvision.datasets import ImageFolder
        make_tiny_sd({str(d/'tiny-sd')!r})
        run_synthesis(method='real-guidance', out={str(d/'rg')!r}, expansion=2, max_images=3, **{kw!r})
        run_synthesis(method='soft-guidance', out={str(d/'sg')!r}, expansion=1, **{kw!r})
        out['imagefolder'] = len(ImageFolder({str(d/'sg')!r}, allow_empty=True))""")


def importer_steps(d: Path) -> dict:
    "The importer recipe's, before tests/test_importers.py knows it: prepare's help and checks, a native download prepared, those tests."
    return {'prepare --help': cli('prepare', '--help'), 'source=shape': cli('prepare', '--set', 'source=shape', '--set', 'raw=x'),
            **{f'before {t}': ('test', t) for t in IMPORTER_TESTS}, 'prepare shapes': ('code', f"""
        from diffaug.native_fixtures import write_native_fixture
        from diffaug.prepare import run_prepare
        from diffaug.splits import load_split
        raw = write_native_fixture('shapes', {str(d/'raw')!r}, n_classes=3, per_class=2)
        r = run_prepare(source='shapes', raw=str(raw), root={str(d/'data'/'shapes')!r}, split_path={str(d/'split.json')!r}, shots=1)
        sp = load_split(r['split'])
        out['shapes split'] = [sp.classes, sp.metaclass, sp.counts('train'), sp.counts('test')]""")}


def stage_steps(d: Path, toy: dict) -> dict:
    "The stage recipe's: the runner's help and checks, then the stage run through it (papermill)."
    return {'--help': cli('--help'), 'recolor --help': cli('recolor', '--help'), 'ordre=rgb': cli('recolor', '--set', 'ordre=rgb'),
            'order=rgx': cli('recolor', '--set', 'order=rgx', '--set', f"split={toy['split']}"),
            'recolor run': cli('recolor', '--quiet', '--set', f"split={toy['split']}", '--set', f"out={d/'recolor'}")}


@pytest.fixture(scope='module')
def copy(tmp_path_factory, toy):
    """Four recipes' edits in one copy of the working tree (a parameter, a compared method, a stage, an importer), one
    `nbdev-export`; then, in one process of the copy, what the method recipe writes out by hand (params.yaml's `runs` and
    `classification.synthetic`) and `scripts/gen_setups.py`, the repository's consistency checks, and each recipe's
    runner commands and runs (`*_steps`). The tests check what was kept: what the export changed, the steps' results,
    the setups the generator rewrote, `dvc stage list`. (The fifth recipe is applied on top by its test.)"""
    d = tmp_path_factory.mktemp('recipes')
    repo = copy_working_tree(d/'repo')
    for recipe in (new_parameter, new_compared_method, new_stage, new_importer): recipe(repo)
    changed, modidx = export(repo)
    ran, out = in_copy(repo, {**method_steps(), **parameter_steps(d), 'sets': sets_step(d, toy), **importer_steps(d), **stage_steps(d, toy)})
    assert ran['gen_setups'][0] == 0, ran['gen_setups']
    checks = {t: ran[t] for t in CHECKS}
    h = ran['interpolation --help']  # the condition of test_stage_help_lists_..., on main() rather than in a subprocess
    checks[STAGE_HELP] = 'passed' if h[0] == 0 and 'suffix_fraction' in h[1] and 'InterpolationConfig' in h[1] else repr(h)[:3000]
    setups = [l[3:] for l in run(['git', 'status', '--porcelain', '--', 'params'], repo).stdout.splitlines() if l[1] != ' ']
    from diffaug.synthetic import read_metadata_csv
    return dict(repo=repo, dir=d, changed=changed, modidx=modidx, ran=ran, out=out, checks=checks,
                sets={k: (read_metadata_csv(d/k/'metadata.csv'), json.loads((d/k/'info.json').read_text())) for k in ('rg', 'sg')},
                setups={f: (repo/f).read_text() for f in setups}, dvc_stages=run([BIN/'dvc', 'stage', 'list'], repo).stdout.split())


EXPORTED = ['diffaug/_modidx.py', 'diffaug/graph.py', 'diffaug/importers.py', 'diffaug/method_table.py', 'diffaug/methods.py',
            'diffaug/native_fixtures.py', 'diffaug/prepare.py', 'diffaug/recolor.py']


def exported(copy):
    """`copy`'s one `nbdev-export` changed what the four recipes say, recipe by recipe: a parameter, its stage's module
    (methods.py); a compared method, method_table.py; a stage, its new module, graph.py and _modidx.py; an importer,
    importers.py, native_fixtures.py, prepare.py and _modidx.py. nbdev's index (_modidx.py) gains the new stage's and the new importer's names
    only: the parameter and the method declare no new name anywhere."""
    assert copy['changed'] == EXPORTED, copy['changed']
    assert sorted(copy['modidx']) == ['diffaug.importers', 'diffaug.native_fixtures', 'diffaug.recolor'], copy['modidx']


# ---------------------------------------------------------------- the recipes' tests
@pytest.mark.slow  # subprocesses that import the copied package (the module fixture)
def test_recipe_new_parameter(copy):
    """"A new parameter": one field (type, default, docment) in the stage's config class, its check in `check`, the code
    under `run_<stage>` reading it: three edits of one notebook (here `max_images` of the synthesis stage, in
    nbs/40_methods.ipynb), then `nbdev-export` (that one module). `--help`, the runner's checks, `setup_overrides` and
    info.json follow."""
    exported(copy)
    ran = copy['ran']
    # --help reads the class
    h = ran['synthesis --help']
    assert h[0] == 0 and "  max_images: int | None = None  # at most this many images of the plan" in h[1], h
    # the runner: an unknown key names the nearest, a bad value is refused (both before any kernel)
    assert "did you mean 'max_images'" in refused(ran['max_image=3'])
    assert 'max_images=0' in refused(ran['max_images=0'])
    # a paper setup may set it (setup_overrides reads the class), and a misspelt one is refused naming it
    assert ran['setup'][0] == 0 and '++synthesis.max_images=4' in ran['setup'][1], ran['setup']
    assert "did you mean 'max_images'" in refused(ran['setup typo'])
    # the code reads it, and the set records it in info.json by itself (SynthesisConfig.record)
    rows, info = copy['sets']['rg']
    assert len(rows) == 3 and info['params']['max_images'] == 3, (len(rows), info['params'])
    # the chapter prints the class's help in a committed output: that output is stale now (`scripts/docs.py outputs 40_methods`)
    committed = json.dumps(json.loads((ROOT/'nbs'/'40_methods.ipynb').read_text())['cells'])
    assert "clip_min_prob: float = 0.0" in committed and 'max_images' not in committed
    # params.yaml and the setups need nothing: the repository's checks still hold without an edit there
    assert 'max_images' not in (copy['repo']/'params.yaml').read_text() and not any('max_images' in t for t in copy['setups'].values())
    passed(copy['checks'], 'tests/test_pipeline.py::test_params_yaml_holds_only_overrides_and_wiring', STAGE_HELP,
           'tests/test_pipeline.py::test_setup_files_are_valid')


@pytest.mark.slow  # subprocesses that import the copied package (the module fixture)
def test_recipe_new_compared_method(copy):
    """"A new compared method": one `MethodSpec` row in `METHODS` (nbs/39_method_table.ipynb), `nbdev-export`
    (method_table.py only); every derived list of names has it; params.yaml's `runs` lists (4) and
    `classification.synthetic` (1 entry) are written out as the registry test says; `scripts/gen_setups.py` rewrites the
    setups that compare every method; DVC makes its synthesis stage; a set of it is made on the tiny model and opens in
    torchvision's ImageFolder."""
    exported(copy)
    f = copy['out']
    L = f['runs']
    assert all('soft-guidance' in L[k] for k in ('methods', 'synthetic_methods', 'annotated_methods', 'oracle_methods')), L
    assert f['all_methods'].index('soft-guidance') < f['all_methods'].index('diff-ii') and 'soft-guidance' in f['synthetic_methods']
    assert 'soft-guidance' in f['method_names']
    assert f['accepts']['synthesis soft-guidance'] == f['accepts']['classification soft-guidance'] == 'ok', f['accepts']
    # params.yaml is data DVC reads: the registry test says what to write, and holds once it is written
    assert 'write run_lists() of diffaug.method_table' in copy['ran']['registry before'], copy['ran']['registry before']
    passed(copy['checks'], REGISTRY_TEST)
    # the setups: the generator's lists come from the registry; it rewrote the ones that compare every method (so
    # test_setup_files_come_from_the_generator failed before), each gains the method, and every setup is still valid
    assert copy['setups'] and all('soft-guidance' in t for t in copy['setups'].values()), sorted(copy['setups'])
    passed(copy['checks'], 'tests/test_pipeline.py::test_setup_files_are_valid')
    # dvc.yaml needs no edit: its synthesis stage runs over runs.synthetic_methods
    assert 'synthesis@soft-guidance' in copy['dvc_stages'], copy['dvc_stages']
    # a set of it on the tiny model (no render branch: an img2img method renders as the others), read by ImageFolder
    rows, info = copy['sets']['sg']
    assert len(rows) == 2 and {x['method'] for x in rows} == {'soft-guidance'}
    assert {float(x['strength']) for x in rows} == {0.3} and info['method'] == 'soft-guidance'
    assert f['imagefolder'] == len(rows)


@pytest.mark.slow  # subprocesses that import the copied package, and three more runs of its chapter
def test_recipe_new_stage(copy, toy):
    """"A new stage": `nbdev-export` writes its module and changes graph.py and _modidx.py; the runner knows it
    (`STAGES`, `--help`, its checks before any kernel), runs its notebook's run view with papermill, DVC reads its stage,
    the repository's consistency tests hold, and its chapter runs under nbdev-test with committed outputs
    (`scripts/docs.py outputs`)."""
    repo, ran = copy['repo'], copy['ran']
    exported(copy)
    assert copy['modidx']['diffaug.recolor'] == ['diffaug.recolor.RecolorConfig', 'diffaug.recolor.RecolorConfig.check', 'diffaug.recolor.run_recolor'], copy['modidx']
    assert ran['--help'][0] == 0 and 'recolor' in ran['--help'][1] and 'nbs/74_recolor.ipynb' in ran['--help'][1], ran['--help']
    h = ran['recolor --help']
    assert h[0] == 0 and "order: str = 'brg'  # the new channel order" in h[1], h
    assert "did you mean 'order'" in refused(ran['ordre=rgb'])
    assert "order='rgx'" in refused(ran['order=rgx'])
    # the stage runs through the runner (papermill, the run view) and writes its set in the synthetic-set format
    assert ran['recolor run'][0] == 0, ran['recolor run']
    from diffaug.synthetic import SyntheticSet
    assert len(SyntheticSet(copy['dir']/'recolor')) == toy['n_train']
    done = json.loads((repo/'reports'/'recolor'/'recolor.ipynb').read_text())
    assert done['metadata']['diffaug']['stage'] == 'recolor'
    # DVC reads the stage; the repository's checks of stages, sections, deps and imports hold
    assert 'recolor' in copy['dvc_stages']
    passed(copy['checks'], *CHECKS[1:], STAGE_HELP)
    # the chapter: nbdev-test runs it; its outputs are committed with `scripts/docs.py outputs`, which `--check` then
    # accepts (and would have refused before: `stale_outputs`, what --check applies, of the chapter as it was)
    run([BIN/'nbdev-test', 'nbs/74_recolor.ipynb'], repo)
    nb = "Path('nbs/74_recolor.ipynb').read_text()"
    docs, out = in_copy(repo, {'was': ('code', f"out['was'] = json.loads({nb})"), 'outputs': ('script', ['scripts/docs.py', 'outputs', '74_recolor']),
                               'stale': ('code', f"from diffaug.doctools import stale_outputs; out['stale'] = stale_outputs(out['was'], json.loads({nb}))"),
                               'check': ('script', ['scripts/docs.py', 'outputs', '--check', '74_recolor'])})
    assert docs['outputs'][0] == 0 and out['stale'] and docs['check'][0] == 0, (docs, out['stale'])


@pytest.mark.slow  # subprocesses that import the copied package
def test_recipe_method_with_stages_of_its_own(copy):
    """"A method with stages of its own": its stage made by the new-stage recipe (`copy`'s recolor: it writes
    data/synthetic/recolor), then, on top, one `OWN_STAGES` entry (nbs/39_method_table.ipynb) and `nbdev-export`
    (method_table.py only); `run_lists` puts it after the synthesis methods, the classification stage accepts it, and
    params.yaml's lists (4) and `classification.synthetic` (1) are written out as for any method (the registry test fails
    before, holds after); the annotation stage reads data/synthetic/ whole, so dvc.yaml needs nothing more."""
    repo = copy['repo']
    assert copy['out']['accepts']['classification recolor'] != 'ok'  # before its entry, the classification stage refuses it
    method_with_stages(repo)
    changed, modidx = export(repo)
    assert changed == ['diffaug/method_table.py'] and modidx == {}, (changed, modidx)
    ran, facts = in_copy(repo, {'facts': METHOD_FACTS, 'before': ('test', REGISTRY_TEST), 'write runs': write_runs('recolor'), 'after': ('test', REGISTRY_TEST)})
    got = facts['runs']
    assert got['methods'][-2:] == ['diff-ii', 'recolor'] and 'recolor' not in got['synthetic_methods']
    assert got['annotated_methods'][-2:] == got['oracle_methods'][-2:] == ['diff-ii', 'recolor']
    assert facts['accepts']['classification recolor'] == 'ok', facts['accepts']
    assert 'write run_lists() of diffaug.method_table' in ran['before'] and ran['after'] == 'passed', ran
    stages = run([BIN/'dvc', 'stage', 'list'], repo).stdout.split()
    assert 'recolor' in stages and 'synthesis@recolor' not in stages


@pytest.mark.slow  # subprocesses that import the copied package
def test_recipe_new_dataset_importer(copy):
    """"A new dataset importer": in nbs/05_importers.ipynb the function, its `IMPORTERS` entry (prepare's `source` choices
    derive from it), in nbs/05b_native_fixtures.ipynb a fixture writer in `_FIXTURES` with its classes in `FIXTURE_CLASSES`;
    prepare's `source` docment names it; `nbdev-export` (importers.py, native_fixtures.py, prepare.py, _modidx.py). `prepare` then takes it; tests/test_importers.py fails until
    it learns its first classes, partitions and metaclass, then holds."""
    repo, ran = copy['repo'], copy['ran']
    exported(copy)
    assert copy['modidx']['diffaug.importers'] == ['diffaug.importers.import_shapes'], copy['modidx']
    assert copy['modidx']['diffaug.native_fixtures'] == ['diffaug.native_fixtures._fx_shapes'], copy['modidx']
    # prepare knows it: its choices, --help, a native download through the stage's function and through the runner
    assert ran['prepare --help'][0] == 0 and 'waterbirds, shapes' in ran['prepare --help'][1], ran['prepare --help']
    assert "did you mean 'shapes'" in refused(ran['source=shape'])
    assert copy['out']['shapes split'] == [['circle', 'square', 'triangle'], 'shape', {'circle': 1, 'square': 1, 'triangle': 1},
                                           {'circle': 2, 'square': 2, 'triangle': 2}], copy['out']['shapes split']
    # tests/test_importers.py runs every importer through prepare: it fails until it knows the new one, then holds
    before = {t: ran[f'before {t}'] for t in IMPORTER_TESTS}
    assert before[IMPORTER_TESTS[0]].startswith('AssertionError') and before[IMPORTER_TESTS[2]].startswith('KeyError'), before
    t = repo/'tests'/'test_importers.py'
    edit_text(t, "{'cub', 'aircraft', 'pets', 'cars', 'flowers102', 'waterbirds'}", "{'cub', 'aircraft', 'pets', 'cars', 'flowers102', 'waterbirds', 'shapes'}")
    edit_text(t, "FIRST3 = {", "FIRST3 = {'shapes': ['circle', 'square', 'triangle'],\n          ")
    edit_text(t, "    with open(raw/'waterbird_complete95_forest2water2'/'metadata.csv'",
              "    if source == 'shapes':\n        with open(raw/'shapes'/'labels.csv', newline='', encoding='utf-8') as f: meta = list(csv.DictReader(f))\n"
              "        names = [l for l in (raw/'shapes'/'classes.txt').read_text().splitlines()]\n"
              "        return {Path(r['file']).stem: (r['split'], names.index(r['label']), None) for r in meta}\n"
              "    with open(raw/'waterbird_complete95_forest2water2'/'metadata.csv'")
    edit_text(t, "'flowers102': 'flower'}[source]", "'flowers102': 'flower', 'shapes': 'shape'}[source]")
    passed(in_copy(repo, own_tests(*IMPORTER_TESTS))[0], *IMPORTER_TESTS)
