"""The super-supernet: one weight-sharing network holding every candidate of a search space.

It allocates the largest depth, width, kernel and expansion of the space; ``set_active`` picks a
candidate, ``forward`` runs it at whatever resolution the input has, and ``export`` writes it out as
the zoo's timm ``EfficientNet`` with the sliced weights, which computes the same logits.

Skip choices (SCARLET) use a LET: an identity-initialised 1x1 conv matrix ``L`` owned by the
skipped layer. It acts on the *branch of the next active block*: that block computes ``x + B(L x)``
(``B(L x)`` without a residual) and consecutive skips compose (``L2 L1``). ``B`` starts with a 1x1
expansion conv ``W``, so ``B(L x)`` uses ``W · L``: the supernet folds ``L`` on the fly and export
writes the folded weight, so the exported plain-identity network equals the supernet exactly.
"""
from __future__ import annotations

import random

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import get_act_layer
from timm.models._efficientnet_builder import efficientnet_init_weights

from scalenet_models.builder import build_network

from .dynamic_ops import DynamicBatchNorm2d, DynamicBlock, take
from .space import Candidate, SearchSpace, SpaceError


class SuperNet(nn.Module):
    """Weight-sharing network over ``space``; parameter names follow timm's EfficientNet keys."""

    def __init__(self, space: SearchSpace, num_classes: int = 1000, drop_rate: float = 0.0):
        super().__init__()
        self.space, self.num_classes, self.drop_rate = space, num_classes, drop_rate
        nf = space.net_fields
        self.net_act = nf['act']
        positions = space.positions()
        stem = positions[0][0].in_channels
        self.conv_stem = nn.Conv2d(3, stem, 3, 2, 1, bias=False)
        self.bn1 = DynamicBatchNorm2d(stem)
        self.act = get_act_layer(nf['act'])(inplace=True)
        self.blocks = nn.ModuleList(
            nn.ModuleList(DynamicBlock(p.block, p.in_channels, nf['act'], nf['se_act'], nf['se_gate'], p.skippable)
                          for p in stage)
            for stage in positions)
        last = positions[-1][-1].block.out_channels
        head = space.max_head_channels()
        if head:
            self.conv_head = nn.Conv2d(last, head, 1, bias=False)
            self.bn2 = DynamicBatchNorm2d(head)
        else:
            self.conv_head = self.bn2 = None
        self.classifier = nn.Linear(head or last, num_classes)
        self.init_weights()
        self._active: list[DynamicBlock] = []
        self._active_index: list[tuple[int, int, DynamicBlock]] = []
        self.active: Candidate | None = None
        self.set_active(space.sample(random.Random(0)))  # any valid path until the caller picks one

    def init_weights(self) -> None:
        """timm's EfficientNet init plus two changes that let a weight-sharing net learn quickly.

        - Every block after the first of its stage is residual in every candidate (stride 1,
          c_in == c_out); its closing BN starts with gamma = 0, so an optional layer starts as the
          identity and deep and shallow candidates start as the same function (BigNAS).
        - The classifier starts at N(0, 0.01) with zero bias (torchvision's MobileNetV3 init): timm's
          ``U(±1/sqrt(num_classes))`` gives a 10-class head an initial loss of about 3.6, not ln 10.

        On CIFAR-10 (width 0.25, 32 px, 300 SGD updates) these take a hierarchically sampled supernet
        from about 13% to about 23% held-out top-1; see docs/search-space.md.
        """
        efficientnet_init_weights(self)
        for stage in self.blocks:
            for block in list(stage)[1:]:
                nn.init.zeros_(block.last_bn().weight)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    # -- choosing a candidate
    def set_active(self, cand: Candidate) -> None:
        """Make ``cand`` the path ``forward`` runs; a clear error if it is not a candidate of this space."""
        net = cand.net
        if len(net.stages) != len(self.blocks):
            raise SpaceError(f'candidate has {len(net.stages)} stages; the supernet of space '
                             f'{self.space.name!r} has {len(self.blocks)}')
        if net.stem_channels > self.conv_stem.out_channels:
            raise SpaceError(f'candidate stem {net.stem_channels} exceeds the supernet\'s {self.conv_stem.out_channels}')
        if net.head_channels and (self.conv_head is None or net.head_channels > self.conv_head.out_channels):
            raise SpaceError(f'candidate head {net.head_channels} does not fit the supernet head')
        if bool(net.head_channels) != (self.conv_head is not None):
            raise SpaceError('candidate and supernet disagree on having a head conv')
        for key in ('act', 'se_gate', 'se_act'):
            if getattr(net, key) != self.space.net_fields[key]:
                raise SpaceError(f'candidate {key} {getattr(net, key)!r} is not the space\'s '
                                 f'{self.space.net_fields[key]!r}')
        active, index, pending = [], [], ()
        in_c = net.stem_channels
        for s, (stage, layers, positions) in enumerate(zip(net.stages, cand.layers, self.blocks)):
            if layers and layers[-1] >= len(positions):
                raise SpaceError(f'candidate stage {s} uses position {layers[-1]}; the supernet has '
                                 f'{len(positions)} there')
            present = set(layers)
            for p, module in enumerate(positions):
                if p in present:
                    j = layers.index(p)
                    try:
                        module.configure(in_c, stage.blocks[j], self.net_act, pending)
                    except ValueError as e:
                        raise SpaceError(f'candidate stage {s} block {j} (position {p}): {e}') from None
                    active.append(module)
                    index.append((s, j, module))
                    in_c = stage.blocks[j].out_channels
                    pending = ()
                elif module.let is not None:
                    pending = pending + (module.let,)
                elif any(q > p for q in present):
                    raise SpaceError(f'candidate stage {s} skips position {p}, which cannot be skipped '
                                     f'(only trailing layers are dropped there)')
        if pending:
            raise SpaceError('candidate skips the last layers of the network; nothing follows to fold their '
                             'stabilisers into')
        self._active, self._active_index, self.active = active, index, cand
        self._stem, self._head, self._last = net.stem_channels, net.head_channels, in_c

    # -- running it
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.conv_stem.weight
        x = F.conv2d(x, take(w, self._stem), None, 2, 1)
        x = self.act(self.bn1(x))
        for block in self._active:
            x = block(x)
        if self.conv_head is not None:
            x = F.conv2d(x, take(self.conv_head.weight, self._head, self._last))
            x = self.act(self.bn2(x))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return F.linear(x, take(self.classifier.weight, self.num_classes, x.shape[1]), self.classifier.bias)

    # -- exporting it
    def export_state_dict(self, cand: Candidate) -> dict[str, torch.Tensor]:
        """The candidate's weights (BN running stats too) in timm keys, as detached contiguous copies."""
        previous = self.active
        self.set_active(cand)
        try:
            sd = {'conv_stem.weight': self.conv_stem.weight[:self._stem]}
            sd.update({f'bn1.{n}': t for n, t in self.bn1.sliced_state(self._stem).items()})
            for s, j, module in self._active_index:
                sd.update({f'blocks.{s}.{j}.{n}': t for n, t in module.active_state_dict().items()})
            if self.conv_head is not None:
                sd['conv_head.weight'] = self.conv_head.weight[:self._head, :self._last]
                sd.update({f'bn2.{n}': t for n, t in self.bn2.sliced_state(self._head).items()})
            width = self._head or self._last
            sd['classifier.weight'] = self.classifier.weight[:, :width]
            sd['classifier.bias'] = self.classifier.bias
            with torch.no_grad():
                return {k: v.detach().clone().contiguous() for k, v in sd.items()}
        finally:
            if previous is not None:
                self.set_active(previous)

    def export(self, cand: Candidate) -> nn.Module:
        """``scalenet_models.build_network(cand.net, num_classes)`` carrying the supernet's weights."""
        model = build_network(cand.net, self.num_classes, drop_rate=self.drop_rate)
        model.load_state_dict(self.export_state_dict(cand), strict=True)
        return model

    # -- BN recalibration
    def dynamic_bns(self) -> list[DynamicBatchNorm2d]:
        return [m for m in self.modules() if isinstance(m, DynamicBatchNorm2d)]

    def reset_bn_stats(self, momentum: float | None = None) -> None:
        """Zero running stats and use cumulative averaging (``momentum=None``) to recalibrate one candidate."""
        for bn in self.dynamic_bns():
            bn.reset_running_stats()
            bn.momentum = momentum

    def set_bn_momentum(self, momentum: float | None = 0.1) -> None:
        """Back to exponential averaging (training) after a recalibration."""
        for bn in self.dynamic_bns():
            bn.momentum = momentum
