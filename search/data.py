"""Images for the search: a built-in synthetic dataset, ImageFolder / torchvision data, seeded splits.

Every batch is a pure function of (seed, step): the sampler picks indices from a per-epoch seeded
permutation and each image's augmentation is seeded by (seed, index, step). That is what makes a
resumed supernet run bit-identical to an uninterrupted one, with any number of data-loader workers.
Images are loaded at one *load size* (the space's largest resolution) and resized per batch to the
active candidate's resolution, so one loader serves every sampled resolution.
"""
from __future__ import annotations

import colorsys
import hashlib
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
TORCHVISION_DATASETS = ('cifar10', 'cifar100', 'svhn', 'stl10')


class DataError(ValueError):
    """Unusable data: the message names the path or setting and what to change."""


def _seed_of(*parts: Any) -> int:
    """A stable 63-bit seed from any parts (Python's hash() is salted per process, so not that)."""
    digest = hashlib.sha1(':'.join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], 'little') >> 1


# ----------------------------------------------------------------------------------------------
# built-in synthetic data


class SyntheticShapes(Dataset):
    """Procedural, learnable images: the class sets a colour, a grating's orientation and a shape; noise does the rest.

    Class ``c`` of ``C`` draws a sinusoidal grating at angle ``pi * c / C`` (random phase and frequency)
    whose bright colour is jittered around hue ``c / C`` over a random dark background, and a bright
    disc (second half of the classes) or a dark square (first half) at a random place; Gaussian noise
    on top. Deterministic from ``(seed, index)``: no files, no downloads.
    """

    def __init__(self, num_samples: int = 4000, num_classes: int = 10, size: int = 64, seed: int = 0,
                 noise: float = 0.15):
        if num_classes < 2:
            raise DataError(f'num_classes: {num_classes} (the synthetic dataset needs at least 2 classes)')
        if num_samples < num_classes:
            raise DataError(f'num_samples: {num_samples} is below num_classes {num_classes}')
        self.num_samples, self.num_classes, self.size, self.seed, self.noise = num_samples, num_classes, size, seed, noise
        self.targets = [i % num_classes for i in range(num_samples)]
        yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing='ij')
        self._grid = (yy.astype(np.float32), xx.astype(np.float32))

    def __len__(self) -> int:
        return self.num_samples

    def image(self, index: int) -> np.ndarray:
        """The ``index``-th image as float32 HWC in [0, 1]."""
        c = self.targets[index]
        rng = np.random.default_rng(_seed_of('synthetic', self.seed, index))
        yy, xx = self._grid
        angle = math.pi * c / self.num_classes + rng.normal(0, 0.05)
        freq = rng.uniform(2.5, 4.5) * math.pi
        wave = 0.5 + 0.5 * np.sin(freq * (xx * math.cos(angle) + yy * math.sin(angle)) + rng.uniform(0, 2 * math.pi))
        hue = (c / self.num_classes + rng.normal(0, 0.03)) % 1.0
        fg = np.clip(np.array(colorsys.hsv_to_rgb(hue, 0.8, 0.95)) + rng.normal(0, 0.08, 3), 0, 1)
        bg = rng.uniform(0.0, 0.3, 3)
        img = bg + wave[..., None] * (fg - bg)
        cy, cx = rng.uniform(-0.5, 0.5, 2)
        r = rng.uniform(0.2, 0.35)
        if (2 * c) // self.num_classes:
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 1.0
        else:
            img[(abs(yy - cy) < r) & (abs(xx - cx) < r)] = 0.0
        img = img + rng.normal(0, self.noise, img.shape)
        return np.clip(img, 0, 1).astype(np.float32)

    def __getitem__(self, index):
        index = index[0] if isinstance(index, tuple) else index
        x = torch.from_numpy(self.image(index)).permute(2, 0, 1)
        x = (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
        return x, self.targets[index]


# ----------------------------------------------------------------------------------------------
# files


def _load_rgb(path: str) -> Image.Image:
    """PIL loader that names the file when it cannot be read, instead of failing deep in a worker."""
    try:
        with open(path, 'rb') as f:
            img = Image.open(f)
            return img.convert('RGB')
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise DataError(f'{path}: cannot read this image ({e}); delete or replace the file') from None


def image_folder(root: str | Path):
    """torchvision's ImageFolder on ``root``, with clear errors for a missing, empty or class-less folder."""
    from torchvision.datasets import ImageFolder

    root = Path(root)
    if not root.exists():
        raise DataError(f'{root}: no such folder; pass --data-dir an ImageFolder tree (one sub-folder per class)')
    if not root.is_dir():
        raise DataError(f'{root}: not a folder; pass --data-dir an ImageFolder tree (one sub-folder per class)')
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith('.'))
    if (root / 'train').is_dir() and 'train' in classes and len(classes) <= 3:
        root = root / 'train'  # a dataset root with train/ (and val/): search only ever reads train
        classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith('.'))
    if not classes:
        raise DataError(f'{root}: empty dataset folder (no class sub-folders); put images in {root}/<class>/*.jpg')
    if len(classes) < 2:
        raise DataError(f'{root}: only one class folder ({classes[0]}); a classifier needs at least two')
    try:
        ds = ImageFolder(str(root), loader=_load_rgb)
    except FileNotFoundError as e:
        raise DataError(f'{root}: a class folder has no images ({e}); remove it or add images') from None
    return ds


def torchvision_dataset(name: str, root: str | Path):
    """The train split of a torchvision dataset already on disk (never downloads)."""
    import torchvision.datasets as tvd

    name = name.lower()
    if name not in TORCHVISION_DATASETS:
        raise DataError(f'dataset: unknown {name!r}; known: {", ".join(TORCHVISION_DATASETS)}, '
                        f'"synthetic", or "folder" with --data-dir')
    root = Path(root)
    kwargs = dict(split='train') if name in ('svhn', 'stl10') else dict(train=True)
    cls = {'cifar10': tvd.CIFAR10, 'cifar100': tvd.CIFAR100, 'svhn': tvd.SVHN, 'stl10': tvd.STL10}[name]
    try:
        ds = cls(str(root), download=False, **kwargs)
    except RuntimeError as e:
        raise DataError(f'{root}: {name} not found there ({e}); download it once with torchvision or pass '
                        f'--dataset folder --data-dir an ImageFolder tree') from None
    if not hasattr(ds, 'targets'):
        ds.targets = list(ds.labels)
    return ds


class Augmented(Dataset):
    """A PIL dataset with a timm transform whose randomness is seeded per (seed, index, step)."""

    def __init__(self, base, transform, seed: int):
        self.base, self.transform, self.seed = base, transform, seed
        self.targets = list(base.targets)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, item):
        index, step = item if isinstance(item, tuple) else (item, -1)
        img, target = self.base[index]
        if not isinstance(img, Image.Image):
            img = Image.fromarray(np.asarray(img))
        state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            s = _seed_of('augment', self.seed, index, step)
            random.seed(s)
            torch.default_generator.manual_seed(s)  # CPU only: torch.manual_seed also
            # seeds every lazy device backend, formatting a stack trace each time (~0.6 ms per image)
            x = self.transform(img.convert('RGB'))
        random.setstate(state)
        return x, target


# ----------------------------------------------------------------------------------------------
# splits and batches


def stratified_split(targets: Sequence[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded, stratified (train, held-out) index lists: every class keeps the same share in both."""
    if not 0 < val_fraction < 1:
        raise DataError(f'val_fraction: {val_fraction} must lie strictly between 0 and 1')
    by_class: dict[int, list[int]] = {}
    for i, t in enumerate(targets):
        by_class.setdefault(int(t), []).append(i)
    rng = random.Random(_seed_of('split', seed))
    train, val = [], []
    for c in sorted(by_class):
        idx = by_class[c][:]
        rng.shuffle(idx)
        n_val = max(1, round(len(idx) * val_fraction)) if len(idx) > 1 else 0
        val += idx[:n_val]
        train += idx[n_val:]
    if not val or not train:
        raise DataError(f'val_fraction: {val_fraction} leaves an empty split of {len(targets)} images; '
                        f'use more images or another fraction')
    return sorted(train), sorted(val)


class StepBatchSampler:
    """Batches for global steps ``start .. total-1``; step t's batch depends only on (seed, t).

    Each epoch is a seeded permutation of ``indices``; a global batch of ``batch_size * world_size``
    indices is cut per step and this process takes its slice. Items are ``(index, step)`` so the
    dataset can seed augmentation by both.
    """

    def __init__(self, indices: Sequence[int], batch_size: int, seed: int, start: int, total: int,
                 rank: int = 0, world_size: int = 1):
        self.indices = list(indices)
        self.batch_size, self.seed, self.start, self.total = batch_size, seed, start, total
        self.rank, self.world_size = rank, world_size
        self.steps_per_epoch = len(self.indices) // (batch_size * world_size)
        if self.steps_per_epoch < 1:
            raise DataError(f'batch_size: {batch_size} x {world_size} processes exceeds the {len(self.indices)} '
                            f'training images; lower --batch-size')

    def batch(self, step: int) -> list[tuple[int, int]]:
        epoch, pos = divmod(step, self.steps_per_epoch)
        g = torch.Generator().manual_seed(_seed_of('epoch', self.seed, epoch) % (2 ** 63))
        perm = torch.randperm(len(self.indices), generator=g)
        gb = self.batch_size * self.world_size
        sel = perm[pos * gb + self.rank * self.batch_size:pos * gb + (self.rank + 1) * self.batch_size]
        return [(self.indices[i], step) for i in sel.tolist()]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.total):
            yield self.batch(step)

    def __len__(self) -> int:
        return max(0, self.total - self.start)


def resize_batch(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """A batch resized to ``resolution`` (bilinear, antialiased); unchanged when it already fits."""
    if x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode='bilinear', align_corners=False,
                         antialias=x.shape[-1] > resolution)


# ----------------------------------------------------------------------------------------------
# what the search reads


@dataclass
class SearchData:
    """Training images, the held-out split carved from them, and where calibration images come from."""
    train: Dataset            # augmented; items (index, step)
    plain: Dataset            # same images, eval transform (calibration and held-out evaluation)
    train_indices: list[int]
    val_indices: list[int]
    num_classes: int
    load_size: int
    description: str


def build_search_data(dataset: str = 'synthetic', data_dir: str | None = None, load_size: int = 64,
                      val_fraction: float = 0.1, seed: int = 0, synthetic_samples: int = 4000,
                      synthetic_classes: int = 10, max_images: int | None = None) -> SearchData:
    """Open the data named by the CLI flags; the held-out split is carved (seeded, stratified) from train."""
    dataset = dataset.lower()
    if dataset == 'synthetic':
        ds = SyntheticShapes(synthetic_samples, synthetic_classes, load_size, seed)
        train, plain, num_classes = ds, ds, synthetic_classes
        desc = f'synthetic ({synthetic_samples} images, {synthetic_classes} classes, seed {seed})'
    else:
        from timm.data import create_transform

        if data_dir is None:
            raise DataError(f'dataset {dataset!r} needs --data-dir (the folder that holds it)')
        base = image_folder(data_dir) if dataset in ('folder', 'imagefolder') else torchvision_dataset(dataset, data_dir)
        num_classes = len(base.classes) if hasattr(base, 'classes') else int(max(base.targets)) + 1
        small = load_size <= 64
        train_tf = create_transform(load_size, is_training=True, scale=(0.35, 1.0) if small else None,
                                    color_jitter=0.0 if small else 0.4, interpolation='bilinear')
        eval_tf = create_transform(load_size, is_training=False, crop_pct=1.0 if small else 0.875,
                                   interpolation='bilinear')
        train, plain = Augmented(base, train_tf, seed), Augmented(base, eval_tf, seed)
        desc = f'{dataset} at {data_dir} ({len(base)} images, {num_classes} classes)'
    targets = train.targets
    if max_images is not None and max_images < len(targets):
        keep, _ = stratified_split(targets, 1 - max_images / len(targets), seed + 1)  # a stratified subset
        sub_targets = [targets[i] for i in keep]
        tr, va = stratified_split(sub_targets, val_fraction, seed)
        tr, va = [keep[i] for i in tr], [keep[i] for i in va]
    else:
        tr, va = stratified_split(targets, val_fraction, seed)
    return SearchData(train, plain, tr, va, num_classes, load_size, desc)
