"""Shared test fixtures: the real datasets beside the checkout, unpacked once into a cache."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def datasets_dir() -> Path:
    """``$SCALENET_DATASETS`` or ``../shared/datasets`` beside the checkout."""
    return Path(os.environ.get('SCALENET_DATASETS') or ROOT.parent / 'shared' / 'datasets')


def unpacked_dataset(name: str) -> Path:
    """Unpack ``<name>`` (cifar10, imagenette, imagewoof) into a cache dir, or skip with the reason."""
    src = datasets_dir()
    unpack = src / 'unpack'
    if not unpack.exists():
        pytest.skip(f'real datasets not found at {src} (set SCALENET_DATASETS to the folder holding `unpack`)')
    cache = Path(os.environ.get('SCALENET_DATASETS_CACHE') or Path.home() / '.cache' / 'scalenet-datasets')
    if not (cache / name).is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(unpack), str(cache)], check=True, capture_output=True)
    if not (cache / name).is_dir():
        pytest.skip(f'{name} is not among the datasets unpacked from {src}')
    return cache / name


@pytest.fixture(scope='session')
def cifar10_dir() -> Path:
    return unpacked_dataset('cifar10')


@pytest.fixture(scope='module')
def one_torch_thread():
    """One intra-op thread for a module: on a small shared CPU, oversubscribed threads make tests many times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
