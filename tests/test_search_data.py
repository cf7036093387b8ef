"""Search data: the synthetic dataset, seeded stratified splits, step-indexed batches, clear errors."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from search.data import (Augmented, DataError, StepBatchSampler, SyntheticShapes, build_search_data, image_folder,
                         resize_batch, stratified_split)


def test_synthetic_images_are_deterministic_balanced_and_class_dependent():
    a, b = SyntheticShapes(60, 6, 24, seed=1), SyntheticShapes(60, 6, 24, seed=1)
    assert torch.equal(a[7][0], b[7][0]) and a[7][1] == 1
    assert not torch.equal(a[7][0], SyntheticShapes(60, 6, 24, seed=2)[7][0])
    assert Counter(a.targets) == {c: 10 for c in range(6)}
    # the class is visible in the images: the dominant orientation of the gradient differs between classes
    def orientation(i):
        g = a.image(i).mean(-1)
        gy, gx = np.gradient(g)
        return np.angle(np.sum((gx + 1j * gy) ** 2))
    per_class = [np.mean([orientation(i) for i in range(c, 60, 6)]) for c in (0, 3)]
    assert abs(per_class[0] - per_class[1]) > 0.5


def test_stratified_split_is_seeded_disjoint_and_keeps_class_shares():
    targets = [i % 4 for i in range(400)]
    tr, va = stratified_split(targets, 0.1, seed=0)
    assert set(tr).isdisjoint(va) and sorted(tr + va) == list(range(400))
    assert Counter(targets[i] for i in va) == {c: 10 for c in range(4)}
    assert (tr, va) == stratified_split(targets, 0.1, seed=0)
    assert va != stratified_split(targets, 0.1, seed=1)[1]
    with pytest.raises(DataError, match='val_fraction'):
        stratified_split(targets, 1.5, 0)


def test_step_batches_depend_only_on_the_step_and_split_across_processes():
    idx = list(range(100, 164))
    full = list(StepBatchSampler(idx, 8, seed=3, start=0, total=20))
    assert list(StepBatchSampler(idx, 8, seed=3, start=12, total=20)) == full[12:]    # resume = the same tail
    epoch = [i for batch in full[:8] for i, _ in batch]                                # 8 steps = one epoch
    assert sorted(epoch) == idx and [s for _, s in full[5]] == [5] * 8
    ranks = [StepBatchSampler(idx, 4, seed=3, start=0, total=3, rank=r, world_size=2).batch(1) for r in (0, 1)]
    assert [i for i, _ in ranks[0] + ranks[1]] == [i for i, _ in full[1]]             # two halves of the batch
    with pytest.raises(DataError, match='lower --batch-size'):
        StepBatchSampler(idx, 100, 0, 0, 1)


def _folder(root, classes=('cat', 'dog'), n=3):
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            pixels = np.random.default_rng(i).integers(0, 255, (24, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / c / f'{i}.png')
    return root


def test_image_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match='no such folder.*--data-dir'):
        image_folder(tmp_path / 'missing')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(DataError, match='empty dataset folder'):
        image_folder(tmp_path / 'empty')
    with pytest.raises(DataError, match='only one class'):
        image_folder(_folder(tmp_path / 'one', classes=('cat',)))
    (tmp_path / 'noimg' / 'a').mkdir(parents=True)
    (tmp_path / 'noimg' / 'b').mkdir(parents=True)
    with pytest.raises(DataError, match='has no images'):
        image_folder(tmp_path / 'noimg')
    # a dataset root holding train/ (and val/) is read from train/
    _folder(tmp_path / 'ds' / 'train')
    assert image_folder(tmp_path / 'ds').classes == ['cat', 'dog']


def test_a_corrupt_image_is_named(tmp_path):
    root = _folder(tmp_path / 'data')
    (root / 'dog' / '1.png').write_bytes(b'not an image at all')
    data = build_search_data('folder', str(root), load_size=16, val_fraction=0.34, seed=0)
    bad = data.train.base.samples.index((str(root / 'dog' / '1.png'), 1))
    with pytest.raises(DataError, match=r'dog/1\.png: cannot read this image.*delete or replace'):
        data.train[(bad, 0)]


def test_augmentation_is_seeded_by_index_and_step(tmp_path):
    data = build_search_data('folder', str(_folder(tmp_path / 'd', n=4)), load_size=16, val_fraction=0.25, seed=0)
    x1, x2, x3 = data.train[(2, 5)][0], data.train[(2, 5)][0], data.train[(2, 6)][0]
    assert x1.shape == (3, 16, 16) and torch.equal(x1, x2)
    state = torch.random.get_rng_state()
    data.train[(2, 7)]
    assert torch.equal(state, torch.random.get_rng_state())   # global RNG untouched
    assert isinstance(data.train, Augmented) and not torch.equal(x1, x3)


def test_unknown_dataset_and_missing_dir_are_clear(tmp_path):
    with pytest.raises(DataError, match='needs --data-dir'):
        build_search_data('cifar10')
    with pytest.raises(DataError, match="unknown 'imagenet21k'"):
        build_search_data('imagenet21k', str(tmp_path))


def test_resize_batch():
    x = torch.randn(2, 3, 32, 32)
    assert resize_batch(x, 32) is x and resize_batch(x, 20).shape == (2, 3, 20, 20)
