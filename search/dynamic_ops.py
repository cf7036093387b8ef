"""Weight-sharing blocks that run any smaller block of the space by slicing the largest one.

Leading channels and the centre of the depthwise kernel are used (OFA/BigNAS style). Every op
mirrors timm's ``InvertedResidual`` / ``DepthwiseSeparableConv`` / ``SqueezeExcite`` step by step,
with widths from the zoo's own rules (``hidden_channels``, ``se_channels``), so a candidate
exported to timm computes exactly what it computed here. Parameter names match timm's keys.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import get_act_layer

from scalenet_models.complexity import hidden_channels, se_channels
from scalenet_models.spec import BlockSpec


def take(t: torch.Tensor, *sizes: int) -> torch.Tensor:
    """The leading ``sizes`` of ``t``'s first dims; ``t`` itself when nothing is cut (no slice in autograd)."""
    if all(n == m for n, m in zip(sizes, t.shape)):
        return t
    return t[tuple(slice(0, n) for n in sizes)]


class DynamicBatchNorm2d(nn.BatchNorm2d):
    """One BatchNorm of the largest width; a narrower input uses (and updates) the leading slice.

    The running statistics are passed as views, so training-mode updates (and recalibration with
    ``momentum=None``, cumulative averaging as in ``nn.BatchNorm2d``) land in the right channels.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        factor = 0.0
        if self.training:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        if c == self.num_features:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                self.training, factor, self.eps)
        return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], self.weight[:c], self.bias[:c],
                            self.training, factor, self.eps)

    def sliced_state(self, c: int) -> dict[str, torch.Tensor]:
        """The first ``c`` channels as a plain ``BatchNorm2d`` state dict."""
        return {'weight': self.weight[:c], 'bias': self.bias[:c], 'running_mean': self.running_mean[:c],
                'running_var': self.running_var[:c], 'num_batches_tracked': self.num_batches_tracked}


class DynamicSqueezeExcite(nn.Module):
    """timm's SqueezeExcite (mean → conv_reduce+bias → act → conv_expand+bias → gate) on sliced weights."""

    def __init__(self, channels: int, rd_channels: int, act: str, gate: str):
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, rd_channels, 1, bias=True)
        self.act1 = get_act_layer(act)(inplace=True)
        self.conv_expand = nn.Conv2d(rd_channels, channels, 1, bias=True)
        self.gate = get_act_layer(gate)()

    def forward(self, x: torch.Tensor, rd: int) -> torch.Tensor:
        c = x.shape[1]
        s = x.mean((2, 3), keepdim=True)
        s = F.conv2d(s, take(self.conv_reduce.weight, rd, c), take(self.conv_reduce.bias, rd))
        s = self.act1(s)
        s = F.conv2d(s, take(self.conv_expand.weight, c, rd), take(self.conv_expand.bias, c))
        return x * self.gate(s)

    def sliced_state(self, c: int, rd: int) -> dict[str, torch.Tensor]:
        return {'conv_reduce.weight': self.conv_reduce.weight[:rd, :c], 'conv_reduce.bias': self.conv_reduce.bias[:rd],
                'conv_expand.weight': self.conv_expand.weight[:c, :rd], 'conv_expand.bias': self.conv_expand.bias[:c]}


def fold_let(conv_pw_weight: torch.Tensor, let: torch.Tensor | None) -> torch.Tensor:
    """``W · L``: a 1x1 conv after the linear stabiliser ``L`` is one 1x1 conv with this weight."""
    if let is None:
        return conv_pw_weight
    out_c, in_c = conv_pw_weight.shape[:2]
    return (conv_pw_weight.reshape(out_c, in_c) @ let).reshape(out_c, in_c, 1, 1)


def compose_lets(lets: tuple[torch.Tensor, ...], c: int) -> torch.Tensor | None:
    """Consecutive skipped layers' stabilisers, first one applied first: ``L_n ··· L_2 L_1``."""
    m = None
    for let in lets:
        piece = let[:c, :c]
        m = piece if m is None else piece @ m
    return m


class DynamicBlock(nn.Module):
    """The largest block a supernet position can hold; ``configure`` picks the active sub-block.

    ``ir``: conv_pw → bn1+act → conv_dw → bn2+act → SE → conv_pwl → bn3 (+ residual);
    ``ds``: conv_dw → bn1+act → SE → conv_pw → bn2 (+ residual). The residual is used iff
    stride is 1 and the active c_in == c_out, as in timm. A skippable position also owns a LET
    (``let``: identity-initialised 1x1 conv matrix, no bias/BN/activation).
    """

    def __init__(self, block: BlockSpec, in_channels: int, net_act: str, se_act: str, se_gate: str,
                 skippable: bool = False):
        super().__init__()
        self.type, self.stride, self.max_kernel = block.type, block.stride, block.kernel
        self.max_in, self.max_out = in_channels, block.out_channels
        self.act_name = block.act or net_act
        hid = max(hidden_channels(c, block) for c in range(1, in_channels + 1))
        self.max_hidden = hid
        k = block.kernel
        if block.type == 'ir':
            self.conv_pw = nn.Conv2d(in_channels, hid, 1, bias=False)
            self.bn1 = DynamicBatchNorm2d(hid)
            self.conv_dw = nn.Conv2d(hid, hid, k, block.stride, k // 2, groups=hid, bias=False)
            self.bn2 = DynamicBatchNorm2d(hid)
        else:
            self.conv_dw = nn.Conv2d(hid, hid, k, block.stride, k // 2, groups=hid, bias=False)
            self.bn1 = DynamicBatchNorm2d(hid)
        self.act = get_act_layer(self.act_name)(inplace=True)
        self.max_se = se_channels(hid, block) if block.se else 0
        self.se = DynamicSqueezeExcite(hid, self.max_se, se_act, se_gate) if block.se else None
        if block.type == 'ir':
            self.conv_pwl = nn.Conv2d(hid, block.out_channels, 1, bias=False)
            self.bn3 = DynamicBatchNorm2d(block.out_channels)
        else:
            self.conv_pw = nn.Conv2d(hid, block.out_channels, 1, bias=False)
            self.bn2 = DynamicBatchNorm2d(block.out_channels)
        self.let = nn.Parameter(torch.eye(in_channels)) if skippable else None
        self.configure(in_channels, block, net_act)

    def last_bn(self) -> DynamicBatchNorm2d:
        """The BN that closes the branch (before the residual add)."""
        return self.bn3 if self.type == 'ir' else self.bn2

    def active_shape(self, in_c: int, block: BlockSpec, net_act: str) -> tuple[int, int, int, int]:
        """(hidden, out, kernel, se width) of ``block`` on ``in_c`` inputs; a clear error if it does not fit."""
        hid, rd = hidden_channels(in_c, block), 0
        if block.se:
            rd = se_channels(hid, block)
        problems = []
        if block.type != self.type:
            problems.append(f'type {block.type} (position is {self.type})')
        if block.stride != self.stride:
            problems.append(f'stride {block.stride} (position has {self.stride})')
        if (block.act or net_act) != self.act_name:
            problems.append(f'act {block.act or net_act} (position uses {self.act_name})')
        if in_c > self.max_in or block.out_channels > self.max_out or hid > self.max_hidden:
            problems.append(f'channels in {in_c}/hidden {hid}/out {block.out_channels} exceed '
                            f'{self.max_in}/{self.max_hidden}/{self.max_out}')
        if block.kernel > self.max_kernel or block.kernel % 2 == 0:
            problems.append(f'kernel {block.kernel} (largest {self.max_kernel}, odd)')
        if rd > self.max_se:
            problems.append(f'SE width {rd} (position holds {self.max_se})')
        if problems:
            raise ValueError(f'block {block} does not fit this supernet position: {"; ".join(problems)}')
        return hid, block.out_channels, block.kernel, rd

    def configure(self, in_c: int, block: BlockSpec, net_act: str, lets: tuple[torch.Tensor, ...] = ()) -> None:
        """Make ``block`` (with input width ``in_c``) the active path; ``lets``: preceding skipped layers."""
        if lets and self.type != 'ir':
            raise ValueError('a skipped layer must be followed by an ir block (its stabiliser folds into conv_pw)')
        self.hid, self.out, self.k, self.rd = self.active_shape(in_c, block, net_act)
        self.in_c = in_c
        self.k_start = (self.max_kernel - self.k) // 2
        self.residual = self.stride == 1 and in_c == self.out
        self.lets = tuple(lets)

    def _dw(self, x: torch.Tensor, c: int) -> torch.Tensor:
        w = take(self.conv_dw.weight, c)
        if self.k != self.max_kernel:
            s = self.k_start
            w = w[:, :, s:s + self.k, s:s + self.k]
        return F.conv2d(x, w, None, self.stride, self.k // 2, 1, c)

    def pw_weight(self) -> torch.Tensor:
        """The active expansion weight of an ir block, with preceding stabilisers folded in."""
        w = take(self.conv_pw.weight, self.hid, self.in_c)
        return fold_let(w, compose_lets(self.lets, self.in_c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if self.type == 'ir':
            x = F.conv2d(x, self.pw_weight())
            x = self.act(self.bn1(x))
            x = self.act(self.bn2(self._dw(x, self.hid)))
            if self.rd:
                x = self.se(x, self.rd)
            x = self.bn3(F.conv2d(x, take(self.conv_pwl.weight, self.out, self.hid)))
        else:
            x = self.act(self.bn1(self._dw(x, self.in_c)))
            if self.rd:
                x = self.se(x, self.rd)
            x = self.bn2(F.conv2d(x, take(self.conv_pw.weight, self.out, self.hid)))
        if self.residual:
            x = x + shortcut
        return x

    def active_state_dict(self) -> dict[str, torch.Tensor]:
        """The active sub-block's weights under timm's key names (LETs folded into conv_pw)."""
        s, k = self.k_start, self.k
        out = {}
        if self.type == 'ir':
            out['conv_pw.weight'] = self.pw_weight()
            out.update({f'bn1.{n}': t for n, t in self.bn1.sliced_state(self.hid).items()})
            out['conv_dw.weight'] = self.conv_dw.weight[:self.hid, :, s:s + k, s:s + k]
            out.update({f'bn2.{n}': t for n, t in self.bn2.sliced_state(self.hid).items()})
            out['conv_pwl.weight'] = self.conv_pwl.weight[:self.out, :self.hid]
            out.update({f'bn3.{n}': t for n, t in self.bn3.sliced_state(self.out).items()})
        else:
            out['conv_dw.weight'] = self.conv_dw.weight[:self.hid, :, s:s + k, s:s + k]
            out.update({f'bn1.{n}': t for n, t in self.bn1.sliced_state(self.hid).items()})
            out['conv_pw.weight'] = self.conv_pw.weight[:self.out, :self.hid]
            out.update({f'bn2.{n}': t for n, t in self.bn2.sliced_state(self.out).items()})
        if self.rd:
            out.update({f'se.{n}': t for n, t in self.se.sliced_state(self.hid, self.rd).items()})
        return out
