"""Create the model to train: zoo or family member, new head, starting weights, frozen parts.

Freezing sets ``requires_grad=False`` and keeps the frozen BatchNorm layers in eval mode, instead of
swapping in ``FrozenBatchNorm2d``, so the saved state_dict keeps plain timm keys a fresh model loads.
"""
from __future__ import annotations

from pathlib import Path

import timm
import torch.nn as nn
from timm.models._manipulate import group_modules

import scalenet_models


class ModelError(ValueError):
    """A model, weights file or freezing choice that cannot be used; the message says what to change."""


def register_family_file(path: str | None) -> list[str]:
    """Register a (searched) family JSON so its members are timm models; returns the member names."""
    if not path:
        return []
    if not Path(path).is_file():
        raise ModelError(f'family: {path}: no such file (pass the family.json written by `python -m search`)')
    return scalenet_models.register_family(path, overwrite=True)


def file_num_classes(path: str, classifier: str = 'classifier') -> int | None:
    """Class count of a weights file's classifier (None when it has no such layer)."""
    key = f'{classifier}.weight'
    if str(path).endswith('.safetensors'):
        from safetensors import safe_open
        with safe_open(str(path), framework='pt') as f:
            return f.get_slice(key).get_shape()[0] if key in f.keys() else None
    from timm.models import load_state_dict
    sd = load_state_dict(str(path))  # weights_only=True
    if key not in sd and 'model_state' in sd:
        sd = sd['model_state']
    return int(sd[key].shape[0]) if key in sd else None


def create_model(cfg: dict, num_classes: int) -> nn.Module:
    """``timm.create_model`` with the recipe's head, regularization and starting weights."""
    register_family_file(cfg.get('family'))
    name = cfg['model']
    if name not in timm.list_models() and not name.startswith(('hf-hub:', 'local-dir:')):
        import difflib
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f' (close: {", ".join(close)})' if close else ''
        raise ModelError(f'model {name!r} is not a registered timm model{hint}; for a searched family pass '
                         f'--family DIR/family.json')
    kwargs = dict(num_classes=num_classes)
    if cfg.get('drop') is not None:
        kwargs['drop_rate'] = cfg['drop']
    if cfg.get('drop_path') is not None:
        kwargs['drop_path_rate'] = cfg['drop_path']
    pretrained = bool(cfg.get('pretrained'))
    file = cfg.get('pretrained_file')
    if file:
        if not Path(file).is_file():
            raise ModelError(f'pretrained_file: {file}: no such file')
        overlay = dict(file=str(file))
        try:
            n = file_num_classes(file)
        except Exception as e:  # noqa: BLE001 - any failure to parse means the file is unusable
            raise ModelError(f'pretrained_file: {file}: not a readable weights file ({e})') from None
        if n is not None:
            overlay['num_classes'] = n
        kwargs['pretrained_cfg_overlay'] = overlay
        pretrained = True
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except scalenet_models.PretrainedWeightsError as e:
        raise ModelError(str(e)) from None
    except RuntimeError as e:
        if 'state_dict' in str(e) or 'size mismatch' in str(e):
            raise ModelError(f'the weights in {file or "the pretrained source"} do not fit {name}: {e}') from None
        raise


def classifier_name(model: nn.Module) -> str:
    return (getattr(model, 'pretrained_cfg', None) or {}).get('classifier', 'classifier')


def freeze(model: nn.Module, head_only: bool, stages: int) -> list[nn.Module]:
    """Freeze everything but the classifier, or the stem + first ``stages`` groups; returns frozen BN layers."""
    if not head_only and stages == 0:
        return []
    if head_only:
        head = classifier_name(model)
        frozen = [n for n, _ in model.named_modules() if n and not (n == head or n.startswith(head + '.'))]
    else:
        if not hasattr(model, 'group_matcher'):
            raise ModelError(f'freeze_stages: {type(model).__name__} has no group_matcher; use --freeze instead')
        groups = group_modules(model, model.group_matcher(coarse=True))
        ordered = [groups[k] for k in sorted(groups)]
        if stages >= len(ordered) - 1:
            raise ModelError(f'freeze_stages={stages}: the model has {len(ordered) - 2} block stages after the stem; '
                             f'use at most {len(ordered) - 2}, or --freeze for head-only training')
        frozen = [n for group in ordered[:stages + 1] for n in group]
    modules = dict(model.named_modules())
    bns = []
    for name in frozen:
        m = modules[name]
        for p in m.parameters(recurse=False):
            p.requires_grad_(False)
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            bns.append(m)
    return bns


def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def set_train_mode(model: nn.Module, eval_modules: list[nn.Module]) -> None:
    """``model.train()`` with the frozen BatchNorm layers left in eval mode (running statistics kept)."""
    model.train()
    for m in eval_modules:
        m.eval()
