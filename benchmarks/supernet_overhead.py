"""Supernet training-step time with a candidate active ÷ the same exported static model's step time.

One step = zero_grad + forward + cross-entropy + backward + SGD (Nesterov, momentum 0.9, wd 4e-5),
same batch and resolution; the supernet step also calls ``set_active`` as training does. Settings
are resolution x batch x subnet; supernet and static steps are interleaved, the median of each is
taken per setting, and the median ratio over settings is reported. Wall time and this process's
CPU time are both measured: on a shared, loaded CPU (with one intra-op thread) the CPU-time ratio
is the one other processes disturb least.
"""
from __future__ import annotations

import argparse
import itertools
import platform
import random
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from search.space import load_space  # noqa: E402
from search.supernet import SuperNet  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--space', default='scalenet', help='space name or JSON path (default: scalenet)')
    p.add_argument('--width-scale', type=float, default=None, help='shrink every channel count (default: real widths)')
    p.add_argument('--resolutions', type=int, nargs='+', default=[64, 96, 128], help='input sizes (default: 64 96 128)')
    p.add_argument('--batches', type=int, nargs='+', default=[8, 16], help='batch sizes (default: 8 16)')
    p.add_argument('--subnets', type=int, default=2, help='sampled candidates per (resolution, batch) (default: 2)')
    p.add_argument('--steps', type=int, default=5, help='timed steps per model and setting (default: 5)')
    p.add_argument('--warmup', type=int, default=2, help='untimed steps per model and setting (default: 2)')
    p.add_argument('--threads', type=int, default=1, help='torch intra-op threads (default: 1)')
    p.add_argument('--device', default='cpu', help='cpu or cuda (default: cpu)')
    p.add_argument('--seed', type=int, default=0, help='candidate sampling seed (default: 0)')
    return p.parse_args(argv)


def sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def step_time(model, opt, x, y, device, before=None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one training step."""
    sync(device)
    t, c = time.perf_counter(), time.process_time()
    if before is not None:
        before()
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    sync(device)
    return time.perf_counter() - t, time.process_time() - c


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    space = load_space(args.space, width_scale=args.width_scale)
    supernet = SuperNet(space, num_classes=1000).to(args.device).train()
    sgd = dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=4e-5)
    super_opt = torch.optim.SGD(supernet.parameters(), **sgd)
    rng = random.Random(args.seed)
    settings = [(r, b, space.sample(rng)) for r, b in itertools.product(args.resolutions, args.batches)
                for _ in range(args.subnets)]
    rows = []
    for r, b, cand in tqdm(settings, desc='settings'):
        static = supernet.export(cand).to(args.device).train()
        static_opt = torch.optim.SGD(static.parameters(), **sgd)
        x = torch.randn(b, 3, r, r, device=args.device)
        y = torch.randint(0, 1000, (b,), device=args.device)
        activate = lambda: supernet.set_active(cand)
        for _ in range(args.warmup):
            step_time(supernet, super_opt, x, y, args.device, activate)
            step_time(static, static_opt, x, y, args.device)
        ts, tt = [], []
        for _ in range(args.steps):
            ts.append(step_time(supernet, super_opt, x, y, args.device, activate))
            tt.append(step_time(static, static_opt, x, y, args.device))
        s, t = (statistics.median(w for w, _ in ts), statistics.median(w for w, _ in tt))
        sc, tc = (statistics.median(c for _, c in ts), statistics.median(c for _, c in tt))
        rows.append((r, b, space.macs(replace(cand, resolution=r)) / 1e6, s, t, s / t, sc, tc, sc / tc))
    print(f'# supernet_overhead: space={space.name} threads={args.threads} device={args.device} '
          f'torch={torch.__version__} python={platform.python_version()}')
    print('| resolution | batch | subnet MMACs | supernet wall (s) | static wall (s) | wall ratio '
          '| supernet CPU (s) | static CPU (s) | CPU ratio |')
    print('|---|---|---|---|---|---|---|---|---|')
    for r, b, m, s, t, q, sc, tc, qc in rows:
        print(f'| {r} | {b} | {m:.1f} | {s:.4f} | {t:.4f} | {q:.3f} | {sc:.4f} | {tc:.4f} | {qc:.3f} |')
    for label, ratios in (('wall', [row[5] for row in rows]), ('CPU', [row[8] for row in rows])):
        print(f'median {label}-time ratio over {len(rows)} settings: {statistics.median(ratios):.3f} '
              f'(min {min(ratios):.3f}, max {max(ratios):.3f})')


if __name__ == '__main__':
    main()
