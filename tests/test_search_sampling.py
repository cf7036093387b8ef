"""Samplers: seeded reproducibility, hierarchical stage frequencies, sandwich extremes, strict fairness."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from search.sampling import fair_paths, hierarchical_sample, largest, sandwich_samples, smallest
from search.space import SpaceError, load_space


@pytest.mark.parametrize('name', ['scalenet', 'scarlet'])
def test_same_seed_same_sequence(name):
    sp = load_space(name)
    keys = lambda seed: [hierarchical_sample(sp, r).key() for r in [random.Random(seed)] for _ in range(30)]
    assert keys(7) == keys(7)
    assert keys(7) != keys(8)
    fair = lambda seed: [c.key() for c in fair_paths(sp, random.Random(seed))] if name == 'scarlet' else None
    assert fair(3) == fair(3)


def test_hierarchical_stage_frequencies_follow_width_options():
    sp = load_space('scalenet')
    assert sp.stage_probs == pytest.approx([1 / 17, 4 / 17, 5 / 17, 7 / 17])
    rng = random.Random(0)
    n = 34000
    counts = Counter()
    for _ in range(n):
        s = sp.sample_scaling(rng)
        stage = sp.stage_of(s)
        d, w, r = sp.stage_options(stage)
        assert s.depth in d and s.width in w and s.resolution in r
        counts[stage] += 1
    for stage, p in enumerate([1 / 17, 4 / 17, 5 / 17, 7 / 17]):
        # 4 standard deviations of a binomial proportion at n = 34000 is under 0.011
        assert abs(counts[stage] / n - p) < 0.011, (stage, counts[stage] / n, p)
    # within a stage, d, w and r are uniform over its lists
    within = Counter(sp.sample_scaling(rng, stage=3).width for _ in range(7000))
    assert set(within) == set(sp.stage_options(3)[1]) == {1.4, 1.44, 1.48, 1.52, 1.56, 1.6, 1.64}
    assert max(within.values()) - min(within.values()) < 200
    with pytest.raises(SpaceError, match='not a scaling stage'):
        sp.sample_scaling(rng, stage=4)


def test_hierarchical_candidates_cover_base_depths_and_kernels():
    sp = load_space('scalenet')
    rng = random.Random(1)
    depths, kernels, resolutions = Counter(), Counter(), set()
    for _ in range(600):
        base = sp.sample_base(rng)
        depths.update(base.depths[1:6])
        kernels.update(k for ks in base.kernels for k in ks)
        cand = hierarchical_sample(sp, rng)
        resolutions.add(cand.resolution)
        big = sp.max_net().depths
        assert all(1 <= n <= m for n, m in zip(cand.net.depths, big))
    assert set(depths) == {1, 2, 3, 4} and set(kernels) == {3, 5, 7}
    assert min(kernels.values()) > 0.3 * sum(kernels.values()) - 150
    assert resolutions == {224, 240, 256, 272, 288, 304, 320, 336, 354}


@pytest.mark.parametrize('name', ['scalenet', 'scarlet'])
def test_sandwich_is_smallest_largest_random(name):
    sp = load_space(name)
    rng = random.Random(2)
    low, high, mid = sandwich_samples(sp, rng)
    assert low == smallest(sp) and high == largest(sp)
    macs = [sp.macs(hierarchical_sample(sp, rng)) for _ in range(150)] + [sp.macs(mid)]
    assert sp.macs(low) <= min(macs) and sp.macs(high) >= max(macs)
    if name == 'scalenet':
        assert low.resolution == 224 and high.resolution == 354
        assert high.net.depths == sp.max_net().depths


def test_fair_paths_train_every_choice_once():
    sp = load_space('scarlet')
    rng = random.Random(3)
    for _ in range(5):
        paths = fair_paths(sp, rng)
        assert len(paths) == 13
        genes = [sp.candidate_to_genes(p) for p in paths]
        assert all(p.resolution == sp.resolution for p in paths)
        for i in range(sp.num_genes):
            counts = Counter(g[i] for g in genes)
            n = len(sp.layer_choices(i))
            assert set(counts) == set(range(n))
            if n == 13:
                assert set(counts.values()) == {1}
            else:
                assert sorted(counts.values()) == [1] * 11 + [2]


def test_fair_paths_need_a_layerwise_space():
    with pytest.raises(SpaceError, match='layerwise'):
        fair_paths(load_space('scalenet'), random.Random(0))
