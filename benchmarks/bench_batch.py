#!/usr/bin/env python
"""The U-Net batch of the mini world's synthesis: seconds to render one method's set at several `batch_size`s.

    python benchmarks/bench_batch.py [--method real-guidance] [--sizes 8 16 32 64] [--expansion 5] [--repeats 2]

Needs the default's split and dataset (`dvc repro prepare`). Each (size, repeat) runs in a fresh process, as a stage
does (first-call kernel set-up included), on 2 torch threads; writes bench_batch.json and bench_batch.md here. The
images of different batch sizes are not byte-identical (bf16 sums are blocked by batch), so the size is a parameter
of the results, set in params.yaml, not a free switch.
"""
from __future__ import annotations
import argparse, hashlib, json, os, statistics, subprocess, sys, tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent; REPO = HERE.parent
ONE = """
import json, sys, time
from diffaug.methods import run_synthesis
m, bs, exp, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
t = time.perf_counter()
r = run_synthesis(method=m, split='data/split.json', model='models/miniworld', out=out, guidance_scale=5.0, precision='bf16', batch_size=bs, expansion=exp)
print(json.dumps({'render_s': r['render_seconds'], 'load_s': r['load_seconds'], 'images': r['written'], 'total_s': time.perf_counter() - t}))
"""

def set_digest(d:Path)->str:
    h = hashlib.sha256()
    for p in sorted(d.rglob('*.png')): h.update(p.relative_to(d).as_posix().encode()); h.update(p.read_bytes())
    return h.hexdigest()[:12]

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--method', default='real-guidance'); ap.add_argument('--sizes', type=int, nargs='+', default=[8, 16, 32, 64])
    ap.add_argument('--expansion', type=int, default=5); ap.add_argument('--repeats', type=int, default=2)
    a = ap.parse_args(argv)
    if not (REPO/'data/split.json').is_file(): sys.exit('benchmarks/bench_batch.py: data/split.json not found: run `dvc repro prepare` first')
    env = {**os.environ, 'OMP_NUM_THREADS': '2', 'PYTHONPATH': str(REPO), 'DIFFAUG_QUIET': '1'}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(a.repeats):
            for bs in a.sizes:
                out = Path(tmp)/f'{bs}-{rep}'
                p = subprocess.run([sys.executable, '-c', ONE, a.method, str(bs), str(a.expansion), str(out)], cwd=REPO, env=env, capture_output=True, text=True)
                if p.returncode: sys.exit(p.stderr[-2000:])
                r = json.loads(p.stdout.strip().splitlines()[-1]); r.update(batch_size=bs, repeat=rep, digest=set_digest(out)); rows.append(r)
                print(r, flush=True)
    load = os.getloadavg()
    res = {'method': a.method, 'expansion': a.expansion, 'threads': 2, 'loadavg_at_end': [round(x, 2) for x in load], 'runs': rows}
    (HERE/'bench_batch.json').write_text(json.dumps(res, indent=1) + '\n')
    base = statistics.median(r['render_s'] for r in rows if r['batch_size'] == a.sizes[0])
    lines = [f"`python benchmarks/bench_batch.py` ({a.method}, expansion {a.expansion}, {rows[0]['images']} images, 2 threads, "
             f"median of {a.repeats} fresh processes; load average at the end {load[0]:.1f})", '',
             '| batch_size | render (s) | images/s | speed-up vs ' + str(a.sizes[0]) + ' | set digest |', '|---:|---:|---:|---:|---|']
    for bs in a.sizes:
        rs = [r for r in rows if r['batch_size'] == bs]; med = statistics.median(r['render_s'] for r in rs)
        lines.append(f"| {bs} | {med:.1f} | {rs[0]['images'] / med:.1f} | {base / med:.2f}x | {', '.join(sorted({r['digest'] for r in rs}))} |")
    (HERE/'bench_batch.md').write_text('\n'.join(lines) + '\n'); print('\n'.join(lines))

if __name__ == '__main__': main()
