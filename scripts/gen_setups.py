#!/usr/bin/env python
"""Write the paper setups params/*.yaml (and the mini-world setups) from the tables below: `python scripts/gen_setups.py [out_dir]`.

Numbers: Diff-II (CVPR 2025) Tables 1-3. Hyper-parameters: ../shared/reference/METHODS.md digest, summarised in
each file's header. Edit this script, not the YAML files, so that every setup stays consistent.
"""
import sys
from pathlib import Path
OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]/'params'  # optional: another folder
SD = 'stable-diffusion-v1-5/stable-diffusion-v1-5'
ALL = ['original', 'mixup', 'cutmix', 'real-guidance', 'da-fusion', 'diff-aug', 'diff-mix', 'real-mix', 'real-gen', 'diff-gen', 'real-filter', 'diff-ii']
SYNTH = ['real-guidance', 'da-fusion', 'diff-aug', 'diff-mix', 'real-mix', 'real-gen', 'diff-gen', 'real-filter']

def flow(xs): return '[' + ', '.join(xs) + ']'

def prepare(source, raw, **kw):
    "The prepare section of a real dataset in its native layout under `raw`, with its official test set."
    return '\nprepare:\n' + ''.join(f'  {k}: {v}\n' for k, v in dict(source=source, raw=raw, **kw, test='official', verify_images='false').items())

def runs(methods, seeds=(0, 1, 2), oracle=None):
    "The runs section: methods in table order, the synthetic sets they need, which sets the oracle stage scores."
    syn = [m for m in SYNTH if m in methods]
    ora = oracle if oracle is not None else [m for m in methods if m in SYNTH or m == 'diff-ii']
    return f"""
runs:
  methods: {flow(methods)}
  synthetic_methods: {flow(syn)}
  seeds: {flow(str(s) for s in seeds)}
  oracle_methods: {flow(ora)}
"""

def diffusion(suffix_fraction, model=SD):
    "Concept learning, synthesis, inversion and interpolation at the papers' settings (SD 1.5, 512 px, fp16 on GPUs)."
    return f"""
concepts:                     # Diff-Mix's released recipe (Diff-II reuses its concepts); DA-Fusion's TI stage uses the same section
  model: {model}
  steps: 35000
  lr_embed: 5.0e-5
  lr_lora: 5.0e-5
  rank: 10
  n_tokens: 1
  resolution: 512
  batch_size: 2
  checkpoint_every: 500
  precision: fp16

methods:
  model: {model}
  clip_model: openai/clip-vit-base-patch32   # Real-Filter
  expansion: 5
  steps: 25
  guidance_scale: 7.5
  batch_size: 8
  precision: fp16
  cpu: null

suffixes:
  source: auto                # the dataset's captions when shipped, else BLIP captions summarised by an LLM

inversion:
  model: {model}
  steps: 25                   # = interpolation.steps (the authors invert with 200; see nbs/20_inversion.ipynb)
  resolution: 512
  batch_size: 8
  precision: fp16

interpolation:
  model: {model}
  expansion: 5
  suffix_fraction: {suffix_fraction}
  steps: 25
  guidance_scale: 7.5
  batch_size: 8
  precision: fp16

oracle:
  clip_model: openai/clip-vit-base-patch32   # CLIP score of each synthetic set (Diff-II Fig. 7); LPIPS needs lpips_trunk (a local AlexNet file)
"""

T1 = {  # backbone -> method -> [5-shot CUB, Aircraft, Pets, Cars, 10-shot CUB, Aircraft, Pets, Cars]
 'resnet50': {
  'Original': [54.52, 36.63, 86.98, 40.10, 70.26, 54.11, 90.41, 69.64], 'Mixup': [54.33, 36.75, 86.36, 41.43, 70.00, 55.28, 89.49, 70.28],
  'CutMix': [51.74, 33.09, 86.52, 36.19, 68.91, 51.05, 89.71, 67.71], 'Real-Filter': [55.03, 30.40, 87.66, 57.50, 67.36, 47.21, 90.14, 69.64],
  'Real-Guidance': [54.67, 36.27, 86.22, 42.45, 69.81, 54.77, 90.06, 70.97], 'Real-Mix': [51.00, 22.53, 88.63, 52.06, 64.65, 44.16, 89.40, 75.72],
  'DA-Fusion': [59.40, 34.98, 88.64, 51.90, 72.05, 51.14, 90.47, 77.61], 'Diff-AUG': [61.14, 39.48, 89.24, 62.28, 72.02, 55.43, 90.28, 81.65],
  'Diff-Mix': [56.18, 32.61, 88.77, 56.39, 70.16, 52.33, 90.79, 78.68], 'Diff-II (ours)': [62.22, 42.15, 89.84, 64.24, 72.66, 57.43, 91.01, 82.02]},
 'vit-b16': {
  'Original': [73.00, 32.85, 90.71, 59.72, 83.52, 51.59, 92.92, 81.01], 'Mixup': [76.07, 36.15, 90.77, 61.92, 85.24, 52.94, 92.81, 82.46],
  'CutMix': [72.97, 32.79, 90.22, 59.16, 83.95, 51.56, 92.59, 81.71], 'Real-Filter': [73.66, 31.44, 90.85, 72.51, 82.19, 46.43, 93.14, 84.69],
  'Real-Guidance': [74.74, 35.10, 91.23, 62.34, 83.24, 53.15, 93.22, 81.97], 'Real-Mix': [72.25, 32.91, 90.92, 70.55, 80.95, 47.01, 93.16, 83.78],
  'DA-Fusion': [76.24, 34.20, 93.03, 71.07, 83.97, 51.68, 93.68, 85.00], 'Diff-AUG': [77.24, 40.08, 92.27, 76.48, 84.10, 56.24, 93.93, 87.59],
  'Diff-Mix': [74.49, 36.48, 92.29, 73.01, 81.98, 53.92, 93.98, 85.42], 'Diff-II (ours)': [79.22, 40.23, 93.79, 77.10, 84.89, 56.32, 94.25, 87.81]}}
DS = ['cub', 'aircraft', 'pets', 'cars']
NAMES = {'cub': 'CUB-200-2011', 'aircraft': 'FGVC-Aircraft', 'pets': 'Oxford-IIIT Pets', 'cars': 'Stanford Cars'}
RAW = {'cub': 'data/raw/cub', 'aircraft': 'data/raw/aircraft', 'pets': 'data/raw/pets', 'cars': 'data/raw/cars', 'flowers102': 'data/raw/flowers102'}
R50_LR = {'cub': 0.05, 'aircraft': 0.1, 'pets': 0.01, 'cars': 0.1}
HOWTO = """# Run on a GPU machine with the dataset in its native layout under {raw} (nothing is downloaded):
#   python -m diffaug.pipeline setup params/{stem}.yaml        # = dvc exp run -n {stem} -S ... (see --print)
# then `dvc exp show` / reports/report/table.md. Results are the last epoch (select: last), NOT the best test epoch
# the references report (their protocol is optimistic; `best_test_epoch_top1` in each metrics.json is comparable to it).
"""
def table(rows, cols):
    w = max(len(r) for r in rows)
    lines = [f"#   {'method':{w}s}  " + '  '.join(f'{c:>9s}' for c in cols)]
    for r, v in rows.items(): lines.append(f"#   {r:{w}s}  " + '  '.join(f'{x:9.2f}' for x in v))
    return '\n'.join(lines) + '\n'

def write(stem, head, body):
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT/f'{stem}.yaml').write_text(head + body)

for bb in ('resnet50', 'vit-b16'):
    for shots in (5, 10):
        for i, ds in enumerate(DS):
            stem = f'{ds}-{shots}shot-{bb}'
            col = i + (0 if shots == 5 else 4)
            exp = {m: [v[col]] for m, v in T1[bb].items()}
            head = (f"# Paper setup: {NAMES[ds]}, {shots}-shot, {'ResNet-50 at 224 px (ImageNet-1k pretrained)' if bb == 'resnet50' else 'ViT-B/16 at 384 px (ImageNet-21k pretrained)'}.\n"
                    f"# Diff-II (CVPR 2025) Table 1; expansion 5 and replacement probability p = 0.5 for every diffusion method; 3 trials.\n"
                    + HOWTO.format(raw=RAW[ds], stem=stem) +
                    "# Expected top-1 (%), mean of 3 trials, from the paper (runs.methods: every row below, plus real-gen and diff-gen):\n"
                    + table(exp, [f'{ds} {shots}-shot']))
            if bb == 'resnet50':
                cls = f"""  model: resnet50.tv_in1k      # torchvision's ImageNet-1k ResNet-50
  pretrained: true
  image_size: 224
  crop_padding: 8
  epochs: 128
  batch_size: 256
  lr: {R50_LR[ds]}"""
            else:
                cls = f"""  model: vit_base_patch16_384.augreg_in21k_ft_in1k   # ViT-B/16, ImageNet-21k pretrained, 384 px
  pretrained: true
  image_size: 384
  crop_padding: 8
  epochs: 100
  batch_size: 32
  lr: {1e-4 if ds == 'pets' else 1e-3}"""
            body = prepare(ds, RAW[ds], kind='few-shot', shots=shots) + runs(ALL) + diffusion(0.3 if shots == 5 else 0.1) + f"""
classification:
{cls}
  momentum: 0.9
  weight_decay: 0.0005
  warmup: 0.1
  label_smoothing: 0.1
  p: 0.5
  replace_with: source
  select: last
  precision: fp16
  num_workers: 8
  threads: null
"""
            write(stem, head, body)

T2 = {'CE (original)': [33.65, 44.82, 58.13, 80.43, 90.87, 95.07], 'CMO': [32.94, 44.08, 57.62, 83.95, 91.43, 95.19],
      'CMO-DRW': [32.57, 46.43, 59.25, 84.07, 92.06, 95.92], 'Real-Gen': [45.86, 53.43, 61.42, 83.56, 91.84, 95.22],
      'Real-Mix': [47.75, 55.67, 62.27, 85.19, 92.96, 96.04], 'Diff-Mix': [50.35, 58.19, 64.48, 89.46, 93.86, 96.63],
      'Diff-II (ours)': [51.21, 62.31, 70.28, 89.54, 94.39, 97.35]}
for j, (ds, src, label) in enumerate([('cub-lt', 'cub', 'CUB-LT'), ('flower-lt', 'flowers102', 'Flower-LT')]):
    for k, IF in enumerate((100, 20, 10)):
        stem = f'{ds}-if{IF}-resnet50'
        exp = {m: [v[3 * j + k]] for m, v in T2.items()}
        head = (f"# Paper setup: {label}, imbalance factor {IF}, ResNet-50 at 224 px (ImageNet-1k pretrained), 200 epochs, batch 128, lr 0.005.\n"
                f"# Diff-II Table 2 (Diff-II: 3 trials; other rows quoted from Diff-Mix). s = 1.0, expansion 5, p = 0.5 for diffusion methods;\n"
                f"# the replacing synthetic image's class is drawn with probability proportional to 1/(n_c+1) (replace_with: inverse-frequency).\n"
                f"# Long-tail counts follow Diff-Mix's rule (lt_rule: diffmix; see nbs/02_data.ipynb).\n"
                + HOWTO.format(raw=RAW[src], stem=stem) +
                "# Expected top-1 (%) from the paper (CE = method original here; CMO/CMO-DRW are not implemented):\n"
                + table(exp, [f'IF={IF}']))
        body = prepare(src, RAW[src], kind='long-tail', imbalance_factor=IF, lt_rule='diffmix') + runs(['original', 'real-gen', 'real-mix', 'diff-mix', 'diff-ii']) + diffusion(1.0) + """
classification:
  model: resnet50.tv_in1k
  pretrained: true
  image_size: 224
  crop_padding: 8
  epochs: 200
  batch_size: 128
  lr: 0.005
  momentum: 0.9
  weight_decay: 0.0005
  warmup: 0.1
  label_smoothing: 0.1
  p: 0.5
  replace_with: inverse-frequency
  select: last
  precision: fp16
  num_workers: 8
  threads: null
"""
        write(stem, head, body)

T3 = {'Original': [38.55, 32.15, 37.90, 30.20, 34.70], 'Real-Filter': [38.87, 34.72, 38.25, 31.64, 35.87],
      'Real-Guidance': [39.49, 33.64, 39.80, 29.78, 35.68], 'Real-Mix': [30.29, 29.44, 30.02, 26.95, 29.18],
      'DA-Fusion': [44.50, 39.04, 44.46, 33.49, 40.37], 'Diff-AUG': [49.02, 40.59, 48.71, 38.58, 44.23],
      'Diff-Mix': [33.84, 30.53, 34.72, 28.19, 31.82], 'Diff-II (ours)': [49.84, 41.46, 51.01, 42.03, 46.09]}
stem = 'waterbirds-5shot-resnet50'
head = ("# Paper setup: out-of-distribution test. Train ResNet-50 (224 px, ImageNet-1k pretrained) on 5-shot CUB (+ synthetic),\n"
        "# test on Waterbirds (CUB birds pasted on land/water backgrounds), top-1 per (bird, place) group and their mean.\n"
        "# Diff-II Table 3, same hyper-parameters as 5-shot CUB (Table 1). Two commands: the Waterbirds test split first\n"
        "# (outside DVC, once), then the setup:\n"
        "#   python -m diffaug.pipeline prepare --set source=waterbirds --set raw=data/raw/waterbirds --set kind=full \\\n"
        "#       --set test=official --set root=data/waterbirds/dataset --set split_path=data/waterbirds/split.json \\\n"
        "#       --out reports/prepare/waterbirds.ipynb\n"
        + HOWTO.format(raw=RAW['cub'], stem=stem) +
        "# The report's group columns: group:landbird/land = (L,L), group:waterbird/water = (W,W), group:landbird/water = (L,W),\n"
        "# group:waterbird/land = (W,L); group_mean = Avg. Expected accuracy (%) from the paper:\n"
        + table(T3, ['(L,L)', '(W,W)', '(L,W)', '(W,L)', 'Avg']))
body = prepare('cub', RAW['cub'], kind='few-shot', shots=5) + runs(['original', 'real-filter', 'real-guidance', 'real-mix', 'da-fusion', 'diff-aug', 'diff-mix', 'diff-ii']) + diffusion(0.3) + """
classification:
  eval_split: data/waterbirds/split.json
  model: resnet50.tv_in1k
  pretrained: true
  image_size: 224
  crop_padding: 8
  epochs: 128
  batch_size: 256
  lr: 0.05
  momentum: 0.9
  weight_decay: 0.0005
  warmup: 0.1
  label_smoothing: 0.1
  p: 0.5
  select: last
  precision: fp16
  num_workers: 8
  threads: null

report:
  metric: group_mean
"""
write(stem, head, body)

# The mini world (nbs/70-72): rendered by code, the shipped SD-format model and the oracle; runs on a CPU.
MW_HEAD = """# Mini-world setup: {what}. The evaluation species of the mini world (nbs/70_miniworld.ipynb, rendered by code:
# nothing to download), the shipped SD-format model models/miniworld loaded by path (as SD 1.5 would be), a ResNet-18
# trained from scratch at 64 px, every method, and the oracle's faithfulness / diversity of every synthetic set
# (reports/oracle/<method>/scores.json). Runs on a CPU (about 50 min for the 5-shot setup on 2 cores; on a GPU set device/precision):
#   python -m diffaug.pipeline setup params/{stem}.yaml        # = dvc exp run -n {stem} -S ... (see --print)
# Expected numbers: none published (the world is this project's own); what matters is the ranking of the methods
# and how it follows the oracle's faithfulness and diversity. Prompt following of the model: nbs/71_miniworld_model.ipynb.
# Measured on this project's CPU (the 5-shot and OOD setups): README, "Results on the mini world".
"""
def mw_diffusion(suffix_fraction):
    return diffusion(suffix_fraction, 'models/miniworld').replace('  resolution: 512\n', '  resolution: null\n').replace(
        '  steps: 35000\n  lr_embed: 5.0e-5\n  lr_lora: 5.0e-5\n  rank: 10\n', '  steps: 400\n  lr_embed: 5.0e-3\n  lr_lora: 1.0e-3\n  rank: 4\n').replace(
        '  batch_size: 2\n  checkpoint_every: 500\n', '  batch_size: 8\n  checkpoint_every: 100\n').replace(
        '  precision: fp16\n', '  precision: fp32\n').replace(
        '  clip_model: openai/clip-vit-base-patch32   # Real-Filter\n', '  clip_model: null           # Real-Filter: a tiny random CLIP (no CLIP offline); on a machine with the hub: openai/clip-vit-base-patch32\n').replace(
        '  guidance_scale: 7.5\n', '  guidance_scale: 5.0        # the mini model follows prompts equally well at 2-7.5 (nbs/71)\n').replace(
        '  source: auto                # the dataset\'s captions when shipped, else BLIP captions summarised by an LLM\n', '  source: captions            # the world\'s own captions\n').replace(
        'oracle:\n  clip_model: openai/clip-vit-base-patch32   # CLIP score of each synthetic set (Diff-II Fig. 7); LPIPS needs lpips_trunk (a local AlexNet file)\n',
        'oracle:\n  model: models/oracle/oracle.safetensors\n')
MW_CLS = """
classification:
  model: resnet18
  pretrained: false
  image_size: 64
  crop_padding: 4
  epochs: 40
  batch_size: 32
  lr: 0.05
  p: 0.5
  replace_with: {replace}
  select: last
  eval_every: 10             # the test set is only read, never used to select: every 10th epoch (and the last) is enough
  threads: null
"""
for stem, what, prep, sf, replace, metric in [
        ('miniworld-5shot', '5-shot, 12 species (Diff-II Table 1 analogue)', 'kind: few-shot\n  shots: 5', 0.3, 'source', 'top1'),
        ('miniworld-10shot', '10-shot (Table 1 analogue)', 'kind: few-shot\n  shots: 10', 0.1, 'source', 'top1'),
        ('miniworld-lt-if10', 'long tail, imbalance factor 10 (Table 2 analogue)', 'kind: long-tail\n  imbalance_factor: 10\n  lt_rule: diffmix', 1.0, 'inverse-frequency', 'top1'),
        ('miniworld-ood-5shot', '5-shot training, test with reversed-habitat OOD images (Waterbirds, Table 3 analogue: per-group top-1, metric group_mean)',
         'kind: few-shot\n  shots: 5\n  world_ood: 50', 0.3, 'source', 'group_mean')]:
    body = f"""
prepare:
  source: miniworld
  {prep}
  val_per_class: 0
  world_pool: 100
  world_test: 50
""" + runs(ALL) + mw_diffusion(sf) + MW_CLS.format(replace=replace) + f"""
report:
  metric: {metric}
"""
    write(stem, MW_HEAD.format(what=what, stem=stem), body)
print(len(list(OUT.glob('*.yaml'))), 'setups in', OUT)
