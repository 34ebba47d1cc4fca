"""Seconds per image of DDIM inversion and Diff-II interpolation on a GPU: this package's batched path beside diffusers' own pipeline.

    python benchmarks/gpu.py                 # CUDA: SD 1.5 architecture (random weights, built locally), 512 px, 25 steps,
                                             # batch 1/8/16, fp16 + SDPA, with and without torch.compile -> benchmarks/gpu.{json,md}
    python benchmarks/gpu.py --smoke --out-dir /tmp/x   # any machine, seconds: the tiny model, 2 steps, batch 1/2, fp32,
                                             # torch.compile with the 'eager' backend: the whole code path, numbers meaningless

What is timed, per batch size B (after one untimed warm-up batch, which also compiles), synchronised, best of --repeats:
* ours, inversion: `diffaug.inversion.invert_images` (square crop, VAE encode, prompt encode, `diffaug.sampling.ddim_invert`:
  B latents in one U-Net call per step, no guidance), as the inversion stage calls it;
* ours, interpolation: the render function of `diffaug.interpolation.diffii_render` on B work items of
  `diffii_items` (circle interpolation of two inversions, two-stage denoising with CFG 7.5: 2B samples per U-Net call,
  `diffaug.sampling.ddim_sample`, VAE decode to PIL), as the interpolation stage calls it;
* diffusers, inversion: `StableDiffusionPipeline` with `DDIMInverseScheduler`, guidance 1, `output_type='latent'` on
  B encoded latents (the authors' get_inversion.py does this at batch 1);
* diffusers, generation: `StableDiffusionPipeline(prompt=[...] * B)`, CFG 7.5, PIL output: the same U-Net work as
  interpolation (steps x 2B samples) plus diffusers' own overheads.
Same weights, steps, resolution, batch and precision for both; attention through `AttnProcessor2_0` (SDPA).
Peak memory: `torch.cuda.max_memory_allocated` over the timed calls (weights included). The weights are random: SD 1.5's
architecture and configs (benchmarks/gpu_cost.py), nothing downloaded; time does not depend on the weights' values.

Public reference: SD 1.5, 512 px, 50 steps, fp16, diffusers with SDPA on an A100 80GB: 1.59 s/image, 1.35 s with
torch.compile. Goal: our per-image cost at least 2x below diffusers' own pipeline at the same steps and batch.
"""
from __future__ import annotations
import argparse, json, os, platform, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT/'benchmarks'):  # the package; gpu_cost (SD 1.5's configs)
    if str(_p) not in sys.path: sys.path.insert(0, str(_p))
os.environ.setdefault('DIFFAUG_QUIET', '1')
REFERENCE = {'what': 'SD 1.5, 512 px, 50 steps, fp16, diffusers with SDPA, A100 80GB', 's_per_image': 1.59, 's_per_image_compiled': 1.35}
GOAL = 2.0  # ours at least this many times cheaper per image than diffusers' pipeline

def build_pipe(smoke:bool, device:str, dtype, tmp:Path):
    "SD 1.5's architecture with random weights (or, smoke, the package's tiny model), DDIM scheduler, SDPA attention."
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel, AutoencoderKL, DDIMScheduler
    from diffusers.models.attention_processor import AttnProcessor2_0
    from transformers import CLIPTextConfig, CLIPTextModel
    from diffaug.models import make_tiny_sd, load_sd, write_char_tokenizer, SD15_SCHEDULER
    torch.manual_seed(0)
    if smoke:
        pipe = load_sd(make_tiny_sd(tmp/'tiny'), device='cpu', precision='fp32')
    else:
        from gpu_cost import SD15_UNET, SD15_VAE, SD15_TEXT
        tok = write_char_tokenizer(tmp/'tok', extra_words=['a', 'photo', 'of', 'bird', 'perched', 'on', 'branch.'])
        text = CLIPTextModel(CLIPTextConfig(**{**SD15_TEXT, 'vocab_size': len(tok)}, bos_token_id=tok.bos_token_id,
                                            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
        pipe = StableDiffusionPipeline(vae=AutoencoderKL(**SD15_VAE), text_encoder=text, tokenizer=tok, unet=UNet2DConditionModel(**SD15_UNET),
                                       scheduler=DDIMScheduler(**SD15_SCHEDULER), safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipe = pipe.to(device=device, dtype=dtype)
    pipe.unet.set_attn_processor(AttnProcessor2_0()); pipe.vae.set_attn_processor(AttnProcessor2_0())
    pipe.set_progress_bar_config(disable=True)
    return pipe

def images(n:int, res:int)->list:
    "n random RGB images (the timing does not depend on them)."
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (res, res, 3), dtype=np.uint8)) for _ in range(n)]

class Runner:
    "The four timed jobs on one pipeline."
    def __init__(self, pipe, res:int, steps:int):
        from diffaug.models import sd_resolution
        self.pipe, self.res, self.steps = pipe, res, steps
        self.prompt = 'a photo of a bird'
        xT = self.ours_inversion(2); self._pool = {'a': xT[0], 'b': xT[1]}  # interpolation's two inversions (not timed)

    def ours_inversion(self, B):
        from diffaug.inversion import invert_images
        x0, xT = invert_images(self.pipe, images(B, self.res), [self.prompt] * B, steps=self.steps, resolution=self.res)
        return xT

    def ours_interpolation(self, B):
        from diffaug.interpolation import diffii_items, diffii_render, InterpolationConfig
        items = diffii_items({'bird': ['a', 'b']}, ['bird'], expansion=max(1, (B + 1) // 2))[:B]
        render = diffii_render(self.pipe, self._pool, lambda c, s: ' '.join(f'a photo of a {c} {s}'.split()),
                               ['perched on a branch.'], InterpolationConfig(seed=0, steps=self.steps, guidance_scale=7.5, suffix_fraction=0.3))
        return render(items)

    def diffusers_inversion(self, B):
        import torch
        from diffusers import DDIMInverseScheduler, StableDiffusionPipeline
        from diffaug.encoding import encode_images, square_crop
        p = self.pipe
        if getattr(self, '_inv', None) is None:
            self._inv = StableDiffusionPipeline(**{**p.components, 'scheduler': DDIMInverseScheduler.from_config(p.scheduler.config)})
            self._inv.set_progress_bar_config(disable=True)
        lat = encode_images(p, [square_crop(im, self.res) for im in images(B, self.res)], size=self.res).to(p.unet.dtype)
        return self._inv(prompt=[self.prompt] * B, negative_prompt=[''] * B, guidance_scale=1.0, num_inference_steps=self.steps,
                         latents=lat, height=self.res, width=self.res, output_type='latent', return_dict=False)[0]

    def diffusers_generation(self, B):
        return self.pipe(prompt=[self.prompt] * B, num_inference_steps=self.steps, guidance_scale=7.5, height=self.res, width=self.res,
                         output_type='pil').images

JOBS = {('ours', 'inversion'): 'ours_inversion', ('ours', 'interpolation'): 'ours_interpolation',
        ('diffusers', 'inversion'): 'diffusers_inversion', ('diffusers', 'interpolation'): 'diffusers_generation'}

def timed(fn, B, cuda:bool, repeats:int, warmup:bool=True)->tuple:
    "(best seconds of `repeats` calls after one warm-up, peak bytes allocated or None)."
    import torch
    if warmup: fn(B)  # warm-up (and compilation)
    if cuda: torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    best = float('inf')
    for _ in range(repeats):
        t0 = time.perf_counter(); fn(B)
        if cuda: torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, (torch.cuda.max_memory_allocated() if cuda else None)

def run(smoke:bool=False, batches=None, steps=None, repeats=None, compile_modes=(False, True), backend=None, device=None)->dict:
    "Every (implementation, task, compile, batch) measured: the JSON document."
    import torch
    cuda = torch.cuda.is_available() and not smoke if device is None else device.startswith('cuda')
    device = device or ('cuda' if cuda else 'cpu')
    if not smoke and not cuda: raise SystemExit("no CUDA device: run with --smoke for the CPU code path (numbers meaningless)")
    dtype = torch.float16 if cuda else torch.float32
    batches = batches or ([1, 2] if smoke else [1, 8, 16]); steps = steps or (2 if smoke else 25)
    repeats = repeats or (1 if smoke else 2); backend = backend or ('eager' if smoke else 'inductor')
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for comp in compile_modes:
            torch._dynamo.reset()
            pipe = build_pipe(smoke, device, dtype, Path(tmp))
            from diffaug.models import sd_resolution
            res = sd_resolution(pipe)
            if comp: pipe.unet.compile(backend=backend)
            r = Runner(pipe, res, steps)
            for (impl, task), name in JOBS.items():
                for B in (batches[:1] if smoke and comp else batches):  # smoke: compiling once is the code path
                    sec, peak = timed(getattr(r, name), B, cuda, repeats, warmup=not smoke)
                    rows.append(dict(impl=impl, task=task, compile=comp, batch=B, seconds=round(sec, 4), s_per_image=round(sec / B, 4),
                                     peak_gb=None if peak is None else round(peak / 2 ** 30, 3)))
                    print(f"{impl:9s} {task:13s} compile={comp!s:5s} batch {B:2d}: {sec / B:.3f} s/image"
                          + ('' if peak is None else f", peak {peak / 2 ** 30:.2f} GB"), flush=True)
            del pipe, r
            if cuda: torch.cuda.empty_cache()
    import diffusers
    env = dict(torch=torch.__version__, diffusers=diffusers.__version__, python=platform.python_version(), device=device,
               gpu=torch.cuda.get_device_name() if cuda else None, dtype=str(dtype).replace('torch.', ''), compile_backend=backend)
    return dict(smoke=smoke, resolution=res, steps=steps, guidance_scale=7.5, repeats=repeats, batches=batches, environment=env,
                reference=REFERENCE, goal=f"ours at least {GOAL:g}x cheaper per image than diffusers' pipeline", rows=rows)

def speedups(doc:dict)->list:
    "(task, compile, batch, diffusers s/image, ours s/image, ratio) for every measured pair."
    by = {(r['impl'], r['task'], r['compile'], r['batch']): r for r in doc['rows']}
    return [(t, c, b, by[('diffusers', t, c, b)]['s_per_image'], r['s_per_image'], by[('diffusers', t, c, b)]['s_per_image'] / max(r['s_per_image'], 1e-12))
            for (i, t, c, b), r in by.items() if i == 'ours' and ('diffusers', t, c, b) in by]

def markdown(doc:dict)->str:
    e = doc['environment']; ref = doc['reference']
    out = [f"# GPU benchmark: DDIM inversion and Diff-II interpolation ({'SMOKE RUN: tiny model, numbers meaningless' if doc['smoke'] else e['gpu']})", '',
           f"`python benchmarks/gpu.py{' --smoke' if doc['smoke'] else ''}`: {doc['resolution']} px, {doc['steps']} DDIM steps, CFG {doc['guidance_scale']} "
           f"for interpolation / generation, {e['dtype']} with SDPA, torch {e['torch']}, diffusers {e['diffusers']}, torch.compile backend "
           f"`{e['compile_backend']}`; best of {doc['repeats']}{'' if doc['smoke'] else ' after a warm-up'}. "
           + ("The package's tiny random model (smoke)." if doc['smoke'] else "Random weights of SD 1.5's architecture (not downloaded)."), '',
           '| implementation | task | torch.compile | batch | s / image | peak GB |', '|---|---|---|---:|---:|---:|']
    for r in doc['rows']:
        out.append(f"| {r['impl']} | {r['task']} | {'yes' if r['compile'] else 'no'} | {r['batch']} | {r['s_per_image']:.3f} | "
                   + ('—' if r['peak_gb'] is None else f"{r['peak_gb']:.2f}") + ' |')
    out += ['', f"Diffusers' cost per image over ours (goal: ≥ {GOAL:g}x; 'interpolation' against diffusers' text-to-image generation, the same U-Net work):", '',
            '| task | torch.compile | batch | diffusers s / image | ours s / image | ratio | goal |', '|---|---|---:|---:|---:|---:|---|']
    for t, c, b, d, o, x in speedups(doc):
        out.append(f"| {t} | {'yes' if c else 'no'} | {b} | {d:.3f} | {o:.3f} | {x:.2f}x | {'met' if x >= GOAL else 'not met'} |")
    out += ['', f"Public reference ({ref['what']}): {ref['s_per_image']} s/image, {ref['s_per_image_compiled']} s with torch.compile "
            f"(50 steps: halve it for 25)."]
    return '\n'.join(out) + '\n'

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--smoke', action='store_true', help='the tiny model on CPU, 2 steps, batch 1/2: the code path in seconds')
    ap.add_argument('--batches', type=int, nargs='+', help='batch sizes (default 1 8 16; smoke 1 2)')
    ap.add_argument('--steps', type=int, help='DDIM steps (default 25; smoke 2)')
    ap.add_argument('--repeats', type=int, help='timed calls per point, the best kept (default 2; smoke 1)')
    ap.add_argument('--no-compile', action='store_true', help='skip the torch.compile half')
    ap.add_argument('--backend', help="torch.compile backend (default inductor; smoke: eager)")
    ap.add_argument('--out-dir', type=Path, default=ROOT/'benchmarks', help='where gpu.json and gpu.md go (default benchmarks/)')
    a = ap.parse_args(argv)
    doc = run(a.smoke, a.batches, a.steps, a.repeats, (False,) if a.no_compile else (False, True), a.backend)
    a.out_dir.mkdir(parents=True, exist_ok=True)
    stem = 'gpu_smoke' if a.smoke else 'gpu'
    (a.out_dir/f'{stem}.json').write_text(json.dumps(doc, indent=1) + '\n')
    (a.out_dir/f'{stem}.md').write_text(markdown(doc))
    print(f"wrote {a.out_dir/f'{stem}.json'} and {a.out_dir/f'{stem}.md'}")
    return 0

if __name__ == '__main__':
    sys.exit(main())
