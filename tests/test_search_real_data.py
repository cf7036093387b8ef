"""A short supernet run on the CIFAR-10 JPEG copy reaches held-out accuracy well above chance.

Setup: the demo space (ScaleNet at width 0.25, one block per base stage, 24-32 px), 4,500 training
images of a 5,000-image stratified subset, 300 hierarchically sampled SGD updates of batch 64 at
lr 0.05, then four seeded random candidates evaluated (BN recalibrated) on the 500 held-out images.
Measured on a 2-core CPU: 20.6-25.6% per candidate over two runs (chance: 10%; one candidate guessing
at random scores above 14% on 500 images with probability below 0.1%); 3-4.5 minutes.
"""
from __future__ import annotations

import json
import random

from scalenet_models.spec import write_json_atomic
from search.cli import demo_space
from search.data import build_search_data
from search.evaluation import EvalSettings, Evaluator
from search.training import TrainConfig, load_supernet, train_supernet


def test_cifar10_supernet_learns(cifar10_dir, tmp_path):
    space_file = tmp_path / 'space.json'
    write_json_atomic(space_file, demo_space('scalenet', width_scale=0.25,
                                             resolutions=[[24], [24, 28], [28, 32], [32]], max_depth=1))
    cfg = TrainConfig(space=str(space_file), out=str(tmp_path / 'run'), dataset='folder', data_dir=str(cifar10_dir),
                      max_images=5000, val_fraction=0.1, steps=300, batch_size=64, lr=0.05, warmup_steps=30,
                      weight_decay=4e-5, checkpoint_every=0, log_with='none', eval_candidates=0, seed=0, threads=2)
    summary = train_supernet(cfg)
    assert summary['num_classes'] == 10
    net, space, _ = load_supernet(tmp_path / 'run')
    data = build_search_data('folder', str(cifar10_dir), 32, 0.1, 0, max_images=5000)
    assert len(data.val_indices) == 500 and set(data.val_indices).isdisjoint(data.train_indices)
    ev = Evaluator(net, data, EvalSettings(calib_batches=4, calib_batch_size=64, batch_size=250))
    rng = random.Random(1)
    top1 = ev.evaluate([space.sample(rng) for _ in range(4)])
    print(json.dumps({'held_out_top1': top1, 'train': summary}))
    assert min(top1) > 15.0 and sum(top1) / len(top1) > 18.0, top1      # chance is 10%
