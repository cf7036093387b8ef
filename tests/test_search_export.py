"""check_export: the largest supernet-vs-export logit difference, and that it catches a broken export."""
from __future__ import annotations

import pytest

from search.export import check_export
from search.space import load_space
from search.supernet import SuperNet


pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.mark.parametrize('name', ['scalenet', 'scarlet'])
def test_check_export_is_exact(name):
    assert check_export(name, samples=4, seed=0, resolution=32, width_scale=0.25) <= 1e-5


def test_check_export_is_reproducible_and_uses_candidate_resolution():
    a = check_export('scarlet', samples=2, seed=3, width_scale=0.125)
    assert a == check_export('scarlet', samples=2, seed=3, width_scale=0.125) and a <= 1e-5


@pytest.mark.parametrize('key', ['blocks.3.1.conv_pwl.weight', 'bn2.running_var', 'blocks.2.0.se.conv_expand.bias'])
def test_check_export_catches_a_wrong_weight(monkeypatch, key):
    original = SuperNet.export_state_dict

    def broken(self, cand):
        sd = original(self, cand)
        if key in sd:
            sd[key] = sd[key] * 1.5 if 'running' in key else sd[key] + 0.5
        return sd

    monkeypatch.setattr(SuperNet, 'export_state_dict', broken)
    space = load_space('scarlet', width_scale=0.25)
    # every layer with SE, expansion 6 and kernel 7: the keys above exist in every candidate
    largest_ops = [space.layer_choices(i).index('MB6_K7_SE') for i in range(space.num_genes)]
    monkeypatch.setattr(type(space), 'sample', lambda self, rng: self.genes_to_candidate(largest_ops))
    assert check_export(space, samples=1, seed=0, resolution=32) > 1e-3


def test_check_export_of_a_given_supernet_and_bad_arguments():
    space = load_space('scarlet', width_scale=0.25)
    net = SuperNet(space, num_classes=10)
    assert check_export(space, samples=2, resolution=32, supernet=net) <= 1e-5
    with pytest.raises(ValueError, match='built for space'):
        check_export(load_space('scalenet', width_scale=0.25), samples=1, supernet=net)
    with pytest.raises(ValueError, match='samples'):
        check_export(space, samples=0)
