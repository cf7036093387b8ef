"""Candidate fitness with inherited weights: BN recalibration on training images, then held-out top-1.

Shared weights carry BN statistics of a mixture of paths, so each candidate's running statistics are
recomputed (cumulative average over a few batches of *training* images) before it is scored, in eval
mode, on a held-out split carved from the training data; the test split is never touched. Results
are cached per candidate under a key that includes the calibration and validation settings and a
fingerprint of the supernet's weights, so no candidate is ever evaluated twice, across restarts too.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from scalenet_models.spec import write_json_atomic

from .data import SearchData, _seed_of, resize_batch


@dataclass(frozen=True)
class EvalSettings:
    """How a candidate is scored; part of every cache key (changing one re-scores everything)."""
    calib_batches: int = 10
    calib_batch_size: int = 64
    val_images: int | None = None   # None: the whole held-out split
    batch_size: int = 128
    seed: int = 0


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha1 over the parameters (names, shapes, bytes): a retrained supernet invalidates the cache."""
    h = hashlib.sha1()
    for name, p in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _stack(dataset, indices: Sequence[int], batch_size: int, workers: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader = DataLoader(Subset(dataset, list(indices)), batch_size=batch_size, shuffle=False, num_workers=workers)
    return [(x, torch.as_tensor(y)) for x, y in loader]


class Evaluator:
    """Scores candidates on a supernet; ``num_evaluated`` counts real (uncached) evaluations."""

    def __init__(self, supernet, data: SearchData, settings: EvalSettings = EvalSettings(), device='cpu',
                 cache_path: str | os.PathLike | None = None, accelerator=None, workers: int = 0,
                 progress: bool = False):
        self.supernet, self.data, self.settings, self.device = supernet, data, settings, torch.device(device)
        self.accelerator, self.progress = accelerator, progress
        self.cache_path = Path(cache_path) if cache_path else None
        self.context = hashlib.sha1(json.dumps(
            [asdict(settings), weights_fingerprint(supernet), data.description, data.load_size,
             len(data.val_indices)]).encode()).hexdigest()[:16]
        self.cache: dict[str, float] = {}
        if self.cache_path and self.cache_path.is_file():
            saved = json.loads(self.cache_path.read_text())
            if saved.get('context') == self.context:
                self.cache = {k: float(v) for k, v in saved['top1'].items()}
        self.num_evaluated = 0
        rng = random.Random(_seed_of('calibration', settings.seed))
        calib = data.train_indices[:]
        rng.shuffle(calib)
        calib = calib[:settings.calib_batches * settings.calib_batch_size]
        val = data.val_indices if settings.val_images is None else data.val_indices[:settings.val_images]
        self.calib_indices, self.val_indices = calib, list(val)
        self._calib = _stack(data.plain, calib, settings.calib_batch_size, workers)
        self._val = _stack(data.plain, val, settings.batch_size, workers)
        self._resized: dict[int, tuple[list, list]] = {}
        self._keys: dict = {}

    def _batches(self, resolution: int):
        if resolution not in self._resized:
            def rs(batches):
                return [(resize_batch(x, resolution), y) for x, y in batches]
            self._resized[resolution] = (rs(self._calib), rs(self._val))
        return self._resized[resolution]

    @torch.no_grad()
    def recalibrate(self, cand) -> None:
        """Set ``cand`` active and recompute its BN running statistics on training images."""
        net = self.supernet
        net.set_active(cand)
        net.reset_bn_stats()
        was_training = net.training
        net.train()
        for x, _ in self._batches(cand.resolution)[0]:
            net(x.to(self.device))
        net.train(was_training)

    @torch.no_grad()
    def top1(self, cand) -> float:
        """Held-out top-1 (%) of ``cand`` after recalibration (no cache)."""
        self.recalibrate(cand)
        net = self.supernet
        was_training = net.training
        net.eval()
        correct = total = 0
        for x, y in self._batches(cand.resolution)[1]:
            pred = net(x.to(self.device)).argmax(1).cpu()
            correct += int((pred == y).sum())
            total += len(y)
        net.train(was_training)
        self.num_evaluated += 1
        return 100.0 * correct / total

    def key(self, cand) -> str:
        if cand not in self._keys:   # candidates hash cheaply; their sha1 key does not
            self._keys[cand] = f'{self.context}:{cand.key()}'
        return self._keys[cand]

    def cached(self, cand) -> float | None:
        return self.cache.get(self.key(cand))

    def evaluate(self, cands: Sequence) -> list[float]:
        """Top-1 of each candidate; new ones are split among processes, gathered, cached and saved."""
        todo, seen = [], set()
        for c in cands:
            k = self.key(c)
            if k not in self.cache and k not in seen:
                seen.add(k)
                todo.append(c)
        if todo:
            acc = self.accelerator
            rank, world = (acc.process_index, acc.num_processes) if acc else (0, 1)
            bar = tqdm(todo[rank::world], desc=f'evaluating {len(todo)} candidates', leave=False,
                       disable=not self.progress or rank != 0)
            mine = [(self.key(c), self.top1(c)) for c in bar]
            if world > 1:
                from accelerate.utils import gather_object
                mine = gather_object(mine)
            self.cache.update(mine)
            self.save()
        return [self.cache[self.key(c)] for c in cands]

    def save(self) -> None:
        if self.cache_path and (self.accelerator is None or self.accelerator.is_main_process):
            write_json_atomic(self.cache_path, {'context': self.context, 'top1': self.cache})
