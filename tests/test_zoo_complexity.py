"""Exact counts: the reference MACs/params, and the analytic count against FlopCounterMode and the built model."""
from __future__ import annotations

from dataclasses import replace

import pytest
import timm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scalenet_models
from scalenet_models import BlockSpec, NetSpec, StageSpec, build_network, complexity, count_model_macs, member_net
from scalenet_models.spec import ACTIVATIONS

# ../shared/reference: scalenet.md "Released architectures" (rounded to 0.1M MACs / 0.001M params, so within
# 0.1%) and scarletnas.md "exact count of the official definition" (params exact, MACs to 0.1M)
SCALENET_REFERENCE = {
    'scalenet_s0': (354.9e6, 6.687e6, (1, 1, 4, 2, 2, 3, 1), 224),
    'scalenet_s1': (810.9e6, 12.455e6, (2, 2, 5, 3, 3, 4, 2), 256),
    'scalenet_s2': (1.627e9, 17.701e6, (2, 2, 6, 3, 3, 5, 2), 304),
    'scalenet_s3': (3.044e9, 23.401e6, (2, 2, 6, 3, 3, 5, 2), 354),
    'scalenet_s4': (6.449e9, 29.016e6, (2, 2, 7, 4, 4, 5, 2), 457),
    'scalenet_s5': (10.899e9, 38.254e6, (2, 2, 8, 4, 4, 6, 2), 533),
}
SCARLET_REFERENCE = {
    'scarlet_a': (365.3e6, 6_707_720),
    'scarlet_b': (326.9e6, 6_531_556),
    'scarlet_c': (280.1e6, 6_073_684),
}


pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.mark.parametrize('name', sorted(SCALENET_REFERENCE))
def test_scalenet_matches_the_reference_table(name):
    macs, params, depths, resolution = SCALENET_REFERENCE[name]
    net, member = member_net(name)
    assert member.resolution == resolution
    assert net.depths == depths
    c = complexity(net, member.resolution)
    assert c.macs == pytest.approx(macs, rel=1e-3)
    assert c.params == pytest.approx(params, rel=1e-3)


@pytest.mark.parametrize('name', sorted(SCARLET_REFERENCE))
def test_scarlet_matches_the_official_counts(name):
    macs, params = SCARLET_REFERENCE[name]
    net, member = member_net(name)
    assert member.resolution == 224
    c = complexity(net, 224)
    assert c.params == params
    assert c.macs == pytest.approx(macs, rel=1e-3)
    assert round(c.macs / 1e5) == round(macs / 1e5)  # and it rounds to the published 0.1M


def test_scalenet_s0_architecture_is_the_released_base():
    net, _ = member_net('scalenet_s0')
    kernels = [[b.kernel for b in stage.blocks] for stage in net.stages]
    assert kernels == [[5], [5], [7, 7, 5, 3], [5, 5], [7, 7], [7, 5, 7], [5]]
    assert [stage.blocks[0].out_channels for stage in net.stages] == [16, 32, 40, 80, 96, 192, 320]
    assert net.stages[0].blocks[0].type == 'ds'  # e = 1: no expansion conv (see scalenet.md)
    assert all(b.se == 0.25 for _, _, _, b in net.blocks())
    assert (net.stem_channels, net.head_channels, net.act) == (32, 1280, 'hard_swish')


def test_reconstructions_are_labelled():
    for name in ('scarlet_a2', 'scarlet_a4'):
        notes = timm.models.get_pretrained_cfg(name).notes
        assert any('reconstruction' in n.lower() for n in notes), name
    assert not timm.models.get_pretrained_cfg('scarlet_a').notes


# resolutions for the FlopCounterMode check: cheap ones for every model, plus odd sizes (ceil at stride 2)
@pytest.mark.parametrize('name', scalenet_models.ZOO)
def test_analytic_count_equals_flop_counter_and_parameters(name):
    net, member = member_net(name)
    model = timm.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == complexity(net, member.resolution).params
    resolutions = (64, 97) + ((member.resolution,) if member.resolution <= 224 else ())
    for r in resolutions:
        assert count_model_macs(model, r) == complexity(net, r).macs, f'{name} at {r} px'
    # another classifier size changes only the classifier term
    model = timm.create_model(name, num_classes=42)
    c = complexity(net, 64, num_classes=42)
    assert sum(p.numel() for p in model.parameters()) == c.params
    assert count_model_macs(model, 64) == c.macs


def test_headless_network_counts():
    net, _ = member_net('scarlet_c')
    model = build_network(net, num_classes=0)
    c = complexity(net, 64, num_classes=0)
    assert sum(p.numel() for p in model.parameters()) == c.params
    assert count_model_macs(model, 64) == c.macs


def test_complexity_is_fast():
    # the search calls it in its inner loop: many thousands per second (generous bound for a shared CPU)
    import time
    net, _ = member_net('scalenet_s5')
    start = time.perf_counter()
    for _ in range(200):
        complexity(net, 533)
    assert (time.perf_counter() - start) / 200 < 2e-3


# random networks: the analytic count holds for any spec the search may emit, not only the zoo

blocks = st.builds(
    lambda t, k, s, e, se, c, act: BlockSpec(kernel=k, out_channels=c, stride=s, expansion=1.0 if t == 'ds' else e,
                                             se=se, type=t, act=act),
    st.sampled_from(['ds', 'ir']), st.sampled_from([3, 5, 7]), st.sampled_from([1, 2]),
    st.sampled_from([1.0, 2.5, 3.0, 4.0, 6.0]), st.sampled_from([0.0, 0.25, 0.5]), st.integers(3, 20),
    st.none() | st.sampled_from(ACTIVATIONS),
)
stages = st.lists(blocks, min_size=1, max_size=2).map(
    lambda bs: StageSpec(tuple([bs[0]] + [replace(b, stride=1) for b in bs[1:]])))
nets = st.builds(
    lambda stem, ss, head, act, gate: NetSpec(stem_channels=stem, stages=tuple(ss), head_channels=head, act=act,
                                              se_gate=gate),
    st.integers(3, 16), st.lists(stages, min_size=1, max_size=3), st.sampled_from([0, 24]),
    st.sampled_from(ACTIVATIONS), st.sampled_from(['hard_sigmoid', 'sigmoid']),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nets, st.sampled_from([16, 23, 32]), st.sampled_from([0, 10]))
def test_analytic_count_holds_for_random_specs(net, resolution, num_classes):
    model = build_network(net, num_classes=num_classes)
    c = complexity(net, resolution, num_classes=num_classes)
    assert sum(p.numel() for p in model.parameters()) == c.params
    assert count_model_macs(model, resolution) == c.macs
    # and each block's activation is the one the spec asked for
    for (si, bi, _, block), module in zip(net.blocks(), (m for stage in model.blocks for m in stage)):
        expected = timm.layers.get_act_layer(block.act or net.act)
        assert isinstance(module.bn1.act, expected), (si, bi, block)
