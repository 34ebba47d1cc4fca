"""The mini world's ImageNet (issue 25): the shipped backbone and the measurement of the two classifier protocols."""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_protocol_table_is_its_runs():
    "results/backbone/protocols.md is computed from protocols.jsonl by the script (one decision rule, its intervals)."
    sys.path.insert(0, str(ROOT/'scripts'))
    import backbone_protocols as B
    rows = [json.loads(l) for l in B.RUNS.read_text().splitlines()]
    assert {(r['protocol'], r['method'], r['seed']) for r in rows} == {(p, m, s) for p in B.SHOWN for m in B.METHODS for s in B.SEEDS}
    cand = [json.loads(l) for l in B.CANDIDATES.read_text().splitlines()]
    assert {(r['classes'], r['steps'], r['seed']) for r in cand} == {(c, st, s) for c, st in B.SIZES for s in B.CAND_SEEDS}
    assert B.TABLE.read_text() == B.tables(rows, cand)


def test_the_backbone_loads_in_timm_with_a_new_head():
    "models/backbone: timm loads it by path under a new head; it learned pretraining species only, none of the 12."
    import timm, torch
    from safetensors.torch import load_file
    from diffaug.miniworld.world import is_eval_species, EVAL_SPECIES, SPECIES_ATTRS
    rec = json.loads((ROOT/'models'/'backbone'/'training.json').read_text())
    f = ROOT/'models'/'backbone'/'model.safetensors'
    m = timm.create_model('resnet18', pretrained=True, pretrained_cfg_overlay={'file': str(f)}, num_classes=12)
    w = load_file(str(f))
    assert m.fc.out_features == 12 and torch.equal(m.conv1.weight.to(w['conv1.weight'].dtype), w['conv1.weight'])
    assert rec['heldout_top1'] > 90 and len(EVAL_SPECIES) == 12
    species = [dict(zip(SPECIES_ATTRS, s.split('/'))) for s in rec['species']]  # "body/crown/wing/beak/pattern/tail"
    from diffaug.miniworld.backbone import MiniworldBackboneConfig
    assert len(species) == rec['classes'] == MiniworldBackboneConfig.classes and len({tuple(s.values()) for s in species}) == rec['classes']
    assert rec['parameters']['steps'] == MiniworldBackboneConfig.steps  # the shipped one: the class defaults
    assert not any(is_eval_species(s) for s in species), 'a pretraining species is an evaluation species'


def test_the_default_runs_the_seeds_the_rule_asks_for():
    """params.yaml's runs.seeds has the count `diffaug.decisions.seeds_needed` gives for the default's protocol (the
    measured paired spread of Diff-II − original, and the paper's gain carried to the measured baseline), and every
    mini-world setup (the ablations too) runs the same seeds."""
    import yaml, pandas as pd
    sys.path.insert(0, str(ROOT/'scripts'))
    import backbone_protocols as B
    df = pd.DataFrame([json.loads(l) for l in B.RUNS.read_text().splitlines()])
    n = B.rule_seeds(df[df.protocol == 'finetune'])[2]
    seeds = yaml.safe_load((ROOT/'params.yaml').read_text())['runs']['seeds']
    assert len(seeds) == n >= 3, (seeds, n)
    for f in (ROOT/'params').glob('miniworld-*.yaml'):
        assert yaml.safe_load(f.read_text())['runs']['seeds'] == seeds, f.name
