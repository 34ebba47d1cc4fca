"Concept learning on the tiny model, on CPU: the loss falls, stock diffusers loads the artifacts, frozen weights stay bit-identical, resuming is exact (and refused with other parameters), reruns write the same bytes, bad parameters and concept folders (another base model too) fail clearly."
import json, shutil, warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from diffaug.concepts import ConceptError, apply_concepts, class_tokens, concept_prompt, read_concepts
from diffaug.concept_checkpoints import FINISHED, list_checkpoints
from diffaug.concept_training import ConceptsConfig, run_concepts, train_concepts
from diffaug.core import ParamError
from diffaug.splits import few_shot_split, save_split
from diffaug.toy import make_toy_dataset, toy_image
from diffaug.models import load_sd, make_tiny_sd, model_fingerprint

torch.set_num_threads(1)
CLASSES = ['Red/Circle', 'Blue Square ☃']  # odd names on purpose: tokens are named by index
KW = dict(classes=CLASSES, metaclass='bird', lr_embed=1e-2, lr_lora=3e-3, rank=4, batch_size=4, seed=0, precision='fp32')


def _images():
    ims = [toy_image(c, 0, i, size=32) for c in range(2) for i in range(6)]
    return ims, [CLASSES[c] for c in range(2) for i in range(6)]


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    return make_tiny_sd(tmp_path_factory.mktemp('models')/'tiny-sd')


@pytest.fixture(scope='module')
def trained(tiny, tmp_path_factory):
    "One diff-mix run (2 vectors per class), with snapshots of every frozen weight taken before training."
    out = tmp_path_factory.mktemp('run')/'concepts'
    pipe = load_sd(tiny, 'cpu', 'fp32')
    snap = {name: {k: v.detach().clone() for k, v in getattr(pipe, name).state_dict().items()} for name in ('unet', 'vae', 'text_encoder')}
    emb0 = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    ims, labels = _images()
    info = train_concepts(pipe, ims, labels, out=out, steps=40, n_tokens=2, checkpoint_every=20, base_model=str(tiny), **KW)
    return dict(pipe=pipe, out=out, info=info, snap=snap, emb0=emb0)


def _gen(pipe, prompt):
    return np.asarray(pipe(prompt, num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type='np').images[0])


def test_loss_falls(trained):
    i = trained['info']
    # the fixed-draw evaluation loss (same images, noise and timesteps before and after)
    assert i['eval_loss_after'] < i['eval_loss_before'] - 0.005, (i['eval_loss_before'], i['eval_loss_after'])
    # and the running batch loss: last quarter below the first quarter
    l = i['losses']; q = len(l) // 4
    assert np.mean(l[-q:]) < np.mean(l[:q])
    assert i['steps'] == 40 and i['steps_per_second'] > 0


def test_artifacts_load_into_stock_pipeline(trained, tiny):
    from diffusers import StableDiffusionPipeline
    out = trained['out']
    meta = json.loads((out/'concepts.json').read_text())
    assert meta['classes'] == CLASSES and meta['n_vectors'] == 2 and meta['embedding_dim'] == 32 and meta['recipe'] == 'diff-mix'
    assert (out/'pytorch_lora_weights.safetensors').is_file()
    kw = dict(safety_checker=None, requires_safety_checker=False)
    base = StableDiffusionPipeline.from_pretrained(str(tiny), **kw); base.set_progress_bar_config(disable=True)
    p = StableDiffusionPipeline.from_pretrained(str(tiny), **kw); p.set_progress_bar_config(disable=True)
    p.load_lora_weights(str(out))
    for c in CLASSES:
        e = meta['concepts'][c]
        p.load_textual_inversion(str(out/e['file']), token=e['token'])
        ids = p.tokenizer.convert_tokens_to_ids(e['tokens'])
        torch.testing.assert_close(p.text_encoder.get_input_embeddings().weight[ids].detach(), load_file(str(out/e['file']))['emb_params'], rtol=0, atol=0)
    prompt = 'a photo of a <class_0> bird'
    assert p.maybe_convert_prompt(prompt, p.tokenizer) == 'a photo of a <class_0> <class_0>_1 bird'
    assert np.abs(_gen(p, prompt) - _gen(base, 'a photo of a bird')).max() > 1e-3
    # the LoRA alone changes the output too (same prompt, adapter on vs off)
    with_lora = _gen(p, 'a photo of a bird'); p.disable_lora(); without = _gen(p, 'a photo of a bird')
    assert np.abs(with_lora - without).max() > 1e-4
    np.testing.assert_array_equal(without, _gen(base, 'a photo of a bird'))


def test_frozen_weights_bit_identical(trained):
    pipe, snap, emb0 = trained['pipe'], trained['snap'], trained['emb0']
    n_old = emb0.shape[0]
    w = pipe.text_encoder.get_input_embeddings().weight.detach()
    assert w.shape[0] == n_old + 4  # 2 classes x 2 vectors
    assert torch.equal(w[:n_old], emb0)
    assert not torch.equal(w[n_old:], w[n_old:].clone().zero_())
    for k, v in pipe.text_encoder.state_dict().items():
        if 'token_embedding' not in k: assert torch.equal(v, snap['text_encoder'][k]), k
    for k, v in pipe.vae.state_dict().items(): assert torch.equal(v, snap['vae'][k]), k
    n_lora = 0
    for k, v in pipe.unet.state_dict().items():
        if '.lora_' in k: n_lora += 1; continue
        assert torch.equal(v, snap['unet'][k.replace('.base_layer', '')]), k
    assert n_lora > 0
    # and the learned rows moved away from their initial value (the metaclass word)
    bird = pipe.tokenizer('bird', add_special_tokens=False).input_ids
    assert not torch.allclose(w[n_old], emb0[bird].mean(0))


class _Stop(Exception): pass


def test_resume_equals_uninterrupted(tiny, tmp_path):
    ims, labels = _images()
    kw = dict(KW, steps=6, checkpoint_every=3, batch_size=2, grad_accum=2, eval_draws=0, seed=3)

    def stop(step, loss):
        if step == 5: raise _Stop()
    with pytest.raises(_Stop):
        train_concepts(load_sd(tiny, 'cpu', 'fp32'), ims, labels, out=tmp_path/'a', callback=stop, **kw)
    ck = list_checkpoints(tmp_path/'a.checkpoints')
    assert [c.name for c in ck] == ['step-0000003']
    # another seed is another run: it may not resume from (or mix with) these unfinished checkpoints, which DVC cannot restore
    with pytest.raises(ParamError, match=r"a\.checkpoints: checkpoints made with other parameters \(seed: 3 there, 4 now\)"):
        train_concepts(load_sd(tiny, 'cpu', 'fp32'), ims, labels, out=tmp_path/'c', **dict(kw, seed=4, steps=2, checkpoint_dir=tmp_path/'a.checkpoints'))
    assert [c.name for c in list_checkpoints(tmp_path/'a.checkpoints')] == ['step-0000003']  # untouched
    ia = train_concepts(load_sd(tiny, 'cpu', 'fp32'), ims, labels, out=tmp_path/'a', **kw)
    ib = train_concepts(load_sd(tiny, 'cpu', 'fp32'), ims, labels, out=tmp_path/'b', **kw)
    assert ia['resumed_from'] == 3 and ia['steps_this_run'] == 3 and ib['resumed_from'] == 0
    assert ia['losses'] == ib['losses']
    for f in ['pytorch_lora_weights.safetensors'] + [f'embeddings/class_{i}.safetensors' for i in range(2)]:
        a, b = load_file(str(tmp_path/'a'/f)), load_file(str(tmp_path/'b'/f))
        assert a.keys() == b.keys()
        for k in a: assert torch.equal(a[k], b[k]), (f, k)
    # the finished run keeps its checkpoints, marked finished (more steps would continue from them) ...
    assert [c.name for c in list_checkpoints(tmp_path/'a.checkpoints')] == ['step-0000003', 'step-0000006']
    assert json.loads((tmp_path/'a.checkpoints'/FINISHED).read_text()) == {'steps': 6}
    # ... until a run with other parameters starts there: its concepts were written, nothing is lost, so they go without
    # a restart; the new run starts from step 0, with other weights
    ic = train_concepts(load_sd(tiny, 'cpu', 'fp32'), ims, labels, out=tmp_path/'c',
                        **dict(kw, seed=4, steps=2, checkpoint_dir=tmp_path/'a.checkpoints'))
    assert ic['resumed_from'] == 0 and [c.name for c in list_checkpoints(tmp_path/'a.checkpoints')] == ['step-0000002']
    assert not torch.equal(load_file(str(tmp_path/'c'/'embeddings/class_0.safetensors'))['emb_params'],
                           load_file(str(tmp_path/'a'/'embeddings/class_0.safetensors'))['emb_params'])


def test_apply_concepts_and_bad_folders(trained, tiny, tmp_path):
    out = trained['out']
    p = load_sd(tiny, 'cpu', 'fp32')
    ph = apply_concepts(p, out, classes=CLASSES)
    assert ph == {CLASSES[0]: '<class_0>', CLASSES[1]: '<class_1>'}
    assert concept_prompt(CLASSES[1], 'bird', ph, 'on a branch') == 'a photo of a <class_1> bird on a branch'
    assert 'concepts' in p.unet.peft_config
    with pytest.raises(ConceptError, match='already'): apply_concepts(p, out)
    # class map that does not match the dataset: names the classes
    with pytest.raises(ConceptError, match='Green Star'): apply_concepts(load_sd(tiny, 'cpu', 'fp32'), out, classes=[CLASSES[0], 'Green Star'])
    with pytest.raises(ConceptError, match='order'): apply_concepts(load_sd(tiny, 'cpu', 'fp32'), out, classes=CLASSES[::-1])
    # a model with another text embedding size: names both sizes and the file
    wide = make_tiny_sd(tmp_path/'wide', cross_attention_dim=48)
    with pytest.raises(ConceptError, match=r'class_0\.safetensors: embedding size 32 .*hidden size 48'): apply_concepts(load_sd(wide, 'cpu', 'fp32'), out)
    # a model with the same text encoder but another U-Net: the LoRA does not fit, named before anything is loaded
    narrow = make_tiny_sd(tmp_path/'narrow', width=16)
    q = load_sd(narrow, 'cpu', 'fp32')
    with pytest.raises(ConceptError, match='pytorch_lora_weights.safetensors: LoRA of'): apply_concepts(q, out)
    assert '<class_0>' not in q.tokenizer.get_vocab()
    # missing files
    for rel in ('concepts.json', 'embeddings/class_1.safetensors', 'pytorch_lora_weights.safetensors'):
        b = Path(shutil.copytree(out, tmp_path/f"broken-{rel.replace('/', '_')}")); (b/rel).unlink()
        with pytest.raises(FileNotFoundError, match=Path(rel).name.replace('.', r'\.')): apply_concepts(load_sd(tiny, 'cpu', 'fp32'), b)
    # an embedding file with the wrong content
    b = Path(shutil.copytree(out, tmp_path/'badfile')); save_file({'x': torch.zeros(3)}, str(b/'embeddings/class_0.safetensors'))
    with pytest.raises(ConceptError, match='emb_params'): apply_concepts(load_sd(tiny, 'cpu', 'fp32'), b)
    with pytest.raises(FileNotFoundError, match='nowhere'): read_concepts(tmp_path/'nowhere')


def test_concepts_refuse_another_base_model(trained, tiny, tmp_path):
    "concepts.json records the base model's fingerprint; a pipeline of another model with the same shapes is refused, naming both."
    out = trained['out']
    meta = read_concepts(out)
    assert meta['base_model_fingerprint'] == model_fingerprint(load_sd(tiny, 'cpu', 'fp32'))
    q = load_sd(make_tiny_sd(tmp_path/'seed1', seed=1), 'cpu', 'fp32')  # the same architecture, other weights
    with pytest.raises(ConceptError) as e: apply_concepts(q, out)
    msg = str(e.value)
    assert str(out) in msg and str(meta['base_model_fingerprint']) in msg and str(model_fingerprint(q)) in msg, msg
    assert '<class_0>' not in q.tokenizer.get_vocab() and not getattr(q.unet, 'peft_config', None)  # refused before loading anything
    assert apply_concepts(load_sd(tiny, 'cpu', 'bf16'), out) == {CLASSES[0]: '<class_0>', CLASSES[1]: '<class_1>'}  # another precision: the same model
    # a folder written before the fingerprint was recorded still loads, with a warning
    old = Path(shutil.copytree(out, tmp_path/'old')); m = json.loads((old/'concepts.json').read_text())
    del m['base_model_fingerprint']; (old/'concepts.json').write_text(json.dumps(m))
    with pytest.warns(UserWarning, match='no base_model_fingerprint'):
        assert apply_concepts(load_sd(tiny, 'cpu', 'fp32'), old) == {CLASSES[0]: '<class_0>', CLASSES[1]: '<class_1>'}


def test_config_unknown_key_and_bad_values(tiny, tmp_path):
    with pytest.raises(ParamError, match="unknown parameter 'n_token'; did you mean 'n_tokens'"): ConceptsConfig.from_params({'n_token': 2})
    with pytest.raises(ParamError, match="did you mean 'lr_lora'"): ConceptsConfig.from_params({'lr_lra': 1e-3})
    split = tmp_path/'split.json'; split.write_text('{}')
    ok = dict(split=str(split), model=str(tiny), out=str(tmp_path/'c'))
    c = ConceptsConfig.from_params(ok).check()
    assert (c.steps, c.lr_embed, c.rank, c.batch_size, c.recipe) == (35000, 5e-5, 10, 2, 'diff-mix')  # the paper's values
    assert ConceptsConfig.from_params({**ok, 'recipe': 'da-fusion'}).check().recipe == 'da-fusion'  # the concepts_ti stage
    no_unet = Path(shutil.copytree(tiny, tmp_path/'no-unet')); shutil.rmtree(no_unet/'unet')
    bad = [({'recipe': 'dreambooth'}, 'recipe'), ({'recipe': 'diff_mix'}, 'recipe'), ({'steps': 0}, 'steps'), ({'steps': -5}, 'steps'),
           ({'steps': 2.5}, 'steps'), ({'lr_embed': 0}, 'lr_embed'), ({'lr_embed': -1e-3}, 'lr_embed'), ({'lr_lora': 0.0}, 'lr_lora'),
           ({'rank': 0}, 'rank'), ({'n_tokens': 0}, 'n_tokens'), ({'batch_size': 0}, 'batch_size'), ({'grad_accum': 0}, 'grad_accum'),
           ({'checkpoint_every': 0}, 'checkpoint_every'), ({'weight_decay': -1}, 'weight_decay'), ({'resolution': 30}, 'resolution'),
           ({'resolution': 4}, 'resolution'), ({'init_word': ''}, 'init_word'), ({'flip': 1}, 'flip'), ({'device': 'gpu0'}, 'device'),
           ({'precision': 'fp8'}, 'precision'), ({'seed': -1}, 'seed'), ({'out': None}, 'out'), ({'split': None}, 'split'),
           ({'model': None}, 'model'), ({'checkpoint_dir': str(tmp_path/'c'/'ck')}, 'checkpoint_dir'),
           ({'checkpoint_dir': str(tmp_path/'c')}, 'checkpoint_dir'), ({'split': str(tmp_path/'missing.json')}, 'split'),
           ({'split': str(tmp_path)}, 'split'), ({'model': str(tmp_path/'nowhere')}, 'model'), ({'model': str(no_unet)}, 'model')]
    for b, name in bad:
        with pytest.raises(ParamError, match=f"parameter {name}="): ConceptsConfig.from_params({**ok, **b}).check()
    with pytest.raises(ParamError, match='unet'): ConceptsConfig.from_params({**ok, 'model': str(no_unet)}).check()
    ConceptsConfig.from_params({**ok, 'split': str(tmp_path/'missing.json'), 'model': str(no_unet)}).check(files=False)  # a setup before its stages ran
    with pytest.raises(ParamError, match='split='): run_concepts(**{**ok, 'split': str(tmp_path/'missing.json')})  # run_* checks first


def test_da_fusion_trains_tokens_only(tiny, tmp_path):
    ims, labels = _images()
    pipe = load_sd(tiny, 'cpu', 'fp32')
    unet0 = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    info = train_concepts(pipe, ims, labels, out=tmp_path/'daf', recipe='da-fusion', steps=20, n_tokens=1, init_word='{class}',
                          checkpoint_every=20, **{k: v for k, v in KW.items() if k not in ('lr_lora', 'rank')})
    assert info['eval_loss_after'] < info['eval_loss_before']
    meta = read_concepts(tmp_path/'daf')
    assert meta['lora'] is None and not (tmp_path/'daf'/'pytorch_lora_weights.safetensors').exists()
    assert not getattr(pipe.unet, 'peft_config', None)
    for k, v in pipe.unet.state_dict().items(): assert torch.equal(v, unet0[k]), k
    fresh = load_sd(tiny, 'cpu', 'fp32')
    assert apply_concepts(fresh, tmp_path/'daf', classes=CLASSES) == {CLASSES[0]: '<class_0>', CLASSES[1]: '<class_1>'}
    assert not getattr(fresh.unet, 'peft_config', None)


def test_bad_parameters(tiny, tmp_path):
    ims, labels = _images()
    p = load_sd(tiny, 'cpu', 'fp32')
    with pytest.raises(ParamError, match='recipe'): train_concepts(p, ims, labels, out=tmp_path/'x', recipe='dreambooth', steps=1, **KW)
    with pytest.raises(ParamError, match='resolution'): train_concepts(p, ims, labels, out=tmp_path/'x', resolution=30, steps=1, **KW)
    with pytest.raises(ValueError, match='not among the classes'): train_concepts(p, ims, labels[:-1] + ['Nope'], out=tmp_path/'x', steps=1, **KW)
    assert class_tokens(2, 3) == ['<class_2>', '<class_2>_1', '<class_2>_2']


def test_run_concepts_reads_the_split(tiny, tmp_path):
    ds = make_toy_dataset(tmp_path/'toy', n_classes=3, n_per_class=5, size=32)
    split = save_split(few_shot_split(ds, k=2, seed=0, test='none'), tmp_path/'split.json')
    cfg = ConceptsConfig.from_params(dict(split=str(split), model=str(tiny), out=str(tmp_path/'concepts'), steps=3, lr_embed=5e-3, lr_lora=1e-3,
                                          rank=4, checkpoint_every=2, device='cpu', precision='fp32', batch_size=2))
    r = run_concepts(cfg)
    meta = read_concepts(tmp_path/'concepts')
    assert meta['classes'] == ds.classes and meta['metaclass'] == ds.metaclass and r['steps'] == 3
    assert meta['base_model'] == str(tiny) and meta['base_model_fingerprint'] == model_fingerprint(load_sd(tiny, 'cpu', 'fp32'))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['concepts', 'concepts.checkpoints', 'split.json', 'toy']  # no temp folders left
    # a second call is a no-op resume from the final checkpoint
    files = lambda d: {f.relative_to(d): f.read_bytes() for f in sorted(d.rglob('*')) if f.is_file()}
    before = files(tmp_path/'concepts')
    r2 = run_concepts(cfg)
    assert r2['resumed_from'] == 3 and r2['steps_this_run'] == 0 and r2['losses'] == r['losses']
    assert files(tmp_path/'concepts') == before  # the folder does not record how the run went: DVC sees the same output
    # a fresh run elsewhere writes the same bytes: no timings, temp or output paths in the folder
    r3 = run_concepts(cfg, out=str(tmp_path/'again'))
    assert r3['resumed_from'] == 0 and files(tmp_path/'again') == before
    # a resume of an unfinished run with parameters that change the result is refused, naming them; the checkpoints
    # stay as they were (here the finished run's, made unfinished again by removing its mark)
    (tmp_path/'concepts.checkpoints'/FINISHED).unlink()
    ck = files(tmp_path/'concepts.checkpoints')
    with pytest.raises(ParamError, match=r"concepts\.checkpoints: checkpoints made with other parameters \(lr_embed: 0\.005 there, 0\.01 now; seed: 0 there, 2 now\)"):
        run_concepts(cfg, lr_embed=1e-2, seed=2)
    assert files(tmp_path/'concepts.checkpoints') == ck and files(tmp_path/'concepts') == before


_DDP = '''
import sys, json, torch; torch.set_num_threads(1)
from accelerate import Accelerator
from diffaug.concept_training import train_concepts
from diffaug.toy import toy_image
from diffaug.models import load_sd
acc = Accelerator(cpu=True)
ims = [toy_image(c, 0, i, size=32) for c in range(2) for i in range(4)]; labels = [f"c{c}" for c in range(2) for i in range(4)]
p = load_sd(sys.argv[1], "cpu", "fp32")
info = train_concepts(p, ims, labels, out=sys.argv[2], steps=3, lr_embed=1e-2, lr_lora=1e-2, rank=2, batch_size=2, checkpoint_every=2,
                      eval_draws=0, accelerator=acc)
w = {n: t.detach().clone() for n, t in p.unet.named_parameters() if ".lora_" in n}
w["tokens"] = p.text_encoder.get_input_embeddings().weight[-2:].detach().clone()
from safetensors.torch import save_file
save_file(w, f"{sys.argv[2]}-rank{acc.process_index}.safetensors")
with open(f"{sys.argv[2]}-rank{acc.process_index}.json", "w") as f:  # one file per rank: stdout lines of two processes can interleave
    json.dump({"rank": acc.process_index, "world": acc.num_processes, "losses": info["losses"]}, f)
'''


@pytest.mark.slow  # torchrun with 2 CPU processes (gloo): ~1 min on a busy 2-core machine
def test_two_processes_stay_in_sync(tiny, tmp_path):
    import os, subprocess, sys
    script = tmp_path/'ddp.py'; script.write_text(_DDP)
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), DIFFAUG_QUIET='1', OMP_NUM_THREADS='1')
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', str(script), str(tiny), str(tmp_path/'out')],
                       capture_output=True, text=True, env=env, cwd=root, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    logs = [json.loads((tmp_path/f'out-rank{i}.json').read_text()) for i in range(2)]
    assert sorted(l['rank'] for l in logs) == [0, 1] and all(l['world'] == 2 for l in logs)
    assert logs[0]['losses'] == logs[1]['losses']  # the logged loss is the mean over processes
    a, b = load_file(str(tmp_path/'out-rank0.safetensors')), load_file(str(tmp_path/'out-rank1.safetensors'))
    for k in a: assert torch.equal(a[k], b[k]), k  # gradients were averaged: both replicas hold the same weights
    assert read_concepts(tmp_path/'out')['classes'] == ['c0', 'c1']
