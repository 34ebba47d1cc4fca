#!/usr/bin/env python
"""Where the time of a `dvc repro` goes, per stage, from the executed notebooks it left under reports/.

    python benchmarks/stage_times.py [reports] [--out benchmarks/stage_times]   # after `dvc repro`

Each stage's executed notebook (written by `python -m diffaug.pipeline <stage>`) records in its papermill metadata
when the kernel ran and how long each cell took. Per stage this script reports:
- work: the cells that call the stage's `run_<stage>` (the computation itself);
- in-kernel overhead: the other cells (imports, figures) and the kernel's own start and stop;
- gap: the time between the previous stage's end and this stage's kernel start (DVC's bookkeeping, the runner's
  start and parameter checks, the kernel's launch).
It writes <out>.json (the numbers) and <out>.md (the table the README includes) and prints the table.
"""
import argparse, json, re, sys
from datetime import datetime
from pathlib import Path


def load(path: Path, reports: Path) -> dict | None:
    "One executed stage notebook's timings, or None for one that did not finish."
    nb = json.loads(path.read_text(encoding='utf-8'))
    pm, meta = nb['metadata'].get('papermill') or {}, nb['metadata'].get('diffaug') or {}
    if not pm.get('start_time') or not pm.get('end_time'): return None
    start, end = datetime.fromisoformat(pm['start_time']), datetime.fromisoformat(pm['end_time'])
    stage = meta.get('stage') or path.parent.name
    sub = path.parent.relative_to(reports).as_posix()  # synthesis/<method>: one DVC stage per method
    if sub != stage and sub.startswith(stage + '/'): stage = f"{stage}@{sub[len(stage) + 1:]}"
    work = cells = 0.0
    for c in nb['cells']:
        if c['cell_type'] != 'code': continue
        d = (c['metadata'].get('papermill') or {}).get('duration') or 0.0
        cells += d
        if re.search(r'\brun_\w+\(', ''.join(c['source'])): work += d
    return {'stage': stage, 'notebook': path.as_posix(), 'start': start, 'end': end,
            'wall': (end - start).total_seconds(), 'work': work, 'cells': cells}


def table(reports: Path) -> dict:
    "Per-stage rows in run order, and the totals."
    rows = [r for r in (load(p, reports) for p in sorted(reports.rglob('*.ipynb')) if not p.name.endswith(('.running.ipynb', '.failed.ipynb'))) if r]
    if not rows: raise SystemExit(f'{reports}: no executed stage notebooks (run `dvc repro` first)')
    rows.sort(key=lambda r: r['start'])
    prev = None
    for r in rows:
        r['gap'] = (r['start'] - prev).total_seconds() if prev else 0.0
        r['overhead'] = r['wall'] - r['work']
        prev = r['end']
    total = (rows[-1]['end'] - rows[0]['start']).total_seconds()
    work = sum(r['work'] for r in rows)
    return {'rows': rows, 'total': total, 'work': work, 'overhead': total - work, 'stages': len(rows),
            'first_start': rows[0]['start'].isoformat(timespec='seconds')}


def markdown(t: dict) -> str:
    lines = ['| stage | work (s) | in-kernel overhead (s) | gap before (s) |', '|---|---:|---:|---:|']
    for r in t['rows']:
        lines.append(f"| {r['stage']} | {r['work']:.1f} | {r['overhead']:.1f} | {r['gap']:.1f} |")
    lines.append(f"| **all {t['stages']} stages** | **{t['work']:.0f}** | **{sum(r['overhead'] for r in t['rows']):.0f}** | "
                 f"**{sum(r['gap'] for r in t['rows']):.0f}** |")
    m = t['total'] / 60
    return ('\n'.join(lines) + f"\n\nWall time from the first stage's start to the last stage's end: **{m:.1f} min** "
            f"({t['work'] / t['total']:.0%} of it in the stages' work), run of {t['first_start']} UTC.\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('reports', nargs='?', type=Path, default=Path('reports'))
    ap.add_argument('--out', type=Path, default=Path(__file__).resolve().parent/'stage_times')
    a = ap.parse_args(argv)
    t = table(a.reports)
    md = markdown(t)
    js = {**{k: v for k, v in t.items() if k != 'rows'},
          'rows': [{k: (v.isoformat(timespec='seconds') if isinstance(v, datetime) else round(v, 2) if isinstance(v, float) else v)
                    for k, v in r.items()} for r in t['rows']]}
    js = {k: round(v, 2) if isinstance(v, float) else v for k, v in js.items()}
    a.out.with_suffix('.json').write_text(json.dumps(js, indent=1) + '\n')
    a.out.with_suffix('.md').write_text(md)
    print(md)
    return 0


if __name__ == '__main__': sys.exit(main())
