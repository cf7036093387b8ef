"""Datasets for the recipes: folders, torchvision CIFAR / Food-101 and timm ``create_dataset`` names.

Augmentation is seeded per (seed, epoch, sample), so the images a run sees do not depend on the number of
workers or processes, and a resumed run sees exactly what an uninterrupted one would.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

FOLDER_LAYOUT = 'DIR/train/<class>/*.jpg and DIR/val/<class>/*.jpg (or DIR/test/...)'
LAYOUTS = {
    'cifar10': 'DIR/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta} (torchvision CIFAR10), '
               'or ' + FOLDER_LAYOUT,
    'cifar100': 'DIR/cifar-100-python/{train,test,meta} (torchvision CIFAR100), or ' + FOLDER_LAYOUT,
    'food101': 'DIR/food-101/meta/{train,test}.json and DIR/food-101/images/<class>/<id>.jpg '
               '(torchvision Food101; DIR may also be the food-101 folder), or ' + FOLDER_LAYOUT,
    'folder': FOLDER_LAYOUT,
}
VAL_SPLITS = ('val', 'validation', 'test')
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')


class DatasetError(RuntimeError):
    """A dataset that is missing, empty or unreadable; the message has the path and the expected layout."""


@dataclass
class Splits:
    train: Dataset
    val: Dataset
    num_classes: int
    classes: list[str]
    description: str


def _layout_error(kind: str, path: Path, problem: str) -> DatasetError:
    return DatasetError(f'{path}: {problem}. Expected layout for dataset {kind!r}: {LAYOUTS.get(kind, FOLDER_LAYOUT)}')


def is_folder_dataset(path: Path) -> bool:
    return (path / 'train').is_dir() and any((path / s).is_dir() for s in VAL_SPLITS)


def _image_folder(path: Path, kind: str):
    from torchvision.datasets import ImageFolder
    if not path.is_dir():
        raise _layout_error(kind, path, 'no such folder')
    try:
        ds = ImageFolder(str(path))
    except (FileNotFoundError, RuntimeError) as e:
        raise _layout_error(kind, path, f'no class folders with images ({e})') from None
    if len(ds) == 0:
        raise _layout_error(kind, path, 'no images')
    return ds


def _samples_paths(ds) -> list[str] | None:
    samples = getattr(ds, 'samples', None) or getattr(ds, 'imgs', None)
    if samples is not None:
        return [s[0] for s in samples]
    files = getattr(ds, '_image_files', None)  # torchvision Food101
    return [str(f) for f in files] if files is not None else None


def targets_of(ds) -> list[int]:
    """Class index of every sample without decoding images."""
    for attr in ('targets', '_labels'):
        t = getattr(ds, attr, None)
        if t is not None:
            return [int(x) for x in t]
    reader = getattr(ds, 'reader', None)  # timm ImageDataset
    if reader is not None and hasattr(reader, 'samples'):
        return [int(s[1]) for s in reader.samples]
    return [int(ds[i][1]) for i in range(len(ds))]


def classes_of(ds, num: int) -> list[str]:
    classes = getattr(ds, 'classes', None)
    if classes is None and getattr(ds, 'reader', None) is not None:
        class_to_idx = getattr(ds.reader, 'class_to_idx', None)
        if class_to_idx:
            classes = sorted(class_to_idx, key=class_to_idx.get)
    return list(classes) if classes is not None else [str(i) for i in range(num)]


def _torchvision(kind: str, root: Path, train: bool):
    import torchvision.datasets as tvd
    if kind == 'food101':
        base = root.parent if (root / 'meta').is_dir() and root.name == 'food-101' else root
        make = lambda: tvd.Food101(str(base), split='train' if train else 'test', download=False)  # noqa: E731
    else:
        cls = tvd.CIFAR10 if kind == 'cifar10' else tvd.CIFAR100
        make = lambda: cls(str(root), train=train, download=False)  # noqa: E731
    try:
        ds = make()
    except (RuntimeError, FileNotFoundError, OSError, ValueError, KeyError) as e:
        raise _layout_error(kind, root, f'not found or corrupt ({e})') from None
    if len(ds) == 0:
        raise _layout_error(kind, root, 'no images')
    return ds


def _timm_dataset(name: str, root: Path | None, split: str, train: bool):
    from timm.data import create_dataset
    try:
        ds = create_dataset(name, root=str(root) if root else None, split=split, is_training=train, download=False)
    except Exception as e:  # timm raises many kinds; all mean "cannot build this split"
        raise DatasetError(f'{root}: timm create_dataset({name!r}, split={split!r}) failed: {e}') from None
    if len(ds) == 0:
        raise DatasetError(f'{root}: timm dataset {name!r} split {split!r} is empty')
    return ds


def _val_split_name(root: Path, requested: str | None) -> str | None:
    if requested:
        return requested
    return next((s for s in VAL_SPLITS if (root / s).is_dir()), None)


def load_raw_splits(cfg: dict) -> tuple[object, object | None, str]:
    """Untransformed train and validation datasets (validation ``None`` when the data has none)."""
    if not cfg.get('data_dir'):
        raise DatasetError('data_dir is not set: pass --data-dir DIR (a folder with train/ and val/ or test/ '
                           'class folders, or a torchvision CIFAR/Food-101 root)')
    root = Path(cfg['data_dir']).expanduser()
    kind = cfg.get('dataset', 'auto')
    if not root.exists():
        raise _layout_error(kind if kind in LAYOUTS else 'folder', root, 'no such folder')
    train_split = cfg.get('train_split', 'train')
    if kind in ('auto', 'folder') or (kind in ('cifar10', 'cifar100', 'food101') and is_folder_dataset(root)):
        if not (root / train_split).is_dir():
            if kind in ('auto', 'folder') and any(root.glob('*/*' + s) for s in IMAGE_SUFFIXES[:2]):
                raise _layout_error('folder', root, f'has class folders but no {train_split}/ split folder')
            raise _layout_error(kind if kind != 'auto' else 'folder', root, f'no {train_split}/ folder')
        train = _image_folder(root / train_split, 'folder')
        val_name = _val_split_name(root, cfg.get('val_split'))
        val = _image_folder(root / val_name, 'folder') if val_name else None
        if val is not None and val.classes != train.classes:
            raise DatasetError(f'{root}: the class folders of {train_split}/ and {val_name}/ differ '
                               f'({len(train.classes)} vs {len(val.classes)} classes)')
        return train, val, f'folder {root} ({train_split}/{"," + val_name if val_name else ""})'
    if kind in ('cifar10', 'cifar100', 'food101'):
        return _torchvision(kind, root, True), _torchvision(kind, root, False), f'torchvision {kind} {root}'
    if '/' in kind:
        val_name = cfg.get('val_split') or 'validation'
        return (_timm_dataset(kind, root, train_split, True), _timm_dataset(kind, root, val_name, False),
                f'timm {kind} {root}')
    raise DatasetError(f'dataset={kind!r} is unknown: use auto, folder, cifar10, cifar100, food101 or a timm '
                       f'create_dataset name such as torch/cifar10')


def stratified_split(targets: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split keeping class proportions: ``fraction`` of every class goes to the second part."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, t in enumerate(targets):
        by_class.setdefault(int(t), []).append(i)
    first, second = [], []
    for _, idx in sorted(by_class.items()):
        idx = np.array(idx)[rng.permutation(len(idx))]
        n = int(round(len(idx) * fraction))
        if len(idx) > 1:
            n = min(max(n, 1), len(idx) - 1)
        second += idx[:n].tolist()
        first += idx[n:].tolist()
    return sorted(first), sorted(second)


def stratified_subset(targets: Sequence[int], size: int, seed: int) -> list[int]:
    if size <= 0 or size >= len(targets):
        return list(range(len(targets)))
    return stratified_split(targets, size / len(targets), seed)[1]


def _seed_for(*parts: int) -> int:
    digest = hashlib.blake2b(np.array(parts, dtype=np.int64).tobytes(), digest_size=8).digest()
    return int.from_bytes(digest, 'little') & 0x7FFF_FFFF_FFFF_FFFF


class TransformedDataset(Dataset):
    """``base[indices[i]]`` with ``transform`` applied under a seed drawn from (seed, epoch, i).

    The global torch, numpy and Python RNG states are restored afterwards, so loading data never shifts
    the training loop's random streams (dropout, mixup).
    """

    def __init__(self, base, transform: Callable | None, indices: Sequence[int] | None = None,
                 seed: int | None = None):
        self.base, self.transform, self.seed, self.epoch = base, transform, seed, 0
        self.indices = list(range(len(base))) if indices is None else list(indices)
        self._paths = _samples_paths(base)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def _load(self, j: int):
        try:
            return self.base[j]
        except (OSError, ValueError, SyntaxError) as e:  # PIL raises these for truncated / non-image files
            where = self._paths[j] if self._paths else f'sample {j} of {type(self.base).__name__}'
            raise DatasetError(f'{where}: cannot read this image ({type(e).__name__}: {e}); remove or replace '
                               f'the file') from None

    def __getitem__(self, i: int):
        img, target = self._load(self.indices[i])
        if self.transform is None:
            return img, target
        if self.seed is None:
            return self.transform(img), target
        s = _seed_for(self.seed, self.epoch, i)
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(s)  # CPU only: torch.manual_seed also
            # seeds every lazy device backend, formatting a stack trace each time (~0.6 ms per image)
            random.seed(s)
            np.random.seed(s % 2**32)
            try:
                x = self.transform(img)
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)
        return x, target


def build_splits(cfg: dict, train_transform: Callable, eval_transform: Callable) -> Splits:
    """Train and validation datasets with their transforms, carved and subset as the config says."""
    train_raw, val_raw, desc = load_raw_splits(cfg)
    seed = cfg.get('seed', 42)
    train_targets = targets_of(train_raw)
    train_idx = list(range(len(train_raw)))
    if cfg.get('val_fraction', 0.0) > 0:
        train_idx, val_idx = stratified_split(train_targets, cfg['val_fraction'], seed)
        val_raw, val_targets = train_raw, [train_targets[i] for i in val_idx]
        desc += f', validation carved from {cfg.get("train_split", "train")} ({len(val_idx)} images, seed {seed})'
    elif val_raw is None:
        raise DatasetError(f'{cfg["data_dir"]}: no validation split (looked for {", ".join(VAL_SPLITS)}); set '
                           f'--val-split NAME, or --val-fraction 0.1 to carve a seeded, stratified one from train')
    else:
        val_targets = targets_of(val_raw)
        val_idx = list(range(len(val_raw)))
    if cfg.get('train_subset'):
        keep = stratified_subset([train_targets[i] for i in train_idx], cfg['train_subset'], seed)
        train_idx = [train_idx[k] for k in keep]
    if cfg.get('val_subset'):
        keep = stratified_subset(val_targets, cfg['val_subset'], seed + 1)
        val_idx = [val_idx[k] for k in keep]
    classes = classes_of(train_raw, max(train_targets) + 1)
    return Splits(
        train=TransformedDataset(train_raw, train_transform, train_idx, seed=seed),
        val=TransformedDataset(val_raw, eval_transform, val_idx),
        num_classes=len(classes),
        classes=classes,
        description=desc,
    )
