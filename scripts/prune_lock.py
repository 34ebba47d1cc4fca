#!/usr/bin/env python
"""Drop from dvc.lock the entries of stages dvc.yaml no longer has (DVC keeps them: a stage renamed or a foreach item
removed leaves its old entry behind), so the committed lock describes exactly the committed pipeline.

    python scripts/prune_lock.py [--check]      # --check: exit 1 (naming them) if there are stale entries, change nothing

The lock's text is kept as DVC wrote it: whole top-level stage blocks are removed, nothing is re-serialised.
"""
import argparse, re, sys
from pathlib import Path
import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path: sys.path.insert(0, str(REPO))


def current_stages(root:Path=REPO)->set:
    "The stage names `dvc repro` of dvc.yaml with params.yaml locks (foreach groups expanded as `name@item`)."
    from diffaug.params import get_dotted, load_yaml
    stages = yaml.safe_load((root/'dvc.yaml').read_text())['stages']; p = load_yaml((root/'params.yaml').read_text())
    names = set()
    for k, v in stages.items():
        fe = v.get('foreach')
        if fe is None: names.add(k); continue
        items = get_dotted(p, fe.strip('${} ')) if isinstance(fe, str) else fe  # `${runs.methods}` or a literal list / dict
        names |= {f'{k}@{i}' for i in items}
    return names


def stale(root:Path=REPO)->list:
    "Entries of dvc.lock that are not stages of dvc.yaml."
    lock = yaml.safe_load((root/'dvc.lock').read_text())['stages']
    return sorted(set(lock) - current_stages(root))


def prune(root:Path=REPO)->list:
    "Remove the stale entries' blocks from dvc.lock; returns their names."
    bad = set(stale(root))
    if not bad: return []
    out, skip = [], False
    for line in (root/'dvc.lock').read_text().splitlines(keepends=True):
        m = re.match(r'^  (\S[^:]*):\s*$', line)  # a stage's first line (two-space indent under `stages:`)
        if m: skip = m.group(1).strip('\'"') in bad
        elif not line.startswith('  '): skip = False
        if not skip: out.append(line)
    (root/'dvc.lock').write_text(''.join(out))
    assert not stale(root)
    return sorted(bad)


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0]); ap.add_argument('--check', action='store_true')
    a = ap.parse_args()
    if a.check:
        s = stale()
        if s: print(f"dvc.lock has {len(s)} entries of stages dvc.yaml does not have: {', '.join(s)}"); sys.exit(1)
        sys.exit(0)
    print('removed', prune() or 'nothing')
