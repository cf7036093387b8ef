"""The architecture spec: one typed, JSON-serialisable description of a network and of a family.

The search emits it, the zoo compiles it into timm models, the recipes train what it names and the
hub publishes it, so every downstream tool speaks this vocabulary instead of its own.

A :class:`NetSpec` is fully explicit (every block with its final channel count); a
:class:`FamilySpec` is a base :class:`NetSpec` plus members, each with depth, width and resolution
multipliers and the rules that turn them into a member's explicit :class:`NetSpec`.
"""
from __future__ import annotations

import json
import math
import os
from copy import deepcopy
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

KERNELS = (3, 5, 7)
STRIDES = (1, 2)
BLOCK_TYPES = ('ds', 'ir')
ACTIVATIONS = ('hard_swish', 'relu', 'relu6', 'swish', 'gelu')
SE_GATES = ('hard_sigmoid', 'sigmoid')
CHANNEL_RULES = ('ceil', 'round8')
MAX_MULTIPLIER = 100.0  # a depth or width multiplier beyond this is a typo, and would build an absurd network
DEPTH_RULES = ('append_last', 'ceil_spread')
FAMILY_FORMAT = 'scalenet-family/1'


class SpecError(ValueError):
    """A spec that does not validate; the message names the field and the bad value."""


# ----------------------------------------------------------------------------------------------
# validation helpers: each names the field path in its error


def _check_mapping(value: Any, path: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise SpecError(f'{path}: expected an object, got {type(value).__name__} {value!r:.60}')
    return value


def _check_keys(obj: Mapping, path: str, required: tuple[str, ...], optional: tuple[str, ...]) -> None:
    for key in obj:
        if not isinstance(key, str) or key not in required + optional:
            allowed = ', '.join(required + optional)
            raise SpecError(f'{path}: unknown field {key!r} (allowed: {allowed})')
    for key in required:
        if key not in obj:
            raise SpecError(f'{path}.{key}: missing (required)' if path else f'{key}: missing (required)')


def _join(path: str, key: str) -> str:
    return f'{path}.{key}' if path else key


def _int(value: Any, path: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f'{path}: expected an integer, got {value!r:.60}')
    if value < minimum:
        raise SpecError(f'{path}: {value} is below the minimum {minimum}')
    return value


def _is_finite_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _float(value: Any, path: str, minimum: float = 0.0, strict: bool = False, maximum: float = math.inf) -> float:
    if not _is_finite_number(value):
        raise SpecError(f'{path}: expected a finite number, got {value!r:.60}')
    if value < minimum or (strict and value == minimum):
        bound = 'above' if strict else 'at least'
        raise SpecError(f'{path}: {value} must be {bound} {minimum}')
    if value > maximum:
        raise SpecError(f'{path}: {value} is above the maximum {maximum}')
    return float(value)


def _choice(value: Any, path: str, choices: tuple) -> Any:
    if isinstance(value, bool) or value not in choices:
        raise SpecError(f'{path}: {value!r:.60} is not one of {", ".join(str(c) for c in choices)}')
    return value


def _str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise SpecError(f'{path}: expected a string, got {value!r:.60}')
    return value


def _list(value: Any, path: str, nonempty: bool = True) -> list:
    if not isinstance(value, list):
        raise SpecError(f'{path}: expected a list, got {type(value).__name__}')
    if nonempty and not value:
        raise SpecError(f'{path}: must not be empty')
    return value


# ----------------------------------------------------------------------------------------------
# the network


@dataclass(frozen=True)
class BlockSpec:
    """One block: ``ds`` (depthwise-separable, no expansion conv) or ``ir`` (inverted residual).

    ``se`` is the squeeze-excite reduction relative to the block's hidden (expanded) width:
    0.25 gives hidden/4 squeeze channels, 0 gives no SE. ``act`` ``None`` means the network's.
    """
    kernel: int
    out_channels: int
    stride: int = 1
    expansion: float = 6.0
    se: float = 0.0
    type: str = 'ir'
    act: str | None = None

    @classmethod
    def from_dict(cls, d: Any, path: str = 'block') -> 'BlockSpec':
        d = _check_mapping(d, path)
        _check_keys(d, path, ('kernel', 'out_channels'), ('stride', 'expansion', 'se', 'type', 'act'))
        btype = _choice(d.get('type', 'ir'), _join(path, 'type'), BLOCK_TYPES)
        expansion = _float(d.get('expansion', 1.0 if btype == 'ds' else 6.0), _join(path, 'expansion'), 1.0)
        if btype == 'ds' and expansion != 1.0:
            raise SpecError(f'{_join(path, "expansion")}: {expansion} must be 1 for a ds block (it has no expansion conv)')
        act = d.get('act')
        return cls(
            kernel=_choice(d['kernel'], _join(path, 'kernel'), KERNELS),
            out_channels=_int(d['out_channels'], _join(path, 'out_channels')),
            stride=_choice(d.get('stride', 1), _join(path, 'stride'), STRIDES),
            expansion=expansion,
            se=_float(d.get('se', 0.0), _join(path, 'se'), 0.0),
            type=btype,
            act=None if act is None else _choice(act, _join(path, 'act'), ACTIVATIONS),
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        if d['act'] is None:
            del d['act']
        return d


@dataclass(frozen=True)
class StageSpec:
    """A run of blocks; only the first may have stride 2 (timm's builder convention)."""
    blocks: tuple[BlockSpec, ...]

    @classmethod
    def from_dict(cls, d: Any, path: str = 'stage') -> 'StageSpec':
        d = _check_mapping(d, path)
        _check_keys(d, path, ('blocks',), ())
        raw = _list(d['blocks'], _join(path, 'blocks'))
        blocks = tuple(BlockSpec.from_dict(b, f'{path}.blocks[{i}]') for i, b in enumerate(raw))
        for i, b in enumerate(blocks[1:], 1):
            if b.stride != 1:
                raise SpecError(f'{path}.blocks[{i}].stride: {b.stride} is not allowed: only the first block of a '
                                f'stage may downsample (start a new stage instead)')
        return cls(blocks)

    def to_dict(self) -> dict:
        return {'blocks': [b.to_dict() for b in self.blocks]}


@dataclass(frozen=True)
class NetSpec:
    """A whole network: conv3x3/s2 stem, stages of blocks, 1x1 head conv, pool, classifier."""
    stem_channels: int
    stages: tuple[StageSpec, ...]
    head_channels: int = 1280
    act: str = 'hard_swish'
    se_gate: str = 'hard_sigmoid'
    se_act: str = 'relu'

    @classmethod
    def from_dict(cls, d: Any, path: str = '') -> 'NetSpec':
        d = _check_mapping(d, path or 'net')
        _check_keys(d, path, ('stem_channels', 'stages'), ('head_channels', 'act', 'se_gate', 'se_act'))
        raw = _list(d['stages'], _join(path, 'stages'))
        return cls(
            stem_channels=_int(d['stem_channels'], _join(path, 'stem_channels')),
            stages=tuple(StageSpec.from_dict(s, f'{_join(path, "stages")}[{i}]') for i, s in enumerate(raw)),
            head_channels=_int(d.get('head_channels', 1280), _join(path, 'head_channels'), 0),
            act=_choice(d.get('act', 'hard_swish'), _join(path, 'act'), ACTIVATIONS),
            se_gate=_choice(d.get('se_gate', 'hard_sigmoid'), _join(path, 'se_gate'), SE_GATES),
            se_act=_choice(d.get('se_act', 'relu'), _join(path, 'se_act'), ACTIVATIONS),
        )

    def to_dict(self) -> dict:
        return {
            'stem_channels': self.stem_channels,
            'act': self.act,
            'se_gate': self.se_gate,
            'se_act': self.se_act,
            'head_channels': self.head_channels,
            'stages': [s.to_dict() for s in self.stages],
        }

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(len(s.blocks) for s in self.stages)

    def blocks(self):
        """All blocks in order with their input channels: ``(stage_idx, block_idx, in_chs, block)``."""
        in_chs = self.stem_channels
        for si, stage in enumerate(self.stages):
            for bi, block in enumerate(stage.blocks):
                yield si, bi, in_chs, block
                in_chs = block.out_channels


# ----------------------------------------------------------------------------------------------
# the family


def _scale_channels(c: int, width: float, rule: str) -> int:
    """ceil(c·w) (ScaleNet, no divisor) or timm's make_divisible(c·w, 8) (EfficientNet)."""
    if rule == 'ceil':
        # round first so that e.g. 40 * 1.4 = 56.000000000000007 does not become 57
        return max(1, math.ceil(round(c * width, 6)))
    from timm.layers import make_divisible
    return make_divisible(c * width, 8)


def _scale_depth(blocks: tuple[BlockSpec, ...], depth: float, rule: str) -> list[BlockSpec]:
    n = len(blocks)
    target = max(1, math.ceil(round(n * depth, 6)))
    if rule == 'append_last':
        # ScaleNet: extra layers are appended and copy the stage's last base layer
        return list(blocks) + [replace(blocks[-1], stride=1)] * (target - n)
    # EfficientNet: timm's own spread of the extra repeats, in reverse over the stage's blocks
    from timm.models._efficientnet_builder import _scale_stage_depth
    return _scale_stage_depth(list(blocks), [1] * n, depth, 'ceil')


@dataclass(frozen=True)
class ScalingRule:
    """How a member's (depth, width) multipliers turn the base into an explicit network."""
    channels: str = 'ceil'
    depth: str = 'append_last'
    scale_stem: bool = True
    scale_head: bool = False

    @classmethod
    def from_dict(cls, d: Any, path: str = 'scaling') -> 'ScalingRule':
        d = _check_mapping(d, path)
        _check_keys(d, path, (), ('channels', 'depth', 'scale_stem', 'scale_head'))
        for key in ('scale_stem', 'scale_head'):
            if key in d and not isinstance(d[key], bool):
                raise SpecError(f'{path}.{key}: expected true or false, got {d[key]!r:.60}')
        return cls(
            channels=_choice(d.get('channels', 'ceil'), f'{path}.channels', CHANNEL_RULES),
            depth=_choice(d.get('depth', 'append_last'), f'{path}.depth', DEPTH_RULES),
            scale_stem=d.get('scale_stem', True),
            scale_head=d.get('scale_head', False),
        )

    def apply(self, base: NetSpec, depth: float, width: float) -> NetSpec:
        stages = []
        for stage in base.stages:
            blocks = _scale_depth(stage.blocks, depth, self.depth)
            blocks = [replace(b, stride=b.stride if i == 0 else 1,
                              out_channels=_scale_channels(b.out_channels, width, self.channels))
                      for i, b in enumerate(blocks)]
            stages.append(StageSpec(tuple(blocks)))
        stem = _scale_channels(base.stem_channels, width, self.channels) if self.scale_stem else base.stem_channels
        head = base.head_channels
        if self.scale_head and head:
            head = _scale_channels(head, width, self.channels)
        return replace(base, stem_channels=stem, head_channels=head, stages=tuple(stages))


@dataclass(frozen=True)
class MemberSpec:
    """One scaled member: its timm name, multipliers and evaluation resolution."""
    name: str
    depth: float = 1.0
    width: float = 1.0
    resolution: int = 224
    test_resolution: int | None = None
    crop_pct: float | None = None
    notes: str = ''
    metrics: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any, path: str = 'member') -> 'MemberSpec':
        d = _check_mapping(d, path)
        _check_keys(d, path, ('name',), ('depth', 'width', 'resolution', 'test_resolution', 'crop_pct',
                                         'notes', 'metrics'))
        name = _str(d['name'], f'{path}.name')
        if not name.isidentifier() or name != name.lower():
            raise SpecError(f'{path}.name: {name!r:.60} must be a lower-case Python identifier (it becomes a '
                            f'timm model name)')
        metrics = _check_mapping(d.get('metrics', {}), f'{path}.metrics')
        for k, v in metrics.items():
            _str(k, f'{path}.metrics')
            _float(v, f'{path}.metrics.{k}', -math.inf)
        test_res = d.get('test_resolution')
        crop = d.get('crop_pct')
        return cls(
            name=name,
            depth=_float(d.get('depth', 1.0), f'{path}.depth', 0.0, strict=True, maximum=MAX_MULTIPLIER),
            width=_float(d.get('width', 1.0), f'{path}.width', 0.0, strict=True, maximum=MAX_MULTIPLIER),
            resolution=_int(d.get('resolution', 224), f'{path}.resolution', 8),
            test_resolution=None if test_res is None else _int(test_res, f'{path}.test_resolution', 8),
            crop_pct=None if crop is None else _float(crop, f'{path}.crop_pct', 0.0, strict=True),
            notes=_str(d.get('notes', ''), f'{path}.notes'),
            metrics={k: float(v) for k, v in metrics.items()},
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ('test_resolution', 'crop_pct'):
            if d[key] is None:
                del d[key]
        for key in ('notes', 'metrics'):
            if not d[key]:
                del d[key]
        return d


_CFG_KEYS = ('license', 'paper_ids', 'paper_name', 'origin_url', 'description', 'interpolation', 'crop_pct',
             'mean', 'std', 'notes')


@dataclass(frozen=True)
class FamilySpec:
    """A base network, the scaling rule and the members; the format the search emits."""
    name: str
    base: NetSpec
    members: tuple[MemberSpec, ...]
    scaling: ScalingRule = ScalingRule()
    cfg: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any) -> 'FamilySpec':
        d = _check_mapping(d, 'family')
        _check_keys(d, '', ('format', 'name', 'base', 'members'), ('scaling', 'cfg'))
        if d['format'] != FAMILY_FORMAT:
            raise SpecError(f'format: {d["format"]!r:.60} is not {FAMILY_FORMAT!r}')
        name = _str(d['name'], 'name')
        if not name.isidentifier() or name != name.lower():
            raise SpecError(f'name: {name!r:.60} must be a lower-case Python identifier')
        cfg = dict(_check_mapping(d.get('cfg', {}), 'cfg'))
        _check_keys(cfg, 'cfg', (), _CFG_KEYS)
        for key in ('mean', 'std'):
            if key in cfg:
                vals = _list(cfg[key], f'cfg.{key}')
                if len(vals) != 3:
                    raise SpecError(f'cfg.{key}: expected 3 numbers, got {len(vals)}')
                cfg[key] = [_float(v, f'cfg.{key}', 0.0) for v in vals]
        for key in _CFG_KEYS:
            if key in cfg and key not in ('mean', 'std', 'crop_pct'):
                _str(cfg[key], f'cfg.{key}')
        if 'crop_pct' in cfg:
            _float(cfg['crop_pct'], 'cfg.crop_pct', 0.0, strict=True)
        raw = _list(d['members'], 'members')
        members = tuple(MemberSpec.from_dict(m, f'members[{i}]') for i, m in enumerate(raw))
        names = [m.name for m in members]
        for i, n in enumerate(names):
            if names.index(n) != i:
                raise SpecError(f'members[{i}].name: {n!r} is used twice')
        return cls(name=name, base=NetSpec.from_dict(d['base'], 'base'), members=members,
                   scaling=ScalingRule.from_dict(d.get('scaling', {})), cfg=cfg)

    def to_dict(self) -> dict:
        return {
            'format': FAMILY_FORMAT,
            'name': self.name,
            'cfg': dict(self.cfg),
            'scaling': asdict(self.scaling),
            'base': self.base.to_dict(),
            'members': [m.to_dict() for m in self.members],
        }

    def member(self, name: str) -> MemberSpec:
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(f'{name!r} is not a member of family {self.name!r} '
                       f'(members: {", ".join(m.name for m in self.members)})')

    def member_net(self, name: str) -> NetSpec:
        """The member's explicit network (depth and width rules applied)."""
        m = self.member(name)
        return self.scaling.apply(self.base, m.depth, m.width)


# ----------------------------------------------------------------------------------------------
# files


def load_json(source: str | os.PathLike | Mapping) -> Any:
    """A mapping as is, or the parsed contents of a JSON file (with a clear error if it is not one)."""
    if isinstance(source, Mapping):
        return deepcopy(dict(source))
    path = Path(source)
    if not path.is_file():
        raise SpecError(f'{path}: no such file (pass a family JSON path or a dict)')
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # ValueError covers JSONDecodeError
        raise SpecError(f'{path}: not valid JSON ({e})') from None


def load_family(source: str | os.PathLike | Mapping) -> FamilySpec:
    return FamilySpec.from_dict(load_json(source))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON through a temp file and rename, so a crash never leaves half a file."""
    from .atomic import write_text_atomic

    write_text_atomic(path, json.dumps(obj, indent=2) + '\n')


def save_family(family: FamilySpec, path: str | os.PathLike) -> None:
    write_json_atomic(path, family.to_dict())
