"""Candidate evaluation: BN recalibration + held-out top-1, equal to the exported model's; cached, never twice."""
from __future__ import annotations

import random

import pytest
import torch

from scalenet_models import build_network
from search.cli import demo_space
from search.data import build_search_data, resize_batch
from search.evaluation import EvalSettings, Evaluator, weights_fingerprint
from search.space import load_space
from search.supernet import SuperNet

TINY_RES = [[16], [16, 18], [20, 22], [24, 26]]


@pytest.fixture(scope='module')
def setup():
    torch.manual_seed(0)
    space = load_space(demo_space('scalenet', width_scale=0.125, resolutions=TINY_RES, max_depth=2))
    data = build_search_data('synthetic', load_size=space.resolution_max, val_fraction=0.2, seed=0,
                             synthetic_samples=120, synthetic_classes=4)
    net = SuperNet(space, num_classes=4)
    rng = random.Random(0)
    cands = [space.sample(rng) for _ in range(3)]
    return space, data, net, cands


SETTINGS = EvalSettings(calib_batches=2, calib_batch_size=16, val_images=None, batch_size=12, seed=0)


def test_held_out_and_calibration_images_come_from_disjoint_parts_of_train(setup):
    _, data, net, _ = setup
    ev = Evaluator(net, data, SETTINGS)
    assert set(ev.calib_indices) <= set(data.train_indices)
    assert set(ev.val_indices) == set(data.val_indices) and set(ev.val_indices).isdisjoint(data.train_indices)
    assert len(ev.calib_indices) == 32


def test_top1_equals_the_exported_model_after_recalibration(setup):
    space, data, net, cands = setup
    ev = Evaluator(net, data, SETTINGS)
    for cand in cands[:2]:
        top1 = ev.top1(cand)
        model = build_network(cand.net, num_classes=4)
        model.load_state_dict(net.export_state_dict(cand))
        model.eval()
        xs = torch.stack([data.plain[i][0] for i in data.val_indices])
        ys = torch.tensor([data.plain[i][1] for i in data.val_indices])
        x = resize_batch(xs, cand.resolution)
        with torch.no_grad():
            logits = model(x)
            net.eval()
            assert (net(x) - logits).abs().max() < 1e-4     # the recalibrated statistics went into the export
        pred = logits.argmax(1)
        assert top1 == pytest.approx(100.0 * (pred == ys).float().mean().item())


def test_recalibration_replaces_the_running_statistics(setup):
    _, data, net, cands = setup
    ev = Evaluator(net, data, SETTINGS)
    bn = net.dynamic_bns()[0]
    bn.running_mean.fill_(123.0)
    ev.recalibrate(cands[0])
    assert bn.running_mean.abs().max() < 50 and bn.momentum is None
    first = bn.running_mean.clone()
    ev.recalibrate(cands[0])
    assert torch.equal(first, bn.running_mean)          # a reset, cumulative average: same input, same stats


def test_results_are_cached_in_memory_and_on_disk_never_evaluated_twice(setup, tmp_path):
    _, data, net, cands = setup
    path = tmp_path / 'cache.json'
    ev = Evaluator(net, data, SETTINGS, cache_path=path)
    a = ev.evaluate([cands[0], cands[1], cands[0]])
    assert ev.num_evaluated == 2 and a[0] == a[2]
    assert ev.evaluate(cands[:2]) == a[:2] and ev.num_evaluated == 2
    again = Evaluator(net, data, SETTINGS, cache_path=path)     # a restarted search
    assert again.evaluate(cands[:2]) == a[:2] and again.num_evaluated == 0
    other = Evaluator(net, data, EvalSettings(calib_batches=1, calib_batch_size=16, batch_size=12), cache_path=path)
    other.evaluate(cands[:1])
    assert other.num_evaluated == 1                              # other settings: a different key


def test_the_cache_key_follows_the_supernet_weights(setup):
    _, data, net, _ = setup
    before = weights_fingerprint(net)
    ctx = Evaluator(net, data, SETTINGS).context
    p = next(net.parameters())
    with torch.no_grad():
        p.add_(1e-3)
    try:
        assert weights_fingerprint(net) != before and Evaluator(net, data, SETTINGS).context != ctx
    finally:
        with torch.no_grad():
            p.sub_(1e-3)
