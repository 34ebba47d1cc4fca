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
    ('classification', 'lrr=0.1', 'unknown parameter(s) lrr'),
    ('report', 'methods=[]', 'methods=[]'),
])
def test_bad_params_fail_before_work(repo_root, tmp_path, capsys, stage, setting, message):
    out = tmp_path/'x.ipynb'
    code = main([stage, '--root', str(repo_root), '--set', setting, '--out', str(out)])
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
    root = copy_working_tree(tmp_path/'repo')
    out = root/'reports/classification/original-s0'
    out.mkdir(parents=True, exist_ok=True)
    (out/'classification.ipynb').write_text('{"previous": true}'); (out/'metrics.json').write_text('{"top1": 1}')
    with pytest.raises(StageError, match='failed in cell') as e:
        run_stage('classification', root=root, sets=['split=missing/split.json', f'out={out}'],
                  out=out/'classification.ipynb', log_output=False)
    assert 'missing/split.json' in str(e.value)
    assert (out/'classification.ipynb').read_text() == '{"previous": true}'
    assert json.loads((out/'metrics.json').read_text()) == {'top1': 1}
    assert (out/'classification.failed.ipynb').exists()
    assert not list(out.glob('*.running.ipynb')) and not list(out.glob('.*.tmp'))
