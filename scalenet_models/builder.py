"""Compile a :class:`NetSpec` into timm's EfficientNet: block strings in, timm's own blocks out.

Channel counts in a NetSpec are final, so timm's channel rounding is switched off (``round_chs_fn=int``);
hidden widths are timm's ``make_divisible(c_in * e)``, SE is timm's ``SqueezeExcite``.
"""
from __future__ import annotations

from functools import partial

import torch.nn as nn
from timm.layers import get_act_layer
from timm.models._efficientnet_blocks import SqueezeExcite
from timm.models._efficientnet_builder import decode_arch_def
from timm.models.efficientnet import EfficientNet, EfficientNetFeatures

from .spec import BlockSpec, NetSpec

# timm's block-string activation options; an activation without one (gelu) is set on the decoded args
_ACT_OPTION = {'hard_swish': 'nhs', 'relu': 'nre', 'relu6': 'nr6', 'swish': 'nsw'}


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def block_string(block: BlockSpec, net_act: str) -> str:
    """timm's block string, e.g. ``ir_r1_k5_s2_e6_c40_se1.5_nhs``.

    timm's EfficientNet reads the SE ratio relative to the block *input*, so the spec's ratio
    (relative to the hidden width) is multiplied by the expansion: hidden/4 for e6 is ``se1.5``.
    """
    parts = [block.type, 'r1', f'k{block.kernel}', f's{block.stride}']
    if block.type == 'ir':
        parts.append(f'e{_num(block.expansion)}')
    parts.append(f'c{block.out_channels}')
    if block.se:
        parts.append(f'se{_num(block.se * block.expansion)}')
    act = block.act or net_act
    if act != net_act and act in _ACT_OPTION:
        parts.append(_ACT_OPTION[act])
    return '_'.join(parts)


def arch_def(net: NetSpec) -> list[list[str]]:
    """The network's stages as timm block strings (one string per block)."""
    return [[block_string(b, net.act) for b in stage.blocks] for stage in net.stages]


def block_args(net: NetSpec) -> list[list[dict]]:
    """timm's decoded block args; a block's own activation is set here, not trusted to the string parser."""
    args = decode_arch_def(arch_def(net))
    for stage_args, stage in zip(args, net.stages):
        for ba, block in zip(stage_args, stage.blocks):
            ba['act_layer'] = get_act_layer(block.act) if block.act and block.act != net.act else None
    return args


def model_kwargs(net: NetSpec) -> dict:
    """Keyword arguments for ``timm.models.efficientnet.EfficientNet`` that build ``net`` exactly."""
    se_layer = partial(SqueezeExcite, gate_layer=net.se_gate, force_act_layer=get_act_layer(net.se_act))
    return dict(
        block_args=block_args(net),
        stem_size=net.stem_channels,
        num_features=net.head_channels,
        act_layer=get_act_layer(net.act),
        se_layer=se_layer,
        round_chs_fn=int,
    )


def build_network(net: NetSpec, num_classes: int = 1000, features_only: bool = False, **kwargs) -> nn.Module:
    """A bare timm module for ``net`` (no pretrained cfg); the zoo's entrypoints add the timm plumbing."""
    if features_only:
        kw = model_kwargs(net)
        kw.pop('num_features')
        return EfficientNetFeatures(**kw, **kwargs)
    return EfficientNet(**model_kwargs(net), num_classes=num_classes, **kwargs)
