"""The mini-world setups the README shows besides the embedded default: every results/<setup>/table.md the README
includes agrees with the runs committed beside it (results/<setup>/classification/<method>/s<seed>/metrics.json)."""
import json, re
from pathlib import Path

import pytest
import yaml

from diffaug.tables import collect_runs, summarize

REPO = Path(__file__).resolve().parents[1]
INDEX = (REPO/'nbs'/'index.ipynb').read_text()  # the README's source: its include lines name the files the README shows
SETUPS = [s for s in re.findall(r'<!-- include: results/([\w.-]+)/table\.md -->', INDEX)
          if s != 'rehearsal']  # results/rehearsal/ holds rehearsal records (tests/test_rehearsal.py), not a setup's runs


def _rows(md:str)->dict:
    "method -> its cells, from the first Markdown table of `md`."
    rows = {}
    for line in md.splitlines():
        if line.startswith('| ') and not line.startswith('| method') and not line.startswith('|---'):
            cells = [c.strip() for c in line.strip().strip('|').split('|')]
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.parametrize('setup', SETUPS)
def test_setup_table_is_its_runs(setup):
    "Each method's top-1 (mean ± std) and seed count in table.md, recomputed from the runs' metrics.json."
    d = REPO/'results'/setup
    assert (d/'table.md').is_file(), f"{d}/table.md missing: python scripts/setups.py {setup}"
    rec = json.loads((d/'run.json').read_text())
    setup_params = yaml.safe_load((REPO/'params'/f'{setup}.yaml').read_text())
    methods = rec['methods']; seeds = rec['seeds']
    assert len(seeds) >= 3 and methods[0] == 'original' and 'diff-ii' in methods
    for k, v in (setup_params.get('prepare') or {}).items():  # the setup's split is the one that ran
        assert rec['prepare'].get(k) == v, (setup, k, rec['prepare'].get(k), v)
    df = collect_runs(d/'classification', methods, seeds)
    s = summarize(df)
    table = (d/'table.md').read_text()
    rows = _rows(table)
    assert list(rows) == methods
    for m, r in s.iterrows():
        assert rows[m][0] == f"{r['top1_mean']:.1f} ± {r['top1_std']:.1f}", (setup, m, rows[m][0])
    assert f"{len(seeds)} seeds" in table.splitlines()[0] and rec['commit'][:7] in table.splitlines()[0]
    assert re.search(r'wall time \d+ min', table.splitlines()[0])
    # the report's own summary, as collected, is the rest of the table file
    assert table.endswith((d/'summary.md').read_text())


def test_readme_includes_the_setup_tables():
    """The 10-shot table at least, each with the setup's claims, no collected setup left out, and the README's setups are
    the ones `scripts/setups.py` runs by default (diffaug.experiments.SETUPS), in its order."""
    assert 'miniworld-10shot' in SETUPS
    from diffaug.experiments import SETUPS as RUN_BY_DEFAULT
    assert list(RUN_BY_DEFAULT) == SETUPS
    readme = (REPO/'README.md').read_text()
    for s in SETUPS:
        assert f'<!-- include: results/{s}/claims.md -->' in INDEX
        assert (REPO/'results'/s/'table.md').read_text().strip() in readme  # the generated README holds it as committed
    collected = {p.parent.name for p in (REPO/'results').glob('*/table.md')} - {'rehearsal'}
    assert collected <= set(SETUPS), f"results with a table the README does not include: {sorted(collected - set(SETUPS))}"


@pytest.mark.parametrize('setup', SETUPS)
def test_setup_shots_table_is_its_runs(setup):
    """A long-tailed setup's shots.md (many-, medium- and few-shot classes) recomputed from the runs' metrics.json, its
    thirds consistent with the split's training counts, and included in the README; a balanced setup has no such table."""
    d = REPO/'results'/setup
    rec = json.loads((d/'run.json').read_text())
    df = collect_runs(d/'classification', rec['methods'], rec['seeds'])
    if rec['prepare'].get('kind') != 'long-tail':
        assert 'few_shot' not in df; return
    shots = json.loads((d/'classification'/rec['methods'][0]/f"s{rec['seeds'][0]}"/'metrics.json').read_text())['shots']
    assert [x['group'] for x in shots] == ['many', 'medium', 'few']
    lo_hi = [x['train_images'] for x in shots]
    assert lo_hi[0][0] >= lo_hi[1][1] and lo_hi[1][0] >= lo_hi[2][1] and lo_hi[0][1] > lo_hi[2][0]  # head first, a real tail
    s = summarize(df)
    rows = _rows((d/'shots.md').read_text())
    assert list(rows) == rec['methods']
    for m, r in s.iterrows():
        assert rows[m][:3] == [f"{r[f'{g}_shot_mean']:.1f} ± {r[f'{g}_shot_std']:.1f}" for g in ('many', 'medium', 'few')], (setup, m, rows[m])
    assert f'<!-- include: results/{setup}/shots.md -->' in INDEX
    assert (d/'shots.md').read_text().strip() in (REPO/'README.md').read_text()


@pytest.mark.parametrize('setup', SETUPS)
def test_setup_claims_follow_the_rule(setup, tmp_path):
    """claims.md, summary.md and shots.md recomputed from the runs with the one decision rule (diffaug.decisions.decide):
    each claim's verdict is one of its three words and the files are what the runs give."""
    import shutil
    from diffaug.experiment_tables import rewrite_report
    from diffaug.decisions import VERDICTS
    d = REPO/'results'/setup; c = tmp_path/setup; shutil.copytree(d, c)
    for f in rewrite_report(c): assert f.read_text() == (d/f.name).read_text(), f"stale {d/f.name}: python scripts/setups.py --tables-only"
    words = re.findall(r': \*\*([a-z ]+)\*\*', (d/'claims.md').read_text())
    assert words and set(words) <= set(VERDICTS), words
    rec = json.loads((d/'run.json').read_text())
    if not rec['prepare'].get('world_ood'): assert 'out of distribution, ' not in (d/'claims.md').read_text()  # no reversed-habitat test part: no OOD claim


def test_scratch_setup_scored_the_defaults_sets():
    """The scratch setup differs from the default by the classifier alone: the oracle's scores of each of its synthetic
    sets are the bytes of the default's (reports/oracle), which they cannot be if one image of a set differed enough to
    move a feature."""
    d = REPO/'results'/'miniworld-scratch'
    mine = sorted(p.parent.name for p in (d/'oracle').glob('*/scores.json'))
    assert mine == sorted(p.parent.name for p in (REPO/'reports'/'oracle').glob('*/scores.json')) and mine
    for m in mine:
        assert (d/'oracle'/m/'scores.json').read_bytes() == (REPO/'reports'/'oracle'/m/'scores.json').read_bytes(), m
