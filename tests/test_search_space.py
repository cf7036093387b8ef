"""Search spaces: files, validation errors, genes, candidates, families the zoo registers."""
from __future__ import annotations

import json
import random

import pytest
import timm
import torch

import scalenet_models
from scalenet_models import complexity, count_model_macs, get_family
from search.space import (BaseArch, Candidate, ScaleNetSpace, ScarletSpace, Scaling, SpaceError, known_spaces,
                          load_space)

SCALENET_S0 = BaseArch((1, 1, 4, 2, 2, 3, 1), ((5,), (5,), (7, 7, 5, 3), (5, 5), (7, 7), (7, 5, 7), (5,)))
SCARLET_A = ['MB3_K7', 'MB6_K5', 'MB3_K5', 'MB3_K7_SE', 'MB6_K3_SE', 'MB3_K5_SE', 'MB6_K3_SE', 'MB3_K3',
             'MB3_K7_SE', 'MB3_K7', 'MB3_K5', 'MB3_K7_SE', 'MB3_K3', 'MB3_K7_SE', 'MB6_K3_SE', 'MB6_K5_SE',
             'MB3_K3_SE', 'MB6_K3_SE', 'MB6_K7_SE']
SCARLET_C = ['MB3_K5_SE', 'MB3_K3_SE', 'MB3_K5_SE', 'skip', 'skip', 'MB3_K3', 'MB6_K7_SE', 'MB3_K3_SE',
             'MB3_K3_SE', 'MB3_K5', 'MB3_K7_SE', 'MB3_K7', 'MB3_K3_SE', 'MB3_K7_SE', 'MB3_K3_SE', 'skip',
             'MB6_K3_SE', 'MB6_K7_SE', 'MB6_K5_SE']


pytestmark = pytest.mark.usefixtures('one_torch_thread')


def raw(name: str) -> dict:
    return load_space(name).to_dict()


def test_known_spaces_and_kinds():
    assert {'scalenet', 'scarlet'} <= set(known_spaces())
    sn, sc = load_space('scalenet'), load_space('scarlet')
    assert isinstance(sn, ScaleNetSpace) and sn.kind == 'scaling'
    assert isinstance(sc, ScarletSpace) and sc.kind == 'layerwise'
    # a space round-trips through its dict (what checkpoints store to detect a changed space)
    assert load_space(sn.to_dict()).to_dict() == sn.to_dict()


def test_unknown_space_names_the_known_ones(tmp_path):
    with pytest.raises(SpaceError, match=r"unknown.*scalenet, scarlet"):
        load_space('efficientnet')
    with pytest.raises(SpaceError, match='no such file'):
        load_space(tmp_path / 'missing.json')
    bad = tmp_path / 'bad.json'
    bad.write_text('{not json')
    with pytest.raises(SpaceError, match='not valid JSON'):
        load_space(bad)


def _mutated(name, fn):
    d = raw(name)
    fn(d)
    return d


@pytest.mark.parametrize('name, mutate, message', [
    ('scalenet', lambda d: d.pop('stages'), r'stages: missing'),
    ('scalenet', lambda d: d.pop('format'), r'format: missing'),
    ('scalenet', lambda d: d.update(format='other/1'), r'format: .*not'),
    ('scalenet', lambda d: d.update(kind='grid'), r'kind: .*not one of'),
    ('scalenet', lambda d: d.update(extra=1), r"unknown field 'extra'"),
    ('scalenet', lambda d: d['stages'][2].update(kernels=[3, 4]), r'stages\[2\]\.kernels\[1\]: 4 is not one of'),
    ('scalenet', lambda d: d['stages'][1].update(stride=3), r'stages\[1\]\.stride'),
    ('scalenet', lambda d: d['stages'][0].update(expansion=2), r'stages\[0\]\.expansion: .*ds block'),
    ('scalenet', lambda d: d['stages'][1].update(depths=[1, 1]), r'stages\[1\]\.depths: .*duplicates'),
    ('scalenet', lambda d: d['stages'][1].update(depths=[]), r'stages\[1\]\.depths: must not be empty'),
    ('scalenet', lambda d: d['scaling_stages'][0].update(width=[1.1]), r'scaling_stages\[0\]: .*base model'),
    ('scalenet', lambda d: d['scaling_stages'][2].update(resolution=[4]), r'scaling_stages\[2\]\.resolution\[0\]'),
    ('scalenet', lambda d: d.update(stage_probs=[1, 1]), r'stage_probs: expected 4'),
    ('scalenet', lambda d: d.update(base_macs=[300, 200]), r'base_macs: .*empty'),
    ('scalenet', lambda d: d['net'].update(act='tanh'), r'net\.act'),
    ('scalenet', lambda d: d['scaling_rule'].update(depth='spread'), r'scaling_rule\.depth'),
    ('scalenet', lambda d: d['family_cfg'].update(mean=[0.5]), r'cfg\.mean'),
    ('scarlet', lambda d: d['choices'].update(kernels=[3, 9]), r'choices\.kernels\[1\]: 9'),
    ('scarlet', lambda d: d['choices'].update(se=['yes']), r'choices\.se\[0\]: expected true or false'),
    ('scarlet', lambda d: d['choices'].pop('expansions'), r'choices\.expansions: missing'),
    ('scarlet', lambda d: d['choices'].update(expansions=[0.5, 3]), r'choices\.expansions'),
    ('scarlet', lambda d: d['stages'][3].update(layers=0), r'stages\[3\]\.layers: 0 is below'),
    ('scarlet', lambda d: d['stages'][3].update(choices={'kernel': [3]}), r"stages\[3\]\.choices: unknown field"),
    ('scarlet', lambda d: d['fixed_blocks'][0].update(kernel=2), r'fixed_blocks\[0\]\.kernel'),
    ('scarlet', lambda d: d.pop('resolution'), r'resolution: missing'),
])
def test_bad_spaces_name_the_field(name, mutate, message, tmp_path):
    d = _mutated(name, mutate)
    with pytest.raises(SpaceError, match=message):
        load_space(d)
    # the same error from a file names the file too
    path = tmp_path / 'space.json'
    path.write_text(json.dumps(d))
    with pytest.raises(SpaceError, match=str(path).replace('.', r'\.')):
        load_space(path)


def test_custom_space_is_a_file(tmp_path):
    d = raw('scarlet')
    d.update(name='tiny', stages=d['stages'][:2])
    d['stages'][1]['choices'] = {'kernels': [3], 'expansions': [4], 'se': [False], 'skip': False}
    path = tmp_path / 'tiny.json'
    path.write_text(json.dumps(d))
    sp = load_space(path)
    assert sp.name == 'tiny' and sp.num_genes == 6
    assert sp.layer_choices(1) == load_space('scarlet').layer_choices(1)
    assert [sp.layer_choices(i) for i in range(2, 6)] == [['MB4_K3']] * 4


def test_width_scale_shrinks_every_channel():
    sp = load_space('scalenet', width_scale=0.25)
    big = load_space('scalenet')
    assert sp.name == 'scalenet_w0p25'
    assert sp.net_fields['stem_channels'] == 8 and sp.net_fields['head_channels'] == 320
    assert [s.out_channels for s in sp.stages] == [4, 8, 10, 20, 24, 48, 80]
    assert sp.gene_bounds() == big.gene_bounds()
    with pytest.raises(SpaceError, match='width_scale'):
        load_space('scalenet', width_scale=0)


def test_scalenet_bounds_and_gene_round_trip():
    sp = load_space('scalenet')
    lo, hi = sp.gene_bounds()
    # depth genes for the 5 stages with 1..4 layers, kernel genes for 1 + 5 * 4 + 1 base positions
    assert sp.num_genes == len(lo) == len(hi) == 5 + 22
    assert lo == [0] * 27 and hi == [3] * 5 + [2] * 22
    rng = random.Random(0)
    for _ in range(200):
        base = sp.sample_base(rng)
        genes = sp.base_to_genes(base)
        assert all(a <= g <= b for g, a, b in zip(genes, lo, hi))
        assert sp.genes_to_base(genes) == base
        noisy = [rng.randint(a, b) for a, b in zip(lo, hi)]
        canon = sp.base_to_genes(sp.genes_to_base(noisy))
        assert sp.genes_to_base(canon) == sp.genes_to_base(noisy)
        assert sp.base_to_genes(sp.genes_to_base(canon)) == canon
    with pytest.raises(SpaceError, match='genes: expected 27'):
        sp.genes_to_base([0] * 26)
    with pytest.raises(SpaceError, match='genes'):
        sp.genes_to_base([4] + [0] * 26)
    with pytest.raises(SpaceError, match='base stage 2'):
        sp.base_net(BaseArch((1, 1, 5, 1, 1, 1, 1), ((3,),) * 2 + ((3,) * 5,) + ((3,),) * 4))


def test_scalenet_candidates_are_the_zoo_members():
    """The released ScaleNet base with the released (d, w, r) gives exactly the zoo's S0..S3 nets."""
    sp = load_space('scalenet')
    fam = get_family('scalenet')
    for i, (d, w, r) in enumerate([(1.0, 1.0, 224), (1.04, 1.04, 256), (1.36, 1.2, 304), (1.4, 1.4, 354)]):
        cand = sp.candidate(SCALENET_S0, Scaling(d, w, r))
        assert cand.net == fam.member_net(f'scalenet_s{i}')
        assert cand.layers == tuple(tuple(range(n)) for n in cand.net.depths)
        assert sp.stage_of(Scaling(d, w, r)) == i
        assert sp.macs(cand) == complexity(cand.net, r).macs
    assert round(sp.macs(sp.candidate(SCALENET_S0, Scaling(1.0, 1.0, 224))) / 1e6, 1) == 354.9
    # the supernet holds the largest depth: 4 x 1.64 -> 7 layers, widths ceil(c x 1.64)
    big = sp.max_net()
    assert big.depths == (2, 7, 7, 7, 7, 7, 2)
    assert big.stem_channels == 53 and big.stages[6].blocks[0].out_channels == 525
    assert all(b.kernel == 7 for _, _, _, b in big.blocks())


def test_scarlet_genes_reproduce_the_released_models():
    sp = load_space('scarlet')
    for name, ops in (('scarlet_a', SCARLET_A), ('scarlet_c', SCARLET_C)):
        genes = [sp.layer_choices(i).index(op) for i, op in enumerate(ops)]
        cand = sp.genes_to_candidate(genes)
        assert cand.net == get_family(name).base
        assert sp.candidate_to_genes(cand) == genes
    c = sp.genes_to_candidate([sp.layer_choices(i).index(op) for i, op in enumerate(SCARLET_C)])
    assert c.layers[2] == (0, 3) and c.layers[5] == (0, 2, 3)
    assert round(sp.macs(c) / 1e6, 1) == 280.1


def test_scarlet_bounds_skip_positions_and_round_trip():
    sp = load_space('scarlet')
    assert sp.num_genes == 19
    skippable = [i for i in range(19) if 'skip' in sp.layer_choices(i)]
    assert skippable == [1, 3, 4, 5, 7, 8, 9, 11, 12, 13, 15, 16, 17]
    lo, hi = sp.gene_bounds()
    assert hi == [12 if i in skippable else 11 for i in range(19)] and lo == [0] * 19
    assert sp.layer_choices(0)[:2] == ['MB3_K3', 'MB3_K3_SE'] and len(set(sp.layer_choices(0))) == 12
    rng = random.Random(1)
    for _ in range(200):
        genes = [rng.randint(a, b) for a, b in zip(lo, hi)]
        cand = sp.genes_to_candidate(genes)
        assert sp.candidate_to_genes(cand) == genes
        assert Candidate.from_dict(json.loads(json.dumps(cand.to_dict()))) == cand
    with pytest.raises(SpaceError, match='layer 19'):
        sp.layer_choices(19)
    other = load_space('scalenet').sample(rng)
    with pytest.raises(SpaceError, match='not a choice of this space'):
        sp.candidate_to_genes(other)
    with pytest.raises(SpaceError, match='not a net of space'):
        sp.candidate_to_genes(Candidate(cand.net, cand.layers, 160))


def test_candidate_key_is_stable_and_distinguishes():
    sp = load_space('scarlet')
    a = sp.genes_to_candidate([0] * 19)
    b = sp.genes_to_candidate([1] + [0] * 18)
    assert a.key() == sp.genes_to_candidate([0] * 19).key() == Candidate.from_dict(a.to_dict()).key()
    assert len(a.key()) == 40 and a.key() != b.key()
    with pytest.raises(SpaceError, match='layers'):
        Candidate(a.net, a.layers[:-1], 224)


def test_scalenet_family_registers_and_builds_with_analytic_macs():
    sp = load_space('scalenet')
    scalings = [Scaling(1.0, 1.0, 224), Scaling(1.08, 1.12, 240), Scaling(1.28, 1.24, 288)]
    fam = sp.family('searchtest', SCALENET_S0, scalings, [{'top1': 10.0}, {'top1': 20.0}, {'top1': 30.0}])
    names = scalenet_models.register_family(fam.to_dict(), overwrite=True)
    assert names == ['searchtest_s0', 'searchtest_s1', 'searchtest_s2']
    assert fam.member('searchtest_s2').metrics == {'top1': 30.0}
    for name, s in zip(names, scalings):
        cand = sp.candidate(SCALENET_S0, s)
        assert scalenet_models.get_family('searchtest').member_net(name) == cand.net
        model = timm.create_model(name, num_classes=10)
        assert model.pretrained_cfg['input_size'] == (3, s.resolution, s.resolution)
        assert count_model_macs(model, 64) == complexity(cand.net, 64, 10).macs
    with pytest.raises(SpaceError, match='metrics'):
        sp.family('searchtest', SCALENET_S0, scalings, [{}])


def test_scarlet_family_registers_and_builds_with_analytic_macs():
    sp = load_space('scarlet')
    cand = sp.sample(random.Random(3))
    fam = sp.family('scarlet_searchtest', cand, {'top1': 42.0})
    assert scalenet_models.register_family(fam.to_dict(), overwrite=True) == ['scarlet_searchtest']
    model = timm.create_model('scarlet_searchtest', num_classes=10)
    assert count_model_macs(model, 64) == complexity(cand.net, 64, 10).macs
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 10)
