"""The architecture spec: JSON round trips, validation messages, a fuzz of the loader, run-time registration."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scalenet_models
from scalenet_models import FamilySpec, SpecError, load_family, register_family, save_family
from scalenet_models.spec import FAMILY_FORMAT

FAMILIES_DIR = Path(scalenet_models.__file__).parent / 'families'
FAMILY_FILES = sorted(FAMILIES_DIR.glob('*.json'))


def tiny_family_dict(name: str = 'tinynet', members=('tinynet_s0', 'tinynet_s1')) -> dict:
    """A three-stage family small enough to build and run in milliseconds."""
    return {
        'format': FAMILY_FORMAT,
        'name': name,
        'scaling': {'channels': 'ceil', 'depth': 'append_last'},
        'base': {
            'stem_channels': 8,
            'head_channels': 32,
            'stages': [
                {'blocks': [{'type': 'ds', 'kernel': 3, 'out_channels': 8, 'se': 0.25}]},
                {'blocks': [{'kernel': 5, 'stride': 2, 'expansion': 3, 'out_channels': 16},
                            {'kernel': 3, 'expansion': 3, 'out_channels': 16, 'se': 0.25}]},
                {'blocks': [{'kernel': 7, 'stride': 2, 'expansion': 6, 'out_channels': 24, 'se': 0.25}]},
            ],
        },
        'members': [{'name': n, 'depth': 1.0 + 0.5 * i, 'width': 1.0 + 0.25 * i, 'resolution': 32 + 16 * i}
                    for i, n in enumerate(members)],
    }


# ----------------------------------------------------------------------------------------------
# round trips


def test_packaged_family_files_exist():
    assert {p.stem for p in FAMILY_FILES} >= {'scalenet', 'scarlet_a', 'scarlet_b', 'scarlet_c'}


@pytest.mark.parametrize('path', FAMILY_FILES, ids=lambda p: p.stem)
def test_family_dict_round_trip_is_identical(path):
    family = load_family(path)
    again = FamilySpec.from_dict(family.to_dict())
    assert again == family
    assert again.to_dict() == family.to_dict()
    # the explicit member networks survive too
    for m in family.members:
        assert again.member_net(m.name) == family.member_net(m.name)


@pytest.mark.parametrize('path', FAMILY_FILES, ids=lambda p: p.stem)
def test_family_file_round_trip_is_byte_equal(path, tmp_path):
    family = load_family(path)
    first, second = tmp_path / 'a.json', tmp_path / 'b.json'
    save_family(family, first)
    save_family(load_family(first), second)
    assert first.read_bytes() == second.read_bytes()
    assert load_family(second) == family


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    family = FamilySpec.from_dict(tiny_family_dict())
    target = tmp_path / 'sub' / 'family.json'
    save_family(family, target)
    save_family(family, target)
    assert [p.name for p in target.parent.iterdir()] == ['family.json']


def test_member_scaling_rules():
    family = FamilySpec.from_dict(tiny_family_dict())
    s1 = family.member_net('tinynet_s1')  # depth 1.5, width 1.25
    assert s1.depths == (2, 3, 2)          # ceil(1 * 1.5), ceil(2 * 1.5), ceil(1 * 1.5)
    assert s1.stem_channels == 10          # ceil(8 * 1.25)
    assert [b.out_channels for b in s1.stages[1].blocks] == [20, 20, 20]
    # appended layers copy the stage's last base block, with stride 1
    assert s1.stages[1].blocks[2].kernel == 3 and s1.stages[2].blocks[1].kernel == 7
    assert [b.stride for b in s1.stages[2].blocks] == [2, 1]
    assert s1.head_channels == 32          # the head is not scaled by the ScaleNet rule


# ----------------------------------------------------------------------------------------------
# validation: every bad spec names the field and the problem


def _set(path: str, value):
    """A mutation of the tiny family: set the value at a dotted/indexed path ('base.stages[2].blocks[0].kernel')."""
    def mutate(d):
        *parents, last = _parse_path(path)
        for key in parents:
            d = d[key]
        d[last] = value
    return mutate


def _delete(path: str):
    def mutate(d):
        *parents, last = _parse_path(path)
        for key in parents:
            d = d[key]
        del d[last]
    return mutate


def _parse_path(path: str) -> list:
    keys = []
    for part in path.split('.'):
        name, *indices = part.replace(']', '').split('[')
        keys.append(name)
        keys += [int(i) for i in indices]
    return keys


def _append_member(name):
    return lambda d: d['members'].append({'name': name})


def _add_block(stage: int, block: dict):
    return lambda d: d['base']['stages'][stage]['blocks'].append(block)


BAD_SPECS = [
    ('wrong kernel', _set('base.stages[2].blocks[0].kernel', 4),
     'base.stages[2].blocks[0].kernel: 4 is not one of 3, 5, 7'),
    ('kernel not a number', _set('base.stages[0].blocks[0].kernel', '3'),
     "base.stages[0].blocks[0].kernel: '3' is not one of 3, 5, 7"),
    ('unknown block field', _set('base.stages[1].blocks[0].dilation', 2),
     "base.stages[1].blocks[0]: unknown field 'dilation'"),
    ('unknown top-level field', _set('author', 'me'), "unknown field 'author'"),
    ('missing out_channels', _delete('base.stages[1].blocks[1].out_channels'),
     'base.stages[1].blocks[1].out_channels: missing (required)'),
    ('missing members', _delete('members'), 'members: missing (required)'),
    ('missing stem', _delete('base.stem_channels'), 'base.stem_channels: missing (required)'),
    ('stride 2 inside a stage', _set('base.stages[1].blocks[1].stride', 2),
     'base.stages[1].blocks[1].stride: 2 is not allowed: only the first block of a stage may downsample'),
    ('stride 3', _set('base.stages[1].blocks[0].stride', 3), 'base.stages[1].blocks[0].stride: 3 is not one of 1, 2'),
    ('ds with expansion', _set('base.stages[0].blocks[0].expansion', 6),
     'base.stages[0].blocks[0].expansion: 6.0 must be 1 for a ds block'),
    ('expansion below 1', _set('base.stages[1].blocks[0].expansion', 0.5),
     'base.stages[1].blocks[0].expansion: 0.5 must be at least 1.0'),
    ('unknown block type', _set('base.stages[1].blocks[0].type', 'conv'),
     "base.stages[1].blocks[0].type: 'conv' is not one of ds, ir"),
    ('negative se', _set('base.stages[1].blocks[0].se', -0.25), 'base.stages[1].blocks[0].se: -0.25 must be at least 0.0'),
    ('zero channels', _set('base.stages[1].blocks[0].out_channels', 0),
     'base.stages[1].blocks[0].out_channels: 0 is below the minimum 1'),
    ('float channels', _set('base.stages[1].blocks[0].out_channels', 16.5),
     'base.stages[1].blocks[0].out_channels: expected an integer, got 16.5'),
    ('bool channels', _set('base.stages[1].blocks[0].out_channels', True),
     'base.stages[1].blocks[0].out_channels: expected an integer, got True'),
    ('unknown activation', _set('base.act', 'tanh'), "base.act: 'tanh' is not one of hard_swish"),
    ('unknown block activation', _set('base.stages[1].blocks[0].act', 'elu'),
     "base.stages[1].blocks[0].act: 'elu' is not one of"),
    ('unknown se gate', _set('base.se_gate', 'softmax'), "base.se_gate: 'softmax' is not one of hard_sigmoid, sigmoid"),
    ('empty stages', _set('base.stages', []), 'base.stages: must not be empty'),
    ('empty blocks', _set('base.stages[0].blocks', []), 'base.stages[0].blocks: must not be empty'),
    ('stages not a list', _set('base.stages', {'blocks': []}), 'base.stages: expected a list, got dict'),
    ('block not an object', _set('base.stages[0].blocks[0]', 'ds_k3'),
     "base.stages[0].blocks[0]: expected an object, got str 'ds_k3'"),
    ('bad member name', _set('members[1].name', 'Tiny-Net'),
     "members[1].name: 'Tiny-Net' must be a lower-case Python identifier"),
    ('member name not a string', _set('members[0].name', 7), 'members[0].name: expected a string, got 7'),
    ('duplicate member', _append_member('tinynet_s0'), "members[2].name: 'tinynet_s0' is used twice"),
    ('zero width', _set('members[0].width', 0), 'members[0].width: 0 must be above 0.0'),
    ('infinite depth', _set('members[0].depth', float('inf')), 'members[0].depth: expected a finite number, got inf'),
    ('huge integer depth', _set('members[0].depth', 10 ** 400), 'members[0].depth: expected a finite number'),
    ('absurd depth', _set('members[1].depth', 6.0e10), 'members[1].depth: 60000000000.0 is above the maximum 100.0'),
    ('tiny resolution', _set('members[0].resolution', 4), 'members[0].resolution: 4 is below the minimum 8'),
    ('metrics not numbers', _set('members[0].metrics', {'top1': 'high'}),
     "members[0].metrics.top1: expected a finite number, got 'high'"),
    ('unknown member field', _set('members[0].flops', 1), "members[0]: unknown field 'flops'"),
    ('empty members', _set('members', []), 'members: must not be empty'),
    ('bad scaling rule', _set('scaling.depth', 'linear'), "scaling.depth: 'linear' is not one of append_last, ceil_spread"),
    ('bad channel rule', _set('scaling.channels', 'floor'), "scaling.channels: 'floor' is not one of ceil, round8"),
    ('scaling flag not a bool', _set('scaling.scale_head', 1), 'scaling.scale_head: expected true or false, got 1'),
    ('unknown scaling field', _set('scaling.width', 'ceil'), "scaling: unknown field 'width'"),
    ('wrong format tag', _set('format', 'scalenet-family/2'),
     "format: 'scalenet-family/2' is not 'scalenet-family/1'"),
    ('missing format tag', _delete('format'), 'format: missing (required)'),
    ('bad family name', _set('name', 'tiny net'), "name: 'tiny net' must be a lower-case Python identifier"),
    ('unknown cfg key', _set('cfg', {'licence': 'mit'}), "cfg: unknown field 'licence'"),
    ('bad cfg mean', _set('cfg', {'mean': [0.5, 0.5]}), 'cfg.mean: expected 3 numbers, got 2'),
    ('bad cfg crop', _set('cfg', {'crop_pct': 0}), 'cfg.crop_pct: 0 must be above 0.0'),
    ('extra block after ds with stride 2', _add_block(0, {'kernel': 3, 'stride': 2, 'out_channels': 8}),
     'base.stages[0].blocks[1].stride: 2 is not allowed'),
]


@pytest.mark.parametrize('mutate, message', [c[1:] for c in BAD_SPECS], ids=[c[0] for c in BAD_SPECS])
def test_bad_spec_gives_its_message(mutate, message):
    d = tiny_family_dict()
    mutate(d)
    with pytest.raises(SpecError) as e:
        FamilySpec.from_dict(d)
    assert message in str(e.value)


def test_the_tiny_family_itself_is_valid():
    # guards the table above: each case fails because of its mutation, not because the base is broken
    family = FamilySpec.from_dict(tiny_family_dict())
    assert [m.name for m in family.members] == ['tinynet_s0', 'tinynet_s1']


def test_not_an_object():
    with pytest.raises(SpecError, match=r'family: expected an object, got list'):
        FamilySpec.from_dict([1, 2])


@pytest.mark.parametrize('content, message', [
    ('{"format": ', 'not valid JSON'),
    ('\xff\xfe garbage', 'not valid JSON'),
    ('1' * 5000, 'not valid JSON'),                 # beyond Python's integer-string limit
    ('[' * 100000 + ']' * 100000, 'not valid JSON'),  # nesting beyond the recursion limit
    ('[]', 'family: expected an object, got list'),
], ids=['truncated', 'not-utf8', 'huge-integer', 'deep-nesting', 'a-list'])
def test_bad_file_gives_a_clear_error(tmp_path, content, message):
    path = tmp_path / 'family.json'
    path.write_bytes(content.encode('latin-1'))
    with pytest.raises(SpecError, match=message):
        load_family(path)


def test_missing_file(tmp_path):
    with pytest.raises(SpecError, match='no such file'):
        load_family(tmp_path / 'absent.json')


# ----------------------------------------------------------------------------------------------
# fuzz: whatever JSON arrives, the loader raises SpecError or returns a family, nothing else

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10 ** 30, 10 ** 30) | st.floats(allow_nan=True)
    | st.text(max_size=12) | st.sampled_from([3, 5, 7, 'ir', 'ds', 'ceil', FAMILY_FORMAT, 'relu', 0.25]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)


def _paths(d, prefix=()):
    """Every (container, key) position in a JSON value, for mutation."""
    out = []
    if isinstance(d, dict):
        for k, v in d.items():
            out.append(prefix + (k,))
            out += _paths(v, prefix + (k,))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            out.append(prefix + (i,))
            out += _paths(v, prefix + (i,))
    return out


_TINY_PATHS = _paths(tiny_family_dict())
_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _load_or_spec_error(d):
    try:
        family = FamilySpec.from_dict(d)
    except SpecError:
        return None
    # a family that validates also yields its members' networks
    for m in family.members:
        family.member_net(m.name)
    return family


@_FUZZ
@given(json_values)
def test_fuzz_arbitrary_json_raises_only_spec_error(value):
    _load_or_spec_error(value)


@_FUZZ
@given(st.lists(st.tuples(st.sampled_from(_TINY_PATHS), st.sampled_from(['set', 'delete']), json_values),
                min_size=1, max_size=3))
def test_fuzz_mutated_family_raises_only_spec_error(mutations):
    d = tiny_family_dict()
    for path, op, value in mutations:
        target = d
        try:
            for key in path[:-1]:
                target = target[key]
            if op == 'delete':
                del target[path[-1]]
            else:
                target[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed this position
    _load_or_spec_error(d)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_fuzz_file_loader_raises_only_spec_error(tmp_path, content):
    path = tmp_path / 'fuzz.json'
    path.write_bytes(content)
    try:
        load_family(path)
    except SpecError:
        pass


# ----------------------------------------------------------------------------------------------
# run-time registration


def test_register_family_at_run_time(tmp_path):
    path = tmp_path / 'family.json'
    path.write_text(json.dumps(tiny_family_dict('rtnet', ('rtnet_s0', 'rtnet_s1'))))
    assert register_family(path) == ['rtnet_s0', 'rtnet_s1']
    assert 'rtnet_s1' in timm.list_models('rtnet_*')
    model = timm.create_model('rtnet_s1', num_classes=5).eval()
    assert model.pretrained_cfg['input_size'] == (3, 48, 48)
    assert len(model.blocks[1]) == 3 and model.conv_stem.out_channels == 10
    assert model(torch.randn(1, 3, 48, 48)).shape == (1, 5)
    assert scalenet_models.get_family('rtnet_s0').name == 'rtnet'


def test_register_family_from_a_dict():
    names = register_family(tiny_family_dict('dictnet', ('dictnet_a',)))
    assert names == ['dictnet_a']
    assert timm.create_model('dictnet_a', num_classes=3)(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_register_family_refuses_a_timm_name():
    with pytest.raises(SpecError, match="'resnet18' is already a timm model; rename the member"):
        register_family(tiny_family_dict('clashnet', ('clashnet_ok', 'resnet18')))
    # nothing of the refused family was registered
    assert 'clashnet_ok' not in timm.list_models()
    assert timm.create_model('resnet18').__class__.__name__ == 'ResNet'


def test_register_family_refuses_another_familys_member():
    with pytest.raises(SpecError, match="'scalenet_s0' is already registered by family 'scalenet'"):
        register_family(tiny_family_dict('thief', ('scalenet_s0',)), overwrite=True)


def test_register_family_overwrite_semantics():
    register_family(tiny_family_dict('ownet', ('ownet_a', 'ownet_b')))
    with pytest.raises(SpecError, match='already registered; pass overwrite=True'):
        register_family(tiny_family_dict('ownet', ('ownet_a', 'ownet_b')))
    changed = tiny_family_dict('ownet', ('ownet_a',))
    changed['base']['head_channels'] = 48
    assert register_family(changed, overwrite=True) == ['ownet_a']
    assert timm.create_model('ownet_a').num_features == 48
    # a member dropped by the new version is gone, and its name can be reused by another family
    with pytest.raises(RuntimeError, match='ownet_b'):
        timm.create_model('ownet_b')
    assert register_family(tiny_family_dict('othernet', ('ownet_b',))) == ['ownet_b']


def test_register_family_name_clash_without_overwrite():
    with pytest.raises(SpecError, match="family 'scalenet' is already registered"):
        register_family(tiny_family_dict('scalenet', ('brand_new_member',)))


def test_the_documented_example_is_valid():
    """docs/zoo.md's example family loads, scales as described, and builds."""
    text = (Path(__file__).resolve().parents[1] / 'docs' / 'zoo.md').read_text()
    example = json.loads(text.split('```json\n', 1)[1].split('```', 1)[0])
    family = FamilySpec.from_dict(example)
    assert family.member_net('tinynet_s1').depths == (2, 3, 2)
    from scalenet_models import build_network
    model = build_network(family.member_net('tinynet_s0'), num_classes=3).eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_block_activation_override_is_built():
    d = tiny_family_dict('actnet', ('actnet_a',))
    d['base']['stages'][1]['blocks'][0]['act'] = 'gelu'
    d['base']['stages'][1]['blocks'][1]['act'] = 'relu'
    from scalenet_models import build_network
    model = build_network(FamilySpec.from_dict(d).member_net('actnet_a'))
    assert isinstance(model.blocks[1][0].bn1.act, timm.layers.get_act_layer('gelu'))  # timm's GELU
    assert isinstance(model.blocks[1][1].bn1.act, torch.nn.ReLU)
    assert isinstance(model.blocks[2][0].bn1.act, torch.nn.Hardswish)
