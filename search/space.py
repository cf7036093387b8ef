"""Search spaces as data: a JSON file in the zoo's spec vocabulary, validated on load.

Two kinds share one base class. ``scaling`` (ScaleNet): a base net with per-layer kernels and
per-stage depths, plus scaling stages of (depth, width, resolution) grids; members are built by the
zoo's own :class:`ScalingRule`. ``layerwise`` (SCARLET): every searchable layer picks kernel x
expansion x SE, or skip where stride is 1 and c_in == c_out. A custom space is a new file.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from scalenet_models.complexity import complexity
from scalenet_models.spec import (
    ACTIVATIONS, BLOCK_TYPES, KERNELS, SE_GATES, STRIDES, BlockSpec, FamilySpec, MemberSpec, NetSpec,
    ScalingRule, SpecError, StageSpec, _check_keys, _check_mapping, _choice, _float, _int, _list, _str)

SPACE_FORMAT = 'scalenet-space/1'
SPACES_DIR = Path(__file__).parent / 'spaces'
KINDS = ('scaling', 'layerwise')


class SpaceError(SpecError):
    """A search space that does not validate; the message names the field and what to change."""


def known_spaces() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob('*.json'))


# ----------------------------------------------------------------------------------------------
# candidates


@dataclass(frozen=True)
class Candidate:
    """One sub-network of a space: the explicit net, which supernet layers it uses, its resolution.

    ``layers[s]`` lists, for each block of stage ``s`` of ``net``, the supernet position it runs on
    (ScaleNet: ``0..n-1``, elastic depth keeps the leading layers; SCARLET: skipped positions absent).
    """
    net: NetSpec
    layers: tuple[tuple[int, ...], ...]
    resolution: int

    def __post_init__(self):
        if len(self.layers) != len(self.net.stages):
            raise SpaceError(f'layers: {len(self.layers)} stages given, the net has {len(self.net.stages)}')
        for s, (idx, stage) in enumerate(zip(self.layers, self.net.stages)):
            if len(idx) != len(stage.blocks) or list(idx) != sorted(set(idx)):
                raise SpaceError(f'layers[{s}]: {idx} must be increasing positions, one per block '
                                 f'({len(stage.blocks)} blocks)')

    def to_dict(self) -> dict:
        return {'net': self.net.to_dict(), 'layers': [list(s) for s in self.layers], 'resolution': self.resolution}

    @classmethod
    def from_dict(cls, d: Mapping) -> 'Candidate':
        d = _check_mapping(d, 'candidate')
        _check_keys(d, 'candidate', ('net', 'layers', 'resolution'), ())
        layers = tuple(tuple(_int(i, f'candidate.layers[{s}]', 0) for i in _list(st, f'candidate.layers[{s}]'))
                       for s, st in enumerate(_list(d['layers'], 'candidate.layers')))
        return cls(NetSpec.from_dict(d['net'], 'candidate.net'), layers,
                   _int(d['resolution'], 'candidate.resolution', 8))

    def key(self) -> str:
        """Stable id for caches: sha1 of the canonical JSON."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(',', ':'))
        return hashlib.sha1(text.encode()).hexdigest()


@dataclass(frozen=True)
class BaseArch:
    """A ScaleNet base architecture: per stage, its depth and the kernel of each of its layers."""
    depths: tuple[int, ...]
    kernels: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Scaling:
    """A ScaleNet scaling triple: depth and width multipliers and the input resolution."""
    depth: float
    width: float
    resolution: int


@dataclass(frozen=True)
class Position:
    """One supernet layer: the largest block it must hold, and whether it can be skipped (LET)."""
    block: BlockSpec           # largest kernel, expansion and channels; se > 0 if any choice has SE
    in_channels: int           # largest input width
    skippable: bool = False


# ----------------------------------------------------------------------------------------------
# shared parsing


def _net_fields(d: Any, path: str) -> dict:
    d = _check_mapping(d, path)
    _check_keys(d, path, ('stem_channels',), ('head_channels', 'act', 'se_gate', 'se_act'))
    return dict(stem_channels=_int(d['stem_channels'], f'{path}.stem_channels'),
                head_channels=_int(d.get('head_channels', 1280), f'{path}.head_channels', 0),
                act=_choice(d.get('act', 'hard_swish'), f'{path}.act', ACTIVATIONS),
                se_gate=_choice(d.get('se_gate', 'hard_sigmoid'), f'{path}.se_gate', SE_GATES),
                se_act=_choice(d.get('se_act', 'relu'), f'{path}.se_act', ACTIVATIONS))


def _int_list(value: Any, path: str, minimum: int = 1, choices: tuple | None = None) -> tuple[int, ...]:
    items = _list(value, path)
    out = tuple(_choice(v, f'{path}[{i}]', choices) if choices else _int(v, f'{path}[{i}]', minimum)
                for i, v in enumerate(items))
    if len(set(out)) != len(out):
        raise SpaceError(f'{path}: {list(out)} has duplicates')
    return tuple(sorted(out))


def _float_list(value: Any, path: str) -> tuple[float, ...]:
    items = _list(value, path)
    out = tuple(_float(v, f'{path}[{i}]', 0.0, strict=True) for i, v in enumerate(items))
    if len(set(out)) != len(out):
        raise SpaceError(f'{path}: {list(out)} has duplicates')
    return tuple(sorted(out))


def _scale_raw_channels(raw: dict, width_scale: float) -> dict:
    """Shrink (or grow) every channel count of a raw space by ``width_scale`` (ceil): cheap test spaces."""
    raw = json.loads(json.dumps(raw))

    def f(c):   # non-integers are left for validation to report
        if isinstance(c, int) and not isinstance(c, bool):
            return max(1, math.ceil(round(c * width_scale, 6)))
        return c
    net = raw.get('net', {})
    for key in ('stem_channels', 'head_channels'):
        if key in net and net[key]:
            net[key] = f(net[key])
    for item in list(raw.get('stages', [])) + list(raw.get('fixed_blocks', [])):
        if isinstance(item, dict) and 'out_channels' in item:
            item['out_channels'] = f(item['out_channels'])
    raw['name'] = f'{raw.get("name", "space")}_w{width_scale:g}'.replace('.', 'p')
    return raw


class SearchSpace(ABC):
    """Common base: name, kind, gene bounds for pymoo, sampling, analytic MACs, a dict for checkpoints."""
    name: str
    kind: str
    num_genes: int
    resolution_max: int

    def __init__(self, raw: dict):
        self._raw = raw
        self.name = raw['name']
        self.description = raw.get('description', '')
        self.net_fields = _net_fields(raw['net'], 'net')
        self.scaling_rule = ScalingRule.from_dict(raw.get('scaling_rule', {}), 'scaling_rule')
        self.family_cfg = dict(_check_mapping(raw.get('family_cfg', {}), 'family_cfg'))
        # the family cfg is validated the way the zoo will validate it
        FamilySpec.from_dict({'format': 'scalenet-family/1', 'name': 'check', 'cfg': self.family_cfg,
                              'base': {'stem_channels': 8, 'stages': [{'blocks': [{'kernel': 3, 'out_channels': 8}]}]},
                              'members': [{'name': 'check'}]})

    @abstractmethod
    def gene_bounds(self) -> tuple[list[int], list[int]]:
        """Implemented by each kind of space."""

    @abstractmethod
    def sample(self, rng: random.Random) -> Candidate:
        """Implemented by each kind of space."""

    @abstractmethod
    def positions(self) -> list[list[Position]]:
        """The supernet's layout: per stage of candidate nets, the largest block of every position."""

    def max_head_channels(self) -> int:
        """Largest head conv width (0: no head conv)."""
        return self.net_fields['head_channels']

    def macs(self, cand: Candidate, num_classes: int = 1000) -> int:
        return complexity(cand.net, cand.resolution, num_classes).macs

    def to_dict(self) -> dict:
        return json.loads(json.dumps(self._raw))

    def __repr__(self) -> str:
        return f'{type(self).__name__}(name={self.name!r}, kind={self.kind!r}, num_genes={self.num_genes})'


# ----------------------------------------------------------------------------------------------
# ScaleNet: a base net and scaling stages


@dataclass(frozen=True)
class _ScalingStageBlocks:
    type: str
    out_channels: int
    stride: int
    expansion: float
    se: float
    kernels: tuple[int, ...]
    depths: tuple[int, ...]
    act: str | None


class ScaleNetSpace(SearchSpace):
    """Base architecture (per-layer kernel, per-stage depth) x scaling stages of (d, w, r) grids.

    Genes (integers, for pymoo): one depth index per stage with several depth options, then one
    kernel index per base layer position (up to the stage's largest depth) of stages with several
    kernels. Kernel genes of layers beyond a stage's depth are inactive: ``base_to_genes`` writes 0
    there, so ``base_to_genes(genes_to_base(g))`` is the canonical form of ``g``.
    """
    kind = 'scaling'

    def __init__(self, raw: dict):
        _check_keys(raw, '', ('format', 'name', 'kind', 'net', 'stages', 'scaling_stages'),
                    ('description', 'scaling_rule', 'stage_probs', 'base_macs', 'family_cfg'))
        super().__init__(raw)
        self.stages = [self._parse_stage(s, f'stages[{i}]') for i, s in enumerate(_list(raw['stages'], 'stages'))]
        self.scaling_stages = []
        self._stage_lists = []
        for i, s in enumerate(_list(raw['scaling_stages'], 'scaling_stages')):
            path = f'scaling_stages[{i}]'
            s = _check_mapping(s, path)
            _check_keys(s, path, ('depth', 'width', 'resolution'), ())
            d, w = _float_list(s['depth'], f'{path}.depth'), _float_list(s['width'], f'{path}.width')
            r = _int_list(s['resolution'], f'{path}.resolution', 8)
            self._stage_lists.append((d, w, r))
            self.scaling_stages.append([Scaling(a, b, c) for a in d for b in w for c in r])
        d0, w0, _ = self._stage_lists[0]
        if d0 != (1.0,) or w0 != (1.0,):
            raise SpaceError('scaling_stages[0]: the first scaling stage is the base model: its depth and width '
                             f'must be [1.0], got depth {list(d0)} and width {list(w0)}')
        probs = raw.get('stage_probs')
        if probs is None:
            counts = [len(w) for _, w, _ in self._stage_lists]
            self.stage_probs = [c / sum(counts) for c in counts]
        else:
            probs = [_float(p, f'stage_probs[{i}]', 0.0) for i, p in enumerate(_list(probs, 'stage_probs'))]
            if len(probs) != len(self.scaling_stages) or sum(probs) <= 0:
                raise SpaceError(f'stage_probs: expected {len(self.scaling_stages)} non-negative numbers with a '
                                 f'positive sum (one per scaling stage), got {probs}')
            self.stage_probs = [p / sum(probs) for p in probs]
        self.base_macs = None
        if 'base_macs' in raw:
            lo, hi = (_int(v, f'base_macs[{i}]', 1) for i, v in enumerate(_list(raw['base_macs'], 'base_macs')))
            if lo > hi:
                raise SpaceError(f'base_macs: the window [{lo}, {hi}] is empty (write [low, high])')
            self.base_macs = (lo, hi)
        self.max_depth = max(max(d) for d, _, _ in self._stage_lists)
        self.max_width = max(max(w) for _, w, _ in self._stage_lists)
        self.resolution_max = max(max(r) for _, _, r in self._stage_lists)
        self._depth_genes = [i for i, st in enumerate(self.stages) if len(st.depths) > 1]
        self._kernel_genes = [(i, j) for i, st in enumerate(self.stages) if len(st.kernels) > 1
                              for j in range(max(st.depths))]
        self.num_genes = len(self._depth_genes) + len(self._kernel_genes)

    @staticmethod
    def _parse_stage(d: Any, path: str) -> _ScalingStageBlocks:
        d = _check_mapping(d, path)
        _check_keys(d, path, ('out_channels', 'kernels', 'depths'), ('type', 'stride', 'expansion', 'se', 'act'))
        btype = _choice(d.get('type', 'ir'), f'{path}.type', BLOCK_TYPES)
        kernels = _int_list(d['kernels'], f'{path}.kernels', choices=KERNELS)
        st = _ScalingStageBlocks(
            type=btype, out_channels=_int(d['out_channels'], f'{path}.out_channels'),
            stride=_choice(d.get('stride', 1), f'{path}.stride', STRIDES),
            expansion=_float(d.get('expansion', 1.0 if btype == 'ds' else 6.0), f'{path}.expansion', 1.0),
            se=_float(d.get('se', 0.0), f'{path}.se', 0.0), kernels=kernels,
            depths=_int_list(d['depths'], f'{path}.depths', 1),
            act=None if d.get('act') is None else _choice(d['act'], f'{path}.act', ACTIVATIONS))
        if btype == 'ds' and st.expansion != 1.0:
            raise SpaceError(f'{path}.expansion: {st.expansion} must be 1 for a ds block (it has no expansion conv)')
        return st

    # -- sampling
    def sample_scaling(self, rng: random.Random, stage: int | None = None) -> Scaling:
        """``stage`` None: draw the scaling stage with ``stage_probs`` first (hierarchical sampling)."""
        if stage is None:
            stage = rng.choices(range(len(self.scaling_stages)), weights=self.stage_probs)[0]
        if not 0 <= stage < len(self.scaling_stages):
            raise SpaceError(f'stage: {stage} is not a scaling stage (0..{len(self.scaling_stages) - 1})')
        d, w, r = self._stage_lists[stage]
        return Scaling(rng.choice(d), rng.choice(w), rng.choice(r))

    def sample_base(self, rng: random.Random) -> BaseArch:
        depths, kernels = [], []
        for st in self.stages:
            n = rng.choice(st.depths)
            depths.append(n)
            kernels.append(tuple(rng.choice(st.kernels) for _ in range(n)))
        return BaseArch(tuple(depths), tuple(kernels))

    def sample(self, rng: random.Random) -> Candidate:
        scaling = self.sample_scaling(rng)
        return self.candidate(self.sample_base(rng), scaling)

    def stage_options(self, stage: int) -> tuple[tuple[float, ...], tuple[float, ...], tuple[int, ...]]:
        """The (depth, width, resolution) lists of a scaling stage."""
        if not 0 <= stage < len(self._stage_lists):
            raise SpaceError(f'stage: {stage} is not a scaling stage (0..{len(self._stage_lists) - 1})')
        return self._stage_lists[stage]

    def stage_of(self, scaling: Scaling) -> int | None:
        """The scaling stage whose grid holds ``scaling`` (None if none does)."""
        for i, grid in enumerate(self.scaling_stages):
            if scaling in grid:
                return i
        return None

    # -- genes
    def gene_bounds(self) -> tuple[list[int], list[int]]:
        upper = [len(self.stages[i].depths) - 1 for i in self._depth_genes]
        upper += [len(self.stages[i].kernels) - 1 for i, _ in self._kernel_genes]
        return [0] * self.num_genes, upper

    def base_to_genes(self, base: BaseArch) -> list[int]:
        self._check_base(base)
        genes = [self.stages[i].depths.index(base.depths[i]) for i in self._depth_genes]
        for i, j in self._kernel_genes:
            genes.append(self.stages[i].kernels.index(base.kernels[i][j]) if j < base.depths[i] else 0)
        return genes

    def genes_to_base(self, genes) -> BaseArch:
        genes = [int(g) for g in genes]
        lo, hi = self.gene_bounds()
        if len(genes) != self.num_genes or any(not a <= g <= b for g, a, b in zip(genes, lo, hi)):
            raise SpaceError(f'genes: expected {self.num_genes} integers within {list(zip(lo, hi))}, got {genes}')
        depths = [st.depths[0] for st in self.stages]
        for g, i in zip(genes, self._depth_genes):
            depths[i] = self.stages[i].depths[g]
        kernels = [[st.kernels[0]] * depths[i] for i, st in enumerate(self.stages)]
        for g, (i, j) in zip(genes[len(self._depth_genes):], self._kernel_genes):
            if j < depths[i]:
                kernels[i][j] = self.stages[i].kernels[g]
        return BaseArch(tuple(depths), tuple(tuple(k) for k in kernels))

    def _check_base(self, base: BaseArch) -> None:
        if len(base.depths) != len(self.stages) or len(base.kernels) != len(self.stages):
            raise SpaceError(f'base: expected {len(self.stages)} stages, got {base}')
        for i, (st, n, ks) in enumerate(zip(self.stages, base.depths, base.kernels)):
            if n not in st.depths or len(ks) != n or any(k not in st.kernels for k in ks):
                raise SpaceError(f'base stage {i}: depth {n} / kernels {ks} not in the space '
                                 f'(depths {list(st.depths)}, kernels {list(st.kernels)})')

    # -- networks
    def _block(self, st: _ScalingStageBlocks, kernel: int, first: bool) -> BlockSpec:
        return BlockSpec(kernel=kernel, out_channels=st.out_channels, stride=st.stride if first else 1,
                         expansion=st.expansion, se=st.se, type=st.type, act=st.act)

    def _net(self, kernels: list[tuple[int, ...]]) -> NetSpec:
        stages = tuple(StageSpec(tuple(self._block(st, k, j == 0) for j, k in enumerate(ks)))
                       for st, ks in zip(self.stages, kernels))
        return NetSpec(stages=stages, **self.net_fields)

    def base_net(self, base: BaseArch) -> NetSpec:
        self._check_base(base)
        return self._net(list(base.kernels))

    def candidate(self, base: BaseArch, scaling: Scaling) -> Candidate:
        """The scaled net by the zoo's own rule (ceil widths, extra layers copy the stage's last one)."""
        net = self.scaling_rule.apply(self.base_net(base), scaling.depth, scaling.width)
        return Candidate(net, tuple(tuple(range(n)) for n in net.depths), scaling.resolution)

    def max_net(self) -> NetSpec:
        """Largest depth, width and kernel of the space: what the supernet allocates."""
        big = self._net([(max(st.kernels),) * max(st.depths) for st in self.stages])
        return self.scaling_rule.apply(big, self.max_depth, self.max_width)

    def max_head_channels(self) -> int:
        return self.max_net().head_channels

    def positions(self) -> list[list[Position]]:
        big = self.max_net()
        out = [[] for _ in big.stages]
        for s, _, in_chs, block in big.blocks():
            out[s].append(Position(block, in_chs))
        return out

    def family(self, name: str, base: BaseArch, scalings: list[Scaling],
               metrics: list[dict] | None = None) -> FamilySpec:
        """Members ``{name}_s{i}``, one per scaling, in the zoo's family format (validated)."""
        if metrics is not None and len(metrics) != len(scalings):
            raise SpaceError(f'metrics: {len(metrics)} entries for {len(scalings)} scalings')
        members = [MemberSpec(f'{name}_s{i}', depth=s.depth, width=s.width, resolution=s.resolution,
                              metrics=dict(metrics[i]) if metrics else {}).to_dict()
                   for i, s in enumerate(scalings)]
        family = FamilySpec(name, self.base_net(base), (), self.scaling_rule, dict(self.family_cfg))
        d = family.to_dict()
        d['members'] = members
        return FamilySpec.from_dict(d)


# ----------------------------------------------------------------------------------------------
# SCARLET: per-layer op choices with skip


@dataclass(frozen=True)
class _Choice:
    name: str
    kernel: int = 0
    expansion: float = 0.0
    se: bool = False

    @property
    def skip(self) -> bool:
        return self.name == 'skip'


def _choice_name(e: float, k: int, se: bool) -> str:
    return f'MB{e:g}_K{k}' + ('_SE' if se else '')


class ScarletSpace(SearchSpace):
    """Fixed leading blocks, then searchable layers that each pick an MBConv op or skip.

    Skip is offered where a layer is not the first of its stage and not the network's last
    searchable layer (stride 1 and c_in == c_out hold there), so its stabiliser (LET) always has a
    next 1x1 expansion conv to fold into. One gene per searchable layer: the index of its choice.
    """
    kind = 'layerwise'

    def __init__(self, raw: dict):
        _check_keys(raw, '', ('format', 'name', 'kind', 'net', 'stages', 'choices', 'resolution'),
                    ('description', 'fixed_blocks', 'scaling_rule', 'family_cfg', 'macs_window'))
        super().__init__(raw)
        self.resolution = _int(raw['resolution'], 'resolution', 8)
        self.resolution_max = self.resolution
        self.fixed_blocks = tuple(BlockSpec.from_dict(b, f'fixed_blocks[{i}]')
                                  for i, b in enumerate(raw.get('fixed_blocks', []) or []))
        if self.fixed_blocks:
            StageSpec.from_dict({'blocks': [b.to_dict() for b in self.fixed_blocks]}, 'fixed_blocks')
        defaults = self._parse_choices(raw['choices'], 'choices', None)
        self._stages = []   # per searchable stage: (out_channels, stride, [choices per layer])
        stages = _list(raw['stages'], 'stages')
        for i, s in enumerate(stages):
            path = f'stages[{i}]'
            s = _check_mapping(s, path)
            _check_keys(s, path, ('out_channels', 'layers'), ('stride', 'choices'))
            out = _int(s['out_channels'], f'{path}.out_channels')
            stride = _choice(s.get('stride', 1), f'{path}.stride', STRIDES)
            n = _int(s['layers'], f'{path}.layers')
            opts = self._parse_choices(s['choices'], f'{path}.choices', defaults) if 'choices' in s else defaults
            layer_choices = []
            for j in range(n):
                last = i == len(stages) - 1 and j == n - 1
                can_skip = opts['skip'] and j > 0 and not last
                ops = [_Choice(_choice_name(e, k, se), k, e, se)
                       for e in opts['expansions'] for k in opts['kernels'] for se in opts['se']]
                layer_choices.append(ops + [_Choice('skip')] * can_skip)
            self._stages.append((out, stride, opts, layer_choices))
        self._layers = [(s, j) for s, st in enumerate(self._stages) for j in range(len(st[3]))]
        self.num_genes = len(self._layers)
        self.macs_window = None
        if 'macs_window' in raw:
            lo, hi = (_int(v, f'macs_window[{i}]', 1) for i, v in enumerate(_list(raw['macs_window'], 'macs_window')))
            self.macs_window = (lo, hi)

    @staticmethod
    def _parse_choices(d: Any, path: str, defaults: dict | None) -> dict:
        d = _check_mapping(d, path)
        required, optional = ('kernels', 'expansions', 'se'), ('se_ratio', 'skip', 'act')
        if defaults is None:
            _check_keys(d, path, required, optional)
        else:
            _check_keys(d, path, (), required + optional)
        out = dict(defaults or {})
        if 'kernels' in d:
            out['kernels'] = _int_list(d['kernels'], f'{path}.kernels', choices=KERNELS)
        if 'expansions' in d:
            out['expansions'] = _float_list(d['expansions'], f'{path}.expansions')
            if min(out['expansions']) < 1:
                raise SpaceError(f'{path}.expansions: {list(out["expansions"])} must all be at least 1')
        if 'se' in d:
            se = _list(d['se'], f'{path}.se')
            for i, v in enumerate(se):
                if not isinstance(v, bool):
                    raise SpaceError(f'{path}.se[{i}]: expected true or false, got {v!r:.60}')
            if len(set(se)) != len(se):
                raise SpaceError(f'{path}.se: {se} has duplicates')
            out['se'] = tuple(sorted(se))
        if 'se_ratio' in d:
            out['se_ratio'] = _float(d['se_ratio'], f'{path}.se_ratio', 0.0, strict=True)
        if 'skip' in d:
            if not isinstance(d['skip'], bool):
                raise SpaceError(f'{path}.skip: expected true or false, got {d["skip"]!r:.60}')
            out['skip'] = d['skip']
        if 'act' in d:
            out['act'] = _choice(d['act'], f'{path}.act', ACTIVATIONS)
        out.setdefault('se_ratio', 0.25)
        out.setdefault('skip', False)
        out.setdefault('act', None)
        return out

    # -- choices and genes
    def layer_choices(self, i: int) -> list[str]:
        s, j = self._layer(i)
        return [c.name for c in self._stages[s][3][j]]

    def _layer(self, i: int) -> tuple[int, int]:
        if not 0 <= i < self.num_genes:
            raise SpaceError(f'layer {i}: the space has searchable layers 0..{self.num_genes - 1}')
        return self._layers[i]

    def gene_bounds(self) -> tuple[list[int], list[int]]:
        return [0] * self.num_genes, [len(self.layer_choices(i)) - 1 for i in range(self.num_genes)]

    def _fixed_offset(self) -> int:
        return 1 if self.fixed_blocks else 0

    def _block(self, s: int, j: int, c: _Choice) -> BlockSpec:
        out, stride, opts, _ = self._stages[s]
        act = opts['act'] if opts['act'] != self.net_fields['act'] else None
        return BlockSpec(kernel=c.kernel, out_channels=out, stride=stride if j == 0 else 1, expansion=c.expansion,
                         se=opts['se_ratio'] if c.se else 0.0, type='ir', act=act)

    def genes_to_candidate(self, genes) -> Candidate:
        genes = [int(g) for g in genes]
        lo, hi = self.gene_bounds()
        if len(genes) != self.num_genes or any(not a <= g <= b for g, a, b in zip(genes, lo, hi)):
            raise SpaceError(f'genes: expected {self.num_genes} integers within {list(zip(lo, hi))}, got {genes}')
        stages, layers = [], []
        if self.fixed_blocks:
            stages.append(StageSpec(self.fixed_blocks))
            layers.append(tuple(range(len(self.fixed_blocks))))
        for s, (_, _, _, per_layer) in enumerate(self._stages):
            blocks, idx = [], []
            for j, choices in enumerate(per_layer):
                c = choices[genes[self._layers.index((s, j))]]
                if not c.skip:
                    blocks.append(self._block(s, j, c))
                    idx.append(j)
            stages.append(StageSpec(tuple(blocks)))
            layers.append(tuple(idx))
        return Candidate(NetSpec(stages=tuple(stages), **self.net_fields), tuple(layers), self.resolution)

    def candidate_to_genes(self, cand: Candidate) -> list[int]:
        off = self._fixed_offset()
        if len(cand.net.stages) != len(self._stages) + off:
            raise SpaceError(f'candidate: {len(cand.net.stages)} stages, the space has {len(self._stages) + off}')
        genes = []
        for s, (_, _, _, per_layer) in enumerate(self._stages):
            stage, idx = cand.net.stages[s + off], cand.layers[s + off]
            for j, choices in enumerate(per_layer):
                if j in idx:
                    b = stage.blocks[idx.index(j)]
                    match = [n for n, c in enumerate(choices) if not c.skip and self._block(s, j, c) == b]
                else:
                    match = [n for n, c in enumerate(choices) if c.skip]
                if not match:
                    raise SpaceError(f'candidate stage {s + off} layer {j}: not a choice of this space '
                                     f'({", ".join(c.name for c in choices)})')
                genes.append(match[0])
        if self.genes_to_candidate(genes) != cand:
            raise SpaceError(f'candidate: not a net of space {self.name!r} (its stem, head, activations, extra '
                             f'positions or resolution differ)')
        return genes

    def sample(self, rng: random.Random) -> Candidate:
        _, hi = self.gene_bounds()
        return self.genes_to_candidate([rng.randint(0, h) for h in hi])

    def positions(self) -> list[list[Position]]:
        out = []
        in_chs = self.net_fields['stem_channels']
        if self.fixed_blocks:
            fixed = []
            for b in self.fixed_blocks:
                fixed.append(Position(b, in_chs))
                in_chs = b.out_channels
            out.append(fixed)
        for s, (_, _, opts, per_layer) in enumerate(self._stages):
            stage = []
            for j, choices in enumerate(per_layer):
                ops = [c for c in choices if not c.skip]
                big = _Choice('max', max(c.kernel for c in ops), max(c.expansion for c in ops), any(c.se for c in ops))
                block = self._block(s, j, big)
                stage.append(Position(block, in_chs, skippable=any(c.skip for c in choices)))
                in_chs = block.out_channels
            out.append(stage)
        return out

    def family(self, name: str, cand: Candidate, metrics: dict | None = None) -> FamilySpec:
        """A one-member family named ``name`` (the searched net at its resolution), validated."""
        self.candidate_to_genes(cand)
        member = MemberSpec(name, resolution=cand.resolution, metrics=dict(metrics or {}))
        d = FamilySpec(name, cand.net, (), self.scaling_rule, dict(self.family_cfg)).to_dict()
        d['members'] = [member.to_dict()]
        return FamilySpec.from_dict(d)


# ----------------------------------------------------------------------------------------------
# loading

_KIND_CLASSES = {'scaling': ScaleNetSpace, 'layerwise': ScarletSpace}


def load_space(name_or_path: str | os.PathLike | Mapping, width_scale: float | None = None) -> SearchSpace:
    """A built-in space by name ('scalenet', 'scarlet'), a space JSON path, or a dict.

    ``width_scale`` multiplies every channel count (ceil): small test and demo spaces from real ones.
    """
    if isinstance(name_or_path, Mapping):
        raw, where = json.loads(json.dumps(name_or_path)), 'space'
    else:
        text = str(name_or_path)
        path = Path(text)
        if not path.suffix and not path.exists():
            path = SPACES_DIR / f'{text}.json'
            if not path.is_file():
                raise SpaceError(f'space {text!r}: unknown (known spaces: {", ".join(known_spaces())}; '
                                 f'or pass the path of a space JSON file)')
        if not path.is_file():
            raise SpaceError(f'{path}: no such file (pass a known space name: {", ".join(known_spaces())}, '
                             f'or the path of a space JSON file)')
        try:
            raw = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SpaceError(f'{path}: not valid JSON ({e})') from None
        where = str(path)
    try:
        raw = dict(_check_mapping(raw, 'space'))
        for key in ('format', 'name', 'kind'):
            if key not in raw:
                raise SpaceError(f'{key}: missing (required)')
        if raw['format'] != SPACE_FORMAT:
            raise SpaceError(f'format: {raw["format"]!r:.60} is not {SPACE_FORMAT!r}')
        name = _str(raw['name'], 'name')
        if not name.isidentifier() or name != name.lower():
            raise SpaceError(f'name: {name!r:.60} must be a lower-case Python identifier')
        kind = _choice(raw['kind'], 'kind', KINDS)
        if width_scale is not None:
            raw = _scale_raw_channels(raw, _float(width_scale, 'width_scale', 0.0, strict=True))
        return _KIND_CLASSES[kind](raw)
    except SpecError as e:
        raise SpaceError(f'{where}: {e}') from None
