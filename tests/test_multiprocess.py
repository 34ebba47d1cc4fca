"""Two processes on a CPU: the concepts, synthesis, inversion + interpolation and classification stages, each run once by
one process and once by `torchrun --nproc_per_node 2` (gloo; `cpu: true` / `device: cpu`), on a tiny model and a toy split.

The synthetic sets (two synthesis methods, the inversion pool, Diff-II's interpolation) of two processes are the bytes of
one. Training is not: two processes draw other batches (concepts: `batch_size` per process; classification: each
process takes half of every global batch, its BatchNorm statistics are its half's), so concepts and classification
must finish complete and finite, and the test reports how far they moved (multiprocess.json in the test's folder, and
its output with `-s`). Classification's other multi-process path, accelerate's notebook_launcher (`num_processes: 2`
from one Python process), must write the torchrun run's bytes. The numbers of one run: benchmarks/gpu_branches.md."""
import json, math, os, subprocess, sys, textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = str(Path(sys.executable).parent/'torchrun')

DRIVER = textwrap.dedent('''
    import json, sys, torch
    torch.set_num_threads(1)
    from accelerate import PartialState
    d, stages, nproc = json.loads(sys.argv[1]), sys.argv[2].split(','), int(sys.argv[3])
    split, model, C = d['split'], d['model'], dict(device='cpu', precision='fp32')
    # every output path is relative to the run's own folder (the cwd): what the sets record is the same in every run
    if 'concepts' in stages:
        from diffaug.concept_training import run_concepts
        run_concepts(split=split, model=model, out='concepts', steps=4, batch_size=2, rank=2, checkpoint_every=2, lr_embed=1e-2,
                     lr_lora=1e-2, **C)
    if 'synthesis' in stages:
        from diffaug.methods import run_synthesis
        for m in ('diff-mix', 'real-guidance'):  # with a concept folder (made once, outside) and without
            run_synthesis(method=m, split=split, model=model, concepts={'diff-mix': d['concepts']}, out=f'syn-{m}', expansion=2, steps=3,
                          batch_size=2, cpu=True, **C)
    if 'interpolation' in stages:
        from diffaug.inversion import run_inversion
        from diffaug.interpolation import run_interpolation
        run_inversion(split=split, model=model, out='pool', steps=4, batch_size=2, check_images=2, cpu=True, **C)
        run_interpolation(split=split, model=model, inversions='pool', out='diffii', expansion=2, steps=4, batch_size=2, cpu=True, **C)
    if 'classification' in stages:
        from diffaug.classification import run_classification
        run_classification(split=split, out='cls', model='test_resnet', pretrained=False, image_size=32, batch_size=4, epochs=2, threads=1,
                           device='cpu', num_processes=nproc)
''')
SETS = ('syn-diff-mix', 'syn-real-guidance', 'pool', 'diffii')


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    from diffaug.classifier_data import make_toy_split
    from diffaug.data import load_split
    from diffaug.methods import demo_concepts
    from diffaug.models import make_tiny_sd
    d = tmp_path_factory.mktemp('mp')
    split = make_toy_split(d/'toy', n_classes=3, shots=2, per_class=4)
    tiny = make_tiny_sd(d/'tiny-sd')
    inputs = json.dumps(dict(split=str(split), model=str(tiny), concepts=str(demo_concepts(load_split(split), tiny, d/'fixed-concepts'))))
    (d/'driver.py').write_text(DRIVER)
    env = {**os.environ, 'PYTHONPATH': str(REPO), 'OMP_NUM_THREADS': '1', 'DIFFAUG_QUIET': '1'}
    everything = 'concepts,synthesis,interpolation,classification'
    cmds = {'one': [sys.executable, str(d/'driver.py'), inputs, everything, '1'],
            'two': [TORCHRUN, '--standalone', '--nproc_per_node', '2', str(d/'driver.py'), inputs, everything, '1'],
            'launcher': [sys.executable, str(d/'driver.py'), inputs, 'classification', '2']}  # notebook_launcher, 2 processes
    for name, cmd in cmds.items():
        (d/name).mkdir()
        r = subprocess.run(cmd, cwd=d/name, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{name}: {r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return d


def files(folder:Path)->dict:
    "Relative path -> bytes of every file under `folder`."
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


@pytest.mark.slow  # three runs of four stages (one of them under torchrun): ~1 min on a busy 2-core machine
def test_synthetic_sets_of_two_processes_equal_one(runs):
    for s in SETS:
        one, two = files(runs/'one'/s), files(runs/'two'/s)
        assert one.keys() == two.keys(), s
        assert [k for k in one if one[k] != two[k]] == [], s
        if s != 'pool':
            assert 'metadata.csv' in one and sum(k.endswith('.png') for k in one) == 12, s  # 6 training images x expansion 2
    assert 'inversions.safetensors' in files(runs/'one'/'pool')


def _concepts(folder:Path)->dict:
    t = {f"emb/{p.name}": load_file(str(p))['emb_params'] for p in sorted((folder/'embeddings').glob('*.safetensors'))}
    t.update({f"lora/{k}": v for k, v in load_file(str(folder/'pytorch_lora_weights.safetensors')).items()})
    return t


@pytest.mark.slow
def test_training_stages_finish_with_two_processes(runs):
    from diffaug.classification import OUTPUT_FILES
    report = {}
    # concepts: complete, finite, the record names the processes; how far the weights moved
    c1, c2 = _concepts(runs/'one'/'concepts'), _concepts(runs/'two'/'concepts')
    assert c1.keys() == c2.keys() and len([k for k in c1 if k.startswith('emb/')]) == 3 and any(k.startswith('lora/') for k in c1)
    assert all(torch.isfinite(v).all() for v in [*c1.values(), *c2.values()])
    m1, m2 = (json.loads((runs/r/'concepts'/'concepts.json').read_text()) for r in ('one', 'two'))
    assert m1['config']['processes'] == 1 and m2['config']['processes'] == 2 and m1['classes'] == m2['classes']
    t1, t2 = (json.loads((runs/r/'concepts'/'training.json').read_text()) for r in ('one', 'two'))
    assert len(t1['losses']) == len(t2['losses']) == 4 and all(math.isfinite(x) for x in t1['losses'] + t2['losses'])
    emb = max(float((c1[k] - c2[k]).abs().max()) for k in c1 if k.startswith('emb/'))
    lora = max(float((c1[k] - c2[k]).abs().max()) for k in c1 if k.startswith('lora/'))
    report['concepts'] = dict(max_abs_diff_embeddings=emb, max_abs_diff_lora=lora,
                              max_abs_embeddings=max(float(c1[k].abs().max()) for k in c1 if k.startswith('emb/')),
                              eval_loss_after={'one': t1['eval_loss_after'], 'two': t2['eval_loss_after']},
                              final_loss={'one': t1['losses'][-1], 'two': t2['losses'][-1]})
    # classification: every output file, finite metrics, the record names the processes
    k1, k2 = files(runs/'one'/'cls'), files(runs/'two'/'cls')
    assert set(k1) == set(k2) and {'metrics.json', 'epochs.csv', 'predictions.csv', 'per_class.csv', 'config.json'} <= set(k1) <= set(OUTPUT_FILES)
    x1, x2 = (json.loads(k['metrics.json']) for k in (k1, k2))
    assert all(math.isfinite(x[m]) for x in (x1, x2) for m in ('top1', 'mean_class_acc')) and x1['n_test'] == x2['n_test'] == 6
    assert len(k2['predictions.csv'].decode().splitlines()) == 1 + 6  # each test image once (the even-batches completion dropped)
    assert json.loads(k1['config.json'])['num_processes'] == 1 and json.loads(k2['config.json'])['num_processes'] == 2
    report['classification'] = dict(top1={'one': x1['top1'], 'two': x2['top1']}, top1_diff=x2['top1'] - x1['top1'],
                                    predictions_differing=sum(a != b for a, b in zip(k1['predictions.csv'].decode().splitlines(),
                                                                                     k2['predictions.csv'].decode().splitlines())))
    # accelerate's notebook_launcher (2 processes from one Python process) trains what torchrun's 2 processes do
    assert files(runs/'launcher'/'cls') == k2
    report['synthetic_sets_identical'] = list(SETS)
    (runs/'multiprocess.json').write_text(json.dumps(report, indent=2, sort_keys=True) + '\n')
    print(json.dumps(report, indent=2, sort_keys=True))
