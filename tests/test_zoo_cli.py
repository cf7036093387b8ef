"""``python -m scalenet_models``: the zoo listing, as a table and as JSON."""
from __future__ import annotations

import json

import pytest

import scalenet_models
from scalenet_models import complexity, member_net
from scalenet_models.__main__ import main


def test_table_lists_every_model_with_resolution_macs_and_params(capsys):
    assert main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ['model', 'res', 'MACs', 'params', 'weights']
    rows = {line.split()[0]: line for line in lines[1:]}
    assert sorted(rows) == sorted(scalenet_models.ZOO)
    for name, line in rows.items():
        net, member = member_net(name)
        c = complexity(net, member.resolution)
        fields = line.split()
        assert int(fields[1]) == member.resolution
        assert fields[2] == f'{c.macs / 1e9:.3f}G' and fields[3] == f'{c.params / 1e6:.3f}M'
        assert 'none published' in line
    assert rows['scalenet_s0'].split()[1:4] == ['224', '0.355G', '6.687M']
    assert rows['scarlet_a'].split()[1:4] == ['224', '0.365G', '6.708M']
    assert rows['scalenet_s5'].split()[1:4] == ['533', '10.899G', '38.254M']
    assert '(reconstruction)' in rows['scarlet_a2'] and '(reconstruction)' in rows['scarlet_a4']
    assert '(reconstruction)' not in rows['scarlet_a']


def test_json_output(capsys):
    assert main(['--json']) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r['model'] for r in rows] == list(scalenet_models.ZOO)
    by_name = {r['model']: r for r in rows}
    net, _ = member_net('scarlet_b')
    assert by_name['scarlet_b'] == dict(model='scarlet_b', family='scarlet_b', resolution=224,
                                        macs=complexity(net, 224).macs, params=6_531_556, weights=[],
                                        reconstruction=False)
    assert round(by_name['scarlet_b']['macs'] / 1e5) == 3269
    assert by_name['scarlet_a4']['reconstruction'] is True
    assert by_name['scalenet_s3']['family'] == 'scalenet' and by_name['scalenet_s3']['resolution'] == 354


def test_family_filter(capsys):
    assert main(['--family', 'scalenet', '--json']) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r['model'] for r in rows] == [f'scalenet_s{i}' for i in range(6)]


def test_unknown_family_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(['--family', 'nosuchnet'])
    assert e.value.code == 2
    assert "unknown family or model 'nosuchnet'" in capsys.readouterr().err


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(['--help'])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith('usage: python -m scalenet_models')
    assert '--json' in out and '--family' in out
