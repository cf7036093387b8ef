"""Checkpoint filtering: official SCARLET-NAS layout -> timm keys, plus a clear shape check.

timm calls :func:`checkpoint_filter_fn` on every pretrained state dict before loading it, so an
official ``ScarletA.pth.tar`` (``{"model_state": {...}}``, optional ``num_batches_tracked``) loads
through ``pretrained_cfg_overlay=dict(file=...)`` and a checkpoint of another model fails loudly.
"""
from __future__ import annotations

import re

import torch

from .weights import PretrainedWeightsError

# SCARLET's 19 searchable layers, 0-based, grouped into timm stages 1..6 (stage 0 is the separable conv)
_SCARLET_STAGE_OF_LAYER = [1] * 2 + [2] * 4 + [3] * 4 + [4] * 4 + [5] * 4 + [6]
_OFFICIAL_FIXED = {
    'stem.0.': 'conv_stem.', 'stem.1.': 'bn1.',
    'separable_conv.0.': 'blocks.0.0.conv_dw.', 'separable_conv.1.': 'blocks.0.0.bn1.',
    'separable_conv.3.': 'blocks.0.0.conv_pw.', 'separable_conv.4.': 'blocks.0.0.bn2.',
    'conv_before_pooling.0.': 'conv_head.', 'conv_before_pooling.1.': 'bn2.',
    'classifier.': 'classifier.',
}
_OFFICIAL_BLOCK = {
    'conv1.': 'conv_pw.', 'bn1.': 'bn1.', 'conv2.': 'conv_dw.', 'bn2.': 'bn2.',
    'mid_se.squeeze_conv.': 'se.conv_reduce.', 'mid_se.excite_conv.': 'se.conv_expand.',
    'conv3.': 'conv_pwl.', 'bn3.': 'bn3.',
}
_HEAD_KEYS = ('conv_head.', 'bn2.', 'classifier.')
_MB_KEY = re.compile(r'^mb_module\.(\d+)\.(.+)$')


def is_official_scarlet(state_dict: dict) -> bool:
    return any(k.startswith(('mb_module.', 'separable_conv.')) for k in state_dict)


def convert_official_scarlet(state_dict: dict) -> dict:
    """Rename official SCARLET-NAS keys to timm's; skipped layers have no keys and no timm block."""
    present = sorted({int(m.group(1)) for k in state_dict if (m := _MB_KEY.match(k))})
    if present and present[-1] >= len(_SCARLET_STAGE_OF_LAYER):
        raise PretrainedWeightsError(f'official SCARLET checkpoint has mb_module.{present[-1]}, but the space has '
                                     f'{len(_SCARLET_STAGE_OF_LAYER)} layers: this is not a SCARLET-A/B/C checkpoint')
    position = {}
    for i in present:
        stage = _SCARLET_STAGE_OF_LAYER[i]
        position[i] = (stage, sum(1 for p in position if _SCARLET_STAGE_OF_LAYER[p] == stage))
    out = {}
    for key, value in state_dict.items():
        m = _MB_KEY.match(key)
        if m:
            s, j = position[int(m.group(1))]
            rest = m.group(2)
            prefix = next((p for p in _OFFICIAL_BLOCK if rest.startswith(p)), None)
            if prefix is None:
                raise PretrainedWeightsError(f'unexpected key {key!r} in official SCARLET checkpoint')
            out[f'blocks.{s}.{j}.{_OFFICIAL_BLOCK[prefix]}{rest[len(prefix):]}'] = value
            continue
        prefix = next((p for p in _OFFICIAL_FIXED if key.startswith(p)), None)
        if prefix is None:
            raise PretrainedWeightsError(f'unexpected key {key!r} in official SCARLET checkpoint')
        out[_OFFICIAL_FIXED[prefix] + key[len(prefix):]] = value
    return out


def _unwrap(checkpoint: dict) -> dict:
    for key in ('model_state', 'state_dict', 'model'):
        if key in checkpoint and isinstance(checkpoint[key], dict):
            return checkpoint[key]
    return checkpoint


def checkpoint_filter_fn(state_dict: dict, model: torch.nn.Module) -> dict:
    """Unwrap, convert official layouts, fill absent ``num_batches_tracked`` and check shapes."""
    state_dict = _unwrap(state_dict)
    if is_official_scarlet(state_dict):
        state_dict = convert_official_scarlet(state_dict)
    state_dict = {k[7:] if k.startswith('module.') else k: v for k, v in state_dict.items()}
    target = model.state_dict()
    name = getattr(model, 'pretrained_cfg', {}).get('architecture') or type(model).__name__
    if not hasattr(model, 'conv_head'):
        # a features_only backbone: the checkpoint's head is not part of it
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(_HEAD_KEYS)}
    for key, value in target.items():
        if key.endswith('num_batches_tracked') and key not in state_dict:
            state_dict[key] = value.clone()
    # the classifier and first conv may legitimately differ (timm adapts them to num_classes / in_chans)
    adaptable = ('classifier.', 'conv_stem.')
    missing = [k for k in target if k not in state_dict and not k.startswith(adaptable)]
    unexpected = [k for k in state_dict if k not in target and not k.startswith(adaptable)]
    wrong = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}'
             for k, v in state_dict.items()
             if k in target and not k.startswith(adaptable) and tuple(v.shape) != tuple(target[k].shape)]
    if missing or unexpected or wrong:
        details = '; '.join(
            ([f'missing {missing[:3]}{"..." if len(missing) > 3 else ""}'] if missing else []) +
            ([f'unexpected {unexpected[:3]}{"..." if len(unexpected) > 3 else ""}'] if unexpected else []) +
            ([f'shape mismatch {wrong[:2]}{"..." if len(wrong) > 2 else ""}'] if wrong else []))
        raise PretrainedWeightsError(
            f'the checkpoint does not fit {name}: {details}. It belongs to another model or is damaged; pass the '
            f'checkpoint made for {name} (or create the model it was made for).')
    for k, v in state_dict.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all():
            raise PretrainedWeightsError(f'the checkpoint for {name} holds NaN or Inf values in {k!r}: it is damaged')
    return state_dict
