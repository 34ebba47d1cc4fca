"""The compared methods end to end on the tiny model: counts, labels, provenance, strengths, targets, the CLIP filter,
soft labels, resumption and sharding."""
import json, os, shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from diffaug.annotation import annotate, soft_label, soft_label_vector
from diffaug.core import ParamError
from diffaug.files import scratch_dir
from diffaug.splits import few_shot_split, load_split, save_split
from diffaug.synthetic import SyntheticSet, read_metadata_csv
from diffaug.toy import make_toy_dataset
from diffaug.method_table import METHODS, plan_items
from diffaug.methods import STRENGTH_KEYS, SynthesisConfig, run_synthesis, synthesize
from diffaug.fixtures import demo_concepts
from diffaug.models import load_sd, make_tiny_clip, make_tiny_sd

torch.set_num_threads(1)
os.environ.setdefault('DIFFAUG_QUIET', '1')
KW = dict(steps=3, batch_size=4, device='cpu', precision='fp32', cpu=True)


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp('methods')
    ds = make_toy_dataset(d/'toy', n_classes=3, n_per_class=3, size=32)
    sp = load_split(save_split(few_shot_split(ds, 2, seed=0, test='none'), d/'split.json'))
    tiny = make_tiny_sd(d/'tiny-sd')
    clip = make_tiny_clip(d/'tiny-clip')
    concepts = {r: demo_concepts(sp, tiny, d/f'concepts-{r}', r) for r in ('diff-mix', 'da-fusion')}
    return dict(dir=d, split=sp, model=tiny, clip=clip, concepts=concepts, pipe=load_sd(tiny, device='cpu', precision='fp32'))


def _run(env, method, out, clip_model=None, **kw):
    "`synthesize` with the shared pipeline (base-model methods) or the concepts; strengths given as keywords go to `per_method`; a callable `clip_model` classifies instead of CLIP."
    spec, clip = METHODS[method], env['clip'] if clip_model is None else clip_model
    over = {k: kw.pop(k) for k in STRENGTH_KEYS if k in kw}
    shared = {} if spec.concepts is None else dict(model=str(env['model']), concepts=env['concepts'])
    cfg = SynthesisConfig(method=method, split=str(env['split'].path), out=str(out), clip_model=None if callable(clip) else str(clip),
                          per_method={method: over} if over else {}, **shared, **{**KW, **kw})
    return synthesize(cfg, pipe=env['pipe'] if spec.concepts is None else None, classifier=clip if callable(clip) else None)


def _snapshot(folder):
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


@pytest.mark.parametrize('method', list(METHODS))
def test_every_method_writes_its_set(env, tmp_path, method):
    spec, sp = METHODS[method], env['split']
    r = _run(env, method, tmp_path/method, expansion=2)
    rows = read_metadata_csv(tmp_path/method/'metadata.csv')
    n_real = len(sp.items('train'))
    if spec.clip_filter:
        rej = read_metadata_csv(tmp_path/method/'rejected.csv') if (tmp_path/method/'rejected.csv').exists() else []
        assert len(rows) + len(rej) == 2 * n_real and r['filter']['kept'] == len(rows)
    else:
        assert len(rows) == 2 * n_real == r['written']
    ss = SyntheticSet(tmp_path/method)
    assert len(ss) == len(rows) and all(it.path.is_file() for it in ss)
    assert {x['method'] for x in rows} == {method}
    by_id = sp.by_id()
    for x in rows:
        assert x['seed'] == '0' and x['prompt'].startswith('a photo of a ') and x['prompt'].endswith(' bird')
        named = x['label'] in x['prompt']
        assert named == (spec.concepts is None), x['prompt']  # class names only for the base-model methods
        if spec.family == 'img2img':
            src = by_id[x['source_ids']]
            assert 0 < float(x['strength']) <= 1
            if spec.inter_class: assert x['target'] == x['label']
            else: assert x['target'] == '' and x['label'] == src['label']
        else:
            assert x['source_ids'] == '' and x['strength'] == '' and x['target'] == ''
    info = json.loads((tmp_path/method/'info.json').read_text())
    assert info['method'] == method and info['params']['expansion'] == 2


def test_strengths_and_targets(env, tmp_path):
    sp = env['split']
    plan = plan_items('da-fusion', sp, seed=3, expansion=20)
    assert {it.params['strength'] for it in plan} == {0.25, 0.5, 0.75, 1.0}
    _run(env, 'da-fusion', tmp_path/'daf', expansion=3)
    assert {float(x['strength']) for x in read_metadata_csv(tmp_path/'daf/metadata.csv')} <= {0.25, 0.5, 0.75, 1.0}
    _run(env, 'diff-mix', tmp_path/'dm', expansion=4)
    rows = read_metadata_csv(tmp_path/'dm/metadata.csv')
    assert {x['target'] for x in rows} == set(sp.classes)
    assert {x['strength'] for x in rows} == {'0.7'}
    mixed = plan_items('diff-mix', sp, expansion=20, strength_mode='random')
    assert {it.params['strength'] for it in mixed} == {0.3, 0.5, 0.7, 0.9}


def test_soft_label_formula():
    s, g = 0.7, 0.5
    assert soft_label(0, 2, s, g, 3).tolist() == [1 - s ** g, 0.0, s ** g]
    assert soft_label(0, 1, 0.3, 1.0, 2).tolist() == [1 - 0.3, 0.3]
    assert soft_label(0, 1, 1.0, 0.5, 2).tolist() == [0.0, 1.0]
    assert soft_label(1, 1, 0.7, 0.5, 2).tolist() == [0.0, 1.0]
    assert soft_label(0, 1, 0.5, 0.5, 2, scale=0.9).tolist() == [0.9 * (1 - 0.5 ** 0.5), 0.9 * 0.5 ** 0.5]


def test_annotated_translations_carry_diffmix_labels(env, tmp_path):
    sp = env['split']
    _run(env, 'real-mix', tmp_path/'rm', expansion=3, strength_mode='random')
    out = annotate(tmp_path/'rm', sp.path, tmp_path/'rm-annotated', gamma=0.5)
    by_id = sp.by_id(); c2i = sp.class_to_idx
    rows = read_metadata_csv(out/'metadata.csv')
    assert any(by_id[x['source_ids']]['label'] != x['label'] for x in rows)
    for x in rows:
        want = soft_label(c2i[by_id[x['source_ids']]['label']], c2i[x['target']], float(x['strength']), 0.5, len(sp.classes))
        assert soft_label_vector(x['soft_label'], sp.classes).tolist() == want.tolist()
    b = (out/'metadata.csv').read_bytes()
    annotate(tmp_path/'rm', sp.path, tmp_path/'rm-annotated', gamma=0.5)
    assert (out/'metadata.csv').read_bytes() == b


def test_real_filter_drops_what_its_classifier_rejects(env, tmp_path):
    sp = env['split']; bad = sp.classes[1]
    def clf(images):  # assigns every image to class 0
        p = np.zeros((len(images), len(sp.classes))); p[:, 0] = 1.0; return p
    r = _run(env, 'real-filter', tmp_path/'rf', expansion=2, clip_model=clf)
    kept = read_metadata_csv(tmp_path/'rf/metadata.csv'); rej = read_metadata_csv(tmp_path/'rf/rejected.csv')
    assert {x['label'] for x in kept} == {sp.classes[0]}
    assert {x['label'] for x in rej} == {bad, sp.classes[2]}
    assert not any((tmp_path/'rf'/x['file_name']).exists() for x in rej)
    assert r['filter'] == dict(kept=len(kept), rejected_now=len(rej), rejected_total=len(rej))
    # a second run makes nothing again and changes no byte
    snap = _snapshot(tmp_path/'rf')
    r2 = _run(env, 'real-filter', tmp_path/'rf', expansion=2, clip_model=clf)
    assert r2['rendered'] == 0 and _snapshot(tmp_path/'rf') == snap


class _Killed(Exception): pass


@pytest.mark.parametrize('method', ['da-fusion', 'real-mix', 'real-filter'])
def test_resumption_is_bit_identical(env, tmp_path, method, monkeypatch):
    _run(env, method, tmp_path/'full', expansion=2)
    full = _snapshot(tmp_path/'full')
    import diffaug.methods as dm
    class Dying(dm.SyntheticSetWriter):  # the process dies in the middle of the second batch
        n = 0
        def write(self, *a, **kw):
            Dying.n += 1
            if Dying.n == 6: raise _Killed()
            return super().write(*a, **kw)
    with monkeypatch.context() as m:
        m.setattr(dm, 'SyntheticSetWriter', Dying)
        with pytest.raises(_Killed): _run(env, method, tmp_path/'part', expansion=2)
    assert not (tmp_path/'part').exists() and len(list(scratch_dir(tmp_path/'part').rglob('*.png'))) == 5  # unfinished: in <out>.partial
    r = _run(env, method, tmp_path/'part', expansion=2)
    assert r['written'] == r['items'] - 5 and r['skipped'] >= 4
    assert _snapshot(tmp_path/'part') == full


# Two processes (torchrun) writing one process's bytes: tests/test_multiprocess.py (Diff-Mix, Real-Guidance, Real-Filter with its
# CLIP filter, the inversion pool and Diff-II), through diffaug.processes, which scripts/rehearse.py --processes runs at SD 1.5's size.


# --- the stage's parameters (SynthesisConfig) and its run -------------------------------------------------------------

def _params(env, tmp_path, **kw):
    return {'method': 'real-guidance', 'split': str(env['split'].path), 'out': str(tmp_path/'set'), 'model': str(env['model']),
            'clip_model': str(env['clip']), 'expansion': 1, **KW, **kw}


def test_unknown_key_names_the_nearest(env, tmp_path):
    with pytest.raises(ParamError, match="unknown parameter 'stesp'; did you mean 'steps'"):
        SynthesisConfig.from_params({**_params(env, tmp_path), 'stesp': 3})


@pytest.mark.parametrize('key,value,message', [
    ('method', 'bogus', "method='bogus' is invalid: expected one of real-guidance, da-fusion, diff-aug, diff-mix, real-mix, real-gen, diff-gen, real-filter (did you mean 'da-fusion'?)"),
    ('method', 'difmix', "did you mean 'diff-mix'?"),
    ('steps', -3, 'steps=-3'),
    ('expansion', 0, 'expansion=0'),
    ('guidance_scale', -1.0, 'guidance_scale=-1.0'),
    ('clip_min_prob', 1.5, 'clip_min_prob=1.5'),
    ('precision', 'fp8', "precision='fp8'"),
    ('per_method', {'real-guidance': {'strength': 1.5}}, 'per_method.real-guidance.strength=1.5'),
    ('per_method', {'da-fusion': {'strengths': [0.5, -0.1]}}, 'per_method.da-fusion.strengths'),
    ('per_method', {'diff-mixx': {}}, "did you mean 'diff-mix'"),
    ('per_method', {'real-guidance': {'strenght': 0.5}}, "did you mean 'strength'"),
    ('prompt_template', 'a photo of a {class}', 'prompt_template'),
    ('split', 'no/such/split.json', 'not found'),
    ('model', None, 'model=None'),
])
def test_bad_values_are_named_by_check(env, tmp_path, key, value, message):
    with pytest.raises(ParamError) as e: SynthesisConfig.from_params(_params(env, tmp_path, **{key: value})).check()
    assert message in str(e.value), str(e.value)


def test_model_folder_without_unet(env, tmp_path):
    bad = tmp_path/'no-unet'; shutil.copytree(env['model'], bad); shutil.rmtree(bad/'unet')
    with pytest.raises(ParamError, match='unet'): SynthesisConfig.from_params(_params(env, tmp_path, model=str(bad))).check()


def test_concepts_are_checked(env, tmp_path):
    with pytest.raises(ParamError, match="needs a concept folder of recipe 'diff-mix'"):
        SynthesisConfig.from_params(_params(env, tmp_path, method='diff-mix')).check()
    wrong = {'diff-mix': str(env['concepts']['da-fusion'])}
    with pytest.raises(ParamError, match="concepts.diff-mix=.*this folder holds recipe 'da-fusion'"):
        SynthesisConfig.from_params(_params(env, tmp_path, method='diff-mix', concepts=wrong)).check()
    with pytest.raises(ParamError, match='concepts.json'):
        SynthesisConfig.from_params(_params(env, tmp_path, method='da-fusion', concepts={'da-fusion': str(tmp_path)})).check()
    ok = {k: str(v) for k, v in env['concepts'].items()}
    assert SynthesisConfig.from_params(_params(env, tmp_path, method='da-fusion', concepts=ok)).check().concept_dir() == ok['da-fusion']


def test_real_filter_needs_a_clip(env, tmp_path):
    with pytest.raises(ParamError, match='clip_model=None .*give one'):
        SynthesisConfig.from_params(_params(env, tmp_path, method='real-filter', clip_model=None)).check()
    with pytest.raises(ParamError, match='clip_model='):  # a folder that is not a CLIP
        SynthesisConfig.from_params(_params(env, tmp_path, method='real-filter', clip_model=str(env['model']))).check()


@pytest.mark.parametrize('method', ['real-mix', 'real-filter'])
def test_run_twice_same_bytes(env, tmp_path, method, monkeypatch):
    "Two runs into two folders write the same bytes; a rerun on a finished set renders nothing and changes no byte."
    monkeypatch.setenv('DIFFAUG_ROOT', str(tmp_path.parent))  # as the pipeline does: recorded paths are relative to the root
    r1 = run_synthesis(SynthesisConfig.from_params(_params(env, tmp_path, method=method, out=str(tmp_path/'a'))))
    run_synthesis(SynthesisConfig.from_params(_params(env, tmp_path, method=method, out=str(tmp_path/'b'))))
    snap = _snapshot(tmp_path/'a')
    assert snap == _snapshot(tmp_path/'b') and r1['rendered'] > 0
    assert str(tmp_path.parent) not in ''.join(v.decode('utf-8', 'replace') for k, v in snap.items() if not k.endswith('.png'))  # no temp paths
    r3 = run_synthesis(SynthesisConfig.from_params(_params(env, tmp_path, method=method, out=str(tmp_path/'a'))))
    assert r3['rendered'] == 0 and _snapshot(tmp_path/'a') == snap


def test_resume_with_other_parameters_is_refused(env, tmp_path, monkeypatch):
    import diffaug.methods as dm
    class Dying(dm.SyntheticSetWriter):
        def write(self, *a, **kw):
            super().write(*a, **kw); raise _Killed()
    with monkeypatch.context() as m:
        m.setattr(dm, 'SyntheticSetWriter', Dying)
        with pytest.raises(_Killed): run_synthesis(SynthesisConfig.from_params(_params(env, tmp_path, method='real-mix')))
    with pytest.raises(ParamError, match='steps: 3 there, 4 now'):
        run_synthesis(SynthesisConfig.from_params(_params(env, tmp_path, method='real-mix', steps=4)))
    r = run_synthesis(SynthesisConfig.from_params(_params(env, tmp_path, method='real-mix')))
    assert r['written'] == r['items'] - 1
