"""Analytical multiply-adds and parameters of a :class:`NetSpec`, without building it.

Counts follow ``torch.utils.flop_counter.FlopCounterMode`` (MACs = FLOPs / 2): every conv and the
classifier, SE as two 1x1 convs at 1x1; BN, activations, pooling, biases and the SE multiply are
not counted. Pure integer arithmetic, so the search can call it many thousands of times a second.
"""
from __future__ import annotations

from typing import NamedTuple

from timm.layers import make_divisible

from .spec import BlockSpec, NetSpec


class Complexity(NamedTuple):
    macs: int
    params: int


def _out(size: int, stride: int) -> int:
    # timm's symmetric 'same-ish' padding (k // 2) gives ceil(size / stride) for odd kernels
    return -(-size // stride)


def hidden_channels(in_chs: int, block: BlockSpec) -> int:
    """Expanded width, as timm's InvertedResidual rounds it."""
    return in_chs if block.type == 'ds' else make_divisible(in_chs * block.expansion)


def se_channels(hidden: int, block: BlockSpec) -> int:
    """Squeeze width, as timm's SqueezeExcite computes it from the block-input ratio."""
    ratio = block.se * block.expansion / (1.0 if block.type == 'ds' else block.expansion)
    return round(hidden * ratio)


def block_complexity(in_chs: int, block: BlockSpec, size: int) -> tuple[int, int, int]:
    """(macs, params, output size) of one block applied to a ``size`` x ``size`` input."""
    out_size = _out(size, block.stride)
    hidden = hidden_channels(in_chs, block)
    k2 = block.kernel * block.kernel
    macs = params = 0
    if block.type == 'ir':
        macs += size * size * in_chs * hidden
        params += in_chs * hidden + 2 * hidden
    macs += out_size * out_size * hidden * k2
    params += hidden * k2 + 2 * hidden
    if block.se:
        rd = se_channels(hidden, block)
        macs += 2 * hidden * rd
        params += 2 * hidden * rd + rd + hidden
    macs += out_size * out_size * hidden * block.out_channels
    params += hidden * block.out_channels + 2 * block.out_channels
    return macs, params, out_size


def complexity(net: NetSpec, resolution: int = 224, num_classes: int = 1000, in_chans: int = 3) -> Complexity:
    """MACs and parameters of ``net`` at ``resolution`` with a ``num_classes`` classifier."""
    size = _out(resolution, 2)
    macs = size * size * in_chans * net.stem_channels * 9
    params = in_chans * net.stem_channels * 9 + 2 * net.stem_channels
    chs = net.stem_channels
    for _, _, in_chs, block in net.blocks():
        m, p, size = block_complexity(in_chs, block, size)
        macs += m
        params += p
        chs = block.out_channels
    if net.head_channels:
        macs += size * size * chs * net.head_channels
        params += chs * net.head_channels + 2 * net.head_channels
        chs = net.head_channels
    if num_classes:
        macs += chs * num_classes
        params += chs * num_classes + num_classes
    return Complexity(macs, params)


def count_model_macs(model, resolution: int, in_chans: int = 3) -> int:
    """MACs of a built model measured with torch's FlopCounterMode (the reference the analytics match)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, in_chans, resolution, resolution))
    model.train(was_training)
    return counter.get_total_flops() // 2
