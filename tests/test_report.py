"""The report stage: the per-method summary that `dvc metrics show` lists, the flag on incomplete synthetic sets, the
PNG figures, and the offline page `dvc plots show` writes for the pipeline's plots declarations."""
import json, re, subprocess
from pathlib import Path

import pytest
import yaml
from PIL import Image

from conftest import ROOT, VENV_BIN, run_env
from diffaug.files import atomic_write_json
from diffaug.report import ReportConfig, run_report
from diffaug.tables import run_folder, run_sets
from diffaug.fixtures import make_fake_runs, make_fake_set

METHODS = ['original', 'mixup', 'diff-aug', 'real-filter']
SETS = {'diff-aug': (300, 300), 'real-filter': (26, 300)}


def _report(tmp_path, sets=SETS, groups=False, **kw):
    runs = make_fake_runs(tmp_path/'runs', METHODS, seeds=[0, 1], groups=groups, sets=sets)
    return run_report(runs=str(runs), methods=METHODS, seeds=[0, 1], out=str(tmp_path/'report'), **kw), tmp_path/'report'


def test_summary_metrics(tmp_path):
    res, out = _report(tmp_path, groups=True)
    m = json.loads((out/'metrics.json').read_text())
    assert sorted(m) == sorted(METHODS)  # one entry per method (keys sorted; the table order is in methods/)
    # make_fake_runs: top1 = 50 + 2 * (method index) + seed
    assert m['original']['top1'] == {'mean': 50.5, 'std': 0.7071, 'gain': 0.0}
    assert m['real-filter']['top1'] == {'mean': 56.5, 'std': 0.7071, 'gain': 6.0, 'gain_ci': [6.0, 6.0]}  # paired by seed: the same gain for both
    assert all(e['n_seeds'] == 2 for e in m.values())
    assert m['mixup']['worst_group'] == {'mean': 47.5}  # group runs: the worst group's mean over seeds
    assert 'images' not in m['original'] and 'images' not in m['mixup']  # no synthetic sets
    assert res['methods'] == m
    # the DVC metrics: the same entries, one file per method, named by its place in the table
    files = sorted(p.name for p in (out/'methods').iterdir())
    assert files == ['00-original.json', '01-mixup.json', '02-diff-aug.json', '03-real-filter.json']
    assert all(json.loads((out/'methods'/f).read_text()) == m[f[3:-5]] for f in files)


def test_no_worst_group_without_groups(tmp_path):
    _, out = _report(tmp_path, groups=False)
    assert all('worst_group' not in e for e in json.loads((out/'metrics.json').read_text()).values())


def test_incomplete_set_is_flagged(tmp_path):
    res, out = _report(tmp_path)  # min_set_fraction 0.5: 26 < 150
    m = json.loads((out/'metrics.json').read_text())
    assert {k: m['real-filter'][k] for k in ('images', 'target_images', 'flagged')} == {'images': 26, 'target_images': 300, 'flagged': True}
    assert {k: m['diff-aug'][k] for k in ('images', 'target_images', 'flagged')} == {'images': 300, 'target_images': 300, 'flagged': False}
    assert res['flagged'] == ['real-filter']
    table = (out/'table.md').read_text()
    assert '| real-filter | 2 | ⚠ 26/300 images | 56.50 ± 0.71 (+6.00) |' in table, table
    assert '| diff-aug | 2 | 300/300 images |' in table and '| original | 2 | — |' in table
    assert '⚠ real-filter: the synthetic set is incomplete (below 0.5 of its target size' in table
    csv = (out/'table.csv').read_text().splitlines()
    assert csv[0].endswith(',images,target_images,flagged') and csv[-1].endswith(',26,300,True')


def test_set_above_the_fraction_is_not_flagged(tmp_path):
    res, out = _report(tmp_path, min_set_fraction=0.05)  # 26 >= 15
    assert res['flagged'] == [] and res['methods']['real-filter']['flagged'] is False
    table = (out/'table.md').read_text()
    assert '| real-filter | 2 | 26/300 images |' in table and '⚠' not in table
    # the bound itself is not below it: 150 of 300 at 0.5
    res, _ = _report(tmp_path/'b', sets={'diff-aug': (300, 300), 'real-filter': (150, 300)})
    assert res['methods']['real-filter']['flagged'] is False
    res, _ = _report(tmp_path/'c', sets={'diff-aug': (300, 300), 'real-filter': (149, 300)})
    assert res['methods']['real-filter']['flagged'] is True


def test_set_without_recorded_target(tmp_path):
    res, out = _report(tmp_path, sets={'diff-aug': (300, 300), 'real-filter': (26, None)})
    assert {k: res['methods']['real-filter'][k] for k in ('images', 'target_images', 'flagged')} == {'images': 26, 'target_images': None, 'flagged': None}
    assert '| real-filter | 2 | 26 images (target not recorded) |' in (out/'table.md').read_text()


def test_sets_read_from_the_runs_config(tmp_path, monkeypatch):
    "A list of sets (summed), paths relative to the repository root ($DIFFAUG_ROOT), as the classification stage records them."
    root = tmp_path/'repo'
    make_fake_set(root/'data/annotated/a', 10, 100); make_fake_set(root/'data/annotated/b', 20, 100)
    run = run_folder(root/'runs', 'diff-aug', 0)
    atomic_write_json(run/'config.json', {'method': 'diff-aug', 'seed': 0, 'synthetic': ['data/annotated/a', 'data/annotated/b']})
    monkeypatch.setenv('DIFFAUG_ROOT', str(root))
    assert run_sets(run) == [root/'data/annotated/a', root/'data/annotated/b']
    atomic_write_json(run/'metrics.json', {'method': 'diff-aug', 'seed': 0, 'top1': 50.0})
    (run/'epochs.csv').write_text('epoch,test_top1\n1,50\n')
    res = run_report(runs=str(root/'runs'), methods=['diff-aug'], seeds=[0], out=str(tmp_path/'report'))
    assert {k: res['methods']['diff-aug'][k] for k in ('images', 'target_images', 'flagged')} == {'images': 30, 'target_images': 200, 'flagged': True}
    # a set the run names but that is gone: an error naming it, never a silent comparison
    import shutil; shutil.rmtree(root/'data/annotated/b')
    with pytest.raises(FileNotFoundError, match='annotated/b/info.json'):
        run_report(runs=str(root/'runs'), methods=['diff-aug'], seeds=[0], out=str(tmp_path/'report'))


def test_min_set_fraction_is_checked():
    with pytest.raises(ValueError, match='min_set_fraction=-0.1'):
        ReportConfig(runs='r', out='o', min_set_fraction=-0.1).check(files=False)
    assert 'min_set_fraction' in ReportConfig.help()


def test_pngs(tmp_path):
    _, out = _report(tmp_path)
    for f in ('figure.png', 'curves.png'):
        assert (out/f).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
        with Image.open(out/f) as im: assert im.width > 200 and im.height > 100


# ------------------------------------------------------------------ what DVC shows of the pipeline's declarations
DVC = str(VENV_BIN/'dvc')


def _declared(entries):
    "Paths of a stage's outs/metrics/plots list (strings or {path: options})."
    return [e if isinstance(e, str) else next(iter(e)) for e in entries or []]


def test_only_the_report_declares_metrics_and_plots():
    "Per-run files are plain outputs; every plot is an image (one vega plot would put a CDN script in the page)."
    d = yaml.safe_load((ROOT/'dvc.yaml').read_text())
    has = {name: (st.get('do', st).get('metrics'), st.get('do', st).get('plots')) for name, st in d['stages'].items()}
    assert [n for n, (m, p) in has.items() if m or p] == ['report']
    assert _declared(has['report'][0]) == ['reports/report/methods']
    plots = _declared(has['report'][1]) + _declared(d.get('plots'))
    assert plots and all(Path(p).suffix in ('.png', '.jpg', '.jpeg', '.svg', '.gif') for p in plots), plots
    outs = _declared(d['stages']['classification']['outs'])  # the matrix folder: <method>/s<seed>/metrics.json, epochs.csv, ...
    assert outs == ['${classification.out}'] and yaml.safe_load((ROOT/'params.yaml').read_text())['classification']['out'] == 'reports/classification'


def _report_project(tmp_path) -> Path:
    "A tiny DVC project holding the real dvc.yaml's report stage (command replaced) and the files a report run writes."
    proj = tmp_path/'proj'; proj.mkdir()
    subprocess.run([DVC, 'init', '--no-scm', '-q'], cwd=proj, env=run_env(), check=True, capture_output=True)
    st = yaml.safe_load((ROOT/'dvc.yaml').read_text())['stages']['report']
    st = {'cmd': 'true', **{k: st[k] for k in ('outs', 'metrics', 'plots') if k in st}}
    (proj/'dvc.yaml').write_text(yaml.safe_dump({'stages': {'report': st}}, sort_keys=False))
    runs = make_fake_runs(tmp_path/'runs', METHODS, sets=SETS)
    run_report(runs=str(runs), methods=METHODS, seeds=[0, 1], out=str(proj/'reports/report'))
    return proj


def test_dvc_plots_show_works_offline(tmp_path):
    proj = _report_project(tmp_path)
    r = subprocess.run([DVC, 'plots', 'show', '-o', 'page'], cwd=proj, env=run_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    html = (proj/'page/index.html').read_text()
    assert not re.search(r'<script[^>]*\bsrc\s*=', html, re.I), "the page loads a script"
    external = re.findall(r'''(?:src|href)\s*=\s*["']?\s*((?:https?:)?//[^"'\s>]+)''', html, re.I)
    assert not external, external
    assert 'http://' not in html.replace('http-equiv', '') and 'https://' not in html
    imgs = re.findall(r'<img\s+src="([^"]+)"', html)
    assert len(imgs) == 4, imgs  # the bar chart, the curves, the paired gains and the plane, as images shipped beside the page
    for src in imgs: assert (proj/'page'/src).is_file() and (proj/'page'/src).read_bytes()[:4] == b'\x89PNG', src


def test_dvc_metrics_show_is_one_row_per_method(tmp_path):
    proj = _report_project(tmp_path)
    r = subprocess.run([DVC, 'metrics', 'show', '--json'], cwd=proj, env=run_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    files = json.loads(r.stdout)['']['data']
    assert sorted(files) == [f'reports/report/methods/{i:02d}-{m}.json' for i, m in enumerate(METHODS)]
    rf = files['reports/report/methods/03-real-filter.json']['data']
    assert rf['flagged'] is True and rf['images'] == 26 and rf['target_images'] == 300 and rf['top1']['mean'] == 56.5


def test_default_claims_follow_the_rule(tmp_path):
    """The committed default's claims.md: each verdict is the one decision rule's (diffaug.decisions.decide) on its runs
    (reports/report/runs.csv), with the OOD claim on the reversed-habitat groups."""
    import re, shutil
    from pathlib import Path
    from diffaug.experiment_tables import rewrite_report
    from diffaug.decisions import VERDICTS
    rep = Path(__file__).resolve().parents[1]/'reports'/'report'
    c = tmp_path/'report'; c.mkdir()
    for f in ('runs.csv', 'metrics.json'): shutil.copy(rep/f, c/f)
    rewrite_report(c, oracle=rep.parent/'oracle', ood=True, only=['claims.md'])
    verdicts = lambda t: [(m.group(1), m.group(2)) for m in re.finditer(r'^- (.+?): \*\*([a-z ]+)\*\*', t, re.M)]
    committed = verdicts((rep/'claims.md').read_text())
    assert committed == verdicts((c/'claims.md').read_text()) and {w for _, w in committed} <= set(VERDICTS)
    assert any('worst reversed-habitat group (landbird/water, waterbird/land)' in w for w, _ in committed)
