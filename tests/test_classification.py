"Bad parameters fail before any work, through the pipeline's command line; a failing stage loses nothing."
import json, shutil
from pathlib import Path

import pytest

from diffaug.pipeline import main, run_stage, StageError
from conftest import copy_working_tree


@pytest.mark.parametrize('stage,setting,message', [
    ('classification', 'p=1.5', 'p=1.5'),
    ('classification', 'p=-0.2', 'p=-0.2'),
    ('classification', 'method=mixupp', "method='mixupp'"),
    ('classification', 'model=resnet_fifty', "model='resnet_fifty'"),
    ('classification', 'epochs=0', 'epochs=0'),
    ('classification', 'select=test', "select='test'"),
    ('classification', 'epochs=-3', 'epochs=-3'),
    ('classification', 'lrr=0.1', "unknown parameter 'lrr'; did you mean 'lr'?"),
    ('classification', 'split=missing/split.json', 'missing/split.json not found'),
    ('report', 'methods=[]', 'methods=[]'),
])
def test_bad_params_fail_before_work(repo_root, tmp_path, capsys, stage, setting, message):
    out = tmp_path/'x.ipynb'
    # the inputs a fresh clone lacks (the classification stage's runs) are given, so the bad value is what fails
    run = ['--set', f'out={tmp_path/"run"}'] if stage == 'classification' else ['--set', f'runs={tmp_path}']
    code = main([stage, '--root', str(repo_root), '--set', setting, *run, '--out', str(out)])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not out.exists() and not list(tmp_path.iterdir())  # no kernel started, nothing written


def test_bad_shots_in_prepare(tmp_path, capsys):
    "k < 1: the prepare stage's own check stops it before a dataset is written."
    root = copy_working_tree(tmp_path/'repo')
    code = main(['prepare', '--root', str(root), '--set', 'shots=0', '--set', 'root=d/dataset', '--set', 'split_path=d/split.json', '--quiet'])
    err = capsys.readouterr().err
    assert code != 0 and 'shots=0' in err, err
    assert not (root/'d').exists()


def test_failed_stage_keeps_previous_outputs(tmp_path):
    "A stage that fails midway leaves the previous executed notebook and metrics untouched, and no partial files."
    from diffaug.fixtures import make_toy_split
    root = copy_working_tree(tmp_path/'repo')
    split = make_toy_split(root/'d', n_classes=3, shots=2, per_class=4)
    other = make_toy_split(root/'e', n_classes=4, shots=2, per_class=4)  # its test labels include a class the run does not have
    out = root/'reports/classification/original-s0'
    out.mkdir(parents=True, exist_ok=True)
    (out/'classification.ipynb').write_text('{"previous": true}'); (out/'metrics.json').write_text('{"top1": 1}')
    with pytest.raises(StageError, match='failed in cell') as e:
        run_stage('classification', root=root, sets=[f'split={split}', f'eval_split={other}', f'out={out}', 'epochs=1'],
                  out=out/'classification.ipynb', log_output=False)
    assert 'eval_split' in str(e.value)
    assert (out/'classification.ipynb').read_text() == '{"previous": true}'
    assert json.loads((out/'metrics.json').read_text()) == {'top1': 1}
    assert (out/'classification.failed.ipynb').exists()
    assert not list(out.glob('*.running.ipynb')) and not list(out.glob('.*.tmp'))


def test_bad_values_are_named_by_check(tmp_path):
    "ClassificationConfig.check names each bad value (values before files, so a typo is reported even before prepare ran)."
    from diffaug.classification import ClassificationConfig
    from diffaug.core import ParamError
    ok = dict(split=str(tmp_path/'split.json'), out=str(tmp_path/'out'), model='test_resnet')
    def fails(msg, **kw):
        with pytest.raises(ParamError) as e: ClassificationConfig(**{**ok, **kw}).check()
        assert msg in str(e.value), (kw, str(e.value))
    for kw, msg in [({'p': 1.5}, 'p=1.5'), ({'epochs': -3}, 'epochs=-3'), ({'method': 'mixpu'}, "did you mean 'mixup'"),
                    ({'warmup': 1.0}, 'warmup=1.0'), ({'threads': 0}, 'threads=0'), ({'split': None}, 'split=None'), ({}, 'split.json not found')]:
        fails(msg, **kw)  # no split file yet: the values are named first
    (tmp_path/'split.json').write_text('{"items": {"train": [], "test": []}}')
    fails('metadata.csv', method='diff-mix', synthetic=[str(tmp_path)])
    fails('no val subset', select='val')
    assert ClassificationConfig(**ok).check().split == ok['split']


def test_resume_after_a_kill_gives_the_same_bytes(tmp_path, monkeypatch):
    "A run killed after an epoch resumes there (another run's parameters are refused) and ends with the uninterrupted run's bytes."
    import diffaug.classification as dc, diffaug.training as dt
    from diffaug.fixtures import make_toy_split
    from diffaug.core import ParamError
    from diffaug.files import scratch_dir
    split = make_toy_split(tmp_path/'toy', n_classes=3, shots=3, per_class=6)
    kw = dict(split=str(split), model='test_resnet', pretrained=False, image_size=32, batch_size=3, epochs=3, threads=1, select='last')
    dc.run_classification(out=str(tmp_path/'full'), **kw)
    files = lambda d: {p.name: p.read_bytes() for p in sorted(Path(d).iterdir())}
    class Killed(Exception): pass
    save = dt._save_checkpoint  # the training loop's checkpoint
    def dying(ck, epoch, *a, **k):
        save(ck, epoch, *a, **k)
        if epoch == 2: raise Killed()
    with monkeypatch.context() as m:
        m.setattr(dt, '_save_checkpoint', dying)
        with pytest.raises(Killed): dc.run_classification(out=str(tmp_path/'part'), **kw)
    assert not (tmp_path/'part').exists() and (scratch_dir(tmp_path/'part')/'checkpoints/epoch-0002').is_dir()
    with pytest.raises(ParamError, match='epochs: 3 there, 4 now'): dc.run_classification(out=str(tmp_path/'part'), **{**kw, 'epochs': 4})
    dc.run_classification(out=str(tmp_path/'part'), **kw)
    assert files(tmp_path/'part') == files(tmp_path/'full') and not scratch_dir(tmp_path/'part').exists()


def test_annotation_scale_reaches_the_loss(tmp_path):
    "Diff-Mix's soft-label scale (0.9) is not renormalised away: the loss target of a synthetic image carries it."
    import torch
    from diffaug.annotation import annotate
    from diffaug.classification import ClassificationConfig
    from diffaug.classifier_data import ReplacementDataset
    from diffaug.fixtures import make_toy_split, make_toy_synthetic
    from diffaug.training import _soft_ce, _targets
    from diffaug.splits import load_split
    split = make_toy_split(tmp_path, n_classes=3, shots=2, per_class=4, size=16)
    sp = load_split(split)
    for scale in (0.9, 1.0):
        syn = annotate(make_toy_synthetic(split, tmp_path/f'syn{scale}', per_image=1), split, tmp_path/f'ann{scale}', scale=scale)
        ds = ReplacementDataset(sp, [syn], p=1.0, image_size=16)
        x, target, is_syn = ds[0]
        assert is_syn and abs(float(target.sum()) - scale) < 1e-6
        cfg = ClassificationConfig(label_smoothing=0.1)
        _, y = _targets(cfg, None, x[None], target[None], 3)
        assert abs(float(y.sum()) - (0.9 * scale + 0.1)) < 1e-6   # (1 − ε)·target + ε/K
        logits = torch.randn(1, 3)
        assert torch.allclose(_soft_ce(logits, y), -(y * torch.log_softmax(logits, -1)).sum())


def test_matrix_worker_failure_names_the_run(tmp_path):
    "A run that fails inside a matrix worker process stops the stage with an error naming the run and the worker's traceback."
    from diffaug.classification import run_classification
    from diffaug.fixtures import make_toy_split, make_toy_synthetic
    split = make_toy_split(tmp_path/'d', n_classes=2, shots=2, per_class=4)
    syn = make_toy_synthetic(split, tmp_path/'syn')
    next(Path(syn).rglob('*.png')).unlink()  # the set lists an image that is gone: found only when training reads it
    with pytest.raises(RuntimeError, match=r'classification run synthetic seed \d failed') as e:
        run_classification(split=str(split), out=str(tmp_path/'runs'), methods=['original', 'synthetic'], seeds=[0, 1], workers=2,
                           synthetic={'synthetic': [str(syn)]}, p=1.0, model='test_resnet', pretrained=False, image_size=32,
                           batch_size=4, epochs=1, threads=1)
    assert '.png' in str(e.value)  # the worker's own error, passed on
