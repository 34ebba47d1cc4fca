"Cross-module guarantees of diffaug.data, .splits, .toy, .synthetic and .prepare: byte-stable splits, bad input, odd class names, resumable synthetic sets."
import json, multiprocessing as mp, os, re, shutil, warnings
from pathlib import Path

import pytest
from PIL import Image

from diffaug.core import ParamError
from diffaug.files import ImageLoadError, scratch_dir
from diffaug.data import Dataset, DatasetError, class_folder, write_dataset
from diffaug.splits import few_shot_split, full_split, load_split, long_tail_split, save_split
from diffaug.prepare import PrepareConfig, run_prepare
from diffaug.synthetic import SyntheticSet, SyntheticSetWriter, read_metadata_csv
from diffaug.toy import make_toy_dataset, toy_image

ODD = ['Black/White Warbler', 'Ångström Tern', 'snake_case_bird', 'Ram C/V 2012', 'Œil-de-bœuf ☃']


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    return make_toy_dataset(tmp_path_factory.mktemp('toy')/'ds', n_classes=5, n_per_class=10, size=16)


def _img(v): return Image.new('RGB', (8, 8), (v % 256, (3*v) % 256, 0))


@pytest.mark.parametrize('builder', [lambda ds, s: few_shot_split(ds, 3, seed=s, val_per_class=1),
                                     lambda ds, s: long_tail_split(ds, 10, seed=s, test_per_class=2),
                                     lambda ds, s: full_split(ds, seed=s, test_per_class=3)])
def test_split_files_byte_identical_per_seed(toy, tmp_path, builder):
    a = save_split(builder(toy, 0), tmp_path/'a.json').read_bytes()
    b = save_split(builder(toy, 0), tmp_path/'b.json').read_bytes()
    c = save_split(builder(toy, 1), tmp_path/'c.json').read_bytes()
    assert a == b
    assert a != c


def test_split_subsets_disjoint_and_ids_unique(toy):
    sp = few_shot_split(toy, 3, seed=0, val_per_class=2)
    ids = [it['id'] for s in ('train', 'val', 'test') for it in sp.items(s)]
    assert len(ids) == len(set(ids)) == toy.n_images
    assert set(sp.counts('train').values()) == {3} and set(sp.counts('val').values()) == {2}


def test_toy_dataset_is_deterministic(tmp_path):
    def digest(root): return [(p.relative_to(root).as_posix(), p.read_bytes()) for p in sorted(Path(root).rglob('*')) if p.is_file()]
    make_toy_dataset(tmp_path/'a', n_classes=3, n_per_class=4, size=16, seed=5)
    make_toy_dataset(tmp_path/'b', n_classes=3, n_per_class=4, size=16, seed=5)
    make_toy_dataset(tmp_path/'c', n_classes=3, n_per_class=4, size=16, seed=6)
    assert digest(tmp_path/'a') == digest(tmp_path/'b')
    assert digest(tmp_path/'a') != digest(tmp_path/'c')


def test_odd_class_names_round_trip(tmp_path):
    ds = write_dataset(tmp_path/'ds', ODD, [(i % len(ODD), _img(i), f'{i:03d}') for i in range(3*len(ODD))], 'bird')
    assert Dataset.from_folder(tmp_path/'ds').classes == ODD
    assert all('/' not in f and ' ' not in f for f in ds.folders)
    save_split(few_shot_split(ds, 2, seed=0), tmp_path/'splits'/'s.json')
    sp = load_split(tmp_path/'splits'/'s.json')
    assert sp.classes == ODD and sp.counts('train') == {c: 2 for c in ODD}
    assert sp.classes[0] == 'Black/White Warbler'
    w = SyntheticSetWriter(tmp_path/'syn', sp.classes, 'm')
    for i, c in enumerate(ODD): w.write(_img(i), c, 'x', soft_label={c: 0.6, ODD[0]: 0.4} if i else None)
    w.finalize()
    ss = SyntheticSet(tmp_path/'syn')
    assert [it.label for it in ss] == ODD
    assert ss[1].soft_label == {'Ångström Tern': 0.6, 'Black/White Warbler': 0.4}
    from torchvision.datasets import ImageFolder
    f = ImageFolder(tmp_path/'syn')
    assert len(f) == len(ODD) and f.classes == [class_folder(i, c) for i, c in enumerate(ODD)]


def test_corrupt_image_named_or_counted(tmp_path):
    root = tmp_path/'raw'
    for c in ('a', 'b'):
        (root/c).mkdir(parents=True)
        for i in range(3): _img(i).save(root/c/f'{i}.png')
    (root/'b'/'bad.jpg').write_bytes(b'\xff\xd8\xff garbage')
    with pytest.raises(ImageLoadError, match='bad.jpg'):
        run_prepare(source='folder', root=str(root), metaclass='bird', split_path=str(tmp_path/'s.json'), shots=2)
    assert not (tmp_path/'s.json').exists()
    with warnings.catch_warnings(record=True):
        sp = load_split(run_prepare(source='folder', root=str(root), metaclass='bird', split_path=str(tmp_path/'s.json'), shots=2, on_error='skip')['split'])
    assert sp.info['skipped_unreadable'] == ['b/bad.jpg']
    assert 'b/bad.jpg' not in [it['path'] for s in ('train', 'test') for it in sp.items(s)]


def test_empty_class_folder_is_an_error(tmp_path):
    (tmp_path/'raw'/'full').mkdir(parents=True); (tmp_path/'raw'/'empty').mkdir()
    _img(0).save(tmp_path/'raw'/'full'/'0.png')
    with pytest.raises(DatasetError, match='empty'):
        Dataset.from_folder(tmp_path/'raw', 'bird')


@pytest.mark.parametrize('kw,name', [(dict(shots=0), 'shots=0'), (dict(kind='long-tail', imbalance_factor=0.5), 'imbalance_factor=0.5'),
                                     (dict(val_per_class=-1), 'val_per_class=-1'), (dict(source='cub'), 'raw=None'),
                                     (dict(source='cub', raw='/no/such/download'), 'raw='), (dict(toy_classes=0), 'toy_classes=0'),
                                     (dict(source='imagenet'), "source='imagenet'"), (dict(kind='few'), "kind='few'"),
                                     (dict(test='official-ish'), 'test='), (dict(on_error='ignore'), "on_error='ignore'"),
                                     (dict(seed=1.5), 'seed=1.5'), (dict(shots='5'), "shots='5'"), (dict(overwrite='yes'), "overwrite='yes'"),
                                     (dict(world_pool=0), 'world_pool=0'), (dict(lt_rule='ldam'), "lt_rule='ldam'"),
                                     (dict(source='folder', root='/no/such/folder'), "root='/no/such/folder'")])
def test_invalid_params_fail_before_any_work(tmp_path, kw, name):
    kw = {'root': str(tmp_path/'ds'), 'split_path': str(tmp_path/'s.json'), **kw}
    with pytest.raises(ParamError, match=re.escape(name)):
        PrepareConfig.from_params(kw).check()
    with pytest.raises(ParamError, match=re.escape(name)):
        run_prepare(**kw)
    assert list(tmp_path.iterdir()) == []


def test_unknown_key_names_the_nearest(tmp_path):
    for bad, near in (('shot', 'shots'), ('sourse', 'source'), ('imbalance', 'imbalance_factor'), ('splitpath', 'split_path')):
        with pytest.raises(ParamError, match=f"unknown parameter '{bad}'; did you mean '{near}'"):
            PrepareConfig.from_params({bad: 1})
        with pytest.raises(ParamError, match=f"did you mean '{near}'"):
            run_prepare(root=str(tmp_path/'ds'), **{bad: 1})
    assert list(tmp_path.iterdir()) == []


def test_required_paths_and_no_demo_fallback(tmp_path):
    with pytest.raises(ParamError, match='root=None.*required'):
        run_prepare()  # no toy dataset in a temp folder behind the user's back
    PrepareConfig(source='cub', raw=str(tmp_path/'later'), root=str(tmp_path/'ds')).check(files=False)  # a setup before its download
    with pytest.raises(ParamError, match='raw'):
        PrepareConfig(source='cub', raw=str(tmp_path/'later'), root=str(tmp_path/'ds')).check()
    (tmp_path/'img'/'a').mkdir(parents=True); _img(0).save(tmp_path/'img'/'a'/'0.png')
    with pytest.raises(ParamError, match='metaclass'):  # a folder without dataset.json: its metaclass must be given
        PrepareConfig(source='folder', root=str(tmp_path/'img')).check()
    PrepareConfig(source='folder', root=str(tmp_path/'img'), metaclass='bird').check()


def test_failed_stage_keeps_previous_outputs(tmp_path):
    run_prepare(root=str(tmp_path/'ds'), split_path=str(tmp_path/'s.json'), toy_per_class=4, toy_size=16, shots=2)
    before = (tmp_path/'s.json').read_bytes(), sorted(p.name for p in (tmp_path/'ds').rglob('*'))
    with pytest.raises(ParamError):
        run_prepare(root=str(tmp_path/'ds'), split_path=str(tmp_path/'s.json'), kind='long-tail', imbalance_factor=-1)
    with pytest.raises(ValueError):  # a failure mid-write: a class that receives no image
        write_dataset(tmp_path/'ds', ['a', 'b'], [(0, _img(0), 'x')], 'bird', overwrite=True)
    assert ((tmp_path/'s.json').read_bytes(), sorted(p.name for p in (tmp_path/'ds').rglob('*'))) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]


def test_class_with_one_image_works(tmp_path):
    items = [(0, _img(i), f'{i}') for i in range(8)] + [(1, _img(99), 'only')]
    ds = write_dataset(tmp_path/'ds', ['many', 'one'], items, 'bird')
    with warnings.catch_warnings(record=True):
        fs = few_shot_split(ds, 5, seed=0, val_per_class=1)
    assert fs.counts('train') == {'many': 5, 'one': 1} and fs.counts('val')['one'] == 0
    lt = long_tail_split(ds, 100, seed=0, test_per_class=2, val_per_class=1)
    assert lt.counts('train')['one'] == 1 and lt.counts('test')['one'] == 0


def test_missing_images_in_split_named(tmp_path, toy):
    sp = few_shot_split(toy, 2, seed=0)
    d = sp.to_dict(); d['items']['train'][0]['path'] = 'no/such.png'
    (tmp_path/'s.json').write_text(json.dumps(d))
    with pytest.raises(FileNotFoundError, match='such.png'):
        load_split(tmp_path/'s.json')
    (tmp_path/'m.json').write_text('{"items": {}}')
    with pytest.raises(ValueError, match='malformed'):
        load_split(tmp_path/'m.json')


def _work(n): return [(f'{i:05d}', i % 3, toy_image(i % 3, 1, i, 16)) for i in range(n)]


def _shard(out, classes, rank, world):
    w = SyntheticSetWriter(out, classes, 'demo', info={'p': 1})
    for k, (name, c, im) in enumerate(_work(12)):
        if k % world == rank and not w.has(name, c): w.write(im, c, name, source_ids=[f'r{k}', 'x;y'], strength=0.5, seed=1)


def test_synthetic_set_resume_and_order_independent(tmp_path):
    classes = ['Red Circle', 'Blue/Square', 'green_triangle']
    # A: one pass, in order
    _shard(tmp_path/'a', classes, 0, 1); SyntheticSetWriter(tmp_path/'a', classes, 'demo', info={'p': 1}).finalize()
    # B: reversed order, "killed" after 5 items, one PNG written without its row, then resumed
    wb = SyntheticSetWriter(tmp_path/'b', classes, 'demo', info={'p': 1})
    work = list(reversed(_work(12)))
    for name, c, im in work[:5]: wb.write(im, c, name, source_ids=[f'r{int(name)}', 'x;y'], strength=0.5, seed=1)
    name, c, im = work[5]; im.save(wb.dir/wb.file_name(name, c))  # crash between image and row
    assert wb.dir == scratch_dir(tmp_path/'b') and not (tmp_path/'b').exists()  # unfinished work lives beside the set
    assert not wb.has(name, c)
    _shard(tmp_path/'b', classes, 0, 1); wb.finalize()
    # C: two processes writing interleaved shards at once
    ctx = mp.get_context('fork')  # fork: no re-import of torch, seconds faster
    ps = [ctx.Process(target=_shard, args=(tmp_path/'c', classes, r, 2)) for r in range(2)]
    for p in ps: p.start()
    for p in ps: p.join(60); assert p.exitcode == 0
    SyntheticSetWriter(tmp_path/'c', classes, 'demo', info={'p': 1}).finalize()
    for f in ('metadata.csv', 'info.json'):
        assert (tmp_path/'a'/f).read_bytes() == (tmp_path/'b'/f).read_bytes() == (tmp_path/'c'/f).read_bytes()
    pngs = lambda d: [(p.relative_to(d), p.read_bytes()) for p in sorted(d.rglob('*.png'))]
    assert pngs(tmp_path/'a') == pngs(tmp_path/'b') == pngs(tmp_path/'c')
    ss = SyntheticSet(tmp_path/'a')
    assert len(ss) == 12 and ss[0].provenance['source_ids'] == 'r0;x;y'
    x, y = ss.torch_dataset(soft=True)[0]
    assert y.tolist() == [1.0, 0.0, 0.0]
    # adding after finalize keeps earlier rows
    w = SyntheticSetWriter(tmp_path/'a', classes, 'demo', info={'p': 1})
    assert w.has('00000', 0)
    w.write(_img(1), 2, 'extra'); w.finalize()
    assert len(SyntheticSet(tmp_path/'a')) == 13


def test_synthetic_set_reads_with_hf_imagefolder(tmp_path, monkeypatch):
    datasets = pytest.importorskip('datasets')  # a dev extra
    monkeypatch.setenv('HF_DATASETS_OFFLINE', '1')
    classes = ['Red Circle', 'Blue/Square', 'Ångström Tern']
    w = SyntheticSetWriter(tmp_path/'syn', classes, 'demo')
    for i in range(6): w.write(toy_image(i % 3, 0, i, 16), i % 3, f'{i:05d}', source_ids=['a', 'b'], strength=0.5)
    w.finalize()
    ds = datasets.load_dataset('imagefolder', data_dir=str(tmp_path/'syn'), split='train', cache_dir=str(tmp_path/'cache'))
    assert ds.num_rows == 6
    assert sorted(ds['label']) == sorted(classes * 2) and set(ds['source_ids']) == {'a;b'}
    assert ds[0]['image'].size == (16, 16)


# ---------------------------------------------------------------- the writer: resumable, refusing to mix, finished stays finished
CLS = ['Red Circle', 'Blue/Square', 'green_triangle', 'Ångström Tern']


def _files(d):
    d = Path(d)
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob('*')) if p.is_file()}


def _write_all(out, info, n=6, **kw):
    w = SyntheticSetWriter(out, CLS[:3], 'demo', info=info, **kw)
    for name, c, im in _work(n):
        if not w.has(name, c): w.write(im, c, name, seed=1, suffix_fraction=0.3)
    return w


def test_writer_resume_with_other_params_is_refused_naming_them(tmp_path):
    out = tmp_path/'set'
    w = SyntheticSetWriter(out, CLS[:3], 'demo', info={'strength': 0.5, 'seed': 1, 'steps': 25})
    name, c, im = _work(1)[0]; w.write(im, c, name)  # ... killed here: unfinished work in <out>.partial
    with pytest.raises(ParamError) as e:
        SyntheticSetWriter(out, CLS[:3], 'demo', info={'strength': 0.7, 'seed': 1, 'steps': 30})
    msg = str(e.value)
    assert 'strength: 0.5 there, 0.7 now' in msg and 'steps: 25 there, 30 now' in msg and 'seed' not in msg
    with pytest.raises(ParamError, match="method: 'demo' there, 'other' now"):
        SyntheticSetWriter(out, CLS[:3], 'other', info={'strength': 0.5, 'seed': 1, 'steps': 25})
    with pytest.raises(ParamError, match='classes'):
        SyntheticSetWriter(out, CLS, 'demo', info={'strength': 0.5, 'seed': 1, 'steps': 25})
    assert SyntheticSetWriter(out, CLS[:3], 'demo', info={'strength': 0.5, 'seed': 1, 'steps': 25}).has(name, c)  # same: resumed
    # restart discards the unfinished work
    w2 = SyntheticSetWriter(out, CLS[:3], 'demo', info={'strength': 0.7, 'seed': 1, 'steps': 30}, restart=True)
    assert not w2.has(name, c) and not scratch_dir(out).exists()
    # a finished set made with other parameters is refused too, unless restart (then replaced at finalize)
    _write_all(out, {'strength': 0.7}).finalize()
    with pytest.raises(ParamError, match=r'finished synthetic set made with other parameters \(strength: 0.7 there, 0.9 now\)'):
        SyntheticSetWriter(out, CLS[:3], 'demo', info={'strength': 0.9})
    _write_all(out, {'strength': 0.9}, restart=True).finalize()
    assert json.loads((out/'info.json').read_text())['params'] == {'strength': 0.9}
    # a folder that is not a finished set is never replaced silently
    (tmp_path/'other').mkdir(); (tmp_path/'other'/'keep.txt').write_text('mine')
    with pytest.raises(ParamError, match='not a finished synthetic set'):
        SyntheticSetWriter(tmp_path/'other', CLS[:3], 'demo')


def test_writer_killed_then_resumed_keeps_finished_images(tmp_path):
    out, info = tmp_path/'set', {'strength': 0.5}
    ref = _write_all(tmp_path/'ref', info, n=9); ref.finalize()
    w = SyntheticSetWriter(out, CLS[:3], 'demo', info=info)
    work = _work(9)
    for name, c, im in work[:4]: w.write(im, c, name, seed=1, suffix_fraction=0.3)
    sd = scratch_dir(out)
    name, c, im = work[4]; im.save(sd/w.file_name(name, c))               # killed between an image and its row
    (sd/w.folders[c]/'.00099.png.x.tmp').write_bytes(b'half')             # ... or in the middle of an atomic write
    kept = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sd.rglob('*.png')}
    shutil.rmtree(out, ignore_errors=True)                                # what `dvc repro` does to a stage's outputs
    w2 = SyntheticSetWriter(out, CLS[:3], 'demo', info=info)
    assert [w2.has(n, k) for n, k, _ in work] == [True] * 4 + [False] * 5
    written = 0
    for n, k, im in work:
        if not w2.has(n, k): w2.write(im, k, n, seed=1, suffix_fraction=0.3); written += 1
    assert written == 5
    for p, (ino, mt) in kept.items():
        if p.name != w.file_name(name, c).split('/')[1]: assert (p.stat().st_ino, p.stat().st_mtime_ns) == (ino, mt)  # not rewritten
    w2.finalize()
    assert _files(out) == _files(tmp_path/'ref') and not sd.exists()      # no leftovers, same bytes as one uninterrupted run
    assert read_rows(out)[0]['suffix_fraction'] == '0.3' and 'split_ratio' not in read_rows(out)[0]


def read_rows(d):
    return read_metadata_csv(Path(d)/'metadata.csv')


def test_finished_set_rerun_changes_no_byte(tmp_path):
    out, info = tmp_path/'set', {'strength': 0.5, 'sizes': (1, 2)}  # tuples compare as the lists info.json holds
    _write_all(out, info).finalize()
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino) for p in sorted(out.rglob('*')) if p.is_file()}
    w = _write_all(out, info)  # the same run again: everything is there
    assert w.finished and all(w.has(n, c) for n, c, _ in _work(6)) and not scratch_dir(out).exists()
    assert w.finalize() == out
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino) for p in sorted(out.rglob('*')) if p.is_file()} == before
    # an image deleted from the finished set is made again; the others come along unchanged
    gone = sorted(out.rglob('*.png'))[1]; data = before[gone][0]; gone.unlink()
    w = _write_all(out, info)
    assert not w.finished
    w.finalize()
    assert {p: p.read_bytes() for p in sorted(out.rglob('*')) if p.is_file()} == {p: b for p, (b, _, _) in before.items()}
    assert gone.read_bytes() == data and not scratch_dir(out).exists()


def test_imagefolder_reads_a_set_with_an_empty_class(tmp_path):
    from torchvision.datasets import ImageFolder
    w = SyntheticSetWriter(tmp_path/'set', CLS, 'demo', info={'p': 1})
    for i in range(6): w.write(_img(i), [0, 2, 3][i % 3], f'{i:05d}')
    w.write(_img(9), 1, 'dropped'); (w.dir/w.file_name('dropped', 1)).unlink()  # e.g. removed by a filter before finalize
    w.finalize()
    info = json.loads((tmp_path/'set'/'info.json').read_text())
    assert info['classes'] == CLS and info['counts'][CLS[1]] == 0 and info['n_images'] == 6
    assert [p.name for p in (tmp_path/'set'/class_folder(1, CLS[1])).iterdir()] == ['.keep']  # its folder, kept by a placeholder
    f = ImageFolder(tmp_path/'set', allow_empty=True)
    assert len(f) == 6 and f.classes == [class_folder(i, c) for i, c in enumerate(CLS)]
    assert sorted({i for _, i in f.samples}) == [0, 2, 3]  # ImageFolder's indices are the split's
    ss = SyntheticSet(tmp_path/'set')
    assert ss.classes == CLS and sorted({it.label_idx for it in ss}) == [0, 2, 3]  # label indices follow the split's classes


def test_run_items_drives_the_writer_resumably(tmp_path, monkeypatch):
    "diffaug.sampling.run_items as the synthesis stages use it: killed, resumed, rerun, an image deleted from the set."
    from diffaug.sampling import WorkItem, run_items
    monkeypatch.setenv('DIFFAUG_QUIET', '1')
    items = [WorkItem(f'{c}/{k}', c, f'{k:05d}') for c in CLS[:3] for k in range(3)]
    calls = []
    def render(batch):
        calls.append(len(batch))
        return [(toy_image(CLS.index(it.label), 2, int(it.name), 16), dict(seed=2, source_ids=[it.id])) for it in batch]
    out = tmp_path/'set'
    class Killed(Exception): pass
    class Dying(SyntheticSetWriter):
        n = 0
        def write(self, *a, **kw):
            Dying.n += 1
            if Dying.n == 5: raise Killed()
            return super().write(*a, **kw)
    with pytest.raises(Killed): run_items(items, render, Dying(out, CLS[:3], 'demo', info={'s': 1}), batch_size=4, cpu=True)
    assert not out.exists() and len(list(scratch_dir(out).rglob('*.png'))) == 4
    r = run_items(items, render, SyntheticSetWriter(out, CLS[:3], 'demo', info={'s': 1}), batch_size=4, cpu=True)
    assert (r['written'], r['skipped']) == (5, 4)  # the first batch was complete: skipped, not rendered
    full = _files(out)
    assert len(read_rows(out)) == 9 and not scratch_dir(out).exists()
    calls.clear()
    r = run_items(items, render, SyntheticSetWriter(out, CLS[:3], 'demo', info={'s': 1}), batch_size=4, cpu=True)
    assert (r['written'], r['rendered'], calls) == (0, 0, []) and _files(out) == full
    for p in sorted(out.rglob('*.png'))[:2]: p.unlink()
    r = run_items(items, render, SyntheticSetWriter(out, CLS[:3], 'demo', info={'s': 1}), batch_size=4, cpu=True)
    assert r['written'] == 2 and _files(out) == full
    with pytest.raises(ParamError, match="s: 1 there, 2 now"):
        run_items(items, render, SyntheticSetWriter(out, CLS[:3], 'demo', info={'s': 2}), batch_size=4, cpu=True)
