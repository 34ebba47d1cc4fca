"""What a paper setup costs on one GPU: predicted minutes and peak memory of every stage, from COUNTED FLOPs.

    python benchmarks/gpu_cost.py                       # benchmarks/gpu_cost.md from the cached counts (seconds)
    python benchmarks/gpu_cost.py --tflops 120 --memory-gb 80 --out /tmp/a100.md   # another GPU
    python benchmarks/gpu_cost.py --recount             # recount the FLOPs (benchmarks/gpu_cost_flops.json), then predict
    python benchmarks/gpu_cost.py --check               # exit 1 when benchmarks/gpu_cost.md is not what the counts give

Two inputs, multiplied:

(a) per-sample costs of each network, counted by `torch.utils.flop_counter.FlopCounterMode` on the real architectures
    built on the `meta` device (shapes only: no weights, no arithmetic, under a second): SD 1.5's U-Net
    (`UNet2DConditionModel` with SD 1.5's unet/config.json), its VAE (encoder at 512 px, decoder from 64x64 latents),
    its CLIP ViT-L/14 text encoder (77 tokens), CLIP ViT-B/32's image tower (Real-Filter), and the classifiers
    (torchvision ResNet-50 at 224 px, ViT-B/16 at 384 px), forward and forward + backward. The same pass records the
    peak of live tensors (every op's new output counted until Python frees it; views and in-place results are not
    new memory; autograd's saved tensors stay alive as they do on a GPU), with attention computed by the
    memory-efficient SDPA kernel as PyTorch picks on a GPU, at batch 1 and 2 (a line through the two gives any batch).
    The counts are cached in benchmarks/gpu_cost_flops.json (committed); `--recount` refreshes them.
(b) each setup's work: its parameter file read through the package (`diffaug.params.setup_overrides` over params.yaml,
    completed with the stage classes' defaults by `diffaug.experiments.effective`), and the dataset sizes below.

Time = FLOPs / sustained throughput (`--tflops`, default 40 fp16 TFLOP/s: an A10G / RTX 3090 class GPU at a
realistic utilisation). Memory = weights + the counted activation peak at the stage's batch (see `stage_memory`).
"""
from __future__ import annotations
import argparse, contextlib, json, math, os, sys, weakref
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
os.environ.setdefault('DIFFAUG_QUIET', '1')
FLOPS_JSON = ROOT/'benchmarks'/'gpu_cost_flops.json'
MD = ROOT/'benchmarks'/'gpu_cost.md'
GIB = 2 ** 30

# ---------------------------------------------------------------- SD 1.5's architecture (its model_index components' config.json)
SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
                 down_block_types=('CrossAttnDownBlock2D',) * 3 + ('DownBlock2D',), up_block_types=('UpBlock2D',) + ('CrossAttnUpBlock2D',) * 3,
                 cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, norm_eps=1e-5, act_fn='silu',
                 center_input_sample=False, downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, mid_block_scale_factor=1)
SD15_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                down_block_types=('DownEncoderBlock2D',) * 4, up_block_types=('UpDecoderBlock2D',) * 4, norm_num_groups=32,
                act_fn='silu', sample_size=512)
SD15_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                 max_position_embeddings=77, hidden_act='quick_gelu', projection_dim=768)

# ---------------------------------------------------------------- dataset sizes (written once, with their sources)
DATASETS = {  # train_pool: per-class sizes of the pool the split draws training images from; val/test: evaluated images
    'cub': dict(classes=200, train_pool=[30] * 194 + [29] * 6, val=0, test=5794,
                source='CUB-200-2011 (Wah et al., 2011): 11,788 images, official 5,994 train / 5,794 test; 30 train images '
                       'per class but 6 classes with 29'),
    'aircraft': dict(classes=100, train_pool=[34] * 34 + [33] * 66, val=3333, test=3333,
                     source='FGVC-Aircraft 2013b (Maji et al., 2013), 100 variants: 10,000 images, train / val / test '
                            '3,334 / 3,333 / 3,333 (the official val is evaluated every epoch: diffaug.importers)'),
    'cars': dict(classes=196, train_pool=[8144 / 196] * 196, val=0, test=8041,
                 source='Stanford Cars (Krause et al., 2013): 16,185 images, 8,144 train / 8,041 test'),
    'pets': dict(classes=37, train_pool=[3680 / 37] * 37, val=0, test=3669,
                 source='Oxford-IIIT Pets (Parkhi et al., 2012): 7,349 images, 3,680 trainval / 3,669 test'),
    'flowers102': dict(classes=102, train_pool=[8189 / 2 / 102] * 102, val=0, test=8189 / 2,
                       source="Oxford Flowers-102 (Nilsback & Zisserman, 2008): 8,189 images, 40-258 per class; Diff-Mix's "
                              "Flower-LT (prepare.test: half) cuts each class in halves, pool and test (about 4,095 each; "
                              "per-class sizes taken as equal: Diff-Mix's rule uses their mean, and no class is small enough to cap its count)"),
    'waterbirds': dict(classes=2, train_pool=[], val=1199, test=5794,
                       source='Waterbirds (Sagawa et al., 2020): 11,788 CUB birds on Places backgrounds, train / val / test '
                              '4,795 / 1,199 / 5,794; only its val and test are used (the classifier trains on 5-shot CUB)'),
}
WATERBIRDS_SPLIT = 'data/waterbirds/split.json'  # the eval_split of params/waterbirds-5shot-resnet50.yaml

SETUP_EXCLUDE = 'miniworld'  # the mini-world setups run on a CPU: not predicted here
SYNTH = ['real-guidance', 'da-fusion', 'diff-aug', 'diff-mix', 'real-mix', 'real-gen', 'diff-gen', 'real-filter']
STAGES = ['concepts', 'concepts_ti', 'inversion', 'interpolation', *SYNTH, 'classification']

# ---------------------------------------------------------------- counting
class LiveBytes:
    "A dispatch mode holding the bytes of live op outputs (freed when Python frees the tensor) and their peak."
    def __new__(cls):
        from torch.utils._python_dispatch import TorchDispatchMode
        class _Mode(TorchDispatchMode):
            def __init__(s): super().__init__(); s.cur = s.peak = 0
            def _free(s, n): s.cur -= n
            def __torch_dispatch__(s, func, types, args=(), kwargs=None):
                import torch
                from torch.utils._pytree import tree_flatten
                out = func(*args, **(kwargs or {}))
                rets = func._schema.returns
                for i, t in enumerate(tree_flatten(out)[0]):
                    if not isinstance(t, torch.Tensor) or (rets and rets[min(i, len(rets) - 1)].alias_info is not None): continue
                    n = t.untyped_storage().nbytes(); s.cur += n; s.peak = max(s.peak, s.cur)
                    weakref.finalize(t, s._free, n)
                return out
        return _Mode()

@contextlib.contextmanager
def efficient_sdpa():
    "Unmasked attention through the memory-efficient SDPA kernel (what PyTorch uses on a GPU; on `meta` SDPA decomposes into matmuls)."
    import torch, torch.nn.functional as F
    orig = F.scaled_dot_product_attention
    def sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
        if attn_mask is not None or is_causal or kw: return orig(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, **kw)
        return torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, q.requires_grad or k.requires_grad, dropout_p, False, scale=scale)[0]
    F.scaled_dot_product_attention = sdpa
    try: yield
    finally: F.scaled_dot_product_attention = orig

def measure(model, make_inputs, step, train=False, minus_grads=False)->dict:
    "FLOPs per sample and the peak of live tensors (bytes) at batch 1 and 2 of `step(model, *make_inputs(b))`, on `meta` (`minus_grads`: less the weights' gradients)."
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    out = {'params': int(sum(p.numel() for p in model.parameters()))}
    for b in (1, 2):
        for p in model.parameters(): p.grad = None
        inputs = make_inputs(b)
        with efficient_sdpa(), FlopCounterMode(display=False) as fc, LiveBytes() as lb:
            with (contextlib.nullcontext() if train else torch.no_grad()): step(model, *inputs)
        grads = sum(p.grad.untyped_storage().nbytes() for p in model.parameters() if p.grad is not None)
        out[f'act_bytes_b{b}'] = int(max(lb.peak - (grads if minus_grads else 0), 0))
        if b == 1: out['flops'] = int(fc.get_total_flops())
        else: assert abs(fc.get_total_flops() - 2 * out['flops']) <= 1e-6 * out['flops'], "FLOPs not linear in the batch"
    return out

def count()->dict:
    "Count every component (about a second on a CPU); the JSON written to gpu_cost_flops.json."
    import torch, torchvision, diffusers, transformers
    from diffusers import UNet2DConditionModel, AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection
    h = torch.float16; meta = 'meta'
    with torch.device(meta):
        unet = UNet2DConditionModel(**SD15_UNET).to(h).requires_grad_(False)
        vae = AutoencoderKL(**SD15_VAE).to(h).requires_grad_(False)
        text = CLIPTextModel(CLIPTextConfig(**SD15_TEXT)).to(h)
        clip_img = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                                                  num_attention_heads=12, image_size=224, patch_size=32, projection_dim=512)).to(h).requires_grad_(False)
        r50 = torchvision.models.resnet50().to(h)
        vit = torchvision.models.vit_b_16(image_size=384).to(h)
    lat = lambda b, g=False: torch.randn(b, 4, 64, 64, device=meta, dtype=h, requires_grad=g)
    emb = lambda b, g=False: torch.randn(b, 77, 768, device=meta, dtype=h, requires_grad=g)
    t = torch.tensor(500, device=meta)
    def unet_train(m, x, e):
        torch.nn.functional.mse_loss(m(x, t, encoder_hidden_states=e).sample.float(), x.float()).backward()
    ids = lambda b: (torch.zeros(b, 77, dtype=torch.long, device=meta),)
    def text_train(m, i):
        m.get_input_embeddings().weight.requires_grad_(True)  # the learned tokens' rows: the gradient flows through the whole encoder
        m(i).last_hidden_state.float().sum().backward()
    def cls_train(m, x): torch.nn.functional.cross_entropy(m(x).float(), torch.zeros(x.shape[0], dtype=torch.long, device=meta)).backward()
    img = lambda s: (lambda b: (torch.randn(b, 3, s, s, device=meta, dtype=h),))
    text.requires_grad_(False)
    comps = {
        'unet_fwd': measure(unet, lambda b: (lat(b), emb(b)), lambda m, x, e: m(x, t, encoder_hidden_states=e)),
        'unet_train': measure(unet, lambda b: (lat(b), emb(b, True)), unet_train, train=True),
        'vae_encode': measure(vae, img(512), lambda m, x: m.encode(x).latent_dist.mean),
        'vae_decode': measure(vae, lambda b: (lat(b),), lambda m, z: m.decode(z).sample),
        'text_fwd': measure(text, ids, lambda m, i: m(i)),
        'text_train': measure(text, ids, text_train, train=True, minus_grads=True),  # the real run trains a few token rows, not the whole table
        'clip_image_fwd': measure(clip_img, img(224), lambda m, x: m(pixel_values=x)),
        'resnet50_224_fwd': measure(r50, img(224), lambda m, x: m(x)),
        'resnet50_224_train': measure(r50.requires_grad_(True), img(224), cls_train, train=True),
        'vit_b16_384_fwd': measure(vit, img(384), lambda m, x: m(x)),
        'vit_b16_384_train': measure(vit.requires_grad_(True), img(384), cls_train, train=True),
    }
    what = {'unet_fwd': 'SD 1.5 U-Net forward, 64x64 latents (512 px), 77 tokens; one sample (CFG: two per image and step)',
            'unet_train': "SD 1.5 U-Net forward + backward, weights frozen, gradient to the prompt embeddings (concept learning: "
                          "tokens; LoRA's own weight gradients, rank 10, are left out)",
            'vae_encode': 'SD VAE encoder, 512 px image -> latent mean', 'vae_decode': 'SD VAE decoder, 64x64 latent -> 512 px image',
            'text_fwd': 'CLIP ViT-L/14 text encoder, 77 tokens', 'text_train': 'text encoder forward + backward to the token embeddings',
            'clip_image_fwd': "CLIP ViT-B/32 image tower at 224 px (Real-Filter's filter)",
            'resnet50_224_fwd': 'torchvision ResNet-50 at 224 px, forward', 'resnet50_224_train': 'ResNet-50 at 224 px, forward + backward',
            'vit_b16_384_fwd': 'torchvision ViT-B/16 at 384 px, forward', 'vit_b16_384_train': 'ViT-B/16 at 384 px, forward + backward'}
    for k, v in comps.items(): v['what'] = what[k]
    return {'counted_with': dict(torch=torch.__version__.split('+')[0], diffusers=diffusers.__version__, transformers=transformers.__version__,
                                 torchvision=torchvision.__version__.split('+')[0], device='meta', dtype='float16',
                                 counter='torch.utils.flop_counter.FlopCounterMode (matmuls, convolutions, attention; 2 FLOPs per multiply-add)'),
            'components': comps}

# ---------------------------------------------------------------- a setup's work
def setup_params(path:Path)->dict:
    "The effective parameters of a setup file (its overrides over params.yaml, every section completed with its class's defaults)."
    from diffaug.params import setup_overrides
    from diffaug.experiments import effective
    return effective(setup_overrides(path, ROOT/'params.yaml'), ROOT/'params.yaml')

def split_sizes(prep:dict)->dict:
    "Training images (and per class), val and test images of a setup's split, from DATASETS and the package's long-tail rule."
    from diffaug.splits import long_tail_counts
    d = DATASETS[prep['source']]
    if prep['kind'] == 'few-shot': train = [min(prep['shots'], n) for n in d['train_pool']]
    elif prep['kind'] == 'long-tail':
        pool = sorted(d['train_pool'], reverse=True) if prep.get('class_order') == 'size' else d['train_pool']
        train = long_tail_counts(pool, prep['imbalance_factor'], prep.get('lt_rule', 'diffmix'))
    else: train = list(d['train_pool'])
    return dict(classes=d['classes'], n_train=int(round(sum(train))), val=d['val'], test=d['test'])

def img2img_steps(method:str, synth:dict)->float:
    "Mean U-Net steps per image of an img2img method (its strengths, through the package's own strength rule)."
    from diffaug.method_table import METHODS, resolve_strengths
    from diffaug.sampling import strength_to_start_step
    over = (synth.get('per_method') or {}).get(method) or {}
    mode, s, ss = resolve_strengths(METHODS[method], over.get('strength_mode'), over.get('strength'), over.get('strengths'))
    n = synth['steps']
    return float(n - strength_to_start_step(s, n)) if mode == 'fixed' else sum(n - strength_to_start_step(x, n) for x in ss) / len(ss)

def backbone(cls:dict)->str:
    m = str(cls['model'])
    if 'resnet50' in m: key = 'resnet50_224'
    elif 'vit_b_16' in m or 'vit_base_patch16' in m: key = 'vit_b16_384'
    else: raise SystemExit(f"classification.model={m!r}: no counted backbone (add it to count())")
    if int(key.split('_')[-1]) != int(cls['image_size']): raise SystemExit(f"{m} at {cls['image_size']} px: counted at {key.split('_')[-1]} only")
    return key

def work(p:dict)->dict:
    "What each stage of a setup does: {stage: {'flops': float, 'mem': bytes, 'what': str}} (stages the setup runs only)."
    runs = p['runs']
    sp = split_sizes(p['prepare'])
    if p['classification'].get('eval_split'):  # Waterbirds: trains on the setup's split, evaluates the eval split's val + test
        if p['classification']['eval_split'] != WATERBIRDS_SPLIT: raise SystemExit(f"eval_split {p['classification']['eval_split']}: size unknown")
        sp.update(val=DATASETS['waterbirds']['val'], test=DATASETS['waterbirds']['test'])
    return dict(split=sp, methods=list(runs['methods']), synthetic=list(runs['synthetic_methods']), seeds=list(runs['seeds']))

def _act(c:dict, b:float)->float: return c['act_bytes_b1'] + (c['act_bytes_b2'] - c['act_bytes_b1']) * (b - 1)

def predict(p:dict, C:dict, tflops:float)->dict:
    "{stage: dict(minutes, gb, note)} for one setup's effective parameters `p` and counted components `C`."
    W = work(p); sp = W['split']; N = sp['n_train']; K = sp['classes']; F = tflops * 1e12; syn = p['synthesis']
    u, ut, ve, vd, tf, tt = (C[k] for k in ('unet_fwd', 'unet_train', 'vae_encode', 'vae_decode', 'text_fwd', 'text_train'))
    sd_w = 2 * (u['params'] + C['vae_encode']['params'] + tf['params'])  # fp16 weights of the pipeline
    out = {}
    def put(stage, flops, mem, note): out[stage] = dict(minutes=flops / F / 60, gb=mem / GIB, note=note)
    needs = set(W['methods'])
    for st, recipe_methods in (('concepts', {'diff-aug', 'diff-mix', 'diff-gen', 'diff-ii'}), ('concepts_ti', {'da-fusion'})):
        if not needs & recipe_methods: continue
        c = p[st]; b = c['batch_size'] * c.get('grad_accum', 1)
        fl = c['steps'] * b * (ut['flops'] + tt['flops']) + N * (2 if c.get('flip', True) else 1) * ve['flops']
        mem = sd_w + _act(ut, c['batch_size']) + _act(tt, c['batch_size'])
        put(st, fl, mem, f"{c['steps']} steps x {b} images, U-Net + text encoder forward/backward; latents cached (VAE, x2 flips)")
    if 'diff-ii' in needs:
        c = p['inversion']
        put('inversion', N * (ve['flops'] + c['steps'] * u['flops']) + K * tf['flops'],
            sd_w + max(_act(u, c['batch_size']), _act(ve, c['batch_size'])), f"{N} images x {c['steps']} U-Net calls")
        c = p['interpolation']; n = c['expansion'] * N; cfg = 2 if c['guidance_scale'] != 1 else 1
        put('interpolation', n * (cfg * c['steps'] * u['flops'] + vd['flops']) + K * 11 * tf['flops'],
            sd_w + max(_act(u, cfg * c['batch_size']), _act(vd, c['batch_size'])), f"{n} images x {c['steps']} steps x {cfg} (CFG)")
    from diffaug.method_table import METHODS
    cfg = 2 if syn['guidance_scale'] != 1 else 1
    for m in W['synthetic']:
        spec = METHODS[m]; n = syn['expansion'] * N; b = syn['batch_size']
        steps = img2img_steps(m, syn) if spec.family == 'img2img' else syn['steps']
        fl = n * (cfg * steps * u['flops'] + vd['flops'] + (ve['flops'] if spec.family == 'img2img' else 0)) + K * tf['flops']
        mem = sd_w + max(_act(u, cfg * b), _act(vd, b), _act(ve, b))
        if spec.clip_filter: fl += n * C['clip_image_fwd']['flops']; mem += 2 * C['clip_image_fwd']['params']
        put(m, fl, mem, f"{n} images x {steps:g} steps x {cfg}")
    c = p['classification']; key = backbone(c); tr, ev = C[f'{key}_train'], C[f'{key}_fwd']
    E = c['epochs']; n_eval = sum(1 for e in range(E) if (e + 1) % c['eval_every'] == 0 or e + 1 == E)
    runs = len(W['methods']) * len(W['seeds'])
    per_run = E * N * tr['flops'] + n_eval * (sp['val'] + sp['test']) * ev['flops']
    mem = tr['params'] * (4 + 4 + 2 + 2) + _act(tr, c['batch_size'])  # fp32 weights, momentum, fp16 copies, fp32 grads beyond the counted fp16 ones
    put('classification', runs * per_run, mem, f"{runs} runs x ({E} epochs x {N} images + {n_eval} evaluations x {sp['val'] + sp['test']} images)")
    return out

def _ref_tflops(C:dict)->float:
    "The sustained TFLOP/s of the public diffusers reference (A100, 50 steps with CFG + a VAE decode in 1.59 s)."
    return (50 * 2 * C['unet_fwd']['flops'] + C['vae_decode']['flops']) / 1.59 / 1e12

def _eval_share(p:dict, C:dict)->float:
    "The share of a setup's classification FLOPs spent evaluating."
    c = p['classification']; key = backbone(c); sp = work(p)['split']; E = c['epochs']
    n_eval = sum(1 for e in range(E) if (e + 1) % c['eval_every'] == 0 or e + 1 == E)
    ev = n_eval * (sp['val'] + sp['test']) * C[f'{key}_fwd']['flops']
    return ev / (ev + E * sp['n_train'] * C[f'{key}_train']['flops'])

def setups()->list:
    return sorted(f for f in (ROOT/'params').glob('*.yaml') if SETUP_EXCLUDE not in f.stem)

def table(tflops:float=40.0, memory_gb:float=24.0, counts:dict|None=None)->str:
    "The Markdown of benchmarks/gpu_cost.md."
    counts = counts or json.loads(FLOPS_JSON.read_text())
    C = counts['components']
    rows = {f.stem: (predict(pp, C, tflops), pp) for f in setups() for pp in [setup_params(f)]}
    def f_min(x): return '—' if x is None else (f"{x['minutes']:.0f}" if x['minutes'] >= 9.5 else f"{x['minutes']:.1f}")
    def f_gb(x):
        if x is None: return '—'
        return f"**{x['gb']:.1f}**" if x['gb'] > memory_gb else f"{x['gb']:.1f}"
    head = '| setup | ' + ' | '.join(STAGES) + ' | total |\n|---|' + '---:|' * (len(STAGES) + 1) + '\n'
    t1 = head.replace('| total |', '| total (h) |')
    for s, (r, _) in rows.items():
        tot = sum(v['minutes'] for v in r.values())
        t1 += f"| {s} | " + ' | '.join(f_min(r.get(k)) for k in STAGES) + f" | **{tot / 60:.1f}** |\n"
    t2 = head.replace('| total |', '| peak |')
    for s, (r, _) in rows.items():
        t2 += f"| {s} | " + ' | '.join(f_gb(r.get(k)) for k in STAGES) + f" | {max(v['gb'] for v in r.values()):.1f} |\n"
    over = sorted({k for r, _ in rows.values() for k, v in r.items() if v['gb'] > memory_gb})
    cw = counts['counted_with']
    comp = '\n'.join(f"| `{k}` | {v['what']} | {v['flops'] / 1e9:,.1f} | {v['params'] / 1e6:,.1f} | {v['act_bytes_b1'] / GIB:.2f} | "
                     f"{(v['act_bytes_b2'] - v['act_bytes_b1']) / GIB:.2f} |" for k, v in C.items())
    ds = '\n'.join(f"- `{k}`: {v['source']}." for k, v in DATASETS.items())
    cub = rows.get('cub-5shot-resnet50')
    tr, ev = C['resnet50_224_train'], C['resnet50_224_fwd']
    ex = ''
    if cub:
        r = cub[0]; syn = sum(r[m]['minutes'] for m in SYNTH if m in r)
        ex = (f"\nFor example, 5-shot CUB with ResNet-50 (1,000 real images, 5,000 synthetic per method): "
              f"**{sum(v['minutes'] for v in r.values()) / 60:.1f} h** on one such GPU: concept learning "
              f"{r['concepts']['minutes']:.0f} min, Diff-II's inversion + interpolation {r['inversion']['minutes'] + r['interpolation']['minutes']:.0f} min, "
              f"the 8 compared methods' sets {syn / 60:.1f} h, the {len(cub[1]['runs']['methods']) * len(cub[1]['runs']['seeds'])} classifier runs "
              f"{r['classification']['minutes'] / 60:.1f} h, {_eval_share(cub[1], C):.0%} of it evaluating the 5,794 test images after every epoch "
              f"(`classification.eval_every: 1`).\n")
    return f"""**Predicted cost of the paper setups on one GPU.**

Written by `python benchmarks/gpu_cost.py --tflops {tflops:g} --memory-gb {memory_gb:g}` (do not edit: `tests/test_gpu.py`
recomputes it from `benchmarks/gpu_cost_flops.json`). A **prediction**, not a measurement.

**Assumptions.** One GPU sustaining **{tflops:g} TFLOP/s** in fp16 (an A10G / RTX 3090 class GPU at a realistic
utilisation) with **{memory_gb:g} GB** of memory. Calibration: the public figure for diffusers' own pipeline (SD 1.5,
512 px, 50 steps, fp16 with SDPA, A100 80GB: 1.59 s per image) is {_ref_tflops(C):.0f} TFLOP/s by these counts; `benchmarks/gpu.py`
measures it on your GPU. Time = counted
FLOPs / that throughput: data loading, JPEG decoding, PNG writing, process and kernel start-ups and small element-wise
operations are not counted (FlopCounterMode counts matmuls, convolutions and attention, 2 FLOPs per multiply-add).
Memory = weights + the counted activation peak at the stage's batch, as `torch.cuda.max_memory_allocated` would
report it, without the CUDA context (~0.3-0.5 GB) and the allocator's fragmentation: diffusion stages hold SD 1.5's
fp16 weights (U-Net, VAE, text encoder: {(C['unet_fwd']['params'] + C['vae_encode']['params'] + C['text_fwd']['params']) * 2 / GIB:.1f} GB) and the
peak of the U-Net at the stage's batch (doubled by classifier-free guidance) or of the VAE; concept learning the
U-Net's and text encoder's forward + backward activations at its micro-batch (frozen fp16 weights; LoRA and token
weights, a few MB, left out); classification 12 bytes per parameter (fp32 weights and SGD momentum, fp16 copies, the
fp32 gradients' second half) + the counted fp16 forward + backward peak at its batch (activations and fp16 gradients). Peaks over {memory_gb:g} GB are in bold
({'none' if not over else ', '.join(over)}: such a stage needs a smaller batch or gradient accumulation on this GPU).
Not predicted: `prepare`, `suffixes` (a captioner and a language model on first use), `annotation`, `oracle`,
`report` (minutes at most). Each stage runs alone on the GPU; runs of the classification matrix one after another.
Work per stage from the setup file (through `diffaug.params.setup_overrides` + the stage classes' defaults):
concepts = steps x batch x (U-Net + text encoder, forward + backward); inversion = training images x steps U-Net
calls; interpolation and text-to-image methods = expansion x training images x steps x 2 (CFG) calls + a VAE decode;
img2img methods the same over their strength's share of the steps (+ a VAE encode), DA-Fusion the mean of its
strengths; classification = methods x seeds x (epochs x training images x forward + backward + evaluations x
(val + test) images x forward). Dataset sizes:

{ds}
{ex}
#### Minutes per stage (total in hours)

{t1}
#### Peak memory per stage (GB)

{t2}
#### The counted networks

Counted with {cw['counter']} on the `{cw['device']}` device in {cw['dtype']} (torch {cw['torch']}, diffusers
{cw['diffusers']}, transformers {cw['transformers']}, torchvision {cw['torchvision']}); attention as the memory-efficient
SDPA kernel. Activations: the peak of live tensors at batch 1, and what each further sample adds.

| component | what | GFLOP per sample | parameters (M) | activations at batch 1 (GB) | per further sample (GB) |
|---|---|---:|---:|---:|---:|
{comp}
"""

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--tflops', type=float, default=40.0, help='sustained fp16 throughput of the GPU, TFLOP/s (default 40)')
    ap.add_argument('--memory-gb', type=float, default=24.0, help="the GPU's memory, GB (default 24): larger peaks are marked")
    ap.add_argument('--recount', action='store_true', help='recount the FLOPs into benchmarks/gpu_cost_flops.json first')
    ap.add_argument('--out', type=Path, default=MD, help='the Markdown file to write (default benchmarks/gpu_cost.md)')
    ap.add_argument('--check', action='store_true', help='write nothing; exit 1 when --out differs from the prediction')
    a = ap.parse_args(argv)
    if a.recount:
        counts = count()
        FLOPS_JSON.write_text(json.dumps(counts, indent=1) + '\n')
        print(f"counted: U-Net {counts['components']['unet_fwd']['flops'] / 1e12:.3f} TFLOP per call at 512 px -> {FLOPS_JSON}")
    md = table(a.tflops, a.memory_gb)
    if a.check:
        ok = a.out.is_file() and a.out.read_text() == md
        print(f"{a.out}: {'up to date' if ok else 'STALE: run python benchmarks/gpu_cost.py'}")
        return 0 if ok else 1
    a.out.write_text(md); print(f"wrote {a.out}")
    return 0

if __name__ == '__main__':
    sys.exit(main())
