"""Imagenette -> Imagewoof: a small-scale stand-in for "pretrain on ImageNet, fine-tune on a fine-grained set".

Step 1 trains a small zoo model briefly on Imagenette (imagenet recipe keys, shortened); step 2 fine-tunes
it on Imagewoof with the fine-grained folder recipe, from step 1's model.safetensors, on a seeded
stratified validation split carved from Imagewoof's train (the copy has no other split). Prints top-1,
img/s and both commands.

    nice python benchmarks/finetune_imagewoof.py --datasets ~/.cache/scalenet-datasets
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from finetune_cifar10 import run_recipe, summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--datasets', default=os.path.expanduser('~/.cache/scalenet-datasets'),
                   help='folder holding imagenette/ and imagewoof/ (tests/conftest.py unpacks them there)')
    p.add_argument('--model', default='scalenet_s0', help='zoo model')
    p.add_argument('--img-size', type=int, default=64, help='training resolution')
    p.add_argument('--pretrain-subset', type=int, default=2000, help='Imagenette training images (0: all)')
    p.add_argument('--finetune-subset', type=int, default=2000, help='Imagewoof training images (0: all)')
    p.add_argument('--val-subset', type=int, default=1000, help='validation images of each step (0: all)')
    p.add_argument('--epochs', type=int, default=1, help='epochs of each step')
    p.add_argument('--threads', type=int, default=1, help='torch threads of the training process')
    p.add_argument('--output', default='runs/bench_imagewoof', help='parent of the two run directories')
    a = p.parse_args()
    out = Path(a.output)
    common = ['--model', a.model, '--img-size', str(a.img_size), '--epochs', str(a.epochs), '--batch-size', '32',
              '--workers', '1', '--val-subset', str(a.val_subset), '--warmup-epochs', '0', '--amp', 'false',
              '--channels-last', 'false']
    pre = ['--config', 'recipes/configs/imagenet_scalenet.yaml', '--data-dir', str(Path(a.datasets) / 'imagenette'),
           '--train-subset', str(a.pretrain_subset), '--sched', 'cosine', '--sched-on-updates', 'true',
           '--opt', 'sgd', '--lr', '0.05', '--model-ema', 'false', '--output', str(out / 'imagenette')] + common
    cmd1, wall1 = run_recipe(pre, a.threads)
    fine = ['--config', 'recipes/configs/finegrained_folder.yaml', '--data-dir', str(Path(a.datasets) / 'imagewoof'),
            '--val-fraction', '0.1', '--train-subset', str(a.finetune_subset),
            '--pretrained-file', str(out / 'imagenette' / 'model.safetensors'),
            '--output', str(out / 'imagewoof')] + common
    cmd2, wall2 = run_recipe(fine, a.threads)
    print(json.dumps({'pretrain': summary(out / 'imagenette', cmd1, wall1),
                      'finetune': summary(out / 'imagewoof', cmd2, wall2)}, indent=1))


if __name__ == '__main__':
    main()
