"""Diff-II synthesis throughput on this machine: images per second and the share of wall time inside U-Net calls.

Runs the real code paths of the inversion and interpolation stages (`build_inversion_pool`; `run_items` with
`diffii_render`, PNGs written through `SyntheticSetWriter`) on a toy dataset, for

* the tiny model (U-Net widths 32/64, 1 layer per block, cross-attention 32, 64 px), and
* an SD-1.5-architecture model with random weights (diffusers' default U-Net with cross-attention 768, the SD VAE,
  a 12-layer CLIP text encoder) at 256 px,

in fp32 and bf16, 25 DDIM steps, CFG 7.5 for synthesis. Model building and loading are not timed; everything from
reading images to writing PNGs is. Compare with the authors' code on the same CPU (measured on an idle machine, seconds per image:
tiny 0.41 inversion / 0.60 generation; SD-1.5 26.7 inversion / 56.9 generation at 25 steps, fp32, batch 1).

    python benchmarks/bench_synthesis.py                 # tiny fp32+bf16, SD-1.5 bf16 (a few minutes)
    python benchmarks/bench_synthesis.py --sd-fp32       # also SD-1.5 in fp32 (slow)
    python benchmarks/bench_synthesis.py --only tiny     # the tiny model only

Run it alone: other processes on the CPU distort every number. Results go to stdout and, with --out, to JSON.
"""
from __future__ import annotations
import argparse, json, os, platform, shutil, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault('DIFFAUG_QUIET', '1')

import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel, AutoencoderKL, DDIMScheduler
from transformers import CLIPTextConfig, CLIPTextModel

from diffaug.core import cpu_supports_bf16
from diffaug.models import make_tiny_sd, load_sd, write_char_tokenizer, SD15_SCHEDULER
from diffaug.splits import few_shot_split
from diffaug.synthetic import SyntheticSetWriter
from diffaug.toy import make_toy_dataset
from diffaug.sampling import UNetTimer, run_items
from diffaug.inversion import build_inversion_pool, class_prompts, load_inversion_pool
from diffaug.interpolation import diffii_items, diffii_render, InterpolationConfig
from diffaug.concepts import concept_prompt


def sd15_pipe(tmp: Path, resolution: int = 256) -> StableDiffusionPipeline:
    "SD-1.5 architecture, random weights, in memory."
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=resolution // 8, cross_attention_dim=768)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=('DownEncoderBlock2D',) * 4,
                        up_block_types=('UpDecoderBlock2D',) * 4, layers_per_block=2, latent_channels=4, sample_size=resolution)
    tok = write_char_tokenizer(tmp/'tok', extra_words=['a', 'photo', 'of', 'bird'])
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                        num_attention_heads=12, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                                        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=DDIMScheduler(**SD15_SCHEDULER),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to('cpu')


def bench(pipe, name: str, precision: str, n_images: int, batch_size: int, steps: int, tmp: Path, res: int) -> dict:
    dtype = {'fp32': torch.float32, 'bf16': torch.bfloat16}[precision]
    pipe = pipe.to(dtype=dtype)
    n_cls = 2; per = max(2, (n_images + n_cls - 1) // n_cls)
    work = tmp/f"{name}-{precision}"; shutil.rmtree(work, ignore_errors=True)
    ds = make_toy_dataset(work/'toy', n_classes=n_cls, n_per_class=per, size=res, seed=0)
    sp = few_shot_split(ds, k=per, seed=0, test='none')
    items = sp.items('train')[:n_images]
    prompts = class_prompts(sp.classes, sp.metaclass)
    out = {'model': name, 'precision': precision, 'steps': steps, 'batch_size': batch_size, 'resolution': res}
    # inversion
    with UNetTimer(pipe.unet) as tm:
        t0 = time.perf_counter()
        build_inversion_pool(pipe, items, prompts, work/'pool', steps=steps, batch_size=batch_size, root=sp.root, cpu=True)
        wall = time.perf_counter() - t0
    out['inversion'] = dict(images=len(items), seconds=round(wall, 2), s_per_image=round(wall / len(items), 3),
                            images_per_s=round(len(items) / wall, 4), unet_fraction=round(tm.seconds / wall, 3), unet_calls=tm.calls)
    # synthesis: expansion 1 -> one image per real image, CFG 7.5, suffix fraction 0.3
    pool, meta = load_inversion_pool(work/'pool')
    wi = diffii_items(meta['ids'], sp.classes, expansion=1)
    render = diffii_render(pipe, pool, lambda c, s: concept_prompt(c, sp.metaclass, {c: c for c in sp.classes}, s),
                           ['perched on a branch.', 'flying over water.'], InterpolationConfig(seed=0, steps=steps, guidance_scale=7.5, suffix_fraction=0.3))
    writer = SyntheticSetWriter(work/'syn', sp.classes, 'diff-ii')
    with UNetTimer(pipe.unet) as tm:
        t0 = time.perf_counter()
        run_items(wi, render, writer, batch_size=batch_size, cpu=True)
        wall = time.perf_counter() - t0
    out['synthesis'] = dict(images=len(wi), seconds=round(wall, 2), s_per_image=round(wall / len(wi), 3),
                            images_per_s=round(len(wi) / wall, 4), unet_fraction=round(tm.seconds / wall, 3), unet_calls=tm.calls)
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out), flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--only', choices=['tiny', 'sd15'], default=None)
    ap.add_argument('--sd-fp32', action='store_true', help='also time the SD-1.5 model in fp32 (3x slower)')
    ap.add_argument('--tiny-images', type=int, default=16)
    ap.add_argument('--sd-images', type=int, default=4)
    ap.add_argument('--steps', type=int, default=25)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--out', type=str, default=None, help='write the results as JSON here')
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    tmp = Path(tempfile.mkdtemp(prefix='bench-synth-'))
    res = {'machine': dict(cpu_count=os.cpu_count(), threads=a.threads, bf16_units=cpu_supports_bf16(), torch=torch.__version__,
                           python=platform.python_version(), loadavg=os.getloadavg()), 'runs': []}
    print(json.dumps(res['machine']), flush=True)
    if a.only in (None, 'tiny'):
        pipe = load_sd(make_tiny_sd(tmp/'tiny', resolution=64, width=32, cross_attention_dim=32), device='cpu', precision='fp32')
        for prec in ('fp32', 'bf16'):
            res['runs'].append(bench(pipe, 'tiny', prec, a.tiny_images, a.tiny_images, a.steps, tmp, 64))
    if a.only in (None, 'sd15'):
        pipe = sd15_pipe(tmp)
        for prec in (['bf16'] + (['fp32'] if a.sd_fp32 else [])):
            res['runs'].append(bench(pipe, 'sd15-256px', prec, a.sd_images, a.sd_images, a.steps, tmp, 256))
    res['machine']['loadavg_end'] = os.getloadavg()
    print('\n| model | precision | stage | images | s/image | images/s | U-Net share |\n|---|---|---|---|---|---|---|')
    for r in res['runs']:
        for st in ('inversion', 'synthesis'):
            x = r[st]
            print(f"| {r['model']} | {r['precision']} | {st} | {x['images']} | {x['s_per_image']} | {x['images_per_s']} | {x['unet_fraction']:.0%} |")
    if a.out: Path(a.out).write_text(json.dumps(res, indent=2) + '\n')
    shutil.rmtree(tmp, ignore_errors=True)
    return res


if __name__ == '__main__':
    main()
