"""``hub export``: weights -> a folder timm loads with ``local-dir:`` (config.json, model.safetensors, README.md).

The folder is built in a temp directory beside the target, reloaded with timm and compared with the
source model (every tensor and the logits on a fixed input) and only then renamed into place, so a
failed export leaves nothing behind.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from timm.models import save_for_hf

from scalenet_models import complexity, member_net
from scalenet_models.weights import sha256_file

from .card import model_card
from .errors import HubError
from .source import ExportSource

WEIGHTS_FILE = 'model.safetensors'


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    model_name: str
    num_classes: int
    sha256: str          # of folder/model.safetensors, for the weights manifest
    metrics: dict
    macs: int
    params: int


def build_source_model(src: ExportSource) -> torch.nn.Module:
    """The registered architecture with the source weights, strictly (every key, every shape)."""
    model = timm.create_model(src.model_name, num_classes=src.num_classes)
    expected = model.state_dict()
    missing = [k for k in expected if k not in src.state_dict]
    unexpected = [k for k in src.state_dict if k not in expected]
    wrong = [f'{k} {tuple(src.state_dict[k].shape)} vs {tuple(v.shape)}' for k, v in expected.items()
             if k in src.state_dict and src.state_dict[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = []
        for label, items in (('shape mismatch (file vs model)', wrong), ('missing', missing),
                             ('unexpected', unexpected)):
            if items:
                more = f' and {len(items) - 4} more' if len(items) > 4 else ''
                parts.append(f'{label}: {", ".join(items[:4])}{more}')
        raise HubError(f'{src.weights_path} does not fit {src.model_name} with {src.num_classes} classes ('
                       + '; '.join(parts) + '). Check --model (and --family for a searched family).')
    model.load_state_dict(src.state_dict, strict=True)
    return model.eval()


def _fixed_input(img_size: int) -> torch.Tensor:
    return torch.randn(2, 3, img_size, img_size, generator=torch.Generator().manual_seed(0))


def verify_folder(folder: Path, source_model: torch.nn.Module, img_size: int) -> None:
    """Reload ``folder`` through timm's ``local-dir:`` path and require the source model's tensors and logits."""
    try:
        reloaded = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    except Exception as e:
        raise HubError(f'the exported folder does not load with timm ({type(e).__name__}: {e})') from e
    src_sd, new_sd = source_model.state_dict(), reloaded.state_dict()
    if src_sd.keys() != new_sd.keys() or any(not torch.equal(src_sd[k], new_sd[k]) for k in src_sd):
        raise HubError('the exported folder reloads with different weights than the source; nothing was written')
    x = _fixed_input(img_size)
    with torch.no_grad():
        a, b = source_model(x), reloaded(x)
    if a.shape != b.shape or not torch.equal(a, b):
        diff = (a - b).abs().max().item() if a.shape == b.shape else float('inf')
        raise HubError(f'the exported folder gives different logits than the source (max |diff| {diff:.3g}); '
                       f'nothing was written')


def _data_config(src: ExportSource) -> dict:
    """Preprocessing of the exported weights: the training resolution (and crop) of the run."""
    data = {'input_size': (3, src.img_size, src.img_size)}
    crop = (src.config or {}).get('crop_pct')
    if isinstance(crop, (int, float)) and not isinstance(crop, bool) and 0 < crop <= 1:
        data['crop_pct'] = float(crop)
    return data


def _publishable_permissions(folder: Path) -> None:
    """mkdtemp makes private (0700/0600) entries; give the export the user's normal umask permissions."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for f in folder.iterdir():
        f.chmod(0o666 & ~umask)


def _place(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished temp folder onto ``out`` (moving an old export aside first when allowed)."""
    old = None
    if out.exists():
        if not overwrite:
            raise HubError(f'{out} already exists; pass --overwrite to replace it')
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f'.{out.name}.old.'))
        os.replace(out, old / out.name)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old / out.name, out)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def export_model(src: ExportSource, out: str | Path, repo_id: str | None = None,
                 overwrite: bool = False) -> ExportResult:
    """Write, verify and atomically place the export folder of ``src``; returns what the manifest needs."""
    out = Path(out).absolute()
    if out.exists() and not overwrite:
        raise HubError(f'{out} already exists; pass --overwrite to replace it')
    repo_id = repo_id or f'your-org/{out.name}'  # only shown in the card's usage snippet
    model = build_source_model(src)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f'.{out.name}.tmp.'))
    try:
        save_for_hf(model, tmp, safe_serialization=True, data_config=_data_config(src))
        if src.family_path is not None:
            shutil.copyfile(src.family_path, tmp / 'family.json')
        pretrained_cfg = json.loads((tmp / 'config.json').read_text())['pretrained_cfg']
        (tmp / 'README.md').write_text(model_card(src, repo_id, pretrained_cfg))
        verify_folder(tmp, model, src.img_size)
        sha = sha256_file(tmp / WEIGHTS_FILE)
        _publishable_permissions(tmp)
        _place(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    net, _ = member_net(src.model_name)
    c = complexity(net, src.img_size, src.num_classes)
    return ExportResult(folder=out, model_name=src.model_name, num_classes=src.num_classes, sha256=sha,
                        metrics=dict(src.metrics), macs=c.macs, params=c.params)
