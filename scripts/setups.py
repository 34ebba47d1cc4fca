#!/usr/bin/env python
"""Run mini-world setups besides the embedded default (params/miniworld-10shot.yaml, params/miniworld-lt-if10.yaml) and
write the tables the README includes.

    python scripts/setups.py [SETUP ...] [--dry] [--workdir DIR] [--results DIR] [--rerun] [--set KEY=VALUE ...]
    python scripts/setups.py --tables-only        # rewrite results/<setup>/table.md from the collected runs

A setup runs as `python -m diffaug.pipeline setup params/<setup>.yaml` would (`dvc exp run -n <setup> -S ...`, target
`report`), in a work copy of HEAD's committed files (default: `<repo>-setups/` beside the repository; the machinery is
scripts/ablations.py's, which documents it: the working tree and its DVC cache are never touched, an interrupted run
resumes, a finished one is not rerun unless its effective parameters changed).

Per setup `<results>/<setup>/` holds the report's summary.md, claims.md, groups.md, metrics.json, scores.csv and runs.csv,
every run's metrics.json and the oracle's scores, run.json (setup, overrides, commit, wall time) and table.md: one line
(split, seeds, wall time, commit) and the report's summary.md, which the README includes (`<!-- include: ... -->`,
checked by tests/test_docs.py). tests/test_setups.py recomputes every table's top-1 column from the runs.
"""
from __future__ import annotations
import argparse, importlib.util, json, sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path: sys.path.insert(0, str(REPO))

_spec = importlib.util.spec_from_file_location('ablations', Path(__file__).with_name('ablations.py'))
abl = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(abl)

SETUPS = ('miniworld-10shot', 'miniworld-lt-if10')  # the README's tables besides the default's, in its order


def describe(prepare:dict)->str:
    "The split of a setup's `prepare` section in words."
    if prepare.get('kind') == 'long-tail':
        return f"long tail, imbalance factor {prepare.get('imbalance_factor')} ({prepare.get('lt_rule', 'diffmix')} rule)"
    return f"{prepare.get('shots')}-shot"


def table_md(d:Path)->str:
    "results/<setup>/table.md: what ran (split, methods, seeds, wall time, commit), then the report's summary.md."
    rec = json.loads((d/'run.json').read_text())
    wall = f"{rec['wall_s'] / 60:.0f} min" if rec.get('wall_s') else 'not recorded'
    head = (f"*`params/{Path(rec['setup']).name}`: {describe(rec.get('prepare') or {})}, {len(rec['methods'])} methods, "
            f"{len(rec['seeds'])} seeds (mean ± std), `dvc exp run` wall time {wall} on 2 cores, commit {rec['commit'][:7]}.*")
    return head + '\n\n' + (d/'summary.md').read_text()


def main(argv=None)->int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument('setups', nargs='*', default=list(SETUPS), help=f"setup names in params/ (default: {' '.join(SETUPS)})")
    ap.add_argument('--dry', action='store_true', help='print what would run, run nothing')
    ap.add_argument('--set', dest='sets', action='append', default=[], metavar='KEY=VALUE', help='an extra override for every setup')
    ap.add_argument('--workdir', type=Path, default=REPO.parent/f'{REPO.name}-setups', help='the work copy (default: <repo>-setups beside the repo)')
    ap.add_argument('--results', type=Path, default=REPO/'results', help='where <setup>/ goes')
    ap.add_argument('--rerun', action='store_true', help='rerun finished setups too')
    ap.add_argument('--nice', type=int, default=10, help='niceness of the runs (0: none)')
    ap.add_argument('--tables-only', action='store_true', help='only rewrite the table.md of the collected setups')
    a = ap.parse_args(argv)
    files = {s: REPO/'params'/f'{s}.yaml' for s in a.setups}
    bad = [s for s, f in files.items() if not f.is_file()]
    if bad: ap.error(f"no setup file {', '.join(f'params/{s}.yaml' for s in bad)}")
    if not a.tables_only:
        workdir = abl.prepare_workdir(a.workdir, dry=a.dry); done_by = {}
        for s, f in files.items():
            if a.rerun and not a.dry: abl.shutil.rmtree(a.results/s, ignore_errors=True)
            abl.run_variant(s, f, workdir, a.results, a.sets, a.nice, a.dry, done_by)
    if a.dry: return 0
    for s in files:
        d = a.results/s
        if (d/'run.json').is_file(): abl.atomic_write_text(d/'table.md', table_md(d)); print('wrote', d/'table.md', flush=True)
    return 0

if __name__ == '__main__': sys.exit(main())
