#!/usr/bin/env python
"""Run mini-world setups besides the embedded default (params/miniworld-10shot.yaml, params/miniworld-lt-if100.yaml) and
write the tables the README includes.

    python scripts/setups.py [SETUP ...] [--dry] [--workdir DIR] [--results DIR] [--rerun] [--set KEY=VALUE ...]
    python scripts/setups.py --tables-only        # rewrite results/<setup>/table.md (and the report's summary, claims, shots) from the collected runs

A setup runs as `python -m diffaug.pipeline setup params/<setup>.yaml` would (`dvc exp run -n <setup> -S ...`, target
`report`), in a work copy of HEAD's committed files (default: `<repo>-setups/` beside the repository; the machinery is
diffaug.experiments' (nbs/93_experiments.ipynb; the tables: diffaug.experiment_tables), which documents it: the working
tree and its DVC cache are never touched, an interrupted run
resumes, a finished one is not rerun unless its effective parameters changed).

Per setup `<results>/<setup>/` holds the report's summary.md, claims.md, groups.md, shots.md, metrics.json, scores.csv and runs.csv,
every run's metrics.json and the oracle's scores, run.json (setup, overrides, commit, wall time) and table.md: one line
(split, seeds, wall time, commit) and the report's summary.md, which the README includes (`<!-- include: ... -->`,
checked by tests/test_docs.py). tests/test_setups.py recomputes every table's top-1 column from the runs.
"""
from __future__ import annotations
import argparse, shutil, sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path: sys.path.insert(0, str(REPO))

from diffaug.experiments import SETUPS, prepare_workdir, run_variant  # the machinery: nbs/93_experiments.ipynb
from diffaug.experiment_tables import rewrite_report, table_md  # the tables: nbs/93b_experiment_tables.ipynb
from diffaug.files import atomic_write_text


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
        workdir = prepare_workdir(a.workdir, REPO, dry=a.dry); done_by = {}
        for s, f in files.items():
            if a.rerun and not a.dry: shutil.rmtree(a.results/s, ignore_errors=True)
            run_variant(s, f, workdir, a.results, a.sets, a.nice, a.dry, done_by, REPO)
    if a.dry: return 0
    for s in files:
        d = a.results/s
        if (d/'run.json').is_file():
            rewrite_report(d)  # summary.md, claims.md, shots.md: the verdicts of diffaug.decisions.decide, from the collected runs
            atomic_write_text(d/'table.md', table_md(d)); print('wrote', d/'table.md', flush=True)
    return 0

if __name__ == '__main__': sys.exit(main())
