"""What the project writes opens in stock readers, as the user's umask asks: the shipped mini-world model in plain
`diffusers`, synthetic sets (an empty class included) in torchvision's ImageFolder and in HF `datasets`' imagefolder
loader (offline) with every label as metadata.csv says and ImageFolder's class indices the dataset's (a sparse set
concatenated with the real images), and stage outputs with the permissions of the umask."""
import contextlib, csv, hashlib, json, os, stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT
from diffaug.data import Dataset
from diffaug.splits import few_shot_split, save_split
from diffaug.synthetic import PLACEHOLDER, SyntheticSetWriter
from diffaug.toy import make_toy_dataset

torch.set_num_threads(1)
CLASSES = ['Red/Circle', 'Empty ☃', 'Blue Square']  # odd characters on purpose; class 1 gets no image


# --- (a) the shipped model in stock diffusers ----------------------------------------------------------------------

def test_shipped_model_loads_and_generates_in_stock_diffusers(recwarn):
    "`StableDiffusionPipeline.from_pretrained(models/miniworld)`, no dtype argument: every part in one dtype, it generates on CPU."
    import gc
    gc.collect(); recwarn.clear()  # an earlier test's garbage (HF datasets' imagefolder leaves metadata.csv open) is not this test's warning
    from diffusers import StableDiffusionPipeline
    pipe = StableDiffusionPipeline.from_pretrained(str(ROOT/'models'/'miniworld'))
    assert {n: getattr(pipe, n).dtype for n in ('unet', 'vae', 'text_encoder')} == dict.fromkeys(('unet', 'vae', 'text_encoder'), torch.float32)
    assert pipe.safety_checker is None and pipe.device.type == 'cpu'
    pipe.set_progress_bar_config(disable=True)
    gen = lambda prompt: pipe(prompt, num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type='np').images[0]
    a, b = gen('a photo of a bird'), gen('a photo of a bird flying over water')
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    assert a.shape == (side, side, 3) and np.isfinite(a).all() and 0 <= a.min() and a.max() <= 1 and a.std() > 0.01
    assert np.abs(a - b).max() > 1e-3  # the prompt reaches the image
    assert not [str(w.message) for w in recwarn], [str(w.message) for w in recwarn]


# --- (b) synthetic sets in ImageFolder and HF datasets ---------------------------------------------------------------

def _pixels(im) -> str:
    return hashlib.sha256(np.asarray(im.convert('RGB')).tobytes()).hexdigest()


def _rows(set_dir: Path) -> list:
    with open(set_dir/'metadata.csv', newline='', encoding='utf-8') as f: return list(csv.DictReader(f))


def _check_stock_readers(set_dir: Path, empty: str):
    """ImageFolder and HF imagefolder read every image of `set_dir`, each with the label metadata.csv gives it; class
    `empty` keeps its folder (a placeholder in it), so ImageFolder's class index is the label index."""
    from torchvision.datasets import ImageFolder
    rows = _rows(set_dir); info = json.loads((set_dir/'info.json').read_text(encoding='utf-8'))
    label_of = {r['file_name']: r['label'] for r in rows}
    assert rows and empty in info['classes'] and empty not in label_of.values()
    empty_dir = set_dir/info['folders'][info['classes'].index(empty)]
    assert [p.name for p in empty_dir.iterdir()] == [PLACEHOLDER]  # an empty class keeps its folder (DVC and git need a file in it)
    # torchvision: class index -> folder (ImageFolder.classes) -> class name (info.json's folders, in label order)
    folder_class = dict(zip(info['folders'], info['classes']))
    tv = ImageFolder(str(set_dir), allow_empty=True)
    assert tv.classes == info['folders'] and tv.class_to_idx == {f: i for i, f in enumerate(info['folders'])}
    got = {Path(p).relative_to(set_dir).as_posix(): folder_class[tv.classes[i]] for p, i in tv.samples}
    assert got == label_of
    assert {Path(p).relative_to(set_dir).as_posix(): i for p, i in tv.samples} == {f: info['classes'].index(c) for f, c in label_of.items()}
    # HF datasets, offline: the imagefolder loader reads metadata.csv (file_name + the other columns)
    import datasets
    ds = datasets.load_dataset('imagefolder', data_dir=str(set_dir), split='train')
    assert len(ds) == len(rows) and {'image', 'label', 'method', 'source_ids'} <= set(ds.column_names)
    by_pixels = {}
    for r in rows:
        with Image.open(set_dir/r['file_name']) as im: by_pixels[_pixels(im)] = r
    assert len(by_pixels) == len(rows), "test images must differ"
    for ex in ds:
        r = by_pixels[_pixels(ex['image'])]
        assert (ex['label'], ex['method'], ex['source_ids']) == (r['label'], r['method'], r['source_ids'])


@pytest.fixture
def hf_offline(tmp_path, monkeypatch):
    "HF datasets offline, its cache in the test's folder (datasets reads the variables when it is imported)."
    monkeypatch.setenv('HF_DATASETS_OFFLINE', '1'); monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('HF_DATASETS_CACHE', str(tmp_path/'hf-cache'))
    import datasets
    monkeypatch.setattr(datasets.config, 'HF_DATASETS_OFFLINE', True, raising=False)
    monkeypatch.setattr(datasets.config, 'HF_HUB_OFFLINE', True, raising=False)
    monkeypatch.setattr(datasets.config, 'HF_DATASETS_CACHE', tmp_path/'hf-cache', raising=False)
    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


def test_written_set_with_an_empty_class_opens_in_stock_readers(tmp_path, hf_offline):
    w = SyntheticSetWriter(tmp_path/'set', CLASSES, 'handmade', info={'made_by': 'test'})
    for c in (0, 2):
        for i in range(3):
            im = Image.fromarray(np.full((8, 8, 3), 20 * (3 * c + i) + 5, np.uint8))
            w.write(im, c, f'{i:05d}', source_ids=f'{c}/{i}.png', seed=i, strength=0.5, target=CLASSES[2 - c])
    out = w.finalize()
    _check_stock_readers(out, 'Empty ☃')


def test_tiny_model_set_opens_in_stock_readers(tmp_path, hf_offline):
    "A set the tiny SD model makes through the synthesis stage, for a split whose class 1 has no training image."
    from diffaug.methods import SynthesisConfig, run_synthesis
    from diffaug.models import make_tiny_sd
    toy = make_toy_dataset(tmp_path/'toy', n_classes=3, n_per_class=3, size=32)
    split = save_split(few_shot_split(toy, 2, seed=0, test='none'), tmp_path/'split.json')
    sp = json.loads(Path(split).read_text(encoding='utf-8'))
    sp['classes'] = CLASSES; names = dict(zip(toy.classes, CLASSES))
    for part in sp['items'].values():
        for it in part: it['label'] = names[it['label']]
    sp['items']['train'] = [it for it in sp['items']['train'] if it['label'] != 'Empty ☃']
    Path(split).write_text(json.dumps(sp), encoding='utf-8')
    cfg = SynthesisConfig(method='real-guidance', split=str(split), out=str(tmp_path/'syn'), model=str(make_tiny_sd(tmp_path/'tiny-sd')),
                          expansion=2, steps=2, batch_size=4, device='cpu', precision='fp32')
    run_synthesis(cfg)
    assert len(_rows(tmp_path/'syn')) == 8  # 2 classes x 2 shots x 2
    _check_stock_readers(tmp_path/'syn', 'Empty ☃')


def test_sparse_set_and_real_images_concatenate_in_imagefolder(tmp_path):
    """The README's three lines: the real images (the dataset root) and a synthetic set where most classes got no image
    (as Real-Filter's filter may leave it), both through stock ImageFolder, then ConcatDataset: every label is the
    intended class's index in the split."""
    from torch.utils.data import ConcatDataset
    from torchvision.datasets import ImageFolder
    toy = make_toy_dataset(tmp_path/'toy', n_classes=6, n_per_class=2, size=16)
    split = few_shot_split(toy, 1, seed=0, test='none')
    w = SyntheticSetWriter(tmp_path/'syn', split.classes, 'real-filter')
    for c, n in ((1, 2), (4, 1)):  # classes 0, 2, 3, 5: no image
        for i in range(n): w.write(Image.fromarray(np.full((16, 16, 3), 40 * c + i, np.uint8)), split.classes[c], f'{i:05d}')
    syn_dir = w.finalize()
    real = ImageFolder(str(toy.root))
    syn = ImageFolder(str(syn_dir), allow_empty=True)
    both = ConcatDataset([real, syn])
    assert real.class_to_idx == syn.class_to_idx and len(syn.classes) == 6 and len(syn) == 3
    # the intended class of each sample, from the project's own records: dataset.json's images, metadata.csv's labels
    ds = Dataset.from_folder(toy.root)
    real_class = {toy.root/p: c for c, ims in zip(ds.classes, ds.images) for p in ims}
    syn_class = {syn_dir/r['file_name']: r['label'] for r in _rows(syn_dir)}
    intended = [real_class[Path(p)] for p, _ in real.samples] + [syn_class[Path(p)] for p, _ in syn.samples]
    assert len(intended) == len(both) == 6 * 2 + 3
    assert [split.classes[both[i][1]] for i in range(len(both))] == intended
    # the annotation stage's copy (data/annotated/<method>) keeps the empty classes' folders too
    from diffaug.annotation import annotate
    ann = annotate(syn_dir, out_dir=tmp_path/'annotated')
    assert ImageFolder(str(ann), allow_empty=True).class_to_idx == real.class_to_idx
    assert (ann/toy.folders[0]/PLACEHOLDER).is_file() and not (ann/toy.folders[1]/PLACEHOLDER).exists()


# --- (c) outputs follow the umask --------------------------------------------------------------------------------------

@contextlib.contextmanager
def _umask(mask):
    old = os.umask(mask)
    try: yield
    finally: os.umask(old)


def _modes(root: Path) -> dict:
    "{relative path: permission bits} of `root` and everything under it."
    return {p.relative_to(root.parent).as_posix(): stat.S_IMODE(p.lstat().st_mode) for p in [root, *root.rglob('*')]}


@pytest.mark.parametrize('mask,file_mode,dir_mode', [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_stage_outputs_follow_the_umask(tmp_path, mask, file_mode, dir_mode):
    import nbformat
    from diffaug.prepare import run_prepare
    from diffaug.concept_training import run_concepts
    from diffaug.models import run_tiny_model
    from diffaug.pipeline import execute_stage_notebook
    nb = nbformat.v4.new_notebook(); nb.cells = [nbformat.v4.new_code_cell("params = None", metadata={'tags': ['parameters']})]
    nbformat.write(nb, tmp_path/'stage.ipynb')
    out = tmp_path/'out'; out.mkdir(); os.chmod(out, 0o755)
    with _umask(mask):
        run_prepare(source='toy', root=str(out/'data'/'toy'), split_path=str(out/'data'/'split.json'), toy_classes=2, toy_per_class=3, toy_size=16, shots=2)
        run_tiny_model(out=str(out/'models'/'tiny-sd'), clip_out=str(out/'models'/'tiny-clip'), resolution=16, width=8)
        run_concepts(split=str(out/'data'/'split.json'), model=str(out/'models'/'tiny-sd'), out=str(out/'concepts'), steps=2, rank=2,
                     checkpoint_every=1, device='cpu', precision='fp32')
        w = SyntheticSetWriter(out/'syn', CLASSES, 'handmade'); w.write(Image.new('RGB', (8, 8)), 0, '00000'); w.finalize()
        execute_stage_notebook(tmp_path/'stage.ipynb', out/'reports'/'stage'/'stage.ipynb', {'params': {}}, log_output=False)
    modes = _modes(out); del modes['out']  # made by the test
    assert {k for k in modes if k.endswith(('.json', '.png', '.safetensors', '.txt', '.csv', '.ipynb'))} >= {
        'out/data/split.json', 'out/models/tiny-sd/unet/diffusion_pytorch_model.safetensors', 'out/models/tiny-clip/model.safetensors',
        'out/syn/metadata.csv', 'out/syn/info.json', 'out/reports/stage/stage.ipynb', 'out/concepts/pytorch_lora_weights.safetensors',
        'out/concepts/embeddings/class_0.safetensors', 'out/concepts.checkpoints/step-0000002/trainable.safetensors'}
    paths = {k: (out.parent/k) for k in modes}
    wrong = {k: oct(m) for k, m in modes.items() if m != (dir_mode if paths[k].is_dir() else file_mode)}
    assert not wrong, f"umask {oct(mask)}: expected files {oct(file_mode)}, folders {oct(dir_mode)}; got {wrong}"
