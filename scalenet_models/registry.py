"""Register families as timm models: one thin entrypoint per member, pretrained cfgs as data.

Each family gets its own registry module (``timm.list_models(module='scalenet')``), its members'
``default_cfgs`` come from the family JSON and the weights manifest, and creation goes through timm's
``build_model_with_cfg`` so num_classes/in_chans adaptation, features_only and loading are timm's own.
"""
from __future__ import annotations

import math
import sys
import types
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._builder import _resolve_pretrained_source, resolve_pretrained_cfg
from timm.models._registry import _model_entrypoints
from timm.models.efficientnet import EfficientNet, EfficientNetFeatures

from .builder import model_kwargs
from .checkpoints import checkpoint_filter_fn
from .spec import FamilySpec, MemberSpec, NetSpec, SpecError, load_family
from .weights import PretrainedWeightsError, WeightsEntry, load_manifest, verify_hub_file

_FAMILIES: dict[str, FamilySpec] = {}
_MEMBER_TO_FAMILY: dict[str, str] = {}
_MANIFEST: dict[str, WeightsEntry] = {}


def _member_cfg(family: FamilySpec, member: MemberSpec, entry: WeightsEntry | None) -> dict:
    c = family.cfg
    r = member.resolution
    cfg = dict(
        url='',
        num_classes=1000,
        input_size=(3, r, r),
        pool_size=(math.ceil(r / 32),) * 2,
        crop_pct=member.crop_pct or c.get('crop_pct', 0.875),
        interpolation=c.get('interpolation', 'bicubic'),
        mean=tuple(c.get('mean', IMAGENET_DEFAULT_MEAN)),
        std=tuple(c.get('std', IMAGENET_DEFAULT_STD)),
        first_conv='conv_stem',
        classifier='classifier',
        license=c.get('license', 'apache-2.0'),
        description=c.get('description', ''),
        notes=(member.notes,) if member.notes else (),
    )
    if member.test_resolution:
        cfg['test_input_size'] = (3, member.test_resolution, member.test_resolution)
    for key in ('paper_ids', 'paper_name', 'origin_url'):
        if c.get(key):
            cfg[key] = c[key]
    if entry is not None:
        cfg.update(hf_hub_id=entry.hf_hub_id, num_classes=entry.num_classes)
        if entry.file != 'model.safetensors':
            cfg['hf_hub_filename'] = entry.file
    return cfg


def _family_module(name: str) -> types.ModuleType:
    mod_name = f'scalenet_models.families.{name}'
    mod = sys.modules.get(mod_name)
    if mod is None:
        mod = types.ModuleType(mod_name, f'timm registry module of the {name!r} family')
        mod.default_cfgs = {}
        mod.__all__ = []
        sys.modules[mod_name] = mod
    return mod


def _unregister_model(name: str, mod: types.ModuleType) -> None:
    """Remove a model this package registered from timm's registry (timm has no public call for it)."""
    from timm.models import _registry as reg

    reg._model_entrypoints.pop(name, None)
    module = reg._model_to_module.pop(name, None)
    if module is not None and module in reg._module_to_models:
        reg._module_to_models[module].discard(name)
        if not reg._module_to_models[module]:
            del reg._module_to_models[module]
    for tagged in reg._model_with_tags.pop(name, []) + [name]:
        reg._model_pretrained_cfgs.pop(tagged, None)
        reg._model_has_pretrained.discard(tagged)
    reg._model_default_cfgs.pop(name, None)
    mod.default_cfgs.pop(name, None)
    if name in mod.__all__:
        mod.__all__.remove(name)


def _make_entrypoint(member_name: str, module_name: str):
    def entrypoint(pretrained: bool = False, **kwargs: Any):
        return create_member(member_name, pretrained=pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = member_name
    entrypoint.__module__ = module_name
    entrypoint.__doc__ = f'{member_name}: a member of a scalenet-models family (see scalenet_models.get_family).'
    return entrypoint


def register_family(source: str | Path | Mapping, overwrite: bool = False) -> list[str]:
    """Register every member of a family (JSON path or dict) as a timm model; returns the names.

    A member name that timm already knows from elsewhere is refused (timm would silently replace it);
    re-registering one of this package's own families needs ``overwrite=True``.
    """
    family = source if isinstance(source, FamilySpec) else load_family(source)
    for m in family.members:
        owner = _MEMBER_TO_FAMILY.get(m.name)
        if m.name in _model_entrypoints and owner is None:
            raise SpecError(f'members: {m.name!r} is already a timm model; rename the member')
        if owner is not None and owner != family.name:
            raise SpecError(f'members: {m.name!r} is already registered by family {owner!r}; rename the member')
        if owner is not None and not overwrite:
            raise SpecError(f'members: {m.name!r} is already registered; pass overwrite=True to replace it')
    if family.name in _FAMILIES and not overwrite:
        raise SpecError(f'name: family {family.name!r} is already registered; pass overwrite=True to replace it')
    # a re-registered family may have dropped members: remove them from timm too, so the name is free again
    keep = {m.name for m in family.members}
    for old in [n for n, f in _MEMBER_TO_FAMILY.items() if f == family.name]:
        del _MEMBER_TO_FAMILY[old]
        if old not in keep:
            _unregister_model(old, _family_module(family.name))
    _FAMILIES[family.name] = family
    mod = _family_module(family.name)
    by_model: dict[str, list[WeightsEntry]] = {}
    for entry in _MANIFEST.values():
        by_model.setdefault(entry.model_name, []).append(entry)
    names = []
    for m in family.members:
        entries = by_model.get(m.name, [])
        cfgs = {e.tag: _member_cfg(family, m, e) for e in entries} or {m.name: _member_cfg(family, m, None)}
        mod.default_cfgs.update(generate_default_cfgs(cfgs))
        _MEMBER_TO_FAMILY[m.name] = family.name
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', message='Overwriting')
            register_model(_make_entrypoint(m.name, mod.__name__))
        names.append(m.name)
    return names


def register_zoo() -> list[str]:
    """Register the packaged families (``scalenet_models/families/*.json``)."""
    global _MANIFEST
    _MANIFEST = load_manifest()
    names = []
    for f in sorted(resources.files('scalenet_models.families').iterdir(), key=lambda p: p.name):
        if f.name.endswith('.json'):
            names += register_family(load_family(Path(str(f))), overwrite=True)
    return names


def reload_weights_manifest(path: str | Path | None = None) -> dict[str, WeightsEntry]:
    """Re-read the weights manifest and refresh every registered family's pretrained cfgs."""
    global _MANIFEST
    _MANIFEST = load_manifest(path)
    for family in list(_FAMILIES.values()):
        register_family(family, overwrite=True)
    return dict(_MANIFEST)


def list_families() -> list[str]:
    return sorted(_FAMILIES)


def get_family(name: str) -> FamilySpec:
    """A registered family by its name, or by the name of one of its members."""
    name = _MEMBER_TO_FAMILY.get(name, name)
    if name not in _FAMILIES:
        raise KeyError(f'unknown family or model {name!r}; registered families: {", ".join(sorted(_FAMILIES))}')
    return _FAMILIES[name]


def member_net(model_name: str) -> tuple[NetSpec, MemberSpec]:
    """The explicit network and member spec behind a registered model name."""
    family = get_family(model_name)
    return family.member_net(model_name), family.member(model_name)


def weights_entries(model_name: str | None = None) -> list[WeightsEntry]:
    return [e for e in _MANIFEST.values() if model_name is None or e.model_name == model_name]


def _no_weights_message(name: str) -> str:
    return (
        f'No published weights for {name!r} (it has no entry in the weights manifest). Ways forward:\n'
        f"  - a local weights file: timm.create_model('{name}', pretrained=True, "
        f"pretrained_cfg_overlay=dict(file='path/to/model.safetensors'))\n"
        f"  - an exported folder: timm.create_model('local-dir:/path/to/folder', pretrained=True)\n"
        f'  - train weights with the recipes: accelerate launch -m recipes.train --model {name} ...\n'
        f'  - or pretrained=False for a random initialisation.')


def _check_pretrained_source(name: str, cfg, cache_dir=None) -> None:
    load_from, _ = _resolve_pretrained_source(cfg.to_dict())
    if not load_from:
        raise PretrainedWeightsError(_no_weights_message(name))
    if load_from == 'hf-hub':
        for entry in _MANIFEST.values():
            if entry.hf_hub_id == cfg.hf_hub_id:
                verify_hub_file(entry, cache_dir=cache_dir)


def create_member(name: str, pretrained: bool = False, **kwargs: Any):
    """Build a registered member through timm's ``build_model_with_cfg`` (used by every entrypoint)."""
    net, _ = member_net(name)
    pretrained_cfg = resolve_pretrained_cfg(
        name, pretrained_cfg=kwargs.pop('pretrained_cfg', None),
        pretrained_cfg_overlay=kwargs.pop('pretrained_cfg_overlay', None))
    if pretrained:
        _check_pretrained_source(name, pretrained_cfg, kwargs.get('cache_dir'))
    model_cls, kwargs_filter, features_cls = EfficientNet, None, False
    if kwargs.pop('features_only', False):
        if 'feature_cfg' in kwargs or 'feature_cls' in kwargs:
            kwargs['features_only'] = True
        else:
            model_cls, features_cls = EfficientNetFeatures, True
            kwargs_filter = ('num_classes', 'num_features', 'head_conv', 'global_pool')
    model = build_model_with_cfg(
        model_cls, name, pretrained,
        pretrained_cfg=pretrained_cfg,
        pretrained_filter_fn=checkpoint_filter_fn,
        pretrained_strict=not features_cls and not kwargs.get('features_only', False),
        kwargs_filter=kwargs_filter,
        **{**model_kwargs(net), **kwargs},
    )
    if features_cls:
        from timm.models._builder import pretrained_cfg_for_features
        model.pretrained_cfg = model.default_cfg = pretrained_cfg_for_features(model.pretrained_cfg)
    return model
