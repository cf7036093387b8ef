"""Benchmark (b): candidates evaluated per minute, supernet evaluator vs export-then-evaluate.

Both paths do the same work per candidate: reset BN statistics, recalibrate them on the same
calibration batches (cumulative average), then score the same held-out images in eval mode. The
supernet path runs the candidate inside the weight-sharing supernet (search.evaluation.Evaluator);
the baseline exports a standalone timm model with sliced weights for every candidate
(SuperNet.export) and calibrates and scores that. Both top-1 values are compared too.

    python benchmarks/eval_throughput.py --space scalenet --width-scale 0.25 --candidates 12
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search.cli import demo_space  # noqa: E402
from search.data import build_search_data, resize_batch  # noqa: E402
from search.evaluation import EvalSettings, Evaluator  # noqa: E402
from search.space import load_space  # noqa: E402
from search.supernet import SuperNet  # noqa: E402


@torch.no_grad()
def export_and_evaluate(net, cand, calib, val) -> float:
    """The baseline: a standalone timm model per candidate, BN recalibrated, then scored."""
    model = net.export(cand)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    for x, _ in calib:
        model(resize_batch(x, cand.resolution))
    model.eval()
    correct = total = 0
    for x, y in val:
        correct += int((model(resize_batch(x, cand.resolution)).argmax(1) == y).sum())
        total += len(y)
    return 100.0 * correct / total


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--space', default='scalenet', choices=('scalenet', 'scarlet'), help='space to shrink')
    p.add_argument('--width-scale', type=float, default=0.25, help='channel multiplier of the space')
    p.add_argument('--candidates', type=int, default=12, help='random candidates per method')
    p.add_argument('--calib-batches', type=int, default=4, help='BN recalibration batches')
    p.add_argument('--calib-batch-size', type=int, default=64, help='BN recalibration batch size')
    p.add_argument('--val-images', type=int, default=500, help='held-out images per candidate')
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    p.add_argument('--seed', type=int, default=0, help='seed')
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    space = load_space(demo_space(args.space, width_scale=args.width_scale))
    data = build_search_data('synthetic', load_size=space.resolution_max, val_fraction=0.2, seed=args.seed,
                             synthetic_samples=max(3000, 5 * args.val_images), synthetic_classes=6)
    net = SuperNet(space, num_classes=6).eval()
    settings = EvalSettings(args.calib_batches, args.calib_batch_size, args.val_images, 250, args.seed)
    ev = Evaluator(net, data, settings)
    rng = random.Random(args.seed)
    cands = [space.sample(rng) for _ in range(args.candidates)]
    res = sorted({c.resolution for c in cands})
    for r in res:                       # resize the cached sets once per resolution, outside the timing
        ev._batches(r)
    t = time.perf_counter()
    a = [ev.top1(c) for c in cands]
    t_super = time.perf_counter() - t
    t = time.perf_counter()
    b = [export_and_evaluate(net, c, *ev._batches(c.resolution)) for c in cands]
    t_export = time.perf_counter() - t
    result = {
        'space': f'{args.space} x{args.width_scale:g}', 'resolutions': res, 'candidates': args.candidates,
        'calibration_images': args.calib_batches * args.calib_batch_size, 'val_images': args.val_images,
        'threads': args.threads,
        'supernet_cand_per_min': round(60 * args.candidates / t_super, 1),
        'export_cand_per_min': round(60 * args.candidates / t_export, 1),
        'speedup': round(t_export / t_super, 3),
        'max_top1_difference': max(abs(x - y) for x, y in zip(a, b)),
        'mean_top1': round(statistics.mean(a), 2),
        'python': platform.python_version(), 'torch': torch.__version__,
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == '__main__':
    main()
