"Each importer on a tiny fixture written in its dataset's native on-disk layout (downloads cannot run here)."
import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffaug.core import ParamError
from diffaug.files import ImageLoadError
from diffaug.data import Dataset, DatasetError
from diffaug.splits import load_split
from diffaug.importers import (IMPORTERS, WATERBIRD_GROUPS, import_aircraft, import_cars, import_cub, import_flowers102, import_pets,
                               import_waterbirds)
from diffaug.native_fixtures import write_native_fixture
from diffaug.prepare import PrepareConfig, run_prepare


def _jpg(path, v):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new('RGB', (10, 8), (v * 37 % 256, v * 91 % 256, 120)).save(path, quality=95)


def _lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(''.join(l + '\n' for l in lines), encoding='utf-8')


def _check(ds, split_path, classes, train, test, val=None):
    "The dataset round-trips from disk and the official split file agrees with the fixture."
    assert ds.classes == classes
    assert Dataset.from_folder(ds.root).classes == classes
    sp = load_split(split_path)
    assert sp.kind == 'full' and sp.classes == classes and sp.info['test'] == 'official'
    assert sp.counts('train') == dict(zip(classes, train))
    assert sp.counts('test') == dict(zip(classes, test))
    if val is not None: assert sp.counts('val') == dict(zip(classes, val))
    for s in ('train', 'val', 'test'):
        for p in sp.paths(s): assert p.is_file()
    return sp


# ---------------------------------------------------------------- CUB-200-2011
def write_cub(raw, names=('001.Black_footed_Albatross', '002.Ångström_Tern', '003.Le_Conte_Sparrow'), n=3, bad=None):
    b = raw/'CUB_200_2011'; imgs, labs, tts, k = [], [], [], 0
    for ci, nm in enumerate(names):
        for j in range(n):
            k += 1; rel = f'{nm}/{nm[4:]}_{j:04d}.jpg'; _jpg(b/'images'/rel, k)
            imgs.append(f'{k} {rel}'); labs.append(f'{k} {ci + 1}'); tts.append(f'{k} {int(j < n - 1)}')
    if bad: (b/'images'/imgs[bad].split()[1]).write_bytes(b'\xff\xd8\xff\xe0 truncated')
    _lines(b/'classes.txt', [f'{i + 1} {nm}' for i, nm in enumerate(names)])
    _lines(b/'images.txt', imgs); _lines(b/'image_class_labels.txt', labs); _lines(b/'train_test_split.txt', tts)
    return b


def test_cub(tmp_path):
    write_cub(tmp_path/'raw')
    ds = import_cub(tmp_path/'raw', tmp_path/'cub', split_path=tmp_path/'split.json')
    _check(ds, tmp_path/'split.json', ['Black footed Albatross', 'Ångström Tern', 'Le Conte Sparrow'], [2, 2, 2], [1, 1, 1])
    assert ds.metaclass == 'bird'
    # the importer also accepts the dataset's own folder, and copies bytes unchanged
    ds2 = import_cub(tmp_path/'raw'/'CUB_200_2011', tmp_path/'cub2')
    src = tmp_path/'raw'/'CUB_200_2011'/'images'/'002.Ångström_Tern'/'Ångström_Tern_0001.jpg'
    assert (ds2.root/'001.Ångström_Tern'/'Ångström_Tern_0001.jpg').read_bytes() == src.read_bytes()


def test_cub_corrupt_image(tmp_path):
    write_cub(tmp_path/'raw', bad=4)
    with pytest.raises(ImageLoadError, match='Ångström_Tern_0001.jpg'):
        import_cub(tmp_path/'raw', tmp_path/'cub')
    assert not (tmp_path/'cub').exists()
    import warnings
    with warnings.catch_warnings(record=True):
        ds = import_cub(tmp_path/'raw', tmp_path/'cub', on_error='skip')
    assert ds.counts()['Ångström Tern'] == 2


def test_missing_raw_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match='images.txt'):
        import_cub(tmp_path, tmp_path/'out')
    with pytest.raises(FileNotFoundError, match='imagelabels.mat'):
        import_flowers102(tmp_path, tmp_path/'out')
    with pytest.raises(FileNotFoundError, match='metadata.csv'):
        import_waterbirds(tmp_path, tmp_path/'out')


# ---------------------------------------------------------------- FGVC-Aircraft
def test_aircraft(tmp_path):
    d = tmp_path/'raw'/'fgvc-aircraft-2013b'/'data'
    variants = ['707-320', 'F-16A/B', 'Falcon 2000', 'Ångström_Jet']
    _lines(d/'variants.txt', variants)
    k = 1000000
    for s, n in (('train', 2), ('val', 1), ('test', 1)):
        rows = []
        for v in variants:
            for _ in range(n):
                k += 1; _jpg(d/'images'/f'{k}.jpg', k); rows.append(f'{k} {v}')
        _lines(d/f'images_variant_{s}.txt', rows)
    ds = import_aircraft(tmp_path/'raw', tmp_path/'air', split_path=tmp_path/'s.json')
    _check(ds, tmp_path/'s.json', variants, [2] * 4, [1] * 4, val=[1] * 4)
    assert ds.folders[1] == '001.F-16A_B' and ds.metaclass == 'aircraft'


# ---------------------------------------------------------------- Oxford-IIIT Pet
def test_pets(tmp_path):
    b = tmp_path/'raw'/'oxford-iiit-pet'
    breeds = [('Abyssinian', 1, 1), ('american_bulldog', 2, 2), ('Ångström_cat', 1, 3)]  # (id prefix, species, class id)
    for s, idx in (('trainval', (1, 2, 3)), ('test', (4, 5))):
        rows = []
        for pre, sp, cid in breeds:
            for i in idx:
                _jpg(b/'images'/f'{pre}_{i}.jpg', cid * 10 + i); rows.append(f'{pre}_{i} {cid} {sp} {i}')
        _lines(b/'annotations'/f'{s}.txt', rows)
    ds = import_pets(tmp_path/'raw', tmp_path/'pets', split_path=tmp_path/'s.json')
    _check(ds, tmp_path/'s.json', ['Abyssinian', 'American Bulldog', 'Ångström Cat'], [3] * 3, [2] * 3)
    assert ds.metaclass == 'animal'  # both references prompt with 'a photo of a [V] animal'


# ---------------------------------------------------------------- Stanford Cars
def test_cars(tmp_path):
    from scipy.io import savemat
    b = tmp_path/'raw'/'stanford_cars'
    names = ['AM General Hummer SUV 2000', 'Ram C/V Cargo Van Minivan 2012', 'Škoda_Octavia Combi 2011']
    dt = np.dtype([('bbox_x1', 'O'), ('bbox_y1', 'O'), ('bbox_x2', 'O'), ('bbox_y2', 'O'), ('class', 'O'), ('fname', 'O')])
    (b/'devkit').mkdir(parents=True)
    savemat(b/'devkit'/'cars_meta.mat', {'class_names': np.array(names, dtype=object)})
    for s, n, mat in (('train', 3, b/'devkit'/'cars_train_annos.mat'), ('test', 1, b/'cars_test_annos_withlabels.mat')):
        recs, k = [], 0
        for c in range(len(names)):
            for _ in range(n):
                k += 1; f = f'{k:05d}.jpg'; _jpg(b/f'cars_{s}'/f, k + 50 * c); recs.append((1, 1, 9, 7, c + 1, f))
        savemat(mat, {'annotations': np.array(recs, dtype=dt)})
    ds = import_cars(tmp_path/'raw', tmp_path/'cars', split_path=tmp_path/'s.json')
    sp = _check(ds, tmp_path/'s.json', names, [3] * 3, [1] * 3)
    # train and test both have a file 00001.jpg: prefixed, so nothing collides
    assert {it['path'].split('/')[1] for it in sp.items('test')} >= {'test_00001.jpg'}


# ---------------------------------------------------------------- Oxford Flowers-102
def test_flowers102(tmp_path):
    from scipy.io import savemat
    b = tmp_path/'raw'/'flowers-102'
    labels = [1, 1, 1, 1, 3, 3, 3, 3, 2, 2, 2, 2]  # 1-based class per image id 1..12
    for i in range(1, 13): _jpg(b/'jpg'/f'image_{i:05d}.jpg', i)
    savemat(b/'imagelabels.mat', {'labels': np.array([labels])})
    savemat(b/'setid.mat', {'trnid': np.array([[1, 2, 5, 6, 9, 10]]), 'valid': np.array([[3, 7, 11]]), 'tstid': np.array([[4, 8, 12]])})
    ds = import_flowers102(tmp_path/'raw', tmp_path/'fl', split_path=tmp_path/'s.json')
    names = ['pink primrose', 'hard-leaved pocket orchid', 'canterbury bells']
    _check(ds, tmp_path/'s.json', names, [2] * 3, [1] * 3, val=[1] * 3)
    odd = ['Ångström/Rose', 'snap_dragon', 'Sweet Pea']
    ds2 = import_flowers102(tmp_path/'raw'/'flowers-102', tmp_path/'fl2', class_names=odd)
    assert Dataset.from_folder(ds2.root).classes == odd


def _write_flowers(b, sizes):
    "Flowers-102 in its native layout: `sizes[c]` images of class c+1, official split 1 train / 1 val / rest test per class."
    from scipy.io import savemat
    labels, trn, val, tst = [], [], [], []
    for c, n in enumerate(sizes):
        for k in range(n):
            labels.append(c + 1); i = len(labels); _jpg(b/'jpg'/f'image_{i:05d}.jpg', i)
            (trn if k == 0 else val if k == 1 else tst).append(i)
    savemat(b/'imagelabels.mat', {'labels': np.array([labels])})
    savemat(b/'setid.mat', {'trnid': np.array([trn]), 'valid': np.array([val]), 'tstid': np.array([tst])})


@pytest.mark.parametrize('imbalance_factor', [100, 10])
def test_flower_lt_follows_diffmix(tmp_path, imbalance_factor):
    "Flower-LT as Diff-Mix builds it: each class cut 50/50 (official split ignored), classes ranked by pool size, "
    "the class at rank r keeps max(1, int(n_avg * f^(r/(K-2)))) of its first half, the second half is the test set."
    sizes = [9, 40, 13, 6, 31, 21]
    _write_flowers(tmp_path/'raw'/'flowers-102', sizes)
    r = run_prepare(source='flowers102', raw=str(tmp_path/'raw'), root=str(tmp_path/'fl'), split_path=str(tmp_path/'s.json'),
                    kind='long-tail', imbalance_factor=imbalance_factor, test='half', val_per_class=0, verify_images=False)
    sp = load_split(r['split'])
    # Diff-Mix's rule, written out independently of diffaug's code
    pool = {c: n // 2 for c, n in zip(sp.classes, sizes)}                     # np.array_split(perm, [int(0.5 * n)])[0]
    ranked = sorted(sp.classes, key=lambda c: -pool[c])                       # sorted(..., key=len, reverse=True); no ties here
    K, n_avg, f = len(sizes), sum(pool.values()) / len(sizes), 1 / imbalance_factor
    want = {c: max(int(n_avg * f ** (r / (K - 2.0))), 1) for r, c in enumerate(ranked)}
    assert sp.counts('train') == want
    assert sp.counts('test') == {c: n - n // 2 for c, n in zip(sp.classes, sizes)}   # the other half, whole
    assert sp.counts('val') == {c: 0 for c in sp.classes}
    assert sp.info['rank'] == ranked and sp.info['class_order'] == 'size' and sp.info['test'] == 'half'
    train, test = {it['path'] for it in sp.items('train')}, {it['path'] for it in sp.items('test')}
    assert not train & test and sp.metaclass == 'flower'
    # the official split would give a pool of 1 image per class: Flower-LT could not have a tail
    off = load_split(run_prepare(source='flowers102', raw=str(tmp_path/'raw'), root=str(tmp_path/'fl2'), split_path=str(tmp_path/'o.json'),
                                 kind='long-tail', imbalance_factor=imbalance_factor, test='official', verify_images=False)['split'])
    assert set(off.counts('train').values()) == {1}


# ---------------------------------------------------------------- Waterbirds
def test_waterbirds(tmp_path):
    b = tmp_path/'raw'/'waterbird_complete95_forest2water2'
    rows, k = [], 0
    spec = [('001.Black_footed_Albatross', 1), ('002.Ångström_Tern', 1), ('003.Le_Conte_Sparrow', 0)]
    for folder, y in spec:
        for place in (0, 1):
            for split in (0, 2):
                k += 1; rel = f'{folder}/{folder[4:]}_{k:04d}.jpg'; _jpg(b/rel, k)
                rows.append({'img_id': k, 'img_filename': rel, 'y': y, 'split': split, 'place': place, 'place_filename': f'/x/{k}.jpg'})
    with open(b/'metadata.csv', 'w', newline='', encoding='utf-8') as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0])); w.writeheader(); w.writerows(rows)
    ds = import_waterbirds(tmp_path/'raw', tmp_path/'wb', split_path=tmp_path/'s.json')
    sp = _check(ds, tmp_path/'s.json', ['Black footed Albatross', 'Ångström Tern', 'Le Conte Sparrow'], [2] * 3, [2] * 3)
    groups = sorted((it['label'], it['group']['bird'], it['group']['place'], it['group']['group']) for it in sp.items('test'))
    assert groups == [('Black footed Albatross', 'waterbird', 'land', 2), ('Black footed Albatross', 'waterbird', 'water', 3),
                      ('Le Conte Sparrow', 'landbird', 'land', 0), ('Le Conte Sparrow', 'landbird', 'water', 1),
                      ('Ångström Tern', 'waterbird', 'land', 2), ('Ångström Tern', 'waterbird', 'water', 3)]
    assert all(WATERBIRD_GROUPS[it['group']['group']] == f"{it['group']['bird']}/{it['group']['place']}" for it in sp.items('test'))


# ---------------------------------------------------------------- through the prepare stage
def test_prepare_with_importer(tmp_path):
    write_cub(tmp_path/'raw', n=4)
    r = run_prepare(source='cub', raw=str(tmp_path/'raw'), root=str(tmp_path/'data'/'cub'),
                    split_path=str(tmp_path/'data'/'split.json'), shots=2, seed=0)
    assert r['split'] == str(tmp_path/'data'/'split.json') and r['source'] == 'cub' and r['classes'] == 3
    sp = load_split(r['split'])
    assert sp.counts('train') == {c: 2 for c in sp.classes} and sp.counts('test') == {c: 1 for c in sp.classes}
    assert load_split(tmp_path/'data'/'split.json').root == (tmp_path/'data'/'cub')
    assert set(IMPORTERS) == {'cub', 'aircraft', 'pets', 'cars', 'flowers102', 'waterbirds'}


@pytest.mark.parametrize('source', sorted(IMPORTERS))
def test_prepare_needs_the_raw_download_folder(tmp_path, source):
    with pytest.raises(ParamError, match='raw=None'):
        run_prepare(source=source, root=str(tmp_path/'ds'))
    with pytest.raises(ParamError, match='raw=.*not found'):
        run_prepare(source=source, raw=str(tmp_path/'nothing'), root=str(tmp_path/'ds'))
    assert PrepareConfig(source=source, raw=str(tmp_path/'nothing'), root='ds').check(files=False).source == source
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- native-layout fixtures through the prepare stage
# The names below are the datasets' own first classes, written out here (not read from diffaug), as each importer must
# name them: CUB's classes.txt folders, FGVC-Aircraft's variants.txt, Pet's breeds as torchvision names them, Cars'
# cars_meta.mat, torchvision's Flowers-102 list; Waterbirds: waterbird and landbird species alternately (001, 004, 002).
FIRST3 = {'cub': ['Black footed Albatross', 'Laysan Albatross', 'Sooty Albatross'],
          'aircraft': ['707-320', '727-200', '737-200'],
          'pets': ['Abyssinian', 'American Bulldog', 'American Pit Bull Terrier'],
          'cars': ['AM General Hummer SUV 2000', 'Acura RL Sedan 2012', 'Acura TL Sedan 2012'],
          'flowers102': ['pink primrose', 'hard-leaved pocket orchid', 'canterbury bells'],
          'waterbirds': ['Black footed Albatross', 'Laysan Albatross', 'Groove billed Ani']}
HAS_VAL = {'aircraft', 'flowers102', 'waterbirds'}


def _official(source, raw):
    "{image file stem: (official partition, class index, place or None)}, read straight from the native files."
    from scipy.io import loadmat
    rows = lambda p: [l.split(maxsplit=1) for l in p.read_text(encoding='utf-8').splitlines()]
    if source == 'cub':
        b = raw/'CUB_200_2011'; lab, tt = dict(rows(b/'image_class_labels.txt')), dict(rows(b/'train_test_split.txt'))
        return {Path(p).stem: ({'1': 'train', '0': 'test'}[tt[i]], int(lab[i]) - 1, None) for i, p in rows(b/'images.txt')}
    if source == 'aircraft':
        d = raw/'fgvc-aircraft-2013b'/'data'; variants = d.joinpath('variants.txt').read_text().splitlines()
        return {i: (s, variants.index(v), None) for s in ('train', 'val', 'test') for i, v in rows(d/f'images_variant_{s}.txt')}
    if source == 'pets':
        a = raw/'oxford-iiit-pet'/'annotations'
        return {l.split()[0]: (s, int(l.split()[1]) - 1, None) for s, f in (('train', 'trainval'), ('test', 'test'))
                for l in (a/f'{f}.txt').read_text().splitlines()}
    if source == 'cars':
        b = raw/'stanford_cars'
        return {f"{s}_{Path(str(a['fname'])).stem}": (s, int(a['class']) - 1, None)
                for s, m in (('train', b/'devkit'/'cars_train_annos.mat'), ('test', b/'cars_test_annos_withlabels.mat'))
                for a in loadmat(m, squeeze_me=True)['annotations']}
    if source == 'flowers102':
        b = raw/'flowers-102'; labels = loadmat(b/'imagelabels.mat', squeeze_me=True)['labels']; sid = loadmat(b/'setid.mat', squeeze_me=True)
        return {f'image_{i:05d}': (s, int(labels[i - 1]) - 1, None) for k, s in (('trnid', 'train'), ('valid', 'val'), ('tstid', 'test')) for i in sid[k]}
    with open(raw/'waterbird_complete95_forest2water2'/'metadata.csv', newline='', encoding='utf-8') as f: meta = list(csv.DictReader(f))
    folders = sorted({r['img_filename'].split('/')[0] for r in meta})
    return {Path(r['img_filename']).stem: (['train', 'val', 'test'][int(r['split'])], folders.index(r['img_filename'].split('/')[0]), int(r['place']))
            for r in meta}


@pytest.mark.parametrize('source', sorted(IMPORTERS))
def test_native_fixture_through_prepare(tmp_path, source):
    "The prepare stage on each dataset's native layout: its first classes in order with their real names, a few shots "
    "drawn from the official train partition only, the official test (and val) partitions whole, every label right."
    raw = write_native_fixture(source, tmp_path/'raw'/source, n_classes=3, per_class=4, seed=1)
    r = run_prepare(source=source, raw=str(raw), root=str(tmp_path/'data'/source), split_path=str(tmp_path/'split.json'), shots=2, seed=0)
    n_parts = 3 if source in HAS_VAL else 2
    assert (r['source'], r['classes'], r['images']) == (source, 3, 3 * 4 * n_parts)
    sp = load_split(r['split'])
    assert sp.classes == FIRST3[source] and sp.kind == 'few-shot' and sp.info['test'] == 'official'
    assert sp.counts('train') == {c: 2 for c in sp.classes} and sp.counts('test') == {c: 4 for c in sp.classes}
    assert sp.counts('val') == {c: 4 if source in HAS_VAL else 0 for c in sp.classes}
    off = _official(source, raw)
    assert len(off) == r['images']
    for s in ('train', 'val', 'test'):
        for it in sp.items(s):
            part, ci, place = off[Path(it['path']).stem]
            assert (part, sp.classes[ci]) == (s, it['label']), (s, it)
            if place is not None: assert it['group']['place_id'] == place
    for s in ('val', 'test'):  # the official partitions are kept whole
        assert sorted(Path(it['path']).stem for it in sp.items(s)) == sorted(k for k, (p, _, _) in off.items() if p == s)
    assert sp.metaclass == {'cub': 'bird', 'waterbirds': 'bird', 'aircraft': 'aircraft', 'pets': 'animal', 'cars': 'car', 'flowers102': 'flower'}[source]


def test_native_fixtures_read_by_torchvision(tmp_path):
    "torchvision's own parsers (the reference for these layouts) read the fixtures with the same classes and counts."
    from torchvision.datasets import FGVCAircraft, OxfordIIITPet, StanfordCars
    a = write_native_fixture('aircraft', tmp_path/'a', per_class=2)
    for s, n in (('train', 6), ('val', 6), ('trainval', 12), ('test', 6)):
        d = FGVCAircraft(a, s); assert d.classes == FIRST3['aircraft'] and len(d) == n
    assert FGVCAircraft(a, 'test', 'family').classes == ['Boeing 707', 'Boeing 727', 'Boeing 737']
    p = write_native_fixture('pets', tmp_path/'p', per_class=2)
    for s in ('trainval', 'test'):
        d = OxfordIIITPet(p, s, target_types=['category', 'segmentation']); assert d.classes == FIRST3['pets'] and len(d) == 6
        assert d[0][1][1].size == d[0][0].size  # the trimap matches its image
    c = write_native_fixture('cars', tmp_path/'c', per_class=2)
    for s in ('train', 'test'):
        d = StanfordCars(c, s); assert d.classes == FIRST3['cars'] and sorted(t for _, t in d._samples) == [0, 0, 1, 1, 2, 2]
    assert write_native_fixture('cars', tmp_path/'c2', per_class=2).joinpath('stanford_cars/devkit/cars_meta.mat').read_bytes() == \
        c.joinpath('stanford_cars/devkit/cars_meta.mat').read_bytes()  # the same arguments write the same bytes


def _drop_line(path, k):
    lines = path.read_text(encoding='utf-8').splitlines(keepends=True); del lines[k]; path.write_text(''.join(lines), encoding='utf-8')


def _cut_field(path, k, sep=None, n=1):
    "Line k without its last n fields."
    lines = path.read_text(encoding='utf-8').splitlines(keepends=True); lines[k] = lines[k].rstrip('\n').rsplit(sep, n)[0] + '\n'
    path.write_text(''.join(lines), encoding='utf-8')


def _resave_mat(path, key, f):
    from scipy.io import loadmat, savemat
    m = loadmat(path); savemat(path, {key: f(m[key])})


CORRUPT = {  # source: (what breaks the annotation, the error it must give)
    'cub': (lambda r: _drop_line(r/'CUB_200_2011'/'image_class_labels.txt', 2), r'image_class_labels.txt: no line for image 3 '),
    'aircraft': (lambda r: _drop_line(r/'fgvc-aircraft-2013b'/'data'/'variants.txt', 2), r"images_variant_train.txt: image \d+ has variant '737-200', which variants.txt does not list"),
    'pets': (lambda r: _cut_field(r/'oxford-iiit-pet'/'annotations'/'test.txt', 1), r'test.txt, line 2: expected'),
    'cars': (lambda r: _resave_mat(r/'stanford_cars'/'devkit'/'cars_meta.mat', 'class_names', lambda v: v[:, :2]), r'cars_meta.mat names 2 classes'),
    'flowers102': (lambda r: _resave_mat(r/'flowers-102'/'imagelabels.mat', 'labels', lambda v: v[:, :-1]), r'setid.mat: \w+ lists image 27, but .*imagelabels.mat labels 26 images'),
    'waterbirds': (lambda r: _cut_field(r/'waterbird_complete95_forest2water2'/'metadata.csv', 5, ',', 2), r'metadata.csv, line 6: expected'),
}


@pytest.mark.parametrize('source', sorted(CORRUPT))
def test_native_fixture_with_a_corrupt_annotation(tmp_path, source):
    "A missing line or field in an annotation file: one DatasetError naming the file, and no dataset root written."
    raw = write_native_fixture(source, tmp_path/'raw', n_classes=3, per_class=3)
    corrupt, message = CORRUPT[source]
    corrupt(raw)
    with pytest.raises(DatasetError, match=message):
        run_prepare(source=source, raw=str(raw), root=str(tmp_path/'ds'), shots=2)
    assert not (tmp_path/'ds').exists() and not (tmp_path/'split.json').exists()
