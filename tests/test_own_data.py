"""Your data, your model (issue 16): a user's folder through the shell path (`python -m diffaug.pipeline setup --folder`
+ `dvc exp run`) and the Python path (`diffaug.augment.augment_folder`), which must write the same synthetic set; a
Hugging Face `datasets` dataset as a source; every error before any work, in one line."""
import csv, json, os, subprocess, sys, time, warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import copy_working_tree, run_env

PY = sys.executable
DVC = Path(PY).parent/'dvc'
# tiny model, few steps: the whole Diff-II chain in seconds
FAST = {'concepts': {'steps': 4, 'batch_size': 2, 'checkpoint_every': 4},
        'inversion': {'steps': 4, 'check_images': 0},
        'interpolation': {'steps': 4, 'expansion': 2, 'batch_size': 4}}
CLASSES = {'Blue/Jay ☃': ('blue jay', 3), 'wren (juvenile)': ('wren (juvenile)', 2), 'Ångström tern': ('tern', 1)}


def write_folder(root: Path) -> Path:
    """A user's folder: odd class names (one with '/', named through dataset.json), a one-image class, a CMYK JPEG,
    a nested sub-folder and a hidden file."""
    rng = np.random.default_rng(0)
    for i, (name, (folder, n)) in enumerate(CLASSES.items()):
        d = root/folder; d.mkdir(parents=True)
        for j in range(n):
            a = (rng.random((40, 40, 3)) * 60 + np.array([200 * (i == 0), 150 * (i == 1), 180 * (i == 2)])).clip(0, 255).astype('uint8')
            im = Image.fromarray(a)
            if i == 1 and j == 1: (d/'sub').mkdir(); im.convert('CMYK').save(d/'sub'/'cmyk photo.jpg', quality=95)
            else: im.save(d/f'img {j}.png')
    (root/'blue jay'/'.DS_Store').write_bytes(b'\0junk')
    (root/'dataset.json').write_text(json.dumps({'metaclass': 'bird', 'classes': [{'name': k, 'folder': f} for k, (f, _) in CLASSES.items()]}), encoding='utf-8')
    return root


def sh(cmd, cwd, env, timeout=900):
    t = time.time()
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    print(f"$ {' '.join(map(str, cmd))}  ({time.time() - t:.0f} s, exit {r.returncode})")
    assert r.returncode == 0, f"{cmd} failed ({r.returncode}):\n--- stdout\n{r.stdout[-4000:]}\n--- stderr\n{r.stderr[-4000:]}"
    return r


def read_set(d: Path) -> dict:
    "Everything a synthetic set holds that does not name a path: files, pixels, metadata rows, parameters."
    d = Path(d)
    files = sorted(p.relative_to(d).as_posix() for p in d.rglob('*') if p.is_file())
    pixels = {f: np.asarray(Image.open(d/f).convert('RGB')) for f in files if f.endswith('.png')}
    rows = list(csv.DictReader(open(d/'metadata.csv', encoding='utf-8')))
    info = json.loads((d/'info.json').read_text(encoding='utf-8'))
    info['params'] = {k: v for k, v in info['params'].items() if k not in ('model', 'concepts', 'inversions', 'split')}
    return dict(files=files, pixels=pixels, rows=rows, info=info)


@pytest.mark.slow
def test_shell_and_python_paths_write_the_same_set(tmp_path):
    from diffaug.augment import augment_folder
    repo = copy_working_tree(tmp_path/'repo')
    genv = {**os.environ, 'GIT_AUTHOR_NAME': 't', 'GIT_AUTHOR_EMAIL': 't@t', 'GIT_COMMITTER_NAME': 't', 'GIT_COMMITTER_EMAIL': 't@t'}
    subprocess.run(['git', 'commit', '-qm', 'clone'], cwd=repo, check=True, env=genv)  # dvc exp run needs a commit, as in a clone
    folder = write_folder(tmp_path/'my birds')
    env = {**genv, **run_env(), 'PYTHONPATH': str(repo), 'OMP_NUM_THREADS': '1', 'DIFFAUG_QUIET': '1'}  # run_env's PATH: this venv's dvc
    r = subprocess.run([PY, '-c', 'import diffaug; print(diffaug.__file__)'], cwd=repo, env=env, capture_output=True, text=True)
    assert r.stdout.strip().startswith(str(repo)), r.stdout  # the copy's code runs, not the checkout's
    sets = [f'--set={s}.{k}={v}' for s, kv in FAST.items() for k, v in kv.items()]
    # 1. the shell path, as the README shows it
    r = sh([PY, '-m', 'diffaug.pipeline', 'setup', '--folder', folder, '--shots', '2', '--model', 'data/models/tiny-sd', '--name', 'my birds', *sets], repo, env)
    assert 'dvc exp run -n my-birds' in r.stdout and (repo/'params/own/my-birds.yaml').is_file()
    assert "single image" in r.stderr  # the one-image class: allowed, said
    for st in ('tiny_model', 'prepare', 'suffixes', 'concepts', 'inversion', 'interpolation'): assert f"Running stage '{st}'" in r.stdout, st
    assert "Running stage 'synthesis" not in r.stdout and "Running stage 'classification" not in r.stdout  # Diff-II alone
    assert f"the synthetic set is in data/synthetic/diff-ii" in r.stdout
    assert sorted(p.name for p in folder.rglob('*')) == sorted(p.name for p in write_folder(tmp_path/'again').rglob('*'))  # the user's folder untouched
    # 2. the Python path on the same folder, the same model and settings
    with warnings.catch_warnings(record=True):
        res = augment_folder(folder, tmp_path/'py'/'diff-ii', shots=2, model=str(repo/'data/models/tiny-sd'), settings=FAST)
    shell, py = read_set(repo/'data/synthetic/diff-ii'), read_set(res['out'])
    assert res['images'] == 2 * (2 + 2 + 1) == len(shell['pixels'])
    assert shell['files'] == py['files']
    assert shell['rows'] == py['rows']
    assert shell['info'] == py['info']
    assert all(np.array_equal(shell['pixels'][f], py['pixels'][f]) for f in shell['files'] if f.endswith('.png'))
    labels = {r['label'] for r in shell['rows']}
    assert labels == set(CLASSES) and shell['info']['params']['noise_fallback_classes'] == ['Ångström tern']
    assert [p.name for p in (repo/'data/dataset').rglob('*.jpg')] == ['sub__cmyk_photo.jpg']  # copied as it is (read as RGB)
    # 3. the set loads back with datasets' imagefolder loader
    datasets = pytest.importorskip('datasets')
    ds = datasets.load_dataset('imagefolder', data_dir=str(res['out']), split='train', cache_dir=str(tmp_path/'hf-cache'))
    assert ds.num_rows == res['images'] and set(ds['label']) == set(CLASSES)


def test_setup_refuses_bad_input_in_one_line(tmp_path, monkeypatch, capsys, repo_root):
    "Errors before any work: an empty class, an unreadable image, a model folder without its parts, no metaclass."
    from diffaug.augment import setup_main
    from diffaug.models import make_tiny_sd
    monkeypatch.chdir(tmp_path)
    tiny = make_tiny_sd(tmp_path/'tiny'); capsys.readouterr()
    prm = str(repo_root/'params.yaml')
    def err(folder, *extra):
        assert setup_main(['--folder', str(folder), '--model', str(tiny), '--params', prm, '--print', *extra]) == 2
        e = capsys.readouterr().err.strip().splitlines()
        assert len(e) == 1 and e[0].startswith('error: '), e
        return e[0]
    f = tmp_path/'f'; (f/'a').mkdir(parents=True); (f/'b').mkdir(); Image.new('RGB', (8, 8)).save(f/'a'/'0.png')
    assert 'holds no images' in err(f, '--metaclass', 'bird') and str(f/'b') in err(f, '--metaclass', 'bird')
    (f/'b'/'x.jpg').write_bytes(b'\xff\xd8 truncated'); assert 'x.jpg' in err(f, '--metaclass', 'bird')
    (f/'b'/'x.jpg').unlink(); Image.new('RGB', (8, 8)).save(f/'b'/'0.png')
    assert 'metaclass' in err(f)
    (tmp_path/'half').mkdir(); (tmp_path/'half'/'model_index.json').write_text('{}')
    assert 'lacks' in err(f, '--metaclass', 'bird', '--model', str(tmp_path/'half'))
    assert 'shots' in err(f, '--metaclass', 'bird', '--shots', 'some')
    assert 'did you mean' in err(f, '--metaclass', 'bird', '--set', 'concepts.step=3')
    assert not (tmp_path/'params').exists()  # nothing written
    # a good folder: the setup file is written and the command printed, nothing run
    assert setup_main(['--folder', str(f), '--metaclass', 'bird', '--model', str(tiny), '--params', prm, '--print']) == 0
    out = capsys.readouterr().out
    assert 'dvc exp run -n f ' in out and out.rstrip().endswith('interpolation') and (tmp_path/'params/own/f.yaml').is_file()
    from diffaug.params import setup_overrides
    flat = setup_overrides(tmp_path/'params/own/f.yaml', prm)  # a setup file like the paper's
    assert flat['prepare.source'] == 'folder' and flat['concepts.model'] == str(tiny) and flat['interpolation.steps'] == 25
    # the whole comparison: no target, a test split, the same model for every method, DA-Fusion's concepts kept
    assert setup_main(['--folder', str(f), '--metaclass', 'bird', '--model', str(tiny), '--params', prm, '--print', '--methods', 'all', '--name', 'cmp']) == 0
    assert capsys.readouterr().out.rstrip().split('\n')[-1].split()[-1] != 'interpolation'
    flat = setup_overrides(tmp_path/'params/own/cmp.yaml', prm)
    # the model once, in concepts (the compared methods' stages take it from there: the stage graph)
    assert flat['prepare.test'] == 'auto' and flat['concepts.model'] == str(tiny) and 'concepts_ti.recipe' not in flat
    assert 'synthesis.model' not in flat and 'concepts_ti.model' not in flat


def test_datasets_sources_and_augment(tmp_path, monkeypatch):
    "A `datasets` dataset saved to disk and a local imagefolder with splits are prepare sources; augment_folder takes one."
    datasets = pytest.importorskip('datasets')
    monkeypatch.setenv('HF_DATASETS_OFFLINE', '1')
    from diffaug.splits import load_split
    from diffaug.prepare import run_prepare
    from diffaug.augment import augment_folder
    from diffaug.models import make_tiny_sd
    rng = np.random.default_rng(1)
    ims = [Image.fromarray((rng.random((24, 24, 3)) * 255).astype('uint8')) for _ in range(5)]
    ims[2] = ims[2].convert('CMYK')
    names = ['Blue/Jay ☃', 'wren']
    feats = datasets.Features({'img': datasets.Image(), 'species': datasets.ClassLabel(names=names), 'note': datasets.Value('string')})
    datasets.Dataset.from_dict({'img': ims, 'species': [0, 0, 0, 1, 1], 'note': list('abcde')}, features=feats).save_to_disk(str(tmp_path/'hf'))
    r = run_prepare(source='datasets', raw=str(tmp_path/'hf'), root=str(tmp_path/'ds1'), metaclass='bird', kind='full', test='none', val_per_class=0)
    sp = load_split(r['split'])
    assert sp.classes == names and sp.counts('train') == {'Blue/Jay ☃': 3, 'wren': 2}
    # an imagefolder directory with train/test splits: the splits become the official partition
    for split, n in (('train', 2), ('test', 1)):
        for c in ('Blue Jay ☃', 'wren'):
            (tmp_path/'imf'/split/c).mkdir(parents=True)
            for j in range(n): ims[j].convert('RGB').save(tmp_path/'imf'/split/c/f'{j}.png')
    with pytest.warns(UserWarning, match='fewer than k=5'):  # 2 training images per class, 5 shots asked: said, not an error
        r = run_prepare(source='datasets', raw=str(tmp_path/'imf'), root=str(tmp_path/'ds2'), metaclass='bird', shots=5, val_per_class=0)
    sp = load_split(r['split'])
    assert sp.classes == ['Blue Jay ☃', 'wren'] and sp.counts('train') == {'Blue Jay ☃': 2, 'wren': 2} and len(sp.items('test')) == 2
    # the Python path from the saved dataset, and the result back through datasets
    tiny = make_tiny_sd(tmp_path/'tiny')
    with warnings.catch_warnings(record=True):
        res = augment_folder(tmp_path/'hf', tmp_path/'out', 'bird', shots='all', model=str(tiny), settings=FAST)
    ds = datasets.load_dataset('imagefolder', data_dir=res['out'], split='train', cache_dir=str(tmp_path/'cache'))
    assert ds.num_rows == res['images'] == 2 * 5 and sorted(set(ds['label'])) == sorted(names)
