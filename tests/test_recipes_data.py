"""Datasets of the recipes: folder detection, torchvision fakes, carved splits, seeded augmentation, errors.

Also holds the tiny fixtures (image folders, a tiny family) that the other recipes tests import.
"""
from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from recipes.data import (DatasetError, TransformedDataset, build_splits, is_folder_dataset, load_raw_splits,
                          stratified_split)

TINY_FAMILY = {
    'format': 'scalenet-family/1', 'name': 'recipetiny',
    'cfg': {'interpolation': 'bilinear', 'crop_pct': 1.0},
    'base': {'stem_channels': 8, 'head_channels': 32, 'stages': [
        {'blocks': [{'type': 'ds', 'kernel': 3, 'out_channels': 8, 'se': 0.25}]},
        {'blocks': [{'kernel': 3, 'stride': 2, 'expansion': 2, 'out_channels': 16, 'se': 0.25}]},
        {'blocks': [{'kernel': 3, 'stride': 2, 'expansion': 2, 'out_channels': 24},
                    {'kernel': 3, 'expansion': 2, 'out_channels': 24}]}]},
    'members': [{'name': 'recipetiny_s0', 'resolution': 32}],
}


def write_family(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(TINY_FAMILY))
    return path


def write_images(folder: Path, classes: int, per_class: int, size: int = 24, seed: int = 0) -> None:
    """``per_class`` small JPEGs per class, each class with its own mean colour (so it is learnable)."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        d = folder / f'class{c}'
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = np.clip(rng.normal(40 + 80 * c, 25, (size, size, 3)), 0, 255).astype('uint8')
            Image.fromarray(arr).save(d / f'{i:04d}.jpg')


def write_folder_dataset(root: Path, classes: int = 3, train: int = 12, val: int = 4, val_name: str = 'val') -> Path:
    write_images(root / 'train', classes, train, seed=0)
    if val:
        write_images(root / val_name, classes, val, seed=1)
    return root


def _cfg(root, **kw):
    cfg = dict(data_dir=str(root), dataset='auto', train_split='train', val_split=None, val_fraction=0.0,
               train_subset=0, val_subset=0, seed=0)
    cfg.update(kw)
    return cfg


def test_folder_dataset_with_test_split_is_recognised(tmp_path):
    root = write_folder_dataset(tmp_path / 'd', val_name='test')
    assert is_folder_dataset(root)
    splits = build_splits(_cfg(root), None, None)
    assert (len(splits.train), len(splits.val), splits.num_classes) == (36, 12, 3)
    assert splits.classes == ['class0', 'class1', 'class2']
    assert 'test' in splits.description


def test_carved_validation_split_is_seeded_stratified_and_disjoint(tmp_path):
    root = write_folder_dataset(tmp_path / 'd', classes=4, train=10, val=0)
    with pytest.raises(DatasetError, match='--val-fraction'):
        build_splits(_cfg(root), None, None)
    a = build_splits(_cfg(root, val_fraction=0.2), None, None)
    b = build_splits(_cfg(root, val_fraction=0.2), None, None)
    assert a.train.indices == b.train.indices and a.val.indices == b.val.indices
    assert not set(a.train.indices) & set(a.val.indices)
    assert len(a.train) + len(a.val) == 40
    val_targets = [a.val.base.targets[i] for i in a.val.indices]
    assert [val_targets.count(c) for c in range(4)] == [2, 2, 2, 2]
    c = build_splits(_cfg(root, val_fraction=0.2, seed=1), None, None)
    assert c.val.indices != a.val.indices


def test_stratified_split_keeps_every_class_on_both_sides():
    targets = [0] * 3 + [1] * 50 + [2] * 2
    first, second = stratified_split(targets, 0.1, seed=0)
    assert sorted(first + second) == list(range(len(targets)))
    for cls in range(3):
        assert any(targets[i] == cls for i in first) and any(targets[i] == cls for i in second)


def test_subsets_are_stratified(tmp_path):
    root = write_folder_dataset(tmp_path / 'd', classes=3, train=10, val=4)
    s = build_splits(_cfg(root, train_subset=9, val_subset=6), None, None)
    assert len(s.train) == 9 and len(s.val) == 6
    assert sorted(s.train.base.targets[i] for i in s.train.indices) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


@pytest.mark.parametrize('setup, match', [
    (lambda p: None, 'no such folder'),
    (lambda p: (p / 'train').mkdir(parents=True) or (p / 'val').mkdir(), 'no class folders with images'),
    (lambda p: write_images(p, 2, 2), 'no train/ split folder'),
])
def test_missing_or_empty_dataset_names_path_and_layout(tmp_path, setup, match):
    root = tmp_path / 'data'
    setup(root)
    with pytest.raises(DatasetError, match=match) as e:
        build_splits(_cfg(root), None, None)
    assert str(root) in str(e.value) and 'Expected layout' in str(e.value)


def test_corrupt_image_error_names_the_file(tmp_path):
    root = write_folder_dataset(tmp_path / 'd')
    bad = root / 'train' / 'class1' / '0003.jpg'
    bad.write_bytes(b'not a jpeg at all')
    splits = build_splits(_cfg(root), None, None)
    index = splits.train.indices.index([s[0] for s in splits.train.base.samples].index(str(bad)))
    with pytest.raises(DatasetError, match='0003.jpg: cannot read this image'):
        splits.train[index]


def test_no_data_dir_is_a_clear_error():
    with pytest.raises(DatasetError, match='--data-dir'):
        load_raw_splits({'data_dir': None})


def test_unknown_dataset_kind(tmp_path):
    with pytest.raises(DatasetError, match='unknown'):
        load_raw_splits({'data_dir': str(tmp_path), 'dataset': 'imagenet22k'})


def test_fake_food101_layout_loads_through_torchvision(tmp_path):
    base = tmp_path / 'food-101'
    meta = {'train': {}, 'test': {}}
    for cls in ('apple_pie', 'ramen'):
        d = base / 'images' / cls
        d.mkdir(parents=True, exist_ok=True)
        for i in range(5):
            Image.fromarray(np.full((20, 20, 3), 30 * i, np.uint8)).save(d / f'{i}.jpg')
        meta['train'][cls] = [f'{cls}/{i}' for i in range(3)]
        meta['test'][cls] = [f'{cls}/{i}' for i in range(3, 5)]
    (base / 'meta').mkdir()
    for split in ('train', 'test'):
        (base / 'meta' / f'{split}.json').write_text(json.dumps(meta[split]))
    for root in (tmp_path, base):  # the parent or the food-101 folder itself
        s = build_splits(_cfg(root, dataset='food101'), None, None)
        assert (len(s.train), len(s.val), s.num_classes) == (6, 4, 2)
        img, target = s.val[3]
        assert img.size == (20, 20) and target == 1
    with pytest.raises(DatasetError, match='food-101/meta'):
        build_splits(_cfg(tmp_path / 'nothing-here', dataset='food101'), None, None)


def _write_fake_cifar10(root: Path, n: int = 6) -> None:
    d = root / 'cifar-10-batches-py'
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
        with open(d / name, 'wb') as f:
            pickle.dump({'data': rng.integers(0, 255, (n, 3072), dtype=np.uint8),
                         'labels': [i % 10 for i in range(n)]}, f)
    with open(d / 'batches.meta', 'wb') as f:
        pickle.dump({'label_names': [f'c{i}' for i in range(10)]}, f)


def test_fake_cifar10_loads_through_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets as tvd
    _write_fake_cifar10(tmp_path)
    with pytest.raises(DatasetError, match='cifar-10-batches-py'):  # real integrity check refuses the fake
        build_splits(_cfg(tmp_path, dataset='cifar10'), None, None)
    # skip the MD5 checks, as torchvision's own tests do
    monkeypatch.setattr(tvd.CIFAR10, '_check_integrity', lambda self: True)
    monkeypatch.setattr('torchvision.datasets.cifar.check_integrity', lambda *a, **k: True)
    s = build_splits(_cfg(tmp_path, dataset='cifar10'), None, None)
    assert (len(s.train), len(s.val), s.num_classes) == (30, 6, 10)
    assert s.train[0][0].size == (32, 32)


def test_timm_create_dataset_names(tmp_path, monkeypatch):
    _write_fake_cifar10(tmp_path)
    monkeypatch.setattr('torchvision.datasets.CIFAR10._check_integrity', lambda self: True)
    monkeypatch.setattr('torchvision.datasets.cifar.check_integrity', lambda *a, **k: True)
    s = build_splits(_cfg(tmp_path, dataset='torch/cifar10'), None, None)
    assert (len(s.train), len(s.val), s.num_classes) == (30, 6, 10)
    assert s.description.startswith('timm torch/cifar10')


def test_cifar_recipe_uses_a_folder_copy_when_given_one(tmp_path):
    root = write_folder_dataset(tmp_path / 'cifar10', classes=2, val_name='test')
    s = build_splits(_cfg(root, dataset='cifar10'), None, None)
    assert s.description.startswith('folder') and s.num_classes == 2


def test_augmentation_is_seeded_per_sample_and_epoch_and_leaves_global_rng_alone(tmp_path):
    from timm.data import create_transform
    root = write_folder_dataset(tmp_path / 'd')
    tf = create_transform(32, is_training=True, auto_augment='rand-m9-mstd0.5', re_prob=0.5)
    s = build_splits(_cfg(root), tf, tf)
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    expected = (torch.rand(1), random.random(), np.random.rand())
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    a0, a0_again = s.train[5][0], s.train[5][0]
    assert (torch.rand(1), random.random(), np.random.rand()) == expected
    assert torch.equal(a0, a0_again)
    assert not torch.equal(a0, s.train[6][0])
    s.train.set_epoch(1)
    assert not torch.equal(a0, s.train[5][0])
    unseeded = TransformedDataset(s.train.base, tf, s.train.indices)
    assert not all(torch.equal(unseeded[5][0], unseeded[5][0]) for _ in range(3))


def test_real_cifar10_jpeg_copy_is_a_folder_dataset(cifar10_dir):
    s = build_splits(_cfg(cifar10_dir), None, None)
    assert (len(s.train), len(s.val), s.num_classes) == (50000, 10000, 10)
    assert s.train[0][0].size == (32, 32)
