#!/usr/bin/env python
"""Run the paper's ablations on the mini world (params/miniworld-ablation-*.yaml) and write results/ablations/README.md.

    python scripts/ablations.py [--dry] [--only NAME ...] [--set KEY=VALUE ...] [--workdir DIR] [--results DIR] [--rerun]
    python scripts/ablations.py --readme-only          # rebuild results/ablations/README.md from the collected variants

Each variant runs with `dvc exp run` (the command `python -m diffaug.pipeline setup` prints: `setup_command`), with
`report` as the target (only the stages it needs: never the compared methods' concepts or sets), in a WORK COPY of the
repository (default: `<repo>-ablations/` beside it): the committed files of HEAD, in a git repository of its own, so the
working tree, its DVC cache, its experiments and its git refs are never touched. The work copy persists: the stages a
variant does not change (prepare, concepts, suffixes, inversion, original's classifier runs) are not rerun by the next
variant, and an interrupted variant resumes (the long stages resume their unfinished work). Before each variant the work
copy's params.yaml is reset to HEAD's, so a setup is applied to the embedded default, never to the previous variant.

A variant is finished when `<results>/<variant>/run.json` exists with the digest of its effective parameters; it is not
rerun (`--rerun` forces it). Variants whose effective parameters are identical (e.g. mode-circle, s03, suffixes-all,
expansion-5: each is the default's Diff-II) run once; the others copy its results and say so (`same_as`).

Per variant `<results>/<variant>/` holds the report's summary.md, metrics.json, scores.csv and runs.csv, the runs'
metrics.json (`classification/<method>/s<seed>/`) and the oracle's scores (`oracle/<method>/scores.json`), and run.json
(setup, overrides, commit, wall time). README.md: one table per ablation family (variant | Diff-II top-1 | paired gain
over original [95% interval] | oracle faithfulness | diversity | to source) and fig7.png (faithfulness, diversity and
top-1 against the split ratio s), and the paper's ablation claims, each reproduced, contradicted or not measured,
computed with diffaug.tables' functions.

`--set KEY=VALUE` adds overrides to every variant (e.g. a reduced check: `--set runs.seeds=[0] --set concepts.steps=50
--results results/ablations-reduced`); they are recorded in run.json and named in the README.
"""
from __future__ import annotations
import argparse, functools, hashlib, io, json, os, re, shlex, shutil, subprocess, sys, tarfile, tempfile, time
import yaml
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path: sys.path.insert(0, str(REPO))

from diffaug.params import STAGES, setup_command, setup_overrides, set_dotted, get_dotted, load_yaml, parse_assignment
from diffaug.tables import collect_runs, collect_scores, summarize, paired_gains
from diffaug.files import atomic_write_json, atomic_write_text

PREFIX = 'miniworld-ablation-'
FAMILIES = [  # (title, what the paper reports, variant names in order)
    ('Table 4: interpolation mode, concept learning, two-stage denoising',
     "Table 4 (5-shot Aircraft, ResNet-50; LPIPS diversity / top-1): LI 27.5% / 37.32, SI 30.4% / 38.37, SE 35.4% / 37.70, "
     "SI + SE without TD 51.5% / 40.49, no concept learning 49.9% / 31.53, everything 52.7% / 42.15: each component raises "
     "diversity and accuracy.",
     ['mode-linear', 'mode-slerp', 'mode-extrapolate', 'mode-circle', 'no-concepts', 'no-two-stage']),
    ('Fig. 7: the split ratio s', "Fig. 7 (5-shot CUB): larger s, markedly more diversity (LPIPS) and a slightly lower "
     "CLIP score; s = 0.3 for 5-shot.", ['s0', 's01', 's03', 's05', 's1']),
    ('The number of suffixes', 'Not ablated in the paper (7-10 suffixes per dataset).',
     ['suffixes-1', 'suffixes-3', 'suffixes-10', 'suffixes-all']),
    ('The expansion multiplier', 'Diff-Mix: more synthetic data, better accuracy; Diff-II uses 5.',
     ['expansion-1', 'expansion-2', 'expansion-5']),
]
REPORT_FILES = ('summary.md', 'claims.md', 'groups.md', 'metrics.json', 'scores.csv', 'runs.csv')
METHOD, BASELINE = 'diff-ii', 'original'


# ---------------------------------------------------------------- variants and their parameters
def variants(params_dir:Path=REPO/'params')->dict:
    "{variant name: setup file}, in the families' order (then any other ablation setup)."
    found = {p.stem[len(PREFIX):]: p for p in sorted(Path(params_dir).glob(f'{PREFIX}*.yaml'))}
    order = [v for _, _, vs in FAMILIES for v in vs if v in found]
    return {v: found[v] for v in order + sorted(set(found) - set(order))}

def overrides(setup:Path, params_file:Path, extra:list=())->dict:
    "The dotted overrides of `setup` over `params_file` (`setup_overrides`), then the `--set` assignments."
    flat = setup_overrides(setup, params_file)
    for s in extra: k, v = parse_assignment(s); flat[k] = load_yaml(v)
    return flat

@functools.lru_cache(maxsize=None)
def _defaults(stage:str)->dict: return {k: dv for k, (_, dv, _) in STAGES[stage].config_class().fields_doc().items()}

def effective(flat:dict, params_file:Path)->dict:
    "The whole parameter file a variant runs with, every stage section completed with its class's defaults."
    d = load_yaml(Path(params_file).read_text()) or {}
    for k, v in flat.items(): set_dotted(d, k, v)
    for sec in list(d):
        if sec in STAGES and isinstance(d[sec], dict): d[sec] = {**_defaults(sec), **d[sec]}
    return d

def digest(obj)->str: return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- the work copy
def git(*args, cwd, check=True)->str:
    return subprocess.run(['git', *args], cwd=cwd, check=check, capture_output=True, text=True).stdout.strip()

def head_commit(repo:Path=REPO)->str: return git('rev-parse', 'HEAD', cwd=repo)

def cached_outs(root:Path)->list:
    "The paths of dvc.yaml's cached outputs (`${section.key}` filled from params.yaml; foreach stages left out)."
    stages = yaml.safe_load((Path(root)/'dvc.yaml').read_text())['stages']; p = load_yaml((Path(root)/'params.yaml').read_text())
    outs = []
    for st in stages.values():
        for o in st.get('outs', []):
            path, opts = (o, {}) if isinstance(o, str) else next(iter(o.items()))
            if (opts or {}).get('cache', True) is not False:
                outs.append(re.sub(r'\$\{([\w.]+)\}', lambda m: str(get_dotted(p, m.group(1))), path).rstrip('/'))
    return outs

def prepare_workdir(workdir:Path, repo:Path=REPO, dry:bool=False)->Path:
    """A git repository at `workdir` holding HEAD's committed files of `repo` (made, or brought to HEAD: one commit per update;
    the work copy's dvc.lock, which describes its outputs, is kept). Committed files inside a cached DVC output (left from an
    older layout, e.g. data/annotated/.gitignore, reports/classification/*) are left out: DVC refuses an output git tracks."""
    commit = head_commit(repo); workdir = Path(workdir)
    if (workdir/'.git').exists() and git('log', '-1', '--format=%s', cwd=workdir, check=False) == f'diffaug {commit}':
        return workdir
    print(f"work copy {workdir}: {'would bring' if dry else 'bringing'} it to {commit[:10]}", flush=True)
    if dry: return workdir
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, 'GIT_AUTHOR_NAME': 'ablations', 'GIT_AUTHOR_EMAIL': 'ablations@localhost',
           'GIT_COMMITTER_NAME': 'ablations', 'GIT_COMMITTER_EMAIL': 'ablations@localhost'}
    lock = (workdir/'dvc.lock').read_bytes() if (workdir/'dvc.lock').is_file() and (workdir/'.git').exists() else None
    if not (workdir/'.git').exists(): subprocess.run(['git', 'init', '-q'], cwd=workdir, check=True)
    else:
        for rel in git('ls-files', '-z', cwd=workdir).split('\0'):  # files HEAD no longer has go
            if rel and (workdir/rel).is_file(): (workdir/rel).unlink()
    tar = subprocess.run(['git', 'archive', '--format=tar', commit], cwd=repo, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        outs = cached_outs_of(t)
        t.extractall(workdir, members=[m for m in t.getmembers() if not any(m.name == o or m.name.startswith(o + '/') for o in outs)], filter='data')
    if lock is not None: (workdir/'dvc.lock').write_bytes(lock)
    (workdir/'.git/info').mkdir(parents=True, exist_ok=True)  # git never tracks the outputs here (DVC does)
    (workdir/'.git/info/exclude').write_text(''.join(f'/{o}\n' for o in outs))
    subprocess.run(['git', 'rm', '-r', '-q', '--cached', '--ignore-unmatch', '--', *outs], cwd=workdir, check=True, capture_output=True)
    subprocess.run(['git', 'add', '-A'], cwd=workdir, check=True, env=env)
    subprocess.run(['git', 'commit', '-q', '--allow-empty', '-m', f'diffaug {commit}'], cwd=workdir, check=True, env=env)
    return workdir

def cached_outs_of(t:tarfile.TarFile)->list:
    "`cached_outs` of the dvc.yaml and params.yaml in an archive."
    with tempfile.TemporaryDirectory() as d:
        for n in ('dvc.yaml', 'params.yaml'): (Path(d)/n).write_bytes(t.extractfile(n).read())
        return cached_outs(d)

def stage_env(workdir:Path)->dict:
    "The stages' environment: this interpreter's bin/ first on PATH (DVC's commands call `python`), the work copy's package, one thread."
    return {**os.environ, 'PATH': f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            'PYTHONPATH': str(workdir), 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '1')}


# ---------------------------------------------------------------- collecting one variant, the README
def collect_variant(workdir:Path, dest:Path, methods:list, seeds:list, record:dict)->Path:
    "Copy a finished variant's report files, runs' metrics.json and oracle scores from `workdir` into `dest`, then run.json."
    workdir, dest = Path(workdir), Path(dest)
    tmp = dest.with_name(dest.name + '.partial'); shutil.rmtree(tmp, ignore_errors=True); tmp.mkdir(parents=True)
    for f in REPORT_FILES:
        if (workdir/'reports/report'/f).is_file(): shutil.copy2(workdir/'reports/report'/f, tmp/f)
    for m in methods:
        for s in seeds:
            src = workdir/'reports/classification'/m/f's{s}'/'metrics.json'
            (tmp/'classification'/m/f's{s}').mkdir(parents=True, exist_ok=True); shutil.copy2(src, tmp/'classification'/m/f's{s}'/'metrics.json')
        sc = workdir/'reports/oracle'/m/'scores.json'
        if sc.is_file(): (tmp/'oracle'/m).mkdir(parents=True, exist_ok=True); shutil.copy2(sc, tmp/'oracle'/m/'scores.json')
    atomic_write_json(tmp/'run.json', record)
    if dest.exists(): shutil.rmtree(dest)
    tmp.rename(dest)
    return dest

def variant_rows(results:Path, names:list)->list:
    "Per collected variant: Diff-II's top-1 (mean, std, seeds), its paired gain over original and the oracle's scores of its set."
    rows = []
    for v in names:
        d = Path(results)/v
        if not (d/'run.json').is_file(): rows.append({'variant': v}); continue
        rec = json.loads((d/'run.json').read_text())
        df = collect_runs(d/'classification', rec['methods'], rec['seeds'])
        s = summarize(df); g = paired_gains(df, 'top1', BASELINE)
        sc = collect_scores(d/'oracle', [METHOD])
        r = {'variant': v, 'n_seeds': int(s.loc[METHOD, 'n_seeds']), 'top1': s.loc[METHOD, 'top1_mean'], 'top1_std': s.loc[METHOD, 'top1_std'],
             'original': s.loc[BASELINE, 'top1_mean'], 'gain': g.loc[METHOD, 'gain'], 'ci_low': g.loc[METHOD, 'ci_low'], 'ci_high': g.loc[METHOD, 'ci_high'],
             'same_as': rec.get('same_as'), 'wall_s': rec.get('wall_s'), 'overrides': rec.get('overrides', {}), 'extra': rec.get('extra', [])}
        if METHOD in sc.index: r.update({k: sc.loc[METHOD, k] for k in ('faithfulness', 'diversity', 'source_distance')})
        rows.append(r)
    return rows

def _f(v, fmt)->str:
    import math
    return '—' if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

def family_table(rows:list, link:str|None='')->str:
    "One family's Markdown table (each variant linked to `<link><variant>/summary.md`; None: not linked)."
    lines = ['| variant | Diff-II top-1 | paired gain over original [95% interval] | oracle faithfulness | diversity | to source |',
             '|---|---:|---:|---:|---:|---:|']
    for r in rows:
        if 'top1' not in r: lines.append(f"| {r['variant']} | not run | | | | |"); continue
        gain = f"{_f(r['gain'], '+.1f')} [{_f(r['ci_low'], '+.1f')}, {_f(r['ci_high'], '+.1f')}]"
        if r['ci_low'] == r['ci_low'] and r['ci_low'] > 0: gain += ' ▲'
        elif r['ci_high'] == r['ci_high'] and r['ci_high'] < 0: gain += ' ▼'
        faith = _f(100 * r['faithfulness'], '.1f') + '%' if r.get('faithfulness') is not None else '—'
        name = (r['variant'] if link is None else f"[{r['variant']}]({link}{r['variant']}/summary.md)") + (f" (= {r['same_as']})" if r.get('same_as') else '')
        lines.append(f"| {name} | {r['top1']:.1f} ± {r['top1_std']:.1f} | {gain} | {faith} | {_f(r.get('diversity'), '.3f')} | {_f(r.get('source_distance'), '.3f')} |")
    return '\n'.join(lines) + '\n'

def plot_split_ratio(rows:list):
    "Fig. 7 on the mini world: faithfulness, diversity and top-1 (± std; original dashed) against s; returns the figure."
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows = [r for r in rows if 'top1' in r]
    s = [float(r['overrides'].get('interpolation.suffix_fraction', 0.3)) for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for ax, key, lab in zip(axes, ('faithfulness', 'diversity', 'top1'), ('oracle faithfulness (%)', 'oracle diversity', 'top-1 (%)')):
        y = [(100 if key == 'faithfulness' else 1) * (r.get(key) if r.get(key) is not None else float('nan')) for r in rows]
        if key == 'top1':
            ax.errorbar(s, y, yerr=[r['top1_std'] for r in rows], marker='o', capsize=3, label='Diff-II')
            ax.plot(s, [r['original'] for r in rows], '--', color='#888888', label='original'); ax.legend(fontsize=7)
        else: ax.plot(s, y, marker='o')
        ax.set_xlabel('split ratio s (suffix_fraction)'); ax.set_ylabel(lab); ax.set_xticks(s)
    fig.suptitle('mini world, 5-shot: the split ratio s (the paper\'s Fig. 7: CLIP score and LPIPS against s)')
    fig.tight_layout()
    return fig

def _trend(rows:list, x:list, key:str)->float|None:
    "Rank (Spearman) correlation of `key` with `x` over the collected rows (None: fewer than 3 points)."
    import pandas as pd
    pts = [(xi, r[key]) for xi, r in zip(x, rows) if r.get(key) is not None and r[key] == r[key]]
    if len(pts) < 3 or len({p[0] for p in pts}) < 2 or len({p[1] for p in pts}) < 2: return None
    a, b = zip(*pts)
    return float(pd.Series(a).corr(pd.Series(b), method='spearman'))

def _within(a:dict, b:dict)->bool:
    "Two variants' Diff-II top-1 differ by no more than the larger of their seed standard deviations (a difference the seeds could make)."
    return abs(a['top1'] - b['top1']) <= max(a['top1_std'], b['top1_std'])

def claims(rows:dict)->list:
    "Markdown bullets: each of the paper's ablation claims, reproduced or contradicted on the mini world, or not measured."
    by = {r['variant']: r for rs in rows.values() for r in rs if 'top1' in r}
    out = []
    def say(claim, ok, numbers, undecided=False):
        verdict = 'not decided' if undecided else 'not measured (variants missing)' if ok is None else '**reproduced**' if ok else '**contradicted**'
        out.append(f"- {claim}: {verdict}" + (f" ({numbers})" if numbers else ''))
    modes = [m for m in ('mode-linear', 'mode-slerp', 'mode-extrapolate', 'mode-circle') if m in by and by[m].get('diversity') is not None]
    num = lambda k: ', '.join(f"{m.removeprefix('mode-')} {by[m][k]:.3g}" for m in modes)
    full = len(modes) == 4
    say('Table 4: the full circle makes the most diverse set of the four modes', full and max(modes, key=lambda m: by[m]['diversity']) == 'mode-circle' if full else None, num('diversity') if full else '')
    say('Table 4: linear interpolation makes the least diverse set', full and min(modes, key=lambda m: by[m]['diversity']) == 'mode-linear' if full else None, '')
    if full:
        best = max(modes, key=lambda m: by[m]['top1'])
        ok = True if best == 'mode-circle' else None if _within(by[best], by['mode-circle']) else False
        say('Table 4: the full circle gives the best Diff-II top-1 of the four modes', ok, num('top1') + ('; within the seeds\' spread' if ok is None else ''), undecided=ok is None)
    else: say('Table 4: the full circle gives the best Diff-II top-1 of the four modes', None, '')
    for v, what in (('no-concepts', 'concept learning'), ('no-two-stage', 'two-stage denoising')):
        if v not in by or 'mode-circle' not in by: say(f'Table 4: {what} raises top-1', None, ''); continue
        a, b = by['mode-circle'], by[v]; undecided = _within(a, b)
        say(f'Table 4: {what} raises top-1', None if undecided else a['top1'] > b['top1'],
            f"with {a['top1']:.1f} ± {a['top1_std']:.1f}, without {b['top1']:.1f} ± {b['top1_std']:.1f}" + ('; within the seeds\' spread' if undecided else ''), undecided=undecided)
    fam = next((rs for t, rs in rows.items() if t.startswith('Fig. 7')), [])
    fam = [r for r in fam if 'top1' in r]; s = [float(r['overrides'].get('interpolation.suffix_fraction', 0.3)) for r in fam]
    for key, sign, claim in (('diversity', 1, 'Fig. 7: diversity rises with s'), ('faithfulness', -1, 'Fig. 7: faithfulness falls (slowly) with s')):
        c = _trend(fam, s, key)
        say(claim, None if c is None else c * sign > 0, '' if c is None else f"rank correlation with s {c:+.2f}")
    ex = [r for r in rows.get('The expansion multiplier', []) if 'top1' in r]
    xs = [int(r['overrides'].get('interpolation.expansion', 5)) for r in ex]; c = _trend(ex, xs, 'top1')
    lo, hi = (ex[xs.index(min(xs))], ex[xs.index(max(xs))]) if ex else (None, None)
    undecided = c is not None and _within(lo, hi)
    say('Diff-Mix: a larger multiplier, a higher top-1', None if c is None or undecided else c > 0,
        '' if c is None else f"rank correlation with the multiplier {c:+.2f}; {min(xs)}x {lo['top1']:.1f} ± {lo['top1_std']:.1f}, "
        f"{max(xs)}x {hi['top1']:.1f} ± {hi['top1_std']:.1f}" + ('; within the seeds\' spread' if undecided else ''), undecided=undecided)
    out.append("- Cannot be tested here: the CLIP score and LPIPS themselves (no real CLIP or AlexNet offline: the oracle's faithfulness "
               "and feature diversity stand in), the paper's datasets (Aircraft, CUB) and its pretrained ResNet-50.")
    return out

def tables(results:Path, params_dir:Path=REPO/'params', link:str|None='', figure:bool=True, h:str='##')->tuple:
    "The families' tables (variants linked under `link`; the Fig. 7 figure's image line if `figure`) and the claims: (Markdown lines, rows per family)."
    results = Path(results); names = variants(params_dir)
    out, all_rows = [], {}
    for title, paper, vs in FAMILIES:
        rows = variant_rows(results, [v for v in vs if v in names]); all_rows[title] = rows
        out += [f'{h} {title}', '', f'The paper: {paper}', '', family_table(rows, link)]
        if figure and title.startswith('Fig. 7') and any('top1' in r for r in rows): out += ['![faithfulness, diversity and top-1 against s](fig7.png)', '']
    out += [f'{h} What the mini world says about the paper\'s claims', '',
            'Decided by the numbers above: a top-1 difference no larger than the seeds\' standard deviation decides nothing ("not decided"); '
            'the oracle\'s scores are of one set per variant.', '', *claims(all_rows), '']
    done = [r for rows in all_rows.values() for r in rows if 'top1' in r]
    extra = sorted({e for r in done for e in r['extra']})
    if extra: out += [f"**Reduced runs**: every variant ran with the extra overrides {', '.join(f'`{e}`' for e in extra)}; "
                      "not the setups' full size.", '']
    walls = [r['wall_s'] for r in done if r.get('wall_s') and not r.get('same_as')]
    if walls: out += [f"Wall time: {sum(walls) / 60:.0f} min over {len(walls)} variant(s) on 2 cores shared with other runs "
                      "(of a resumed variant, only the run that finished it).", '']
    return out, all_rows

def write_readme(results:Path, params_dir:Path=REPO/'params')->Path:
    """results/ablations/README.md (one table per family, fig7.png, the claims) and tables.md, the same without the
    figure and the links to each variant's summary, which the project README (and the docs site) include."""
    results = Path(results)
    head = ["# The paper's ablations on the mini world", '',
            "Made by `python scripts/ablations.py` from the setups `params/miniworld-ablation-*.yaml`. Each variant trains "
            "original (the baseline) and Diff-II on the mini world's 5-shot split; Diff-II's set is scored by the oracle. Top-1: mean ± std "
            "over seeds; gain: Diff-II − original paired by seed, 95% Student-t interval (▲ above 0, ▼ below); faithfulness: the oracle's "
            "accuracy on the intended labels (the mini world's CLIP score); diversity: mean pairwise oracle-feature distance within a class "
            "(its LPIPS); to source: distance to the real images. `(= x)`: the same parameters as x, run once.", '']
    body, rows = tables(results, params_dir)
    fig7 = next(rs for t, rs in rows.items() if t.startswith('Fig. 7'))
    if any('top1' in r for r in fig7):
        import matplotlib.pyplot as plt
        fig = plot_split_ratio(fig7); fig.savefig(results/'fig7.png', dpi=120, bbox_inches='tight', metadata={'Software': None}); plt.close(fig)
    atomic_write_text(results/'README.md', '\n'.join(head + body))
    atomic_write_text(results/'tables.md', '\n'.join(tables(results, params_dir, link=None, figure=False, h='####')[0]))  # no links: the docs site has no results/ pages
    return results/'README.md'


# ---------------------------------------------------------------- running
def run_variant(name:str, setup:Path, workdir:Path, results:Path, extra:list, nice:int, dry:bool, done_by:dict)->None:
    "Run one variant in the work copy (unless finished or identical to one done) and collect it."
    flat = overrides(setup, REPO/'params.yaml', extra)
    eff = effective(flat, REPO/'params.yaml'); key = digest(eff)
    methods, seeds = eff['runs']['methods'], eff['runs']['seeds']
    dest = results/name; rec_file = dest/'run.json'
    if rec_file.is_file() and json.loads(rec_file.read_text()).get('digest') == key:
        print(f"{name}: finished ({rec_file}), not rerun", flush=True); done_by.setdefault(key, name); return
    if key in done_by and (dry or (results/done_by[key]/'run.json').is_file()):
        src = results/done_by[key]
        print(f"{name}: the same parameters as {done_by[key]}: {'would copy' if dry else 'copying'} its results", flush=True)
        if not dry:
            tmp = dest.with_name(dest.name + '.partial'); shutil.rmtree(tmp, ignore_errors=True); shutil.copytree(src, tmp)
            rec = json.loads((tmp/'run.json').read_text()); rec.update(setup=f'params/{setup.name}', same_as=done_by[key])
            atomic_write_json(tmp/'run.json', rec)
            if dest.exists(): shutil.rmtree(dest)
            tmp.rename(dest)
        return
    cmd = setup_command(setup, REPO/'params.yaml')  # dvc exp run -n <setup's stem> -S ++key=value ...
    for s in extra:  # an extra override replaces the setup's value of its key
        k, v = parse_assignment(s); i = 0
        while i < len(cmd):
            if cmd[i] == '-S' and cmd[i + 1].startswith(f'++{k}='): del cmd[i:i + 2]
            else: i += 1
        cmd += ['-S', f"++{k}={json.dumps(load_yaml(v))}"]
    cmd += ['report']  # the target: only the stages the report needs
    full = ['nice', '-n', str(nice)] + cmd if nice else cmd
    print(f"{name}: in {workdir}: {shlex.join(full)}", flush=True)
    if dry: done_by.setdefault(key, name); return
    git('checkout', 'HEAD', '--', 'params.yaml', cwd=workdir)  # the embedded default, not the previous variant's values
    subprocess.run(['dvc', 'exp', 'remove', setup.stem], cwd=workdir, capture_output=True, env=stage_env(workdir))  # a rerun reuses the name
    t0 = time.time()
    r = subprocess.run(full, cwd=workdir, env=stage_env(workdir))
    if r.returncode: raise SystemExit(f"{name}: dvc exp run failed (exit {r.returncode}); rerun the script to resume")
    wall = round(time.time() - t0, 1)
    collect_variant(workdir, dest, methods, seeds, {'variant': name, 'setup': f'params/{setup.name}', 'digest': key, 'commit': head_commit(),
                                                    'methods': methods, 'seeds': seeds, 'overrides': flatten_for_record(flat),
                                                    'extra': list(extra), 'wall_s': wall, 'same_as': None,
                                                    'prepare': eff.get('prepare'), 'threads': stage_env(workdir)['OMP_NUM_THREADS']})
    done_by.setdefault(key, name)
    print(f"{name}: done in {wall / 60:.1f} min -> {dest}", flush=True)

def flatten_for_record(flat:dict)->dict:
    "The overrides as JSON values (for run.json)."
    return json.loads(json.dumps(flat, default=str))

def main(argv=None)->int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument('--dry', action='store_true', help='print what would run, run nothing')
    ap.add_argument('--only', nargs='+', default=None, metavar='NAME', help='these variants only (e.g. mode-linear s05)')
    ap.add_argument('--set', dest='sets', action='append', default=[], metavar='KEY=VALUE', help='an extra override for every variant')
    ap.add_argument('--workdir', type=Path, default=REPO.parent/f'{REPO.name}-ablations', help='the work copy (default: <repo>-ablations beside the repo)')
    ap.add_argument('--results', type=Path, default=REPO/'results'/'ablations', help='where the variants and README.md go')
    ap.add_argument('--rerun', action='store_true', help='rerun finished variants too')
    ap.add_argument('--nice', type=int, default=15, help='niceness of the runs (0: none)')
    ap.add_argument('--readme-only', action='store_true', help='only rebuild README.md from the collected variants')
    a = ap.parse_args(argv)
    names = variants()
    if a.only:
        bad = sorted(set(a.only) - set(names))
        if bad: ap.error(f"unknown variant(s) {bad}; known: {', '.join(names)}")
        names = {k: v for k, v in names.items() if k in a.only}
    if not a.readme_only:
        if a.rerun and not a.dry:
            for v in names: shutil.rmtree(a.results/v, ignore_errors=True)
        workdir = prepare_workdir(a.workdir, dry=a.dry)
        done_by = {}
        for v, f in names.items(): run_variant(v, f, workdir, a.results, a.sets, a.nice, a.dry, done_by)
    if not a.dry:
        a.results.mkdir(parents=True, exist_ok=True)
        print('wrote', write_readme(a.results), flush=True)
    return 0

if __name__ == '__main__': sys.exit(main())
