"""The GPU cost model and the GPU benchmark (benchmarks/gpu_cost.py, benchmarks/gpu.py, issue 24).

* the committed benchmarks/gpu_cost.md is what the committed FLOP counts and the setup files give (it cannot drift
  from params/ or from the counts), and the README includes it;
* the counts themselves: SD 1.5's U-Net, counted again on the meta device (about a second), costs 0.80 TFLOP per call
  at 512 px and equals the committed JSON;
* benchmarks/gpu.py runs its whole code path on a CPU (--smoke); the real run is a test only where CUDA is.
"""
import importlib.util, json, subprocess, sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _module(name='gpu_cost'):
    spec = importlib.util.spec_from_file_location(name, REPO/'benchmarks'/f'{name}.py')
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    return m


def test_gpu_cost_md_is_the_prediction():
    "gpu_cost.md = the prediction recomputed from gpu_cost_flops.json and params/ (defaults: 40 TFLOP/s, 24 GB)."
    m = _module()
    md = m.table()
    assert m.MD.read_text() == md, "benchmarks/gpu_cost.md is stale: python benchmarks/gpu_cost.py"
    assert md.count('\n| ') >= 2 * 23 + 11, "a row per paper setup in both tables, a row per counted network"
    # the comparison can fail: other counts give another table
    counts = json.loads(m.FLOPS_JSON.read_text()); counts['components']['unet_fwd']['flops'] *= 2
    assert m.table(counts=counts) != md


def test_gpu_cost_counts_every_paper_setup():
    "Every non-miniworld setup is predicted, with the stages its methods need and a positive time for each."
    m = _module()
    C = json.loads(m.FLOPS_JSON.read_text())['components']
    setups = m.setups()
    assert len(setups) == 23 and not [f for f in setups if 'miniworld' in f.stem]
    for f in setups:
        p = m.setup_params(f); r = m.predict(p, C, 40.0)
        assert {'concepts', 'inversion', 'interpolation', 'classification'} <= set(r), f.stem
        assert set(p['runs']['synthetic_methods']) <= set(r), f.stem
        assert ('concepts_ti' in r) == ('da-fusion' in p['runs']['methods']), f.stem
        assert all(v['minutes'] > 0 and 2 < v['gb'] < 80 for v in r.values()), f.stem
    # twice the throughput, half the time
    p = m.setup_params(REPO/'params'/'cub-5shot-resnet50.yaml')
    a, b = m.predict(p, C, 40.0), m.predict(p, C, 80.0)
    assert all(abs(a[k]['minutes'] - 2 * b[k]['minutes']) < 1e-9 for k in a)


def test_readme_includes_gpu_cost():
    "The README's 'What to expect' subsection takes its GPU numbers from benchmarks/gpu_cost.md."
    index = (REPO/'nbs'/'index.ipynb').read_text()
    assert '<!-- include: benchmarks/gpu_cost.md -->' in index
    assert (REPO/'benchmarks'/'gpu_cost.md').read_text().splitlines()[0] in (REPO/'README.md').read_text()


def test_unet_flops_counted():
    "Recounted on the meta device: SD 1.5's U-Net costs 0.80 TFLOP per call at 512 px (within 5%), as the committed JSON says."
    m = _module()
    counts = m.count()['components']
    committed = json.loads(m.FLOPS_JSON.read_text())['components']
    assert abs(counts['unet_fwd']['flops'] / 0.80e12 - 1) < 0.05, counts['unet_fwd']['flops']
    assert abs(counts['unet_fwd']['params'] / 859.5e6 - 1) < 0.001  # SD 1.5's U-Net: 859.5 M parameters
    for k, v in committed.items():
        assert counts[k]['flops'] == v['flops'], f"{k}: counted {counts[k]['flops']}, committed {v['flops']} (python benchmarks/gpu_cost.py --recount)"


def test_gpu_benchmark_smoke(tmp_path):
    "benchmarks/gpu.py --smoke: every job (ours / diffusers x inversion / interpolation, with and without torch.compile) on the CPU."
    assert _module('gpu').main(['--smoke', '--out-dir', str(tmp_path)]) == 0  # in this process: torch and diffusers are imported once
    doc = json.loads((tmp_path/'gpu_smoke.json').read_text())
    keys = {(x['impl'], x['task'], x['compile']) for x in doc['rows']}
    assert keys == {(i, t, c) for i in ('ours', 'diffusers') for t in ('inversion', 'interpolation') for c in (False, True)}
    assert {x['batch'] for x in doc['rows']} == {1, 2} and all(x['s_per_image'] > 0 for x in doc['rows'])
    md = (tmp_path/'gpu_smoke.md').read_text()
    assert 'SMOKE RUN' in md and '1.59 s/image' in md


@pytest.mark.skipif(not __import__('torch').cuda.is_available(), reason='needs a CUDA GPU')
def test_gpu_benchmark_cuda(tmp_path):
    "The real benchmark: SD 1.5's architecture at 512 px, 25 steps, batch 1/8/16, fp16, with and without torch.compile."
    r = subprocess.run([sys.executable, str(REPO/'benchmarks'/'gpu.py'), '--out-dir', str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads((tmp_path/'gpu.json').read_text())
    assert doc['resolution'] == 512 and doc['steps'] == 25 and {x['batch'] for x in doc['rows']} == {1, 8, 16}
    assert all(x['peak_gb'] and x['peak_gb'] > 1.5 for x in doc['rows'])  # SD 1.5's fp16 weights alone are 2 GB
