"""Analytic MACs rate: candidates per second for ``space.macs`` (the search's FLOPs filter).

Candidates are sampled first (not timed); then ``space.macs`` is timed over all of them. For
reference, the same count by building the timm model and running FlopCounterMode is timed on a
few candidates, and the two counts are checked to be equal there.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scalenet_models import build_network, count_model_macs  # noqa: E402
from search.space import load_space  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--spaces', nargs='+', default=['scalenet', 'scarlet'], help='spaces (default: scalenet scarlet)')
    p.add_argument('--candidates', type=int, default=20000, help='candidates to count per space (default: 20000)')
    p.add_argument('--reference', type=int, default=3, help='candidates counted with FlopCounterMode (default: 3)')
    p.add_argument('--threads', type=int, default=1, help='torch intra-op threads for the reference (default: 1)')
    p.add_argument('--seed', type=int, default=0, help='sampling seed (default: 0)')
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print('| space | analytic candidates/s | sample+analytic candidates/s | FlopCounterMode candidates/s | equal |')
    print('|---|---|---|---|---|')
    for name in args.spaces:
        space = load_space(name)
        rng = random.Random(args.seed)
        t = time.perf_counter()
        cands = [space.sample(rng) for _ in range(args.candidates)]
        t_sample = time.perf_counter() - t
        t = time.perf_counter()
        macs = [space.macs(c) for c in cands]
        t_macs = time.perf_counter() - t
        t = time.perf_counter()
        ref = [count_model_macs(build_network(c.net), c.resolution) for c in cands[:args.reference]]
        t_ref = time.perf_counter() - t
        equal = ref == macs[:args.reference]
        print(f'| {name} | {len(cands) / t_macs:,.0f} | {len(cands) / (t_sample + t_macs):,.0f} | '
              f'{args.reference / t_ref:.2f} | {equal} |')


if __name__ == '__main__':
    main()
