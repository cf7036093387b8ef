"""Resumable checkpoints (Accelerate ``save_state``) and the run's weight files (safetensors).

A checkpoint folder counts only once its ``COMPLETE.json`` marker exists, so a run killed while saving
resumes from the previous complete one. Registered objects are pickles written by Accelerate; before
Accelerate reads them back they must load with ``weights_only=True``, so a tampered file is refused.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from scalenet_models.spec import write_json_atomic

MARKER = 'COMPLETE.json'


class ResumeError(RuntimeError):
    """No usable checkpoint where ``--resume`` points."""


class TrainState:
    """Where training stands (epoch, batches done in it, updates) and the running epoch sums and history.

    Registered with Accelerate, so it is saved and restored together with the model and optimizer.
    """

    def __init__(self):
        self.epoch = 0
        self.step_in_epoch = 0
        self.updates = 0
        self.loss_sum = 0.0
        self.loss_count = 0
        self.history: list[dict] = []
        self.best_top1 = -1.0
        self.best_epoch = -1

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


def save_checkpoint(accelerator, state: TrainState) -> str:
    """``save_state`` into RUN/checkpoints/checkpoint_N, then mark it complete."""
    folder = accelerator.save_state()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json_atomic(Path(folder) / MARKER, dict(epoch=state.epoch, step_in_epoch=state.step_in_epoch,
                                                      updates=state.updates))
    accelerator.wait_for_everyone()
    return folder


def _index(folder: Path) -> int:
    m = re.search(r'_(\d+)$', folder.name)
    return int(m.group(1)) if m else -1


def find_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint folder itself, or the newest complete one in ``RUN/checkpoints``."""
    path = Path(path).expanduser()
    if (path / MARKER).is_file():
        return path
    root = path / 'checkpoints'
    candidates = sorted((p for p in root.glob('checkpoint_*') if (p / MARKER).is_file()), key=_index) \
        if root.is_dir() else []
    if not candidates:
        raise ResumeError(f'resume: no complete checkpoint in {path} (expected {path}/checkpoints/checkpoint_N/'
                          f'{MARKER} written by recipes.train, or such a checkpoint folder itself)')
    return candidates[-1]


def next_iteration(checkpoint: Path) -> int:
    """Accelerate's automatic naming must continue after every folder already present."""
    existing = [_index(p) for p in checkpoint.parent.glob('checkpoint_*')]
    return max(existing + [_index(checkpoint)]) + 1


def check_pickles_safe(checkpoint: Path) -> None:
    """Refuse a checkpoint whose registered-object pickles hold anything but tensors and plain data."""
    for f in sorted(checkpoint.glob('custom_checkpoint_*.pkl')):
        try:
            torch.load(f, map_location='cpu', weights_only=True)
        except Exception as e:  # noqa: BLE001 - any failure means it is not plain data
            raise ResumeError(f'resume: {f} does not load with weights_only=True ({type(e).__name__}); it was not '
                              f'written by recipes.train or has been altered, so it is not unpickled') from None




def load_json(path: str | os.PathLike) -> dict:
    return json.loads(Path(path).read_text())
