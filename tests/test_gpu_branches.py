"""The code's device and precision branches, exercised on a CPU (the table: benchmarks/gpu_branches.md).

Where a CPU can take the branch it is run (bf16 autocast, fp16 weights, gradient accumulation, the CUDA RNG state with a
stand-in); where it cannot, `torch.cuda.is_available` is patched and the callable the branch ends in (`from_pretrained`,
`Accelerator`, `notebook_launcher`, `load_sd`) records its arguments and stops the run: the test checks what a GPU would get.
Two real processes on a CPU: tests/test_multiprocess.py."""
import json, os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


class Stop(Exception): "Raised by a recording stand-in: the branch got as far as the call under test."


def recorder(calls:list, ret=None):
    "A stand-in that records (args, kwargs) and raises `Stop` (or returns `ret` when it is not None)."
    def f(*a, **k):
        calls.append((a, k))
        if ret is None: raise Stop()
        return ret
    return f


@pytest.fixture
def gpu(monkeypatch):
    "Pretend a CUDA GPU is there (without bf16 unless `gpu(bf16=True)`); nothing may actually touch it."
    def set_(bf16=False):
        monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
        monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: bf16)
    set_()
    return set_


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    from diffaug.models import make_tiny_sd
    return make_tiny_sd(tmp_path_factory.mktemp('models')/'tiny-sd')


@pytest.fixture(scope='module')
def split(tmp_path_factory):
    from diffaug.fixtures import make_toy_split
    return make_toy_split(tmp_path_factory.mktemp('toy'), n_classes=3, shots=2, per_class=4)


# ---------------------------------------------------------------- device and dtype choice (diffaug.core)

def test_choose_device_and_dtype_on_a_pretend_gpu(gpu, monkeypatch):
    from diffaug import core
    assert core.choose_device('auto') == torch.device('cuda') and core.choose_device('cuda:1') == torch.device('cuda', 1)
    assert core.choose_dtype('cuda', 'auto') == torch.float16  # a GPU without bf16 (V100, T4): fp16, the paper's
    gpu(bf16=True); assert core.choose_dtype('cuda', 'auto') == torch.bfloat16
    assert core.choose_dtype('mps', 'auto') == torch.float16
    for cpu_bf16, want in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(core, 'cpu_supports_bf16', lambda: cpu_bf16)
        assert core.choose_dtype('cpu', 'auto') == want
    assert core.choose_dtype('cuda', 'fp32') == torch.float32  # explicit precisions are taken as they are
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(torch.backends.mps, 'is_available', lambda: True)
    assert core.choose_device('auto') == torch.device('mps')
    with pytest.raises(RuntimeError, match="device='cuda' was asked for but CUDA is not available"): core.choose_device('cuda')


# ---------------------------------------------------------------- what the loaders would load on a GPU

@pytest.mark.parametrize('precision,bf16,want', [('auto', False, torch.float16), ('auto', True, torch.bfloat16),
                                                ('fp16', True, torch.float16), ('fp32', False, torch.float32)])
def test_load_sd_dtype_on_a_gpu(gpu, monkeypatch, tiny, precision, bf16, want):
    from diffusers import StableDiffusionPipeline
    from diffaug.models import load_sd
    gpu(bf16=bf16); calls = []
    monkeypatch.setattr(StableDiffusionPipeline, 'from_pretrained', recorder(calls))
    with pytest.raises(Stop): load_sd(tiny, device='cuda', precision=precision)
    (src,), kw = calls[0]
    assert src == str(tiny) and kw['dtype'] == want and kw['safety_checker'] is None


def test_load_clip_dtype_on_a_gpu(gpu, monkeypatch, tmp_path):
    from transformers import CLIPModel
    from diffaug.models import load_clip, make_tiny_clip
    clip = make_tiny_clip(tmp_path/'clip'); calls = []
    monkeypatch.setattr(CLIPModel, 'from_pretrained', recorder(calls))
    with pytest.raises(Stop): load_clip(clip, device='cuda', precision='auto')
    assert calls[0][1]['dtype'] == torch.float16


def test_fp16_weights_run_on_a_cpu(tiny, tmp_path):
    "fp16 weights (the paper's GPU precision) sample on this CPU too: the synthesis stage writes a complete, finite set."
    from diffaug.fixtures import make_toy_split
    from diffaug.methods import run_synthesis
    from diffaug.models import load_sd
    from diffaug.synthetic import SyntheticSet
    from PIL import Image
    p = load_sd(tiny, 'cpu', 'fp16')
    assert {p.unet.dtype, p.vae.dtype, p.text_encoder.dtype} == {torch.float16}
    sp = make_toy_split(tmp_path/'toy', n_classes=2, shots=2, per_class=2)
    r = run_synthesis(method='real-guidance', split=str(sp), model=str(tiny), out=str(tmp_path/'set'), expansion=1, steps=2,
                      batch_size=2, device='cpu', precision='fp16')
    s = SyntheticSet(tmp_path/'set')
    assert r['written'] == 4 and len(s) == 4
    a = np.stack([np.asarray(Image.open(tmp_path/'set'/f)) for f in (r['file_name'] for r in s.rows)])
    assert a.std() > 0  # not a NaN image turned black


# ---------------------------------------------------------------- accelerate: the training stages' Accelerator

def test_make_accelerator_arguments(gpu, monkeypatch):
    import accelerate
    from diffaug.models import make_accelerator
    calls = []
    monkeypatch.setattr(accelerate, 'Accelerator', recorder(calls))
    for device, precision, want in (('cuda', 'auto', 'fp16'), ('cuda', 'bf16', 'bf16'), ('cuda', 'fp32', 'no'), ('cpu', 'bf16', 'bf16')):
        with pytest.raises(Stop): make_accelerator(device, precision, grad_accum=3)
        assert calls[-1][1] == dict(cpu=device == 'cpu', mixed_precision=want, gradient_accumulation_steps=3), (device, precision)


def test_concepts_half_frozen_weights_on_gpus_only(monkeypatch, tmp_path, tiny, split):
    "run_concepts: on a GPU the frozen weights load in the training's half precision; on a CPU in fp32 (bf16 autocast around them)."
    import diffaug.concept_training as ct
    for dev, mp, want in (('cuda', 'fp16', 'fp16'), ('cuda', 'bf16', 'bf16'), ('cuda', 'no', 'fp32'), ('cpu', 'bf16', 'fp32'), ('cpu', 'no', 'fp32')):
        calls = []
        monkeypatch.setattr(ct, 'make_accelerator', lambda *a: SimpleNamespace(device=torch.device(dev), mixed_precision=mp))
        monkeypatch.setattr(ct, 'load_sd', recorder(calls))
        with pytest.raises(Stop): ct.run_concepts(split=str(split), model=str(tiny), out=str(tmp_path/'c'), steps=1, device='cpu')
        assert calls[0][1]['precision'] == want and calls[0][1]['device'] == torch.device(dev), (dev, mp)


def test_classifier_accelerator_on_a_gpu(gpu, monkeypatch, tmp_path, split):
    import accelerate
    from diffaug.classification import ClassificationConfig
    from diffaug.training import train_classifier
    calls = []
    monkeypatch.setattr(accelerate, 'Accelerator', recorder(calls))
    cfg = ClassificationConfig(split=str(split), out=str(tmp_path/'o'), model='test_resnet', pretrained=False, device='cuda', precision='fp16').check()
    with pytest.raises(Stop): train_classifier(cfg, tmp_path/'o.partial')
    kw = calls[0][1]
    assert kw['cpu'] is False and kw['mixed_precision'] == 'fp16'
    dl = kw['dataloader_config']
    assert dl.split_batches and dl.even_batches  # batch_size is the global batch; every process gets a part of each


def test_classification_num_processes_goes_to_notebook_launcher(monkeypatch, tmp_path, split):
    import accelerate
    from diffaug.classification import run_classification
    from diffaug.core import ParamError
    calls = []
    monkeypatch.setattr(accelerate, 'notebook_launcher', recorder(calls))
    kw = dict(split=str(split), out=str(tmp_path/'o'), model='test_resnet', pretrained=False, epochs=1, precision='fp16')
    with pytest.raises(Stop): run_classification(num_processes=2, **kw)
    (fn, (cfg, sd)), lk = calls[0]
    assert fn.__name__ == '_train' and lk == dict(num_processes=2, mixed_precision='fp16') and Path(sd).name == 'o.partial'
    assert json.loads((Path(sd)/'.params.json').read_text())['num_processes'] == 2
    # inside a torchrun launch of 2 processes, num_processes must be 1 (take the launch's) or 2
    monkeypatch.setenv('WORLD_SIZE', '2')
    with pytest.raises(ParamError, match=r"num_processes=3 is invalid: expected 1 or 2 \(this run was launched with 2 processes\)"):
        run_classification(num_processes=3, **dict(kw, out=str(tmp_path/'p')))
    assert calls[1:] == [] and not (tmp_path/'p.partial').exists()


def test_cuda_rng_state_saved_and_restored(monkeypatch):
    "A classification checkpoint holds the CUDA generator's state once CUDA is in use, and a resume restores it."
    from diffaug import classifier_checkpoints
    st, seen = torch.ByteTensor([1, 2, 3]), []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_initialized', lambda: True)
    monkeypatch.setattr(torch.cuda, 'get_rng_state', lambda *a: st)
    monkeypatch.setattr(torch.cuda, 'set_rng_state', lambda s, *a: seen.append(s))
    s = classifier_checkpoints.rng_state()
    assert torch.equal(s['cuda'], st)
    classifier_checkpoints.set_rng_state(s); assert len(seen) == 1 and torch.equal(seen[0], st)
    monkeypatch.setattr(torch.cuda, 'is_initialized', lambda: False)
    assert 'cuda' not in classifier_checkpoints.rng_state()


def test_own_rng_forks_the_gpu_generator(monkeypatch):
    from diffaug import concepts
    calls = []
    monkeypatch.setattr(torch.random, 'fork_rng', lambda devices=None, **k: calls.append(devices))
    concepts._own_rng(torch.device('cuda', 0)); concepts._own_rng(torch.device('cpu'))
    assert calls == [[torch.device('cuda', 0)], []]


def test_suffixes_auto_uses_the_llm_on_a_gpu_only(gpu, monkeypatch):
    import diffaug.suffixes as S
    calls = []
    monkeypatch.setattr(S, 'llm_summarize', recorder(calls, ret=['a photo of a bird on a branch.']))
    sfx, how = S.summarize(['a bird on a branch'], 'bird', llm='auto', device='cuda')
    assert calls[0][0][2] == S.LLM_ID and calls[0][1]['device'] == 'cuda' and 'summarised by' in how
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    sfx, how = S.summarize(['a bird on a branch'], 'bird', llm='auto')
    assert len(calls) == 1 and 'rule-based' in how


# ---------------------------------------------------------------- mixed precision and accumulation, run on this CPU

def test_concepts_bf16_autocast_and_grad_accum(tiny, tmp_path):
    "bf16 autocast on a CPU with 2 micro-batches per step: 2 optimizer steps (not 4), finite, trainable and frozen weights stay fp32."
    from diffaug.concept_checkpoints import list_checkpoints, load_checkpoint
    from diffaug.concept_training import train_concepts
    from diffaug.models import load_sd
    from diffaug.toy import toy_image
    ims = [toy_image(c, 0, i, size=32) for c in range(2) for i in range(3)]; labels = [f'c{c}' for c in range(2) for i in range(3)]
    p = load_sd(tiny, 'cpu', 'fp32'); steps = []
    info = train_concepts(p, ims, labels, out=tmp_path/'c', steps=2, grad_accum=2, batch_size=2, rank=2, precision='bf16', lr_embed=1e-2,
                          lr_lora=1e-2, checkpoint_every=2, eval_draws=1, callback=lambda s, l: steps.append(s))
    assert steps == [1, 2] and info['steps'] == 2 and np.isfinite(info['losses']).all() and np.isfinite(info['eval_loss_after'])
    t, osd, st = load_checkpoint(list_checkpoints(tmp_path/'c.checkpoints')[-1])
    assert {float(s['step']) for s in osd['state'].values()} == {2.0}  # AdamW stepped twice: the micro-batches were accumulated
    rec = json.loads((tmp_path/'c'/'concepts.json').read_text())['config']
    assert rec['grad_accum'] == 2 and rec['precision'] == 'bf16'
    assert all(v.dtype == torch.float32 for v in t.values()) and p.unet.dtype == torch.float32


@pytest.mark.parametrize('precision', ['bf16', 'fp16'])
def test_classification_mixed_precision_on_a_cpu(tmp_path, split, precision):
    "accelerate's mixed precision through a CPU run: bf16 autocasts; fp16 is accepted and (accelerate on a CPU) computes in fp32."
    from diffaug.classification import run_classification
    m = run_classification(split=str(split), out=str(tmp_path/'o'), model='test_resnet', pretrained=False, image_size=32, batch_size=4,
                           epochs=1, threads=1, device='cpu', precision=precision)
    assert np.isfinite(m['top1']) and m['n_test'] == 6
    assert json.loads((tmp_path/'o'/'config.json').read_text())['precision'] == precision


def test_seed_everything_asks_cudnn_for_determinism(monkeypatch):
    from diffaug.core import seed_everything
    monkeypatch.setattr(torch.backends.cudnn, 'is_available', lambda: True)
    monkeypatch.setattr(torch.backends.cudnn, 'benchmark', True); monkeypatch.setattr(torch.backends.cudnn, 'deterministic', False)
    monkeypatch.delenv('CUBLAS_WORKSPACE_CONFIG', raising=False)
    seed_everything(0)
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark and os.environ['CUBLAS_WORKSPACE_CONFIG'] == ':4096:8'


def test_classification_data_workers_change_nothing(tmp_path, split):
    "num_workers (the GPU runs' loader processes) is left out of the record because the bytes do not depend on it."
    from diffaug.classification import run_classification
    kw = dict(split=str(split), model='test_resnet', pretrained=False, image_size=32, batch_size=4, epochs=1, threads=1, device='cpu',
              method='mixup')
    for w in (0, 2): run_classification(out=str(tmp_path/f'w{w}'), num_workers=w, **kw)
    a, b = ({p.name: p.read_bytes() for p in (tmp_path/f'w{w}').iterdir()} for w in (0, 2))
    assert a == b and 'predictions.csv' in a
