"""The supernet: exact export to timm, LET folding, sliced BN statistics, MACs, clear refusals."""
from __future__ import annotations

import copy
import random
from dataclasses import replace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models._efficientnet_blocks import InvertedResidual, SqueezeExcite

from scalenet_models import count_model_macs
from search.dynamic_ops import compose_lets, fold_let
from search.export import randomize_, warm_bn_stats
from search.sampling import largest, smallest
from search.space import Candidate, SpaceError, load_space
from search.supernet import SuperNet


pytestmark = pytest.mark.usefixtures('one_torch_thread')


def ready_supernet(name: str, width_scale: float | None = 0.25, seed: int = 0):
    space = load_space(name, width_scale=width_scale)
    torch.manual_seed(seed)
    net = SuperNet(space, num_classes=10)
    randomize_(net, seed)
    warm_bn_stats(net, space, random.Random(seed))
    return space, net.eval()


def max_diff(net: SuperNet, cand: Candidate, x: torch.Tensor) -> tuple[float, torch.Tensor]:
    net.set_active(cand)
    model = net.export(cand).eval()
    with torch.no_grad():
        a = net(x)
        return (a - model(x)).abs().max().item(), a


def has_skip(space, cand) -> bool:
    return 'skip' in [space.layer_choices(i)[g] for i, g in enumerate(space.candidate_to_genes(cand))]


@pytest.mark.parametrize('name', ['scalenet', 'scarlet'])
def test_export_equals_supernet_on_random_candidates(name):
    space, net = ready_supernet(name)
    rng = random.Random(1)
    g = torch.Generator().manual_seed(1)
    cands = [space.sample(rng) for _ in range(20)] + [smallest(space), largest(space)]
    skipped = 0
    for cand in cands:
        r = rng.choice([32, 33, 40])
        x = torch.randn(3, 3, r, r, generator=g)
        diff, logits = max_diff(net, cand, x)
        assert diff <= 1e-5, (cand.key(), diff)
        # the comparison means something: logits are far from zero and depend on the input
        assert logits.abs().max() > 0.05 and logits.std(0).max() > 1e-5
        skipped += name == 'scarlet' and has_skip(space, cand)
    if name == 'scarlet':
        assert skipped >= 5
    else:
        assert len({c.net.depths for c in cands}) >= 15 and len({c.net.stem_channels for c in cands}) >= 5


@pytest.mark.parametrize('name', ['scalenet', 'scarlet'])
def test_export_exact_on_the_real_spaces(name):
    space, net = ready_supernet(name, width_scale=None)
    rng = random.Random(2)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    for cand in [largest(space), smallest(space), space.sample(rng)]:
        diff, logits = max_diff(net, cand, x)
        assert diff <= 1e-5 and logits.abs().max() > 0.05 and logits.std(0).max() > 1e-5


def _random_bn_(module: nn.Module, g: torch.Generator) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=g))


@pytest.mark.parametrize('residual', [True, False])
@torch.no_grad()
def test_let_folds_into_the_next_expansion_conv(residual):
    """x + B(L x) (or B(L x)) computed with L as its own layer equals the block with W' = W · L."""
    g = torch.Generator().manual_seed(0)
    c = 24
    se = lambda chs, **kw: SqueezeExcite(chs, rd_ratio=0.25 / 3, act_layer=nn.ReLU, gate_layer='hard_sigmoid')
    branch = InvertedResidual(c, c, 5, exp_ratio=3.0, act_layer=nn.Hardswish, se_layer=se, noskip=True).eval()
    _random_bn_(branch, g)
    lets = [torch.eye(c) + 0.3 * torch.randn(c, c, generator=g) for _ in range(2)]
    x = torch.randn(2, c, 16, 16, generator=g)
    # two consecutive skipped layers: L1 then L2, each a bias-free 1x1 conv
    lx = F.conv2d(F.conv2d(x, lets[0][:, :, None, None]), lets[1][:, :, None, None])
    reference = branch(lx) + (x if residual else 0)
    folded = InvertedResidual(c, c, 5, exp_ratio=3.0, act_layer=nn.Hardswish, se_layer=se,
                              noskip=not residual).eval()
    folded.load_state_dict(branch.state_dict())
    folded.conv_pw.weight.copy_(fold_let(branch.conv_pw.weight, compose_lets(tuple(lets), c)))
    assert folded.has_skip == residual
    assert (folded(x) - reference).abs().max() <= 1e-5
    assert (reference - branch(x) - (x if residual else 0)).abs().max() > 1e-2   # L really changes things


def test_let_acts_and_learns_only_when_its_layer_is_skipped():
    space, net = ready_supernet('scarlet')
    genes = [0] * space.num_genes
    genes[3] = space.layer_choices(3).index('skip')   # stage 2 (40 ch), layer 1
    cand = space.genes_to_candidate(genes)
    let = net.blocks[2][1].let
    x = torch.randn(2, 3, 32, 32)
    net.set_active(cand)
    with torch.no_grad():
        out = net(x)
        saved = let.clone()
        let.copy_(torch.eye(let.shape[0]))
        assert (net(x) - out).abs().max() > 1e-3
        let.copy_(saved)
    net.train()
    net(x).square().mean().backward()
    assert let.grad is not None and let.grad.abs().sum() > 0
    net.zero_grad(set_to_none=True)
    net.set_active(space.genes_to_candidate([0] * space.num_genes))
    net(x).square().mean().backward()
    assert let.grad is None


def test_bn_running_stats_update_only_the_active_slice():
    space = load_space('scalenet', width_scale=0.25)
    net = SuperNet(space, num_classes=10).train()
    cand = smallest(space)
    net.set_active(cand)
    bn = net.bn1
    before = bn.running_mean.clone()
    net(torch.randn(4, 3, 32, 32))
    c = cand.net.stem_channels
    assert c < bn.num_features
    assert (bn.running_mean[:c] != before[:c]).all()
    assert torch.equal(bn.running_mean[c:], before[c:])


def test_recalibrating_the_supernet_equals_recalibrating_the_export():
    space, net = ready_supernet('scarlet', seed=3)
    cand = space.sample(random.Random(3))
    static = net.export(cand)
    batches = [torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    net.reset_bn_stats()
    net.set_active(cand)
    for m in static.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train(), static.train()
    with torch.no_grad():
        for b in batches:
            net(b), static(b)
    recal = net.export_state_dict(cand)
    for k, v in static.state_dict().items():
        if 'running' in k:
            assert torch.allclose(recal[k], v, atol=1e-5), k
    assert all(bn.momentum is None for bn in net.dynamic_bns())
    net.set_bn_momentum(0.1)
    assert all(bn.momentum == 0.1 for bn in net.dynamic_bns())


@pytest.mark.parametrize('name', ['scalenet', 'scarlet'])
def test_analytic_macs_equal_the_counter_on_exports(name):
    space = load_space(name, width_scale=0.5)
    net = SuperNet(space, num_classes=10)
    rng = random.Random(4)
    for cand in [space.sample(rng) for _ in range(4)] + [largest(space)]:
        cand = replace(cand, resolution=rng.choice([48, 56, 64]))
        assert space.macs(cand, 10) == count_model_macs(net.export(cand), cand.resolution)


def test_export_state_dict_uses_timm_keys_and_keeps_the_active_candidate():
    space, net = ready_supernet('scarlet')
    rng = random.Random(5)
    a, b = space.sample(rng), space.sample(rng)
    net.set_active(a)
    sd = net.export_state_dict(b)
    assert net.active == a
    assert set(sd) == set(net.export(b).state_dict())
    assert all(v.is_contiguous() and not v.requires_grad for v in sd.values())


def test_gradients_reach_only_the_active_slices():
    space = load_space('scalenet', width_scale=0.25)
    net = SuperNet(space, num_classes=10).train()
    cand = smallest(space)
    net.set_active(cand)
    F.cross_entropy(net(torch.randn(2, 3, 32, 32)), torch.tensor([1, 2])).backward()
    c = cand.net.stem_channels
    grad = net.conv_stem.weight.grad
    assert grad[:c].abs().sum() > 0 and grad[c:].abs().sum() == 0
    assert net.blocks[1][3].conv_pw.weight.grad is None      # a dropped trailing layer
    k = cand.net.stages[1].blocks[0].kernel
    dw = net.blocks[1][0].conv_dw.weight.grad                 # centre k x k of the 7 x 7 kernel
    s = (7 - k) // 2
    outside = dw.clone()
    outside[..., s:s + k, s:s + k] = 0
    assert dw[..., s:s + k, s:s + k].abs().sum() > 0 and outside.abs().sum() == 0


def test_set_active_refuses_what_the_supernet_cannot_run():
    scarlet = load_space('scarlet', width_scale=0.25)
    scalenet = load_space('scalenet', width_scale=0.25)
    net = SuperNet(scalenet, num_classes=10)
    with pytest.raises(SpaceError, match="act 'relu6' is not the space's 'hard_swish'"):
        net.set_active(scarlet.sample(random.Random(0)))
    with pytest.raises(SpaceError, match='has 6 stages'):
        c = scalenet.sample(random.Random(0))
        net.set_active(Candidate(replace(c.net, stages=c.net.stages[:6]), c.layers[:6], 32))
    cand = scalenet.sample(random.Random(1))
    assert 2 <= len(cand.layers[2]) < 7
    gap = list(cand.layers)
    gap[2] = (0,) + tuple(i + 1 for i in gap[2][1:])
    with pytest.raises(SpaceError, match='cannot be skipped'):
        net.set_active(Candidate(cand.net, tuple(gap), cand.resolution))
    wide = load_space('scalenet', width_scale=0.5).sample(random.Random(0))
    with pytest.raises(SpaceError, match='exceed'):
        net.set_active(wide)


def test_any_resolution_and_dropout():
    space = load_space('scarlet', width_scale=0.25)
    net = SuperNet(space, num_classes=7, drop_rate=0.5)
    for r in (24, 35, 64):
        assert net(torch.randn(2, 3, r, r)).shape == (2, 7)
    net.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(net(x), net(x))
    assert copy.deepcopy(net).export(net.active).drop_rate == 0.5


def test_fresh_supernet_optional_layers_are_identities_and_the_head_starts_near_chance():
    """The init (docs/search-space.md): a layer after the first of its stage starts as the identity, so
    a deep and a shallow candidate compute the same logits before training; the classifier starts small,
    so the loss starts near ln(num_classes), not timm's ~3.6 for 10 classes."""
    space = load_space('scalenet', width_scale=0.25)
    torch.manual_seed(0)
    net = SuperNet(space, num_classes=10).train()  # batch statistics: fresh running ones shrink activations to ~0
    shallow = space.sample_base(random.Random(3))
    deep = replace(shallow, depths=tuple(max(st.depths) for st in space.stages),
                   kernels=tuple(k + (k[-1],) * (max(st.depths) - len(k)) for k, st in zip(shallow.kernels, space.stages)))
    assert deep.depths != shallow.depths
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        outs = []
        for base in (shallow, deep):
            net.set_active(space.candidate(base, space.scaling_stages[0][0]))
            outs.append(net(x))
    assert outs[0].abs().max() > 0.05      # real logits, not a vanished signal
    torch.testing.assert_close(outs[0], outs[1])
    loss = F.cross_entropy(outs[0], torch.randint(0, 10, (4,))).item()
    assert abs(loss - torch.log(torch.tensor(10.0)).item()) < 0.1, loss
