"The oracle stage's CLIP score prompts with the dataset's metaclass (read from the split), and records LPIPS's image side."
import json

import numpy as np
import pytest

import diffaug.miniworld.oracle as oracle
from diffaug.fixtures import make_toy_split, make_toy_synthetic
from diffaug.core import ParamError
from diffaug.models import make_tiny_clip


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp('oracle')
    split = make_toy_split(d, n_classes=2, shots=1, per_class=3, size=16)
    return d, split, make_toy_synthetic(split, d/'syn', per_image=1), make_tiny_clip(d/'clip')


@pytest.mark.parametrize('metaclass', ['aircraft', 'car', 'animal', 'flower', 'bird'])
def test_clip_prompt_names_the_split_metaclass(toy, metaclass, tmp_path, monkeypatch):
    d, split, syn, clip = toy
    sp = json.loads(split.read_text()); sp['metaclass'] = metaclass; sp['root'] = str((split.parent/sp['root']).resolve())
    (tmp_path/'split.json').write_text(json.dumps(sp))
    seen = []
    def stub(images, texts, clip): seen.extend(texts); return np.full(len(texts), 30.0)
    monkeypatch.setattr(oracle, 'clip_score', stub); monkeypatch.setattr(oracle, 'load_clip', lambda m: None)
    res = oracle.run_oracle(synthetic=str(syn), out=str(tmp_path/'scores.json'), split=str(tmp_path/'split.json'), model=None,
                            clip_model=str(clip), lpips_trunk='random', lpips_size=32)
    assert seen and all(t.endswith(f', a type of {metaclass}') for t in seen)
    assert {t.split('a photo of a ')[1].split(',')[0] for t in seen} == set(sp['classes'])
    on_disk = json.loads((tmp_path/'scores.json').read_text())
    assert on_disk['clip_prompt'] == f'a photo of a {{name}}, a type of {metaclass}' and on_disk['clip_score'] == 30.0
    assert on_disk['lpips_size'] == 32 and 'lpips_diversity' in on_disk


def test_clip_score_needs_the_split(toy, tmp_path):
    d, split, syn, clip = toy
    with pytest.raises(ParamError, match='names its metaclass'):
        oracle.run_oracle(synthetic=str(syn), out=str(tmp_path/'s.json'), model=None, clip_model=str(clip))
