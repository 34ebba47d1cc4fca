#!/usr/bin/env python
"""The README's opening picture: real training images of the embedded default beside their Diff-II variations.

    python docs/assets/readme_figure.py            # ~3-6 min on 2 CPU cores; writes docs/assets/diffii_variations.png

Runs the default's Diff-II stages (prepare, suffixes, concepts, inversion, interpolation) with `params.yaml`'s own
values, through `diffaug.augment.run_setup`, into a temporary folder (the workspace's `data/` is not touched), then
draws, for a few species, the 5 real shots and Diff-II images made from them.
"""
import sys, tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT/'docs'/'assets'/'diffii_variations.png'

def main(species=(0, 3, 6, 9), n_syn=6, scale=2, work=None):
    import pandas as pd
    from PIL import Image, ImageDraw
    from diffaug.augment import DIFFII_SECTIONS, run_setup, work_wiring
    from diffaug.splits import load_split
    params = yaml.safe_load((ROOT/'params.yaml').read_text())
    work = Path(work or tempfile.mkdtemp(prefix='readme-figure-'))
    out = work/'diff-ii'
    wiring = work_wiring(work, out)
    setup = {s: {k: v for k, v in params[s].items() if k not in wiring[s]} for s in DIFFII_SECTIONS}
    if not (out/'metadata.csv').exists(): run_setup(setup, wiring)
    split = load_split(work/'split.json')
    meta = pd.read_csv(out/'metadata.csv')
    rows = []
    for ci in species:
        c = split.classes[ci]
        real = [p for p, it in zip(split.paths('train'), split.items('train')) if it['label'] == c]
        syn = [out/f for f in meta[meta['label'] == c]['file_name'][:n_syn]]
        rows.append((c, [Image.open(p).convert('RGB') for p in real], [Image.open(p).convert('RGB') for p in syn]))
    s = rows[0][1][0].width * scale
    n_real = max(len(r[1]) for r in rows)
    gap, pad, head = s // 3, 4, 22
    W = n_real * (s + pad) + gap + n_syn * (s + pad)
    H = head + len(rows) * (s + pad)
    fig = Image.new('RGB', (W, H), 'white')
    d = ImageDraw.Draw(fig)
    d.text((2, 4), f'real training images (the {n_real} shots of a species)', fill='black')
    d.text((n_real * (s + pad) + gap + 2, 4), 'Diff-II images made from them', fill='black')
    for r, (c, real, syn) in enumerate(rows):
        y = head + r * (s + pad)
        for j, im in enumerate(real): fig.paste(im.resize((s, s), Image.NEAREST), (j * (s + pad), y))
        for j, im in enumerate(syn): fig.paste(im.resize((s, s), Image.NEAREST), (n_real * (s + pad) + gap + j * (s + pad), y))
    fig.save(OUT, optimize=True)
    print(f'{OUT.relative_to(ROOT)}: {fig.size}, species {[r[0] for r in rows]}, from {work}')
    return OUT

if __name__ == '__main__':
    main(work=sys.argv[1] if len(sys.argv) > 1 else None)
