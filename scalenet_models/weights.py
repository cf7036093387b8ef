"""The manifest of published weights: model tag -> Hub repo, file, sha256 and metrics.

``pretrained=True`` resolves through it to timm's normal Hub loading; the file's sha256 is checked
against the manifest before timm reads it, so a swapped or corrupted upload never loads silently.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .spec import SpecError, load_json, write_json_atomic

MANIFEST_FORMAT = 'scalenet-weights/1'
MANIFEST_PATH = Path(__file__).with_name('weights.json')
MANIFEST_ENV = 'SCALENET_WEIGHTS_MANIFEST'


class PretrainedWeightsError(RuntimeError):
    """Asked for weights that do not exist or do not match their manifest entry."""


@dataclass(frozen=True)
class WeightsEntry:
    tag: str                     # 'scalenet_s0.in1k': model name and pretrained tag
    hf_hub_id: str               # 'org/scalenet_s0.in1k'
    sha256: str
    file: str = 'model.safetensors'
    num_classes: int = 1000
    dataset: str = ''
    metrics: dict = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        return self.tag.split('.', 1)[0]

    @classmethod
    def from_dict(cls, tag: str, d: Any) -> 'WeightsEntry':
        path = f'weights[{tag!r}]'
        if not isinstance(d, dict):
            raise SpecError(f'{path}: expected an object')
        allowed = {'hf_hub_id', 'sha256', 'file', 'num_classes', 'dataset', 'metrics'}
        unknown = set(d) - allowed
        if unknown:
            raise SpecError(f'{path}: unknown field(s) {sorted(unknown)} (allowed: {sorted(allowed)})')
        if tag.count('.') != 1:
            raise SpecError(f'{path}: the key must be "<model>.<tag>", e.g. "scalenet_s0.in1k"')
        for key in ('hf_hub_id', 'sha256'):
            if not isinstance(d.get(key), str) or not d[key]:
                raise SpecError(f'{path}.{key}: missing or not a string')
        if d['hf_hub_id'].count('/') != 1:
            raise SpecError(f'{path}.hf_hub_id: {d["hf_hub_id"]!r} is not "org/name"')
        sha = d['sha256'].lower()
        if len(sha) != 64 or any(c not in '0123456789abcdef' for c in sha):
            raise SpecError(f'{path}.sha256: not a 64-digit hex sha256')
        file = d.get('file', 'model.safetensors')
        if not isinstance(file, str) or not file.endswith('.safetensors'):
            raise SpecError(f'{path}.file: {file!r} must be a .safetensors file (pickled weights are not loaded)')
        num_classes = d.get('num_classes', 1000)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise SpecError(f'{path}.num_classes: expected a positive integer')
        metrics = d.get('metrics', {})
        if not isinstance(metrics, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in metrics.values()):
            raise SpecError(f'{path}.metrics: expected an object of numbers')
        return cls(tag=tag, hf_hub_id=d['hf_hub_id'], sha256=sha, file=file, num_classes=num_classes,
                   dataset=str(d.get('dataset', '')), metrics=dict(metrics))

    def to_dict(self) -> dict:
        d = {'hf_hub_id': self.hf_hub_id, 'file': self.file, 'sha256': self.sha256,
             'num_classes': self.num_classes}
        if self.dataset:
            d['dataset'] = self.dataset
        if self.metrics:
            d['metrics'] = dict(self.metrics)
        return d


def manifest_path() -> Path:
    """The manifest in use: ``$SCALENET_WEIGHTS_MANIFEST`` if set, else the packaged ``weights.json``."""
    return Path(os.environ.get(MANIFEST_ENV) or MANIFEST_PATH)


def load_manifest(path: str | os.PathLike | None = None) -> dict[str, WeightsEntry]:
    path = Path(path) if path else manifest_path()
    if not path.exists():
        return {}
    d = load_json(path)
    if not isinstance(d, dict) or d.get('format') != MANIFEST_FORMAT or not isinstance(d.get('weights'), dict):
        raise SpecError(f'{path}: not a weights manifest (expected {{"format": "{MANIFEST_FORMAT}", "weights": {{...}}}})')
    return {tag: WeightsEntry.from_dict(tag, e) for tag, e in d['weights'].items()}


def save_manifest(entries: dict[str, WeightsEntry], path: str | os.PathLike | None = None) -> None:
    path = Path(path) if path else manifest_path()
    write_json_atomic(path, {'format': MANIFEST_FORMAT,
                             'weights': {t: entries[t].to_dict() for t in sorted(entries)}})


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def verify_hub_file(entry: WeightsEntry, cache_dir: str | os.PathLike | None = None) -> Path:
    """Fetch (or find in the HF cache when offline) the entry's file and check its sha256."""
    from huggingface_hub import hf_hub_download

    local = Path(hf_hub_download(entry.hf_hub_id, entry.file, cache_dir=cache_dir))
    digest = sha256_file(local)
    if digest != entry.sha256:
        raise PretrainedWeightsError(
            f'{entry.hf_hub_id}/{entry.file} has sha256 {digest}, but the weights manifest expects {entry.sha256} '
            f'for {entry.tag}. The file is corrupt or was replaced: delete it from the HF cache ({local}) and '
            f'download it again, or update the manifest if the new upload is intended.')
    return local
