"""Every zoo model behaves like a timm model: training step, heads, features, TorchScript, FX, unique names."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import timm
import torch
from timm.models import group_parameters

import scalenet_models

ZOO = scalenet_models.ZOO
EXPECTED = ('scalenet_s0', 'scalenet_s1', 'scalenet_s2', 'scalenet_s3', 'scalenet_s4', 'scalenet_s5',
            'scarlet_a', 'scarlet_b', 'scarlet_c', 'scarlet_a2', 'scarlet_a4')
SMALL = 64
TRAIN = 48  # the training-step test's input: ceil(48 / 32) = 2, so pooling still averages several positions
# Scaled members share their base's block classes and options and differ only in depth and width, so the second
# features_only build (out_indices) runs on one base and one scaled member of each family.
REPRESENTATIVE = ('scalenet_s0', 'scalenet_s2', 'scarlet_b', 'scarlet_a2')


pytestmark = pytest.mark.usefixtures('one_torch_thread')


def test_the_zoo_has_all_eleven_models():
    assert sorted(ZOO) == sorted(EXPECTED)
    # by registry module, so families other tests register at run time do not count
    modules = ('scalenet', 'scarlet_a', 'scarlet_b', 'scarlet_c')
    assert sorted(n for m in modules for n in timm.list_models(module=m)) == sorted(EXPECTED)


@pytest.mark.parametrize('name', ZOO)
def test_train_step_heads_and_grad_checkpointing(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=42)
    model.train()
    x = torch.randn(2, 3, TRAIN, TRAIN)

    out = model(x)
    assert out.shape == (2, 42) and torch.isfinite(out).all()
    out.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f'parameters without a gradient: {no_grad[:5]}'
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}

    # gradient checkpointing changes memory, not results (train mode: batch statistics, no dropout)
    model.zero_grad(set_to_none=True)
    model.set_grad_checkpointing(True)
    out_ckpt = model(x)
    out_ckpt.square().mean().backward()
    torch.testing.assert_close(out_ckpt, out)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], msg=f'gradient of {n} differs with checkpointing')
    model.set_grad_checkpointing(False)

    # cfg names point at real layers
    cfg = model.pretrained_cfg
    assert model.get_submodule(cfg['first_conv']).weight.shape[1] == 3
    assert model.get_submodule(cfg['classifier']).weight.shape == (42, model.num_features)

    # forward_head(pre_logits=True) is the pooled feature vector
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, model.num_features, math.ceil(TRAIN / 32), math.ceil(TRAIN / 32))
        pre = model.forward_head(feats, pre_logits=True)
        torch.testing.assert_close(pre, feats.mean((2, 3)))
        torch.testing.assert_close(model.forward_head(feats), model(x))

        model.reset_classifier(0)
        assert model(x).shape == (2, model.num_features)
        model.reset_classifier(0, '')
        assert model(x).shape == feats.shape
        model.reset_classifier(7, 'avg')
        assert model(x).shape == (2, 7)

    # group_matcher covers every parameter in depth order: stem, blocks, head conv, then the classifier
    groups = group_parameters(model, model.group_matcher())
    assert sum(len(v) for v in groups.values()) == len(list(model.parameters()))
    ordered = [groups[k] for k in sorted(groups)]
    assert 'conv_stem.weight' in ordered[0] and 'blocks.0.0.conv_dw.weight' in ordered[1]
    assert 'conv_head.weight' in ordered[-2] and ordered[-1] == ['classifier.weight', 'classifier.bias']
    # stem, one group per block (timm folds the head conv into the last, as for its own EfficientNets), classifier
    assert len(ordered) == 1 + sum(len(stage) for stage in model.blocks) + 1
    coarse = group_parameters(model, model.group_matcher(coarse=True))
    assert len(coarse) == 1 + len(model.blocks) + 1


@pytest.mark.parametrize('name', ZOO)
def test_pool_size_matches_forward_features_at_cfg_resolution(name):
    # shapes only: the meta device runs the real model code at full resolution without computing
    with torch.device('meta'):
        model = timm.create_model(name).eval()
    cfg = model.pretrained_cfg
    for key in ('input_size', 'test_input_size'):
        if key in cfg:
            size = cfg[key]
            feats = model.forward_features(torch.empty(1, *size, device='meta'))
            assert tuple(feats.shape[-2:]) == tuple(cfg['pool_size']), (key, size)
            assert feats.shape[1] == model.num_features


@pytest.mark.parametrize('name', ZOO)
def test_features_only(name):
    model = timm.create_model(name, features_only=True).eval()
    info = model.feature_info
    assert len(info) == 5
    assert info.reduction() == [2, 4, 8, 16, 32]
    net, _ = scalenet_models.member_net(name)
    # the deepest level is the last stage's output, the first the stride-2 level
    assert info.channels()[-1] == net.stages[-1].blocks[-1].out_channels
    with torch.no_grad():
        outs = model(torch.randn(1, 3, SMALL, SMALL))
    assert [o.shape[1] for o in outs] == info.channels()
    assert [o.shape[-1] for o in outs] == [math.ceil(SMALL / r) for r in info.reduction()]


@pytest.mark.parametrize('name', REPRESENTATIVE)
def test_features_only_out_indices(name):
    info = timm.create_model(name, features_only=True).feature_info
    picked = timm.create_model(name, features_only=True, out_indices=(1, 3)).eval()
    assert picked.feature_info.channels() == [info.channels()[1], info.channels()[3]]
    assert picked.feature_info.reduction() == [4, 16]
    with torch.no_grad():
        outs = picked(torch.randn(1, 3, SMALL, SMALL))
    assert [o.shape[1] for o in outs] == picked.feature_info.channels()


@pytest.fixture(scope='module')
def scriptable_models():
    """One eval-mode model per name, built scriptable, shared by the TorchScript and FX tests."""
    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            with timm.layers.set_scriptable(True):
                cache[name] = timm.create_model(name, num_classes=10).eval()
        return cache[name]
    return get


@pytest.mark.parametrize('name', ZOO)
def test_torchscript(name, scriptable_models):
    model = scriptable_models(name)
    scripted = torch.jit.script(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))


@pytest.mark.parametrize('name', ZOO)
def test_fx(name, scriptable_models):
    model = scriptable_models(name)
    graph_module = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(graph_module(x), model(x))
    graph_module.train()
    graph_module(x).sum().backward()
    assert all(p.grad is not None for p in graph_module.parameters())
    # the traced graph shares the model's modules: leave the shared model as the fixture made it
    model.zero_grad(set_to_none=True)
    model.eval()


def test_fx_feature_extraction():
    # timm's FX feature extractor (used for features_only on FX-traced models) works on our graphs
    from timm.models import create_feature_extractor
    model = timm.create_model('scarlet_b').eval()
    extractor = create_feature_extractor(model, return_nodes={'blocks.3': 'mid', 'conv_head': 'head'})
    x = torch.randn(1, 3, SMALL, SMALL)
    with torch.no_grad():
        out = extractor(x)
        assert out['mid'].shape == (1, 80, SMALL // 16, SMALL // 16)
        torch.testing.assert_close(out['head'], model.conv_head(model.blocks(model.bn1(model.conv_stem(x)))))


def test_names_do_not_collide_with_timm():
    # list timm's own models in a process that never imported this package
    code = 'import json, sys, timm; assert "scalenet_models" not in sys.modules; print(json.dumps(timm.list_models()))'
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True, timeout=300)
    timm_own = set(json.loads(result.stdout))
    assert len(timm_own) > 1000  # really timm's list
    assert not timm_own & set(ZOO)
    for family in ('scalenet_s', 'scarlet_'):
        assert not [n for n in timm_own if n.startswith(family)]
