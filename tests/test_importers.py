"Each importer on a tiny fixture written in its dataset's native on-disk layout (downloads cannot run here)."
import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffaug.core import ParamError
from diffaug.files import ImageLoadError
from diffaug.data import Dataset, load_split
from diffaug.importers import (IMPORTERS, WATERBIRD_GROUPS, import_aircraft, import_cars, import_cub, import_flowers102, import_pets,
                               import_waterbirds)
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
