"""Inference throughput and peak memory of the zoo against timm's EfficientNet-B0..B5 and MobileNetV3-Large.

Every model runs at its own pretrained-cfg resolution, in eval mode under ``torch.inference_mode``. Each
(model, batch size) is measured in a fresh subprocess so that memory figures do not mix:

- CPU: peak memory is the child's peak resident set size (``ru_maxrss``) minus its RSS just before the first
  forward pass, i.e. what inference itself adds on top of the loaded model; the model's own RSS is reported
  too. Besides wall-clock images/s the script reports images per CPU-second (``time.process_time``): with one
  thread that figure hardly moves with other processes' load, which makes it the fairer number on a shared
  machine.
- CUDA (when available): bf16 autocast, channels_last, ``torch.cuda.max_memory_allocated`` after a reset.

Efficiency is reported as GMAC/s (images/s x GMACs per image) and as the ratio of that to the EfficientNet
whose MACs are closest, so architectures of different sizes can be compared.

    nice python benchmarks/zoo_throughput.py --batch-sizes 1 32 --iters 3 --threads 1 --markdown
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

EFFICIENTNETS = tuple(f'efficientnet_b{i}' for i in range(6))
BASELINES = EFFICIENTNETS + ('mobilenetv3_large_100',)


def _rss_kib() -> int:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') // 1024


def measure_one(name: str, batch: int, iters: int, warmup: int, device: str, threads: int) -> dict:
    """Runs in the child process: build, warm up, time ``iters`` forward passes, read peak memory."""
    import torch
    import timm
    import scalenet_models

    if threads:
        torch.set_num_threads(threads)
    model = timm.create_model(name).eval()
    size = model.pretrained_cfg['input_size']
    # the same FlopCounterMode count for every model (the zoo's analytic MACs equal it, see the tests)
    macs = scalenet_models.count_model_macs(model, size[-1])
    x = torch.randn(batch, *size)
    use_cuda = device == 'cuda'
    if use_cuda:
        model = model.cuda().to(memory_format=torch.channels_last)
        x = x.cuda().contiguous(memory_format=torch.channels_last)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_kib() * 1024

    def step():
        with torch.inference_mode(), torch.autocast('cuda', dtype=torch.bfloat16, enabled=use_cuda):
            model(x)

    for _ in range(warmup):
        step()
    if use_cuda:
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(iters):
        step()
    if use_cuda:
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if use_cuda:
        peak = torch.cuda.max_memory_allocated() - base
        model_mb = base / 2 ** 20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
        model_mb = base / 2 ** 20
    return dict(model=name, batch=batch, resolution=size[-1], gmacs=macs / 1e9, device=device, threads=threads,
                iters=iters, img_per_s=batch * iters / wall, img_per_cpu_s=batch * iters / cpu if cpu else None,
                peak_mb=peak / 2 ** 20, base_mb=model_mb)


def run_child(name: str, batch: int, args) -> dict:
    cmd = [sys.executable, __file__, '--child', name, '--batch-sizes', str(batch), '--iters', str(args.iters),
           '--warmup', str(args.warmup), '--device', args.device, '--threads', str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f'{name} batch {batch} failed:\n{out.stderr[-2000:]}')
    return json.loads(out.stdout.strip().splitlines()[-1])


def add_efficiency(rows: list[dict]) -> None:
    """GMAC/s, and its ratio to the EfficientNet with the closest MACs at the same batch size."""
    for r in rows:
        r['gmac_per_s'] = r['img_per_s'] * r['gmacs']
        r['gmac_per_cpu_s'] = r['img_per_cpu_s'] * r['gmacs'] if r['img_per_cpu_s'] else None
    for r in rows:
        refs = [e for e in rows if e['model'] in EFFICIENTNETS and e['batch'] == r['batch']]
        if not refs:
            continue
        ref = min(refs, key=lambda e: abs(e['gmacs'] / r['gmacs'] - 1))
        r['reference'] = ref['model']
        r['vs_reference'] = r['gmac_per_s'] / ref['gmac_per_s']
        if r['gmac_per_cpu_s'] and ref['gmac_per_cpu_s']:
            r['vs_reference_cpu'] = r['gmac_per_cpu_s'] / ref['gmac_per_cpu_s']


def markdown(rows: list[dict], args) -> str:
    import torch
    lines = [
        f'**{date.today().isoformat()}**, {args.machine}; torch {torch.__version__}, {args.device}, '
        f'{args.threads or torch.get_num_threads()} thread(s), {args.iters} timed iterations after {args.warmup} '
        f'warm-up. Command:', '', '```bash', 'nice python benchmarks/zoo_throughput.py ' + ' '.join(args.argv), '```',
        '',
        'img/s = wall clock; img/CPU-s = images per CPU-second of the process; GMAC/CPU-s = img/CPU-s x GMACs. '
        '"vs EffNet" = GMAC/CPU-s relative to the EfficientNet (same batch) with the closest MACs. Peak MB = '
        'peak RSS of a fresh process minus its RSS with the model loaded (ru_maxrss); model MB = that RSS.', '',
        '| model | px | GMACs | batch | img/s | img/CPU-s | GMAC/CPU-s | vs EffNet (ref) | peak MB | model MB |',
        '|---|---:|---:|---:|---:|---:|---:|---|---:|---:|',
    ]
    for r in rows:
        vs = f'{r["vs_reference_cpu"]:.2f} ({r["reference"]})' if r.get('vs_reference_cpu') else '—'
        lines.append(f'| {r["model"]} | {r["resolution"]} | {r["gmacs"]:.3f} | {r["batch"]} | {r["img_per_s"]:.1f} | '
                     f'{r["img_per_cpu_s"]:.1f} | {r["gmac_per_cpu_s"]:.2f} | {vs} | {r["peak_mb"]:.0f} | '
                     f'{r["base_mb"]:.0f} |')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--models', nargs='+', help='models to measure (default: the zoo, EfficientNet-B0..B5 and '
                                                 'MobileNetV3-Large)')
    p.add_argument('--batch-sizes', nargs='+', type=int, default=[1, 32], help='batch sizes (default: 1 32)')
    p.add_argument('--iters', type=int, default=3, help='timed forward passes per measurement (default: 3)')
    p.add_argument('--warmup', type=int, default=1, help='untimed forward passes first (default: 1)')
    p.add_argument('--threads', type=int, default=0, help='torch intra-op threads (default 0: torch decides)')
    p.add_argument('--device', choices=['auto', 'cpu', 'cuda'], default='auto',
                   help='cuda runs bf16 + channels_last; auto picks cuda when available (default: auto)')
    p.add_argument('--machine', default='2-core CPU container, no GPU', help='machine description for the report')
    p.add_argument('--markdown', action='store_true', help='print a markdown section for benchmarks/RESULTS.md')
    p.add_argument('--json-out', type=Path, help='also write the raw rows to this JSON file')
    p.add_argument('--child', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.argv = list(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if args.device == 'auto':
        import torch
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if args.child:
        print(json.dumps(measure_one(args.child, args.batch_sizes[0], args.iters, args.warmup, args.device,
                                     args.threads)))
        return 0

    import scalenet_models
    from tqdm import tqdm

    models = args.models or list(scalenet_models.ZOO) + list(BASELINES)
    jobs = [(m, b) for m in models for b in args.batch_sizes]
    rows = []
    for name, batch in tqdm(jobs, desc='models', unit='run'):
        rows.append(run_child(name, batch, args))
        if args.json_out:  # after every run, so a long benchmark that is stopped keeps what it measured
            args.json_out.write_text(json.dumps(rows, indent=2))
    add_efficiency(rows)
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=2))
    if args.markdown:
        print(markdown(rows, args))
    else:
        for r in rows:
            print(json.dumps(r))
    print(f'# {platform.platform()} python {platform.python_version()}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
