"""Two processes on a CPU: the concepts, synthesis, inversion + interpolation and classification stages, each run once by
one process and once by `torch.distributed.run --nproc_per_node 2` (gloo; `cpu: true` / `device: cpu`), on a tiny model
and a toy split, through the package's own launcher (`diffaug.processes.process_launch`, which `scripts/rehearse.py
--processes` runs at SD 1.5's architecture).

The synthetic sets (three synthesis methods, Real-Filter's CLIP filter among them, the inversion pool, Diff-II's interpolation) of two processes are the bytes of
one. Training is not: two processes draw other batches (concepts: `batch_size` per process; classification: each
process takes half of every global batch, its BatchNorm statistics are its half's), so concepts and classification
must finish complete and finite, and `compare_processes` reports how far they moved (printed with `-s`).
Classification's other multi-process path, accelerate's notebook_launcher (`num_processes: 2` from one Python process),
must write the torchrun run's bytes. The SD 1.5 run's numbers: results/rehearsal/processes/."""
import json
from pathlib import Path

import pytest


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    from diffaug.fixtures import make_toy_split
    from diffaug.models import make_tiny_sd, make_tiny_clip
    from diffaug.processes import process_launch
    d = tmp_path_factory.mktemp('mp')
    spec = dict(split=str(make_toy_split(d/'toy', n_classes=3, shots=2, per_class=4)), model=str(make_tiny_sd(d/'tiny-sd')),
                clip_model=str(make_tiny_clip(d/'tiny-clip')),
                concepts=str(d/'one'/'concepts'), classifier=dict(model='test_resnet', image_size=32, precision='bf16'))
    # one launch runs concepts in fp32, then classification in bf16: the state is rebuilt, the process group kept
    for how in ('one', 'torchrun', 'launcher'): process_launch(spec, d/how, how)
    return d


@pytest.mark.slow  # three runs (one of them under torchrun): ~1.5 min on a busy 2-core machine
def test_two_processes_write_one_process_sets_and_finish_training(runs):
    from diffaug.classification_files import OUTPUT_FILES
    from diffaug.processes import compare_processes, process_table, PROCESS_SETS
    r = compare_processes(runs/'one', runs/'torchrun', runs/'launcher')
    print(json.dumps(r, indent=2, sort_keys=True)); print(process_table(r))
    assert r['ok'], r
    # the sets: every file byte for byte, 6 training images x expansion 2 PNGs; the pool holds its inversions
    assert all(r['sets'][s]['identical'] and not r['sets'][s]['differing'] for s in PROCESS_SETS)
    assert [r['sets'][s]['pngs'] for s in ('syn-diff-mix', 'syn-real-guidance', 'diffii')] == [12, 12, 12]
    assert 0 < r['sets']['syn-real-filter']['pngs'] <= 12  # kept by the CLIP filter
    assert (runs/'one'/'pool'/'inversions.safetensors').is_file()
    # concepts: 3 classes' embeddings and LoRA tensors, finite, each run's record names its processes, 4 losses each
    c = r['concepts']
    assert c['embeddings'] == 3 and c['lora_tensors'] > 0 and c['finite'] and c['processes'] == [1, 2]
    assert [len(x) for x in c['losses']] == [4, 4] and 0 < c['max_abs_diff_lora']  # two processes see other batches
    # classification: every output file in both, each test image predicted once (the even-batches completion dropped)
    k = r['classification']
    assert {'metrics.json', 'epochs.csv', 'predictions.csv', 'per_class.csv', 'config.json'} <= set(k['files']) <= set(OUTPUT_FILES)
    assert k['n_test'] == [6, 6] and k['predictions'] == [6, 6] and k['num_processes'] == [1, 2] and k['launcher_equals_torchrun']


def test_compare_processes_fails_on_a_differing_set(runs, tmp_path):
    "One changed byte in one PNG of the two-process set: that set is not identical, and the comparison fails."
    import shutil
    from diffaug.processes import compare_processes
    shutil.copytree(runs/'torchrun', tmp_path/'two')
    png = sorted((tmp_path/'two'/'diffii').rglob('*.png'))[0]
    b = bytearray(png.read_bytes()); b[-20] ^= 1; png.write_bytes(bytes(b))
    r = compare_processes(runs/'one', tmp_path/'two')
    assert not r['ok'] and not r['sets']['diffii']['identical'] and r['sets']['diffii']['differing'] == [png.relative_to(tmp_path/'two'/'diffii').as_posix()]
    assert r['sets']['pool']['identical']
