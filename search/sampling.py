"""Path samplers for supernet training; every draw goes through the caller's seeded ``random.Random``.

- ``hierarchical_sample``: ScaleNet's one-path sampler (scaling stage ∝ its number of width
  options, then d, w, r uniformly, then base depths and kernels); a layerwise space draws every
  layer's choice uniformly.
- ``sandwich_samples``: the optional sandwich rule (smallest, largest, one random path).
- ``fair_paths``: FairNAS strict fairness for layerwise spaces (m paths, every choice once).
"""
from __future__ import annotations

import random

from .space import BaseArch, Candidate, ScaleNetSpace, ScarletSpace, Scaling, SearchSpace, SpaceError


def hierarchical_sample(space: SearchSpace, rng: random.Random) -> Candidate:
    """One training path: the space's own default sampler (hierarchical for ScaleNet spaces)."""
    return space.sample(rng)


def smallest(space: SearchSpace) -> Candidate:
    """Fewest layers, narrowest, smallest kernels and expansions, no SE where optional, lowest resolution."""
    if isinstance(space, ScaleNetSpace):
        d, w, r = space.stage_options(0)
        base = BaseArch(tuple(min(st.depths) for st in space.stages),
                        tuple((min(st.kernels),) * min(st.depths) for st in space.stages))
        return space.candidate(base, Scaling(min(d), min(w), min(r)))
    return _layerwise_extreme(space, small=True)


def largest(space: SearchSpace) -> Candidate:
    """Most layers, widest, largest kernels and expansions, SE on, highest resolution of the last stage."""
    if isinstance(space, ScaleNetSpace):
        d, w, r = space.stage_options(len(space.scaling_stages) - 1)
        base = BaseArch(tuple(max(st.depths) for st in space.stages),
                        tuple((max(st.kernels),) * max(st.depths) for st in space.stages))
        return space.candidate(base, Scaling(max(d), max(w), max(r)))
    return _layerwise_extreme(space, small=False)


def _layerwise_extreme(space: ScarletSpace, small: bool) -> Candidate:
    genes = []
    for i in range(space.num_genes):
        names = space.layer_choices(i)
        if small and 'skip' in names:
            genes.append(names.index('skip'))
            continue
        # choices are ordered expansion, kernel, SE (off first): first is smallest, last op is largest
        ops = [n for n in names if n != 'skip']
        genes.append(names.index(ops[0] if small else ops[-1]))
    return space.genes_to_candidate(genes)


def sandwich_samples(space: SearchSpace, rng: random.Random) -> list[Candidate]:
    """The sandwich rule: the smallest and the largest path, then one random path."""
    return [smallest(space), largest(space), hierarchical_sample(space, rng)]


def fair_paths(space: SearchSpace, rng: random.Random) -> list[Candidate]:
    """FairNAS strict fairness: m paths (m = the most choices any layer has), each layer's choices
    shuffled so every choice is trained once per step; layers with fewer than m choices (no skip
    there) fill the remaining paths with further shuffles, so each of their choices runs at least
    once and the counts differ by at most one. Resolution is the space's fixed one. Gradients of the m paths
    are meant to be accumulated before one optimizer step.
    """
    if not isinstance(space, ScarletSpace):
        raise SpaceError(f'fair_paths: space {space.name!r} is of kind {space.kind!r}; strict fairness needs a '
                         f'layerwise space (use hierarchical_sample for scaling spaces)')
    _, upper = space.gene_bounds()
    m = max(upper) + 1
    columns = []
    for hi in upper:
        n = hi + 1
        order = []
        while len(order) < m:
            order += rng.sample(range(n), min(n, m - len(order)))
        columns.append(order)
    return [space.genes_to_candidate([col[p] for col in columns]) for p in range(m)]
