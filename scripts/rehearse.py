#!/usr/bin/env python
"""Rehearse paper setups on this CPU: each setup of params/ run through `dvc exp run` exactly as written, with SD 1.5's,
CLIP's, BLIP's and the classifiers' real architectures at random weights and only the counts shrunk (nbs/94_rehearsal.ipynb).

    python scripts/rehearse.py cub-5shot-resnet50 [waterbirds-5shot-resnet50 ...] [--set prepare.raw=DIR] [--dry]
    python scripts/rehearse.py --all           # the 23 paper setups (every params/*.yaml but the mini world's)
    python scripts/rehearse.py --table-only    # rewrite results/rehearsal/table.md from the records
    python scripts/rehearse.py --processes     # one process vs two (torchrun) at SD 1.5's architecture

Each runs in a work copy of HEAD's committed files (default `<repo>-rehearsal/` beside the repository; the working
tree and its DVC cache are never touched); the models (about 4.5 GB) and the datasets' native-layout fixtures are
written once into `data/rehearsal/` of the repository. Each setup's record goes to `results/rehearsal/<setup>.json`
(setup, commit, every stage's wall time and peak memory, the report's methods, the changed values and why, the
environment), and `results/rehearsal/table.md` is the table of all records, which the README includes.
`--processes` runs concepts, synthesis, inversion + interpolation and classification once with one process and once
with two (torch.distributed.run, gloo) at SD 1.5's architecture, and writes `results/rehearsal/processes/sd15.json`
(which sets are byte-identical, how far training moved) and `sd15.md`, its table (about 7 GB of memory per process).
"""
from __future__ import annotations
import argparse, json, sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path: sys.path.insert(0, str(REPO))

from diffaug.experiments import prepare_workdir  # the work copy: nbs/93_experiments.ipynb
from diffaug.rehearsal import rehearse, rehearsal_table, paper_setups  # nbs/94_rehearsal.ipynb
from diffaug.processes import rehearse_processes, process_table  # nbs/95_processes.ipynb
from diffaug.files import atomic_write_text, atomic_write_json


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument('setups', nargs='*', help='setup names in params/ (e.g. cub-5shot-resnet50)')
    ap.add_argument('--all', action='store_true', help='every paper setup')
    ap.add_argument('--set', dest='sets', action='append', default=[], metavar='KEY=VALUE', help='an override for every setup')
    ap.add_argument('--workdir', type=Path, default=REPO.parent/f'{REPO.name}-rehearsal', help='the work copy')
    ap.add_argument('--results', type=Path, default=REPO/'results'/'rehearsal', help='where the records go')
    ap.add_argument('--cache', type=Path, default=REPO/'data'/'rehearsal', help='models/ and raw/ (fixtures), written once')
    ap.add_argument('--skip-done', action='store_true', help='skip setups whose record (at this commit) passed')
    ap.add_argument('--dry', action='store_true', help='print the commands, run nothing')
    ap.add_argument('--table-only', action='store_true', help='only rewrite table.md')
    ap.add_argument('--processes', action='store_true', help="one process vs two at SD 1.5's architecture (results/rehearsal/processes/)")
    a = ap.parse_args(argv)
    if a.processes:  # each launch runs every stage in one process group (concepts in bf16, then classification in fp32)
        rec = rehearse_processes(a.cache.resolve(), a.cache.resolve()/'processes', a.results/'processes')
        atomic_write_text(a.results/'processes'/'sd15.md', process_table(rec)); print(process_table(rec))
        return 0 if rec['ok'] else 1
    names = paper_setups(REPO/'params') if a.all else a.setups
    bad = [s for s in names if not (REPO/'params'/f'{s}.yaml').is_file()]
    if bad: ap.error(f"no setup file {', '.join(f'params/{s}.yaml' for s in bad)}")
    if not names and not a.table_only: ap.error('name setups, or --all')
    failed = []
    if not a.table_only:
        workdir = REPO if a.dry else prepare_workdir(a.workdir, REPO)  # a dry run reads this repository's params.yaml
        for s in names:
            rec = a.results/f'{s}.json'
            if a.skip_done and rec.is_file() and '"ok": true' in rec.read_text(): print(f"{s}: passed before, skipped"); continue
            r = rehearse(REPO/'params'/f'{s}.yaml', workdir, None if a.dry else a.results, a.sets, a.cache.resolve(), dry=a.dry, reset_params=True)
            if not a.dry and not r['ok']: failed.append(s)
    if a.dry: return 0
    a.results.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.results/'table.md', rehearsal_table(a.results)); print('wrote', a.results/'table.md')
    if failed: print('failed:', ' '.join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__': sys.exit(main())
