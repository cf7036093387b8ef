"""Time `hub export` (read + export + timm reload + logit check) for zoo models at their own resolution.

    python benchmarks/hub_export.py --models scalenet_s0 scarlet_a scarlet_a2 --num-classes 1000
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import timm  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tqdm import tqdm  # noqa: E402

import scalenet_models  # noqa: E402
from hub.export import export_model  # noqa: E402
from hub.source import load_source  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', nargs='+', default=['scalenet_s0', 'scarlet_a', 'scarlet_a2'],
                        help='zoo model names to export')
    parser.add_argument('--num-classes', type=int, default=1000, help='classifier size')
    parser.add_argument('--repeats', type=int, default=2, help='exports per model (the best time is reported)')
    args = parser.parse_args()
    print(f'torch threads {torch.get_num_threads()}')
    print('| model | resolution | params | file MB | read s | export+verify s |')
    print('|---|---:|---:|---:|---:|---:|')
    for name in tqdm(args.models, desc='models'):
        res = scalenet_models.member_net(name)[1].resolution
        with tempfile.TemporaryDirectory() as tmp:
            weights = Path(tmp) / 'w.safetensors'
            model = timm.create_model(name, num_classes=args.num_classes)
            save_file(model.state_dict(), str(weights))
            reads, exports = [], []
            for i in range(args.repeats):
                t0 = time.perf_counter()
                src = load_source(weights, model=name)
                t1 = time.perf_counter()
                result = export_model(src, Path(tmp) / f'out{i}')
                t2 = time.perf_counter()
                reads.append(t1 - t0)
                exports.append(t2 - t1)
            size = (result.folder / 'model.safetensors').stat().st_size / 1e6
        print(f'| {name} | {res} | {result.params / 1e6:.2f} M | {size:.1f} | {min(reads):.2f} | {min(exports):.2f} |')


if __name__ == '__main__':
    main()
