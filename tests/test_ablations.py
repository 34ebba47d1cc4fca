"""scripts/ablations.py (diffaug.experiments, diffaug.experiment_tables) without running any stage: the variants and their commands (--dry), the collection of a
finished variant from a work copy holding made-up reports (`diffaug.fixtures.make_fake_runs` + the report stage's
`run_report`), the README's tables and the Fig. 7 figure."""
import json, subprocess, sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def abl():
    import diffaug.experiments
    return diffaug.experiments


@pytest.fixture(scope='module')
def tab():
    import diffaug.experiment_tables
    return diffaug.experiment_tables


def test_variants_cover_the_issue(abl):
    vs = abl.variants()
    assert list(vs)[:6] == ['mode-linear', 'mode-slerp', 'mode-extrapolate', 'mode-circle', 'no-concepts', 'no-two-stage']
    assert {'s0', 's01', 's03', 's05', 's1', 'suffixes-1', 'suffixes-3', 'suffixes-10', 'suffixes-all',
            'expansion-1', 'expansion-2', 'expansion-5'} <= set(vs)
    assert all(v in vs for _, _, names in abl.FAMILIES for v in names)


def test_effective_parameters(abl):
    "Each variant changes what it says, and nothing else; identical variants are recognised."
    vs = abl.variants(); P = REPO/'params.yaml'
    eff = {v: abl.effective(abl.overrides(f, P), P) for v, f in vs.items()}
    circle = eff['mode-circle']
    assert circle['interpolation']['mode'] == 'circle' and circle['interpolation']['suffix_fraction'] == 0.3
    assert circle['runs'] == {'methods': ['original', 'diff-ii'], 'synthetic_methods': [], 'annotated_methods': ['diff-ii'],
                              'seeds': abl.load_yaml(P.read_text())['runs']['seeds'], 'oracle_methods': ['diff-ii']}
    for v, (sec, k, val) in {'mode-linear': ('interpolation', 'mode', 'linear'), 's05': ('interpolation', 'suffix_fraction', 0.5),
                             'suffixes-3': ('interpolation', 'n_suffixes', 3), 'expansion-2': ('interpolation', 'expansion', 2),
                             'no-concepts': ('inversion', 'concepts', None)}.items():
        assert eff[v][sec][k] == val, v
        diff = {(s, kk) for s in eff[v] if isinstance(eff[v][s], dict) for kk in eff[v][s] if eff[v][s][kk] != circle[s].get(kk)}
        assert diff == ({('inversion', 'concepts')} if v == 'no-concepts' else {(sec, k)}), (v, diff)  # interpolation: the pool's
    same = {v for v in eff if abl.digest(eff[v]) == abl.digest(circle)}
    assert same == {'mode-circle', 's03', 'suffixes-all', 'expansion-5'}
    # suffixes-10 writes a cap the suffixes stage's 10 lines never reach: the same run, recognised before it runs
    same = {v for v in eff if abl.digest(abl.canonical(eff[v])) == abl.digest(abl.canonical(circle))}
    assert same == {'mode-circle', 's03', 'suffixes-all', 'expansion-5', 'suffixes-10'}
    assert abl.digest(eff['s0']) == abl.digest(eff['no-two-stage'])
    red = abl.effective(abl.overrides(vs['s1'], P, ['runs.seeds=[0]', 'concepts.steps=50']), P)
    assert red['runs']['seeds'] == [0] and red['concepts']['steps'] == 50


def test_dry_run_prints_commands(tmp_path):
    r = subprocess.run([sys.executable, str(REPO/'scripts'/'ablations.py'), '--dry', '--only', 'mode-linear', 's03', 'expansion-5',
                        '--workdir', str(tmp_path/'work'), '--results', str(tmp_path/'res'), '--set', 'runs.seeds=[0]'],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(l.startswith('mode-linear: ') and 'dvc exp run -n miniworld-ablation-mode-linear' in l and "'++runs.seeds=[0]'" in l
               and l.endswith(' report') and '++interpolation.mode=linear' in l for l in lines), r.stdout
    assert 'expansion-5: the same parameters as s03: would copy its results' in lines
    assert sum('++runs.seeds=' in l for l in lines if 'mode-linear' in l) and lines[1].count('++runs.seeds=') == 1
    assert not (tmp_path/'work').exists() and not (tmp_path/'res').exists()


def _fake_workdir(root:Path, top:float, faith:float, div:float, seeds=(0, 1, 2)):
    "A work copy after a variant: the runs (made up), the oracle's scores, and the report stage's files made from them."
    from diffaug.report import run_report
    from diffaug.fixtures import make_fake_runs
    runs = make_fake_runs(root/'reports/classification', ['original', 'diff-ii'], seeds, sets={'diff-ii': (60, 60)})
    for s in seeds:  # Diff-II's numbers per variant
        f = runs/'diff-ii'/f's{s}'/'metrics.json'; d = json.loads(f.read_text()); d['top1'] = top + (0, 1.6, 2.3)[s]; f.write_text(json.dumps(d))
    (root/'reports/oracle/diff-ii').mkdir(parents=True)
    (root/'reports/oracle/diff-ii/scores.json').write_text(json.dumps({'n': 60, 'faithfulness': faith, 'diversity': div, 'source_distance': 0.4,
                                                                   'faithfulness_per_class': {'a': faith + 0.2 * (0.9 - faith), 'b': faith - 0.4 * (0.9 - faith), 'c': faith}}))
    run_report(runs=str(runs), oracle=str(root/'reports/oracle'), out=str(root/'reports/report'), methods=['original', 'diff-ii'], seeds=list(seeds))
    return root


def test_collect_and_readme(abl, tab, tmp_path, monkeypatch):
    import matplotlib; matplotlib.use('Agg')
    monkeypatch.setenv('DIFFAUG_ROOT', str(tmp_path))
    res = tmp_path/'results'
    for i, v in enumerate(['s0', 's01', 's03', 's05', 's1', 'mode-linear']):
        w = _fake_workdir(tmp_path/'work'/v, 52 + i, 0.9 - 0.05 * i, 0.2 + 0.05 * i)
        s = {'s0': 0.0, 's01': 0.1, 's03': 0.3, 's05': 0.5, 's1': 1.0}.get(v, 0.3)
        abl.collect_variant(w, res/v, ['original', 'diff-ii'], [0, 1, 2],
                            {'variant': v, 'digest': 'x', 'methods': ['original', 'diff-ii'], 'seeds': [0, 1, 2],
                             'overrides': {'interpolation.suffix_fraction': s}, 'extra': [], 'wall_s': 60.0, 'same_as': None})
    d = res/'s05'
    assert sorted(p.name for p in d.iterdir()) == ['claims.md', 'classification', 'groups.md', 'metrics.json', 'oracle', 'run.json', 'runs.csv', 'scores.csv', 'shots.md', 'summary.md']
    assert (d/'classification/original/s2/metrics.json').is_file() and (d/'oracle/diff-ii/scores.json').is_file()
    rows = tab.variant_rows(res, ['s05', 'expansion-1'])
    r = rows[0]
    assert r['top1'] == pytest.approx(56.3) and r['original'] == pytest.approx(51.0) and r['n_seeds'] == 3
    assert r['gain'] == pytest.approx(5.3) and r['ci_low'] == pytest.approx(5.3 - 4.302653 * 0.3 / 3 ** 0.5) and r['faithfulness'] == pytest.approx(0.75)
    assert rows[1] == {'variant': 'expansion-1'}
    readme = tab.write_readme(res).read_text()
    assert '## Table 4' in readme and '## Fig. 7' in readme and '## The expansion multiplier' in readme
    assert '| [s05](s05/summary.md) | 56.3 ± 1.2 | +5.3 [+4.6, +6.0] ▲ | 75.0% | 0.350 | 0.400 |' in readme
    assert '| mode-slerp | not run |' in readme and '| expansion-1 | not run |' in readme
    assert '![faithfulness, diversity and top-1 against s](fig7.png)' in readme and (res/'fig7.png').stat().st_size > 1000
    assert 'Wall time: 6 min over 6 variant(s)' in readme
    assert '- Fig. 7: diversity rises with s: **not decided**: no per-class scores recorded' in readme  # one diversity per set: no interval
    assert '- Fig. 7: faithfulness falls (slowly) with s: **reproduced**. -21.3 [' in readme and 'over 3 classes' in readme  # per-class differences -16, -28, -20 points
    assert '- Table 4: the full circle makes the most diverse set of the four modes: not measured (variants missing).' in readme


def test_committed_tables_are_current(abl, tab):
    "results/ablations/README.md and tables.md (which the project README includes) are what the collected variants give."
    res = REPO/'results'/'ablations'
    body, rows = tab.tables(res, link=None, figure=False, h='####')
    assert (res/'tables.md').read_text() == '\n'.join(body), "stale: python scripts/ablations.py --readme-only"
    assert '\n'.join(tab.tables(res)[0]) in (res/'README.md').read_text()
    assert any('top1' in r for rs in rows.values() for r in rs)
    for name in abl.variants():  # each setup file ends with its measured line (scripts/gen_setups.py)
        text = (REPO/'params'/f'miniworld-ablation-{name}.yaml').read_text()
        assert ('Measured on the mini world (results/ablations/' in text) == (res/name/'run.json').is_file(), name
