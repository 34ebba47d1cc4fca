"""The paper setups rehearsed: each setup's shrink (counts, weights, precision only), and each family's distinct code
(few-shot ResNet-50 and ViT-B/16 SWAG at their real sizes, CUB-LT, Flower-LT's half split, Waterbirds' groups, the
suffix models) run on native-layout fixtures. The whole setups run through `dvc exp run` with SD 1.5's architecture in
`scripts/rehearse.py` (results/rehearsal/); `test_a_paper_setup_rehearses_end_to_end` runs one here with tiny weights."""
import json, os, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT/'params.yaml'


def effective_of(name):
    from diffaug.experiments import effective
    from diffaug.params import setup_overrides
    return effective(setup_overrides(ROOT/'params'/f'{name}.yaml', PARAMS), PARAMS)


def paper_setups():
    from diffaug.rehearsal import paper_setups
    return paper_setups(ROOT/'params')


MODELS = {k: f'/models/{k}' for k in ('sd15', 'clip-b32', 'blip-large', 'qwen2')}
RECIPE = ('model', 'image_size', 'transform', 'resize', 'crop_padding', 'lr', 'warmup_mode', 'label_smoothing', 'mixup_alpha',
          'cutmix_alpha', 'mix_prob', 'cutmix_per', 'p', 'replace_with', 'select')


def test_the_rehearsal_table_is_its_records():
    "results/rehearsal/table.md is generated from the committed records, every record names a paper setup, and the README shows it."
    from diffaug.rehearsal import rehearsal_table
    res = ROOT/'results'/'rehearsal'
    assert (res/'table.md').read_text() == rehearsal_table(res)
    for rec in res.glob('*.json'):
        r = json.loads(rec.read_text())
        assert rec.stem in paper_setups() and r['setup'] == f'params/{rec.stem}.yaml' and len(r['commit']) == 40
        assert not r['ok'] or set(r['report_methods']) >= set(r['methods'])
    assert (res/'table.md').read_text().strip() in (ROOT/'README.md').read_text()


def test_there_are_23_paper_setups():
    assert len(paper_setups()) == 23


@pytest.mark.parametrize('name', paper_setups())
def test_a_rehearsal_changes_only_counts_weights_sizes_and_precision(name):
    from diffaug.rehearsal import rehearsal_overrides, MODEL_KEYS
    from diffaug.params import get_dotted, set_dotted, STAGES
    from diffaug.core import ParamError
    eff = effective_of(name)
    o, why = rehearsal_overrides(eff, MODELS, raw='/raw')
    assert set(o) == set(why)
    for k in MODEL_KEYS: assert o[k] == MODELS['sd15'], k
    for k in RECIPE:  # the classifier's recipe is the setup's
        assert f'classification.{k}' not in o, k
    for k, v in o.items():
        old = get_dotted(eff, k) if k.split('.')[0] in eff and k.split('.')[1] in eff[k.split('.')[0]] else None
        if isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(old, (int, float)) and not isinstance(old, bool):
            assert v <= old, (k, v, old)  # counts only shrink
    assert o['runs.seeds'] == eff['runs']['seeds'][:1] and o['classification.epochs'] == 1
    for k, v in o.items(): set_dotted(eff, k, v)
    for sec in ('concepts', 'concepts_ti', 'synthesis', 'inversion', 'interpolation', 'classification', 'suffixes', 'oracle'):
        st = STAGES[sec]; given = dict(eff[sec])
        for k in (*st.paths, *st.maybe_paths):  # wired by params.yaml / dvc.yaml; here any path
            if given.get(k) is None: given[k] = f'/wired/{k}'
        if sec == 'synthesis': given['method'] = 'real-guidance'
        st.config_class().from_params(given, f'{name} [{sec}]').check(files=False)


def _prepare(tmp_path, name, n_classes=3, per_class=4):
    from diffaug.native_fixtures import write_native_fixture
    from diffaug.prepare import PrepareConfig, run_prepare
    from diffaug.splits import load_split
    p = dict(effective_of(name)['prepare'])
    raw = write_native_fixture(p['source'], tmp_path/'raw', n_classes=n_classes, per_class=per_class)
    p.update(raw=str(raw), root=str(tmp_path/'dataset'), split_path=str(tmp_path/'split.json'))
    run_prepare(PrepareConfig(**p))
    return load_split(tmp_path/'split.json'), p


def test_cub_lt_imbalance_on_the_native_layout(tmp_path):
    sp, p = _prepare(tmp_path, 'cub-lt-if100-resnet50', n_classes=10, per_class=8)
    counts = sorted((sum(i['label'] == c for i in sp.items('train')) for c in sp.classes), reverse=True)
    assert p['kind'] == 'long-tail' and counts[0] == 8 and counts[-1] == 1 and counts == sorted(counts, reverse=True)
    assert len(sp.items('test')) == 10 * 8  # the official test partition, whole


def test_flower_lt_half_split(tmp_path):
    sp, p = _prepare(tmp_path, 'flower-lt-if100-resnet50', n_classes=4, per_class=4)
    assert p['test'] == 'half'
    # each class's 12 images (train, val, test partitions) cut 6 / 6: test 6 per class, the long tail drawn from the other 6
    for c in sp.classes: assert sum(i['label'] == c for i in sp.items('test')) == 6
    assert max(sum(i['label'] == c for i in sp.items('train')) for c in sp.classes) == 6


def test_waterbirds_groups_on_the_native_layout(tmp_path):
    "The Waterbirds setup's own step (its header's prepare command) on the native layout: every bird x place group in its test split."
    from diffaug.rehearsal import setup_pre_commands
    from diffaug.native_fixtures import write_native_fixture
    from diffaug.prepare import PrepareConfig, run_prepare
    from diffaug.splits import load_split
    (cmd,) = setup_pre_commands(ROOT/'params/waterbirds-5shot-resnet50.yaml')
    sets = dict(cmd[i + 1].split('=', 1) for i in range(len(cmd) - 1) if cmd[i] == '--set')
    sets.update(raw=str(write_native_fixture(sets['source'], tmp_path/'raw')), root=str(tmp_path/'wb'), split_path=str(tmp_path/'wb.json'))
    run_prepare(PrepareConfig(**sets))
    sp = load_split(tmp_path/'wb.json')
    groups = {json.dumps(i.get('group'), sort_keys=True) for i in sp.items('test')}
    assert len(groups) == 4, groups
    assert effective_of('waterbirds-5shot-resnet50')['classification']['eval_split'] == sets['split_path'].replace(str(tmp_path/'wb.json'), 'data/waterbirds/split.json')


@pytest.mark.parametrize('name', ['cub-5shot-resnet50', 'cub-5shot-vit-b16'])
def test_few_shot_classifier_at_its_real_size(tmp_path, name):
    "The setup's classifier recipe (ResNet-50 at 224 px; ViT-B/16 SWAG at 384 px), its architecture untrained, one epoch."
    from diffaug.classification import ClassificationConfig, run_classification
    sp, _ = _prepare(tmp_path, name, n_classes=2, per_class=2)
    c = dict(effective_of(name)['classification'])
    c.update(split=str(tmp_path/'split.json'), out=str(tmp_path/'run'), method='mixup', pretrained=False, epochs=1, batch_size=2,
             num_workers=0, precision='bf16', synthetic=None, methods=None, seeds=None, threads=1, checkpoint_every=0)
    m = run_classification(ClassificationConfig(**{k: v for k, v in c.items() if k in ClassificationConfig.__dataclass_fields__}))
    assert 0 <= m['top1'] <= 100 and m['epochs'] == 1


def test_the_suffix_models_run(tmp_path):
    "source auto on a dataset without captions: a BLIP captioner, then a Qwen2 chat model summarises (here tiny, random)."
    from diffaug.suffixes import SuffixesConfig, run_suffixes, make_tiny_blip
    from diffaug.rehearsal import make_qwen2_random
    _prepare(tmp_path, 'cub-5shot-resnet50', n_classes=2, per_class=2)
    r = run_suffixes(SuffixesConfig(split=str(tmp_path/'split.json'), out=str(tmp_path/'suffixes.txt'), source='auto',
                                    captioner=str(make_tiny_blip(tmp_path/'blip')), llm=str(make_qwen2_random(tmp_path/'qwen2')),
                                    device='cpu'))
    assert 'captions by' in r['how'] and 'qwen2' in r['how'] and r['n_suffixes'] >= 1, r


@pytest.mark.slow
def test_a_paper_setup_rehearses_end_to_end(tmp_path):
    """`rehearse` of a paper setup (CUB 5-shot, ResNet-50) in a work copy of HEAD, through `dvc exp run` as the setup is
    written, on CUB's native-layout fixture: every stage runs and the report covers its methods. The weights here are the
    tests' tiny models (SD 1.5's architecture and all 12 methods take ~10 min a setup: scripts/rehearse.py, results/rehearsal/)."""
    from diffaug.experiments import prepare_workdir
    from diffaug.rehearsal import rehearse, rehearsal_models, rehearsal_table
    from diffaug.models import make_tiny_sd, make_tiny_clip
    from diffaug.suffixes import make_tiny_blip, make_tiny_llm
    cache = tmp_path/'cache'
    rehearsal_models(cache/'models', makers={'sd15': lambda p: make_tiny_sd(p, resolution=32), 'clip-b32': make_tiny_clip,
                                            'blip-large': make_tiny_blip, 'qwen2': make_tiny_llm})
    work = prepare_workdir(tmp_path/'work', ROOT)
    # three of its methods (the other methods' stages are the same code with other parameters: scripts/rehearse.py runs them all)
    few = ['runs.methods=[original, real-filter, diff-ii]', 'runs.synthetic_methods=[real-filter]',
           'runs.annotated_methods=[real-filter, diff-ii]', 'runs.oracle_methods=[real-filter, diff-ii]']
    rec = rehearse(ROOT/'params/cub-5shot-resnet50.yaml', work, tmp_path/'results', few, cache=cache, reset_params=True)
    assert rec['ok'], rec
    assert set(rec['report_methods']) == set(rec['methods']) == {'original', 'real-filter', 'diff-ii'}
    ran = {s['stage'] for s in rec['stages']}
    assert ran >= {'prepare', 'suffixes', 'concepts', 'concepts_ti', 'synthesis', 'inversion', 'interpolation', 'annotation',
                   'oracle', 'classification', 'report'}, ran
    assert all(s['ok'] and s['wall_s'] > 0 and s['peak_rss_mb'] > 0 for s in rec['stages'])
    split = json.loads((work/'data/split.json').read_text())
    assert split['classes'] == ['Black footed Albatross', 'Laysan Albatross', 'Sooty Albatross'] and len(split['items']['train']) == 6
    assert 'captions by' in (work/'data/suffixes.txt').read_text().splitlines()[0]  # source auto: the captioner ran
    assert json.loads((tmp_path/'results'/'cub-5shot-resnet50.json').read_text())['ok']
    assert '| cub-5shot-resnet50 | ok |' in rehearsal_table(tmp_path/'results')


def test_the_two_process_rehearsal_is_its_record():
    """results/rehearsal/processes/: one process vs two at SD 1.5's architecture (`scripts/rehearse.py --processes`). Its
    table is generated from its record, the README shows it, and the record says what the issue asks: every set
    byte-identical, concepts and classification finished with how far they moved, run by the commit it names."""
    from diffaug.processes import process_table, PROCESS_SETS
    d = ROOT/'results'/'rehearsal'/'processes'
    rec = json.loads((d/'sd15.json').read_text())
    assert (d/'sd15.md').read_text() == process_table(rec)
    assert (d/'sd15.md').read_text().strip() in (ROOT/'README.md').read_text()
    assert rec['ok'] and len(rec['commit']) == 40 and rec['spec']['model'].startswith('sd15')
    assert set(rec['sets']) == set(PROCESS_SETS) and all(v['identical'] and v['files'] > 0 for v in rec['sets'].values())
    assert rec['concepts']['finite'] and rec['concepts']['processes'] == [1, 2] and rec['concepts']['embeddings'] == 3
    assert rec['classification']['finite'] and rec['classification']['num_processes'] == [1, 2]
    assert rec['classification']['launcher_equals_torchrun']
