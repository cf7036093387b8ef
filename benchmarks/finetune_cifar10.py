"""Fine-tune a small zoo model on the CIFAR-10 JPEG copy with the cifar10 recipe; print top-1, img/s, command.

Short on purpose (a subset, one epoch, 32 px) so it runs on a 2-core CPU; pass more with the options.

    nice python benchmarks/finetune_cifar10.py --data-dir ~/.cache/scalenet-datasets/cifar10
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path


def run_recipe(args: list[str], threads: int) -> tuple[str, float]:
    """Run ``python -m recipes.train`` with ``args``; returns the command line and wall time."""
    cmd = [sys.executable, '-m', 'recipes.train'] + args
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=Path(__file__).resolve().parents[1])
    shown = ' '.join(['python -m recipes.train'] + [shlex.quote(a) for a in args])
    return f'OMP_NUM_THREADS={threads} {shown}', time.perf_counter() - t0


def summary(run: Path, command: str, wall: float) -> dict:
    m = json.loads((run / 'metrics.json').read_text())
    last = m['epochs'][-1]
    return {'run': str(run), 'command': command, 'wall_s': round(wall, 1), 'model': m['model'],
            'img_size': m['img_size'], 'top1': round(m['final']['top1'], 2), 'top5': round(m['final']['top5'], 2),
            'top1_ema': round(m['final_ema']['top1'], 2) if 'final_ema' in m else None,
            'train_img_per_s': round(last['img_per_s'], 1), 'epochs': len(m['epochs'])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data-dir', default=os.path.expanduser('~/.cache/scalenet-datasets/cifar10'),
                   help='the CIFAR-10 JPEG copy (train/ and test/ class folders)')
    p.add_argument('--model', default='scalenet_s0', help='zoo model')
    p.add_argument('--img-size', type=int, default=32, help='training resolution')
    p.add_argument('--train-subset', type=int, default=5000, help='stratified training subset (0: all 50k)')
    p.add_argument('--val-subset', type=int, default=2000, help='stratified test subset (0: all 10k)')
    p.add_argument('--epochs', type=int, default=1, help='epochs')
    p.add_argument('--lr', type=float, default=0.01, help='peak learning rate (cosine, no warm-up)')
    p.add_argument('--threads', type=int, default=1, help='torch threads of the training process')
    p.add_argument('--output', default='runs/bench_cifar10', help='run directory')
    a = p.parse_args()
    args = ['--config', 'recipes/configs/cifar10_finetune.yaml', '--data-dir', a.data_dir, '--model', a.model,
            '--img-size', str(a.img_size), '--train-subset', str(a.train_subset), '--val-subset', str(a.val_subset),
            '--epochs', str(a.epochs), '--batch-size', '32', '--lr', str(a.lr), '--warmup-epochs', '0',
            '--workers', '1', '--output', a.output]
    command, wall = run_recipe(args, a.threads)
    print(json.dumps(summary(Path(a.output), command, wall), indent=1))


if __name__ == '__main__':
    main()
