"""Training throughput of recipes.train against a minimal hand-written PyTorch loop.

Same model, batch, precision, optimizer and loss, and the same in-memory tensors (no decoding, no
augmentation), so the ratio measures what the trainer adds: Accelerate's wrappers, the timm scheduler,
EMA, logging and progress bars. The two are measured alternately, several rounds.

Two numbers per side, both over the training loop only (set-up, evaluation and saving excluded): wall-clock
images/s (the trainer's own per-epoch ``img_per_s``) and images per CPU-second of the process
(``img_per_cpu_s``). On a shared machine the wall-clock figure moves with everyone else's load; with one
thread the CPU-time figure mostly does not.

    nice python benchmarks/train_throughput.py --model scalenet_s0 --img-size 64 --batch-size 32 --steps 20
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time

import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

import scalenet_models  # noqa: F401
import timm

from recipes.config import defaults
from recipes.data import Splits
from recipes.train import train


def hand_loop(model_name: str, x: torch.Tensor, y: torch.Tensor, batch: int, steps: int, num_classes: int,
              channels_last: bool) -> tuple[float, float]:
    """The minimal loop: shuffled batches from memory, forward, label-smoothed CE, backward, SGD step.

    Returns (images per wall-clock second, images per CPU-second) of the loop.
    """
    torch.manual_seed(0)
    model = timm.create_model(model_name, num_classes=num_classes)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=2e-5)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(x), generator=g)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(steps):
        idx = order[i * batch:(i + 1) * batch]
        xb, yb = x[idx], y[idx]
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        loss = loss_fn(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0), steps * batch / (time.process_time() - c0)


def trainer(model_name: str, x, y, batch: int, steps: int, num_classes: int, channels_last: bool,
            ema: bool) -> tuple[float, float]:
    """recipes.train on the same tensors: one epoch of ``steps`` batches; its own img/s measurement."""
    cfg = defaults()
    with tempfile.TemporaryDirectory() as out:
        cfg.update(model=model_name, num_classes=num_classes, img_size=x.shape[-1], batch_size=batch, epochs=1,
                   workers=0, opt='sgd', lr=0.01, weight_decay=2e-5, smoothing=0.1, sched='cosine',
                   model_ema=ema, channels_last=channels_last, output=out, log_with='none',
                   checkpoint_total_limit=1, command='benchmarks/train_throughput.py', dataset='memory')
        n = steps * batch
        splits = Splits(train=TensorDataset(x[:n], y[:n]), val=TensorDataset(x[:batch], y[:batch]),
                        num_classes=num_classes, classes=[str(i) for i in range(num_classes)],
                        description='in-memory tensors')
        train(cfg, splits=splits)
        doc = json.load(open(f'{out}/metrics.json'))
    return doc['epochs'][0]['img_per_s'], doc['epochs'][0]['img_per_cpu_s']


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default='scalenet_s0', help='timm model name')
    p.add_argument('--img-size', type=int, default=64, help='image size (square)')
    p.add_argument('--batch-size', type=int, default=32, help='batch size')
    p.add_argument('--steps', type=int, default=30, help='optimizer steps per measurement')
    p.add_argument('--rounds', type=int, default=3, help='alternating measurement rounds (median reported)')
    p.add_argument('--channels-last', action='store_true', help='channels-last memory format in both')
    p.add_argument('--ema', action='store_true', help='trainer also keeps a ModelEmaV3 (the hand loop has none)')
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads (1 avoids oversubscription on a '
                   'shared CPU)')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    num_classes = 10
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.steps * args.batch_size, 3, args.img_size, args.img_size, generator=g)
    y = torch.randint(0, num_classes, (len(x),), generator=g)
    hand_loop(args.model, x, y, args.batch_size, 3, num_classes, args.channels_last)  # warm-up
    trainer(args.model, x, y, args.batch_size, 2, num_classes, args.channels_last, args.ema)  # one-time imports
    rows = []
    for r in range(args.rounds):
        row = {}
        for name, fn in (('hand', hand_loop), ('trainer', trainer)):
            kw = dict(num_classes=num_classes, channels_last=args.channels_last)
            if fn is trainer:
                kw['ema'] = args.ema
            wall, per_cpu = fn(args.model, x, y, args.batch_size, args.steps, **kw)
            row[name] = {'wall_img_per_s': wall, 'img_per_cpu_s': per_cpu}
        rows.append(row)
        print(f"round {r + 1}: hand-written {row['hand']['wall_img_per_s']:.1f} img/s wall, "
              f"{row['hand']['img_per_cpu_s']:.1f} img/CPU-s | recipes.train {row['trainer']['wall_img_per_s']:.1f} "
              f"img/s wall, {row['trainer']['img_per_cpu_s']:.1f} img/CPU-s", flush=True)
    med = {f'{side}_{k}': statistics.median(r[side][k] for r in rows) for side in ('hand', 'trainer')
           for k in ('wall_img_per_s', 'img_per_cpu_s')}
    print(json.dumps({'model': args.model, 'img_size': args.img_size, 'batch_size': args.batch_size,
                      'steps': args.steps, 'rounds': rows, 'precision': 'fp32',
                      'channels_last': args.channels_last, 'ema': args.ema, 'median': med,
                      'ratio_wall': med['trainer_wall_img_per_s'] / med['hand_wall_img_per_s'],
                      'ratio_cpu': med['trainer_img_per_cpu_s'] / med['hand_img_per_cpu_s'],
                      'torch': torch.__version__, 'threads': torch.get_num_threads(),
                      'machine': platform.machine()}, indent=1))

if __name__ == '__main__':
    main()
