"""ScaleNet and SCARLET-NAS model families for timm.

Import this package before ``timm.create_model``: timm has no plugin mechanism, so the models exist
only once this package has registered them.
"""
from .builder import arch_def, build_network, model_kwargs
from .complexity import Complexity, complexity, count_model_macs
from .registry import (create_member, get_family, list_families, member_net, register_family, register_zoo,
                       reload_weights_manifest, weights_entries)
from .spec import BlockSpec, FamilySpec, MemberSpec, NetSpec, ScalingRule, SpecError, StageSpec, load_family, save_family
from .weights import PretrainedWeightsError, WeightsEntry

__version__ = '0.1.0'

ZOO = tuple(register_zoo())

__all__ = [
    'ZOO', 'BlockSpec', 'Complexity', 'FamilySpec', 'MemberSpec', 'NetSpec', 'PretrainedWeightsError', 'ScalingRule',
    'SpecError', 'StageSpec', 'WeightsEntry', 'arch_def', 'build_network', 'complexity', 'count_model_macs',
    'create_member', 'get_family', 'list_families', 'load_family', 'member_net', 'model_kwargs', 'register_family',
    'register_zoo', 'reload_weights_manifest', 'save_family', 'weights_entries',
]
