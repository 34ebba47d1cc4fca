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
computed with diffaug.tables' and diffaug.decisions' functions.

`--set KEY=VALUE` adds overrides to every variant (e.g. a reduced check: `--set runs.seeds=[0] --set concepts.steps=50
--results results/ablations-reduced`); they are recorded in run.json and named in the README.

The machinery is the package's: diffaug.experiments (nbs/93_experiments.ipynb: running and collecting) and
diffaug.experiment_tables (nbs/93b_experiment_tables.ipynb: the README's tables and claims); this script is their command line.
"""
from __future__ import annotations
import argparse, shutil, sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path: sys.path.insert(0, str(REPO))

from diffaug.experiments import variants, prepare_workdir, run_variant  # the machinery: nbs/93_experiments.ipynb
from diffaug.experiment_tables import rewrite_report, write_readme  # the tables: nbs/93b_experiment_tables.ipynb


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
    names = variants(REPO/'params')
    if a.only:
        bad = sorted(set(a.only) - set(names))
        if bad: ap.error(f"unknown variant(s) {bad}; known: {', '.join(names)}")
        names = {k: v for k, v in names.items() if k in a.only}
    if not a.readme_only:
        if a.rerun and not a.dry:
            for v in names: shutil.rmtree(a.results/v, ignore_errors=True)
        workdir = prepare_workdir(a.workdir, REPO, dry=a.dry)
        done_by = {}
        for v, f in names.items(): run_variant(v, f, workdir, a.results, a.sets, a.nice, a.dry, done_by, REPO)
    if not a.dry:
        a.results.mkdir(parents=True, exist_ok=True)
        for v in names:  # each variant's summary (its gains' marks) with the one decision rule (diffaug.decisions.decide), from its collected runs
            if (a.results/v/'run.json').is_file(): rewrite_report(a.results/v, only=['summary.md'])
        print('wrote', write_readme(a.results, REPO/'params'), flush=True)
    return 0

if __name__ == '__main__': sys.exit(main())
