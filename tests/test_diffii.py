"""Diff-II synthesis: circle interpolation, the two-stage switch, bf16 vs fp32, resumption and two-process sharding.

The long-job tests run the real stage functions (`run_inversion`, `run_interpolation`) on a toy split and a tiny
random model in subprocesses: one uninterrupted run, one killed after three images and resumed, and one under
`torchrun --nproc_per_node 2` with `cpu=True`. All three must leave byte-identical files.
"""
import json, math, os, subprocess, sys, textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from diffaug.interpolation import circle_interpolation, slerp, latent_angle, suffix_steps
from diffaug.sampling import ddim_sample, ddim_invert

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
TORCHRUN = str(Path(PY).parent/'torchrun')


# ---------------------------------------------------------------- circle interpolation (Eq. 5-7)

def _pair(seed=0, shape=(4, 16, 16)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)

def test_circle_endpoints_and_period():
    a, b = _pair()
    P = 2 * math.pi / latent_angle(a, b)
    torch.testing.assert_close(circle_interpolation(a, b, 0.0), a, atol=1e-5, rtol=0)
    torch.testing.assert_close(circle_interpolation(a, b, P - 1), b, atol=1e-4, rtol=0)
    torch.testing.assert_close(circle_interpolation(a, b, P), a, atol=1e-4, rtol=0)

def test_eq6_and_eq7_are_special_cases():
    a, b = _pair(1)
    P = 2 * math.pi / latent_angle(a, b)
    for t in (0.0, 0.2, 0.5, 1.0):  # Eq. 6 at t == Eq. 5 at 2π/α − t, and slerp at t == Eq. 5 at λ = −t
        torch.testing.assert_close(slerp(a, b, t), circle_interpolation(a, b, P - t), atol=1e-4, rtol=0)
        torch.testing.assert_close(slerp(a, b, t), circle_interpolation(a, b, -t), atol=1e-5, rtol=0)

def test_norm_preserved_for_equal_norms():
    a, b = _pair(2); b = b / b.norm() * a.norm()
    P = 2 * math.pi / latent_angle(a, b)
    for lam in torch.linspace(0, P, 17).tolist():
        assert abs(circle_interpolation(a, b, lam).norm().item() / a.norm().item() - 1) < 1e-4

def test_degenerate_angles_no_nan():
    a, _ = _pair(3)
    for b in (a, -a, 3 * a, a + 1e-10):
        z = circle_interpolation(a, b, 2.5)
        assert torch.isfinite(z).all()

def test_gaussian_statistics():
    zs = []
    for k in range(48):
        a, b = _pair(100 + k, (4, 32, 32))
        lam = torch.rand((), generator=torch.Generator().manual_seed(k)).item() * 2 * math.pi / latent_angle(a, b)
        zs.append(circle_interpolation(a, b, lam))
    z = torch.stack(zs)
    n = z.numel()  # ~196k elements: standard errors ~0.0023 (mean), ~0.0032 (variance)
    assert abs(z.mean().item()) < 5 / math.sqrt(n)
    assert abs(z.var().item() - 1) < 5 * math.sqrt(2 / n)


# ---------------------------------------------------------------- the two-stage switch

class RecordingUNet(torch.nn.Module):
    "Records, per U-Net call, which prompt each sample got (the constant value of its embedding)."
    def __init__(self): super().__init__(); self.calls = []; self.register_buffer('_p', torch.zeros(()))
    @property
    def dtype(self): return torch.float32
    def forward(self, sample, timestep, encoder_hidden_states=None, **kw):
        self.calls.append((int(timestep), encoder_hidden_states[:, 0, 0].tolist()))
        return SimpleNamespace(sample=torch.zeros_like(sample))

def _stub_pipe():
    from diffusers import DDIMScheduler
    from diffaug.models import SD15_SCHEDULER
    return SimpleNamespace(unet=RecordingUNet(), scheduler=DDIMScheduler(**SD15_SCHEDULER), device=torch.device('cpu'))

@pytest.mark.parametrize('s,expected', [(0.0, 0), (0.3, 7), (1.0, 25)])
def test_switch_at_documented_step(s, expected):
    pipe = _stub_pipe(); B = 3
    first, plain, unc = torch.full((B, 4, 8), 1.0), torch.full((B, 4, 8), 2.0), torch.zeros(4, 8)
    k = suffix_steps(s, 25, pipe.scheduler)
    assert k == expected
    ddim_sample(pipe, torch.randn(B, 4, 8, 8), plain, unc, steps=25, guidance_scale=7.5, first_cond=first, switch_step=k)
    assert len(pipe.unet.calls) == 25
    for i, (t, vals) in enumerate(pipe.unet.calls):
        assert vals[:B] == [0.0] * B  # the unconditional half
        want = 1.0 if i < expected else 2.0
        assert vals[B:] == [want] * B, (i, t, vals)
        if expected and i < expected: assert t >= 1000 * (1 - s) - 1e-6  # the authors' rule on timesteps


# ---------------------------------------------------------------- bf16 vs fp32

@pytest.fixture(scope='module')
def tiny_model(tmp_path_factory):
    from diffaug.models import make_tiny_sd
    return make_tiny_sd(tmp_path_factory.mktemp('m')/'tiny')

def test_bf16_close_to_fp32(tiny_model):
    from diffaug.models import load_sd, PromptCache
    torch.set_num_threads(1)
    outs = {}
    z = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    x0 = 0.2 * torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    for prec in ('fp32', 'bf16'):
        pipe = load_sd(tiny_model, device='cpu', precision=prec)
        assert pipe.unet.dtype == {'fp32': torch.float32, 'bf16': torch.bfloat16}[prec]
        pc = PromptCache(pipe)
        c, u = pc(['a photo of a bird', 'a photo of a red bird']).float(), pc([''])[0].float()
        outs[prec] = (ddim_sample(pipe, z, c, u, steps=8, guidance_scale=7.5), ddim_invert(pipe, x0, c, steps=8))
    # measured: 1.5% (sampling, CFG 7.5) and 4.4% (inversion: the random U-Net's errors grow by 1/sqrt(alpha) at high t)
    for name, i, tol in (('sample', 0, 0.05), ('invert', 1, 0.1)):
        a, b = outs['fp32'][i], outs['bf16'][i]
        rel = ((a - b).norm() / a.norm()).item()
        assert rel < tol, f"{name}: bf16 deviates from fp32 by {rel:.3f} (relative L2)"
        assert rel > 0, "bf16 and fp32 gave identical results: the precision parameter did nothing"


# ---------------------------------------------------------------- resumption and sharding (subprocesses)

SCRIPT = textwrap.dedent('''
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    os.environ['DIFFAUG_QUIET'] = '1'
    cfg = json.loads(sys.argv[1])
    from diffaug.inversion import run_inversion
    from diffaug.interpolation import run_interpolation
    if cfg.get('die_after'):  # a hard kill right after the n-th image is written (no cleanup, no finalize)
        import diffaug.data as D
        orig, n = D.SyntheticSetWriter.write, [0]
        def write(self, *a, **k):
            r = orig(self, *a, **k); n[0] += 1
            if n[0] >= cfg['die_after']: os._exit(9)
            return r
        D.SyntheticSetWriter.write = write
    pool = cfg.get('pool')
    if pool is None:
        pool = run_inversion(cfg['split'], cfg['model'], None, cfg['out'] + '-pool', steps=cfg['steps'], batch_size=3,
                             check_images=0, device='cpu', precision='fp32', cpu=True)['out']
    run_interpolation(cfg['split'], cfg['model'], None, pool, cfg.get('suffixes'), cfg['out'], expansion=2, suffix_fraction=0.4,
                      steps=cfg['steps'], batch_size=3, seed=5, device='cpu', precision='fp32', cpu=True)
''')

@pytest.fixture(scope='module')
def job(tmp_path_factory, tiny_model):
    from diffaug.data import make_toy_dataset, few_shot_split, save_split
    from diffaug.suffixes import write_suffixes
    d = tmp_path_factory.mktemp('job')
    ds = make_toy_dataset(d/'toy', n_classes=3, n_per_class=4, size=32, seed=0)
    split = save_split(few_shot_split(ds, k=3, seed=0, test='none'), d/'split.json')
    sfx = write_suffixes(['perched on a branch.', 'flying over water.'], d/'suffixes.txt')
    (d/'run.py').write_text(SCRIPT)
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(REPO)}
    def run(out, nproc=1, **kw):
        cfg = dict(split=str(split), model=str(tiny_model), out=str(d/out), steps=6, suffixes=str(sfx), **kw)
        cmd = ([TORCHRUN, '--standalone', f'--nproc_per_node={nproc}'] if nproc > 1 else [PY]) + [str(d/'run.py'), json.dumps(cfg)]
        return subprocess.run(cmd, env=env, cwd=d, capture_output=True, text=True, timeout=600)
    return SimpleNamespace(dir=d, run=run)

def _files(folder):
    "Relative path -> bytes of every visible file (hidden sidecars and temp files excluded)."
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob('*'))
            if p.is_file() and not any(part.startswith('.') for part in p.relative_to(folder).parts)}

@pytest.fixture(scope='module')
def reference(job):
    r = job.run('ref')
    assert r.returncode == 0, r.stderr[-3000:]
    files = _files(job.dir/'ref')
    assert sum(f.endswith('.png') for f in files) == 2 * 9 and 'metadata.csv' in files
    return files

@pytest.mark.slow  # 3 subprocesses: ~1-2 min on a busy 2-core machine
def test_resume_after_kill_is_byte_identical(job, reference):
    pool = str(job.dir/'ref-pool')
    r = job.run('resumed', pool=pool, die_after=4)
    assert r.returncode == 9, (r.returncode, r.stderr[-2000:])
    pngs = list((job.dir/'resumed').rglob('*.png'))
    assert len(pngs) == 4 and not (job.dir/'resumed'/'metadata.csv').exists()
    r = job.run('resumed', pool=pool)
    assert r.returncode == 0, r.stderr[-3000:]
    got = _files(job.dir/'resumed')
    assert got.keys() == reference.keys()
    assert [k for k in got if got[k] != reference[k]] == []

@pytest.mark.slow  # torchrun with 2 processes (plus the reference run)
def test_two_processes_match_one(job, reference):
    r = job.run('sharded', nproc=2)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    got = _files(job.dir/'sharded')
    assert got.keys() == reference.keys()
    assert [k for k in got if got[k] != reference[k]] == ['info.json']  # it names the (other) pool folder
    a, b = json.loads(got['info.json']), json.loads(reference['info.json'])
    assert a['params'].pop('inversions').endswith('sharded-pool') and b['params'].pop('inversions').endswith('ref-pool')
    assert a == b
    # the inversion pool, also built by two processes, is byte-identical too
    assert (job.dir/'sharded-pool'/'inversions.safetensors').read_bytes() == (job.dir/'ref-pool'/'inversions.safetensors').read_bytes()
    info = json.loads((job.dir/'sharded'/'info.json').read_text())
    assert info['n_images'] == 18
