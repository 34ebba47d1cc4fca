#!/usr/bin/env python
"""The default's classifier, two protocols (issue 25): from scratch (today's default) vs fine-tuning the mini world's
backbone (models/backbone, nbs/74_miniworld_backbone.ipynb) with the paper's recipe, 5 seeds each, on the default's
5-shot split and synthetic sets. `python scripts/backbone_protocols.py --measure` runs the missing runs (after
`bash scripts/run.sh`, whose outputs it reads; one core, one run at a time, each run's wall time recorded) into
results/backbone/protocols.jsonl; without it, it writes results/backbone/protocols.md from that file (a test holds the
table to it): top-1 per method, the paired gains decided by the one rule (`diffaug.decisions.decide`), and the seed
count the rule of issue 25 asks for: the smallest n with t(0.975, n-1) * s / sqrt(n) < g, s the measured paired std
of Diff-II - original and g a gain of the paper's relative size (Table 1, ResNet-50 5-shot CUB: 54.52 -> 62.22)."""
import json, math, sys, time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path: sys.path.insert(0, str(REPO))
RES = REPO/'results'/'backbone'
RUNS, TABLE = RES/'protocols.jsonl', RES/'protocols.md'
PAPER = (54.52, 62.22)  # Diff-II Table 1, ResNet-50 5-shot CUB: original, Diff-II
PAPER_KEYS = ('transform', 'crop_padding', 'warmup_mode', 'mixup_alpha', 'mix_prob', 'cutmix_per', 'label_smoothing')
FINETUNE = {'pretrained': 'models/backbone/model.safetensors'}  # + the paper's recipe: the class defaults of PAPER_KEYS
METHODS, SEEDS = ('original', 'diff-ii', 'real-guidance'), (0, 1, 2, 3, 4)


def protocols() -> dict:
    "{name: the classification parameters}: params.yaml's (wired) and the fine-tune protocol, one core each."
    from diffaug.graph import wire
    from diffaug.params import read_params_file
    base = {**wire(read_params_file(REPO/'params.yaml'), 'classification'), 'threads': 1, 'num_workers': 0}
    base.pop('workers', None)
    ft = {**{k: v for k, v in base.items() if k not in PAPER_KEYS + ('pretrained',)}, **FINETUNE}
    return {'scratch': base, 'finetune': ft}


def measure(out: Path = REPO/'data'/'backbone-protocols') -> None:
    "Run every (protocol, method, seed) not yet in RUNS; append one JSON line per run."
    from diffaug.classification import ClassificationConfig, run_classification
    done = {(r['protocol'], r['method'], r['seed']) for r in map(json.loads, RUNS.read_text().splitlines())} if RUNS.exists() else set()
    RES.mkdir(parents=True, exist_ok=True)
    for seed in SEEDS:
        for name, base in protocols().items():
            for m in METHODS:
                if (name, m, seed) in done: continue
                p = {**base, 'method': m, 'seed': seed, 'out': str(out/name/m/f's{seed}')}
                t = time.time()
                r = run_classification(ClassificationConfig.from_params(p))
                row = {'protocol': name, 'method': m, 'seed': seed, 'top1': r['top1'], 'seconds': round(time.time() - t, 1),
                       'worst_group': r.get('worst_group'), 'best_test_epoch_top1': r.get('best_test_epoch_top1')}
                with open(RUNS, 'a') as f: f.write(json.dumps(row) + '\n')


def seeds_needed(s: float, gain: float, most: int = 50):
    "The smallest n with t(0.975, n-1) * s / sqrt(n) < gain (None: more than `most`)."
    from scipy import stats
    return next((n for n in range(2, most + 1) if stats.t.ppf(0.975, n - 1) * s / math.sqrt(n) < gain), None)


def table(rows: list) -> str:
    "results/backbone/protocols.md from the runs."
    import pandas as pd
    from diffaug.decisions import decide, interval_text, paired_diffs
    df = pd.DataFrame(rows)
    rel_acc, rel_err = PAPER[1] / PAPER[0] - 1, (PAPER[1] - PAPER[0]) / (100 - PAPER[0])
    out = ["| protocol | " + ' | '.join(METHODS) + " | Diff-II − original | Real-Guidance − original | wall per run |",
           "|---|" + '---|' * (len(METHODS) + 3)]
    notes = []
    for name in ('scratch', 'finetune'):
        d = df[df.protocol == name]
        cell = lambda m: f"{d[d.method == m].top1.mean():.2f} ± {d[d.method == m].top1.std(ddof=1):.2f}"
        dec = {m: decide(paired_diffs(d, m, 'original', 'top1')) for m in ('diff-ii', 'real-guidance')}
        out.append(f"| {name} | " + ' | '.join(cell(m) for m in METHODS) + ' | '
                   + ' | '.join(f"{interval_text(dec[m], 2)} {dec[m]['verdict']}" for m in dec)
                   + f" | {d.seconds.mean():.0f} s |")
        base, s = d[d.method == 'original'].top1.mean(), dec['diff-ii']['std']
        g_acc, g_err = rel_acc * base, rel_err * (100 - base)
        n_acc = seeds_needed(s, g_acc) if g_acc < 100 - base else None
        notes.append(f"- {name}: paired std of Diff-II − original s = {s:.2f} over {dec['diff-ii']['n']} seeds; a gain of the "
                     f"paper's relative size is {g_acc:.2f} points in accuracy terms (+{100 * rel_acc:.1f}% of the baseline) "
                     + (f"-> n = {n_acc}" if n_acc else f"(more than the {100 - base:.1f} points left above the baseline: no n)")
                     + f", {g_err:.2f} in error terms ({100 * rel_err:.1f}% of the error) -> n = {seeds_needed(s, g_err)}.")
    return ('The default\'s classifier under two protocols, 5 seeds each (`python scripts/backbone_protocols.py`, '
            'results/backbone/protocols.jsonl): top-1 mean ± std, paired gains with their 95% interval and verdict. The '
            'inputs were the default\'s split and synthetic sets made by the stages\' functions with params.yaml\'s values '
            '(the split\'s md5 is dvc.lock\'s; scratch\'s first 3 seeds give the committed +4.5 [-1.2, +10.2]; '
            'Real-Guidance\'s set, rendered on one thread, differs slightly from the pipeline\'s). Fine-tuning lifts the '
            'baseline to 96%: too little headroom for the paper\'s relative gain, so the default keeps the scratch '
            'protocol until the backbone is weakened (issue 25).\n\n'
            + '\n'.join(out) + '\n\nSeeds the rule asks for (the smallest n with t(0.975, n−1)·s/√n below a gain of the '
            'paper\'s relative size):\n\n' + '\n'.join(notes) + '\n')


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if '--measure' in argv: measure()
    TABLE.write_text(table([json.loads(l) for l in RUNS.read_text().splitlines()]))
    print(TABLE.read_text())
    return 0


if __name__ == '__main__': sys.exit(main())
