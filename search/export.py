"""Check that exporting a candidate to timm is exact: same logits as the supernet, in eval mode.

A freshly initialised supernet has near-zero logits and identity stabilisers, which would hide
mistakes, so without a trained supernet the check first randomises every weight, stabiliser and
BN affine, then runs a few train-mode forwards so the BN running statistics are non-trivial.
"""
from __future__ import annotations

import random

import torch
import torch.nn as nn
from tqdm import tqdm

from .space import SearchSpace, load_space
from .supernet import SuperNet


@torch.no_grad()
def randomize_(supernet: SuperNet, seed: int = 0) -> None:
    """Random, well-scaled weights everywhere (convs, SE, LETs, BN affine, classifier)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in supernet.named_parameters():
        if name.endswith('.let'):
            p.copy_(torch.eye(p.shape[0]) + 0.2 * torch.randn(p.shape, generator=g) / p.shape[0] ** 0.5)
        elif p.dim() > 1:
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
        elif 'bn' in name and name.endswith('weight'):
            p.copy_(0.5 + torch.rand(p.shape, generator=g))
        else:
            p.copy_(0.1 * torch.randn(p.shape, generator=g))


@torch.no_grad()
def warm_bn_stats(supernet: SuperNet, space: SearchSpace, rng: random.Random, steps: int = 3,
                  resolution: int = 32, batch: int = 4) -> None:
    """A few train-mode forwards of random candidates (cumulative BN averages), so running stats are real."""
    was = supernet.training
    supernet.train()
    supernet.reset_bn_stats()
    g = torch.Generator().manual_seed(rng.randrange(2 ** 31))
    for _ in range(steps):
        supernet.set_active(space.sample(rng))
        supernet(torch.randn(batch, 3, resolution, resolution, generator=g))
    supernet.set_bn_momentum(0.1)
    supernet.train(was)


def export_difference(supernet: SuperNet, cand, x: torch.Tensor) -> float:
    """max |supernet logits - exported timm model logits| for ``cand`` on ``x``, both in eval mode."""
    was = supernet.training
    supernet.eval()
    supernet.set_active(cand)
    model: nn.Module = supernet.export(cand).eval()
    with torch.no_grad():
        diff = (supernet(x) - model(x)).abs().max().item()
    supernet.train(was)
    return diff


def check_export(space: SearchSpace | str, samples: int, seed: int = 0, num_classes: int = 10,
                 resolution: int | None = None, width_scale: float | None = None,
                 supernet: SuperNet | None = None, progress: bool = False) -> float:
    """Largest |logit difference| between supernet and export over ``samples`` random candidates.

    ``resolution`` None uses each candidate's own resolution; ``width_scale`` shrinks the space
    (cheap checks); a given ``supernet`` is checked as it is (no randomising).
    """
    if samples < 1:
        raise ValueError(f'samples: {samples} must be at least 1')
    if isinstance(space, str) or width_scale is not None:
        space = load_space(space if isinstance(space, str) else space.to_dict(), width_scale=width_scale)
    rng = random.Random(seed)
    if supernet is None:
        torch.manual_seed(seed)
        supernet = SuperNet(space, num_classes=num_classes)
        randomize_(supernet, seed)
        warm_bn_stats(supernet, space, rng)
    elif supernet.space.to_dict() != space.to_dict():
        raise ValueError(f'supernet: it was built for space {supernet.space.name!r}, not {space.name!r}')
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for _ in tqdm(range(samples), desc='check-export', disable=not progress):
        cand = space.sample(rng)
        r = resolution or cand.resolution
        x = torch.randn(2, 3, r, r, generator=g)
        worst = max(worst, export_difference(supernet, cand, x))
    return worst
