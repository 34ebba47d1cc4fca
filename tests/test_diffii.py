"""Diff-II synthesis across modules: the two-stage switch inside the DDIM sampler, bf16 vs fp32, resumption (two-process sharding: tests/test_multiprocess.py).

The long-job tests run the real stage functions (`run_inversion`, `run_interpolation`) on a toy split and a tiny
random model in subprocesses: one uninterrupted run and one killed after three images and resumed. Both must leave
byte-identical files.

The stage parameters (`InversionConfig`, `InterpolationConfig`): unknown keys, every bad value, the rules across the
two stages (the pool's grid, model and concepts), a resumed pool with other parameters refused, reruns byte-identical.
"""
import json, math, os, subprocess, sys, textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from diffaug.core import ParamError
from diffaug.files import scratch_dir, start_scratch
from diffaug.interpolation import InterpolationConfig, suffix_steps, run_interpolation
from diffaug.inversion import InversionConfig, load_inversion_pool, run_inversion
from diffaug.sampling import ddim_sample, ddim_invert

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
TORCHRUN = str(Path(PY).parent/'torchrun')


# Circle interpolation itself (Eq. 5-7: endpoints, period, the special cases, norms, degenerate angles, Gaussian
# statistics) is checked in its chapter, nbs/30_interpolation.ipynb (nbdev-test), not repeated here.


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
    from diffaug.models import load_sd
    from diffaug.encoding import PromptCache
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
        import diffaug.synthetic as D
        orig, n = D.SyntheticSetWriter.write, [0]
        def write(self, *a, **k):
            r = orig(self, *a, **k); n[0] += 1
            if n[0] >= cfg['die_after']: os._exit(9)
            return r
        D.SyntheticSetWriter.write = write
    pool = cfg.get('pool')
    if pool is None:
        pool = run_inversion(split=cfg['split'], model=cfg['model'], out=cfg['out'] + '-pool', steps=cfg['steps'], batch_size=3,
                             check_images=0, device='cpu', precision='fp32', cpu=True)['out']
    run_interpolation(inversions=pool, suffixes=cfg.get('suffixes'), out=cfg['out'], expansion=2,
                      suffix_fraction=0.4, steps=cfg['steps'], batch_size=3, seed=5, device='cpu', precision='fp32', cpu=True)
''')

@pytest.fixture(scope='module')
def job(tmp_path_factory, tiny_model):
    from diffaug.splits import few_shot_split, save_split
    from diffaug.toy import make_toy_dataset
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
    pngs = list(scratch_dir(job.dir/'resumed').rglob('*.png')) + list((job.dir/'resumed').rglob('*.png'))
    assert len(pngs) == 4 and not (job.dir/'resumed'/'metadata.csv').exists()
    r = job.run('resumed', pool=pool)
    assert r.returncode == 0, r.stderr[-3000:]
    got = _files(job.dir/'resumed')
    assert got.keys() == reference.keys()
    assert [k for k in got if got[k] != reference[k]] == []



# Two processes writing one process's pool and set: tests/test_multiprocess.py (with the synthesis methods, concepts and classification).


# ---------------------------------------------------------------- stage parameters, the rules across stages, reruns

@pytest.fixture(scope='module')
def small(tmp_path_factory, tiny_model):
    "A toy split (2 classes x 3 training images) and its pool on a 4-step grid, built in this process."
    from diffaug.splits import few_shot_split, save_split
    from diffaug.toy import make_toy_dataset
    d = tmp_path_factory.mktemp('small')
    ds = make_toy_dataset(d/'toy', n_classes=2, n_per_class=3, size=32, seed=0)
    split = save_split(few_shot_split(ds, k=3, seed=0, test='none'), d/'split.json')
    torch.set_num_threads(1)
    inv = dict(split=str(split), model=str(tiny_model), out=str(d/'pool'), steps=4, batch_size=4, check_images=2, device='cpu', precision='fp32')
    r = run_inversion(**inv)
    return SimpleNamespace(dir=d, split=str(split), model=str(tiny_model), pool=r['out'], inv=inv)

def _tree(folder):
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}

def test_inversion_config_names_every_bad_value(small):
    with pytest.raises(ParamError, match="unknown parameter 'step'; did you mean 'steps'"): InversionConfig.from_params({'step': 4})
    ok = dict(split=small.split, model=small.model, out=str(small.dir/'x'))
    assert InversionConfig.from_params(ok).check().steps == 25  # the paper's grid by default
    no_unet = small.dir/'no-unet'; no_unet.mkdir(exist_ok=True)
    bad = [({'steps': 0}, 'steps'), ({'steps': -3}, 'steps'), ({'batch_size': 0}, 'batch_size'), ({'check_images': -1}, 'check_images'),
           ({'resolution': 33}, 'resolution'), ({'device': 'gpu'}, 'device'), ({'precision': 'half'}, 'precision'), ({'cpu': 'yes'}, 'cpu'),
           ({'out': None}, 'out'), ({'split': None}, 'split'), ({'split': str(small.dir/'missing.json')}, 'split'),
           ({'model': None}, 'model'), ({'model': str(no_unet)}, 'model'), ({'model': str(small.dir/'nowhere')}, 'model'),
           ({'concepts': str(small.dir/'nowhere')}, 'concepts'), ({'concepts': str(small.dir/'toy')}, 'concepts')]
    for b, name in bad:
        with pytest.raises(ParamError, match=f"parameter {name}="): InversionConfig.from_params({**ok, **b}).check()
    with pytest.raises(ParamError, match='concepts.json'): InversionConfig.from_params({**ok, 'concepts': str(small.dir/'toy')}).check()

def test_inversion_rerun_same_bytes_and_resume_refused(small, monkeypatch):
    first = _tree(small.pool)
    assert sorted(first) == ['inversions.safetensors', 'pool.json', 'reconstruction.png'] and not scratch_dir(small.pool).exists()
    meta = json.loads(first['pool.json'])
    assert meta['model'] == small.model and meta['steps'] == 4 and meta['concepts'] is None and 'base_model_fingerprint' in meta
    run_inversion(**{**small.inv, 'out': str(small.dir/'pool2')})
    assert _tree(small.dir/'pool2') == first  # no timings, temp or output paths in the pool
    # unfinished work of other parameters (which DVC cannot restore) is refused, naming the difference, and kept
    other = small.dir/'pool3'
    start_scratch(other, {**meta, 'steps': 6}); (scratch_dir(other)/'keep').write_text('x')
    with pytest.raises(ParamError, match=r"pool3\.partial: unfinished work made with other parameters .*steps: 6 there, 4 now"):
        run_inversion(**{**small.inv, 'out': str(other)})
    assert (scratch_dir(other)/'keep').read_text() == 'x' and not other.exists()
    monkeypatch.setenv('DIFFAUG_RESTART', '1')  # what `python -m diffaug.pipeline inversion --restart` sets
    run_inversion(**{**small.inv, 'out': str(other)})
    assert _tree(other) == first and not scratch_dir(other).exists()

def test_inversion_resumes_after_the_merge(small, monkeypatch):
    "A run killed after the pool was merged, before it was published, resumes without inverting again."
    import diffaug.inversion as I
    out = small.dir/'pool4'
    class Killed(Exception): pass
    def killed(o): raise Killed()
    monkeypatch.setattr(I, 'publish_dir', killed)
    with pytest.raises(Killed): run_inversion(**{**small.inv, 'out': str(out)})
    assert (scratch_dir(out)/'inversions.safetensors').is_file() and not (scratch_dir(out)/'.parts').exists() and not out.exists()
    monkeypatch.undo()
    def again(*a, **k): raise AssertionError('inverted again')
    monkeypatch.setattr(I, 'invert_images', again)
    run_inversion(**{**small.inv, 'out': str(out)})
    assert _tree(out) == _tree(small.pool)

def test_interpolation_config_names_every_bad_value(small):
    with pytest.raises(ParamError, match="unknown parameter 'suffix_ratio'; did you mean 'suffix_fraction'"):
        InterpolationConfig.from_params({'suffix_ratio': 0.3})
    ok = dict(inversions=small.pool, out=str(small.dir/'set'), steps=4)
    c = InterpolationConfig.from_params(ok).check()
    assert (c.expansion, c.suffix_fraction, c.guidance_scale) == (5, 0.3, 7.5)
    bad = [({'expansion': 0}, 'expansion'), ({'suffix_fraction': 1.5}, 'suffix_fraction'), ({'suffix_fraction': -0.1}, 'suffix_fraction'),
           ({'steps': 0}, 'steps'), ({'steps': -3}, 'steps'), ({'guidance_scale': -1.0}, 'guidance_scale'), ({'batch_size': 0}, 'batch_size'),
           ({'seed': -1}, 'seed'), ({'device': 'gpu'}, 'device'), ({'precision': 'fp8'}, 'precision'), ({'cpu': 2}, 'cpu'),
           ({'allow_grid_mismatch': 'no'}, 'allow_grid_mismatch'), ({'out': None}, 'out'), ({'inversions': None}, 'inversions'),
           ({'inversions': str(small.dir/'nowhere')}, 'inversions'), ({'inversions': str(small.dir/'toy')}, 'inversions'),
           ({'suffixes': str(small.dir/'none.txt')}, 'suffixes')]
    for b, name in bad:
        with pytest.raises(ParamError, match=f"parameter {name}="): InterpolationConfig.from_params({**ok, **b}).check()
    for k in ('split', 'model', 'concepts'):  # the pool's (its pool.json), not parameters: a value beside the pool is refused
        with pytest.raises(ParamError, match=f"unknown parameter '{k}'"): InterpolationConfig.from_params({**ok, k: 'x'})
    InterpolationConfig.from_params({**ok, 'inversions': str(small.dir/'nowhere')}).check(files=False)

def test_interpolation_takes_the_pools_model_split_and_concepts(small, tmp_path, tmp_path_factory, monkeypatch):
    from diffaug.models import make_tiny_sd
    ok = dict(inversions=small.pool, out=str(tmp_path/'set'), steps=4)
    with pytest.raises(ParamError, match=r"parameter steps=6 is invalid: expected 4, the grid the pool .*pool was inverted on \(or allow_grid_mismatch: true\)"):
        InterpolationConfig.from_params({**ok, 'steps': 6}).check()
    InterpolationConfig.from_params({**ok, 'steps': 6, 'allow_grid_mismatch': True}).check()
    assert InterpolationConfig.from_params(ok).sources() == {'model': small.model, 'split': small.split, 'concepts': None}
    # paths are read as the stages record them: relative to the repository root (DIFFAUG_ROOT) when inside it
    import shutil
    root = tmp_path_factory.getbasetemp()
    pool = Path(shutil.copytree(small.pool, tmp_path/'pool-rel'))
    m = json.loads((pool/'pool.json').read_text())
    m['split'] = Path(small.split).relative_to(root).as_posix()
    (pool/'pool.json').write_text(json.dumps(m))
    with pytest.raises(ParamError, match="parameter inversions=.* a pool whose split is there"):
        InterpolationConfig.from_params({**ok, 'inversions': str(pool)}).check()
    monkeypatch.setenv('DIFFAUG_ROOT', str(root))
    assert InterpolationConfig.from_params({**ok, 'inversions': str(pool)}).check().sources()['split'] == str(root/m['split'])
    monkeypatch.delenv('DIFFAUG_ROOT')
    cdir = tmp_path/'concepts-gone'
    (pool/'pool.json').write_text(json.dumps({**m, 'split': small.split, 'concepts': str(cdir)}))
    with pytest.raises(ParamError, match="a pool whose concepts are there"):
        InterpolationConfig.from_params({**ok, 'inversions': str(pool)}).check()
    # the same path holding other weights: caught after loading, by the pool's base_model_fingerprint
    swapped = make_tiny_sd(tmp_path/'swapped', seed=0)
    pool = run_inversion(**{**small.inv, 'model': str(swapped), 'out': str(tmp_path/'pool-swapped'), 'check_images': 0})['out']
    make_tiny_sd(swapped, seed=1)
    with pytest.raises(ParamError, match=f"parameter inversions={pool!r} is invalid: the weights of its model {str(swapped)} are not"):
        run_interpolation(**{**ok, 'inversions': pool})
    assert not (tmp_path/'set').exists() and not scratch_dir(tmp_path/'set').exists()

def test_interpolation_rerun_same_bytes(small, tmp_path):
    kw = dict(inversions=small.pool, expansion=1, steps=4, batch_size=6, device='cpu', precision='fp32')
    r = run_interpolation(**kw, out=str(tmp_path/'a'))
    assert r['n_items'] == 6 and not scratch_dir(tmp_path/'a').exists()
    run_interpolation(**kw, out=str(tmp_path/'b'))
    assert _tree(tmp_path/'a') == _tree(tmp_path/'b')
    info = json.loads((tmp_path/'a'/'info.json').read_text())
    assert info['params']['model'] == small.model and info['params']['inversions'] == small.pool and str(tmp_path) not in json.dumps(info)
