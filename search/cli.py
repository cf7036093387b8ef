"""``python -m search {train-supernet,search,export,check-export,demo}``: the search from the command line.

Each command is a thin layer over a function a script can call too: :func:`search.training.train_supernet`,
:func:`run_search`, :func:`export_weights`, :func:`search.export.check_export` and :func:`run_demo`.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
import random
import sys
import time
from pathlib import Path

from scalenet_models.distributed import cpu_only_ddp

from .training import SAMPLINGS, TrainConfig, config_from_args, load_supernet, train_supernet

DEMO_CLASSES = 10
DEMO_RESOLUTIONS = [[24], [24, 26, 27], [29, 31, 33], [34, 36, 38]]  # the real grid x 24/224


# ----------------------------------------------------------------------------------------------
# search: supernet -> family directory


def _candidates_path(out: Path) -> Path:
    return out / 'candidates.json'


def run_search(supernet_dir: str | Path, out: str | Path, name: str = 'searched', mcea=None, nsga=None,
               eval_settings=None, weights: bool = True, workers: int = 0, progress: bool = True) -> dict:
    """Search a family on a trained supernet and write the family directory; returns a summary."""
    from accelerate import Accelerator

    from scalenet_models.spec import write_json_atomic

    from .data import build_search_data
    from .evaluation import EvalSettings, Evaluator
    from .evolution import MCEA, MCEAConfig, NSGAConfig, nsga2_search
    from .report import member_rows, write_report

    if not name.isidentifier() or name != name.lower():
        raise ValueError(f'--name: {name!r} must be a lower-case Python identifier (it prefixes timm model names)')
    accelerator = Accelerator(cpu=cpu_only_ddp())
    out = Path(out)
    net, space, tcfg = load_supernet(supernet_dir, device=accelerator.device)
    data = build_search_data(tcfg['dataset'], tcfg['data_dir'], tcfg['load_size'] or space.resolution_max,
                             tcfg['val_fraction'], tcfg['seed'], tcfg['synthetic_samples'], tcfg['synthetic_classes'],
                             tcfg['max_images'])
    settings = eval_settings or EvalSettings(seed=tcfg['seed'])
    evaluator = Evaluator(net, data, settings, device=accelerator.device, cache_path=out / 'fitness_cache.json',
                          accelerator=accelerator, workers=workers, progress=progress)
    identity = {'evaluator': evaluator.context}
    t0 = time.time()
    state_path = out / 'search_state.json'
    if space.kind == 'scaling':
        cfg = mcea or MCEAConfig(seed=tcfg['seed'])
        res = MCEA(space, evaluator, cfg, state_path, identity, progress and accelerator.is_main_process).run()
        family = space.family(name, res.base, res.scalings,
                              [{'supernet_top1': t} if t is not None else {} for t in res.top1])
        cands = {m.name: space.candidate(res.base, s) for m, s in zip(family.members, res.scalings)}
        top1, evaluated, macs_classes = res.top1, res.evaluated, cfg.macs_classes
        context = {'method': f'MCEA ({cfg.iterations} iterations, GA population {cfg.population} x '
                             f'{cfg.generations} generations, tolerance ±{cfg.tolerance:.0%})',
                   'base MACs window': f'{res_window(space, cfg)}', 'fitness (mean top-1, stages 1..S)': f'{res.fitness:.2f}%'}
    else:
        cfg = nsga or NSGAConfig(seed=tcfg['seed'])
        res = nsga2_search(space, evaluator, cfg, state_path, identity, progress and accelerator.is_main_process)
        member = f'{name}_s0'
        d = space.family(member, res.best, {'supernet_top1': res.best_top1}).to_dict()
        d['name'] = name
        from scalenet_models.spec import FamilySpec
        family = FamilySpec.from_dict(d)
        cands = {member: res.best}
        top1, evaluated, macs_classes = [res.best_top1], res.evaluated, cfg.macs_classes
        context = {'method': f'NSGA-II (population {cfg.population} x {cfg.generations} generations)',
                   'MACs budget': f'{cfg.max_macs or getattr(space, "macs_window", None)}',
                   'Pareto front size': len(res.front)}
        if accelerator.is_main_process:
            write_json_atomic(out / 'pareto.json', res.front)
    context.update({'space': space.name, 'supernet': str(supernet_dir), 'data': data.description,
                    'held-out images': len(data.val_indices), 'calibration': f'{settings.calib_batches} batches of '
                    f'{settings.calib_batch_size} training images', 'real evaluations this run': evaluator.num_evaluated,
                    'search seconds': round(time.time() - t0, 1), 'processes': accelerator.num_processes,
                    'macs_classes': macs_classes})
    for member, cand in cands.items():
        if family.member_net(member) != cand.net:
            raise ValueError(f'{member}: the family file would not rebuild the searched network (the space\'s '
                             f'scaling_rule changes its channels at width 1.0); use channels "ceil" in the space file')
    rows = member_rows(family, top1, macs_classes)
    summary = {'family': str(out / 'family.json'), 'rows': rows, 'evaluations': evaluator.num_evaluated,
               'macs_classes': macs_classes}
    if accelerator.is_main_process:
        write_json_atomic(_candidates_path(out), {k: c.to_dict() for k, c in cands.items()})
        write_json_atomic(out / 'eval_settings.json', asdict(settings))
        write_report(out, family, rows, evaluated, context)
    if weights:
        summary['weights'] = [str(p) for p in export_weights(supernet_dir, out, net=net, space=space, data=data,
                                                             evaluator=evaluator, accelerator=accelerator)]
    return summary


def res_window(space, cfg) -> str:
    w = cfg.base_macs or getattr(space, 'base_macs', None)
    return 'none' if not w else f'{w[0]:,}..{w[1]:,} MACs'


def export_weights(supernet_dir, family_dir, net=None, space=None, data=None, evaluator=None, accelerator=None):
    """Inherited weights for every member the supernet holds: BN recalibrated, then sliced to timm keys."""
    from .data import build_search_data
    from .evaluation import EvalSettings, Evaluator
    from .report import save_member_weights
    from .space import Candidate

    family_dir = Path(family_dir)
    if net is None:
        net, space, tcfg = load_supernet(supernet_dir)
        data = build_search_data(tcfg['dataset'], tcfg['data_dir'], tcfg['load_size'] or space.resolution_max,
                                 tcfg['val_fraction'], tcfg['seed'], tcfg['synthetic_samples'],
                                 tcfg['synthetic_classes'], tcfg['max_images'])
        saved = family_dir / 'eval_settings.json'   # recalibrate exactly as the search did
        settings = EvalSettings(**json.loads(saved.read_text())) if saved.is_file() else EvalSettings(seed=tcfg['seed'])
        evaluator = Evaluator(net, data, replace(settings, val_images=1))
    cpath = _candidates_path(family_dir)
    if not cpath.is_file():
        raise FileNotFoundError(f'{cpath}: missing; pass the folder written by `python -m search search --out`')
    cands = {k: Candidate.from_dict(v) for k, v in json.loads(cpath.read_text()).items()}
    limit = space.max_net() if space.kind == 'scaling' else None
    paths = []
    for name, cand in cands.items():
        if limit is not None and any(a > b for a, b in zip(cand.net.depths, limit.depths)) or \
                cand.resolution > space.resolution_max or not _fits(cand, space):
            continue  # an extrapolated member: larger than anything the supernet holds
        evaluator.recalibrate(cand)
        state = net.export_state_dict(cand)
        if accelerator is None or accelerator.is_main_process:
            paths.append(save_member_weights(family_dir, name, state, data.num_classes))
    return paths


def _fits(cand, space) -> bool:
    """Whether every block of ``cand`` fits in the supernet's largest position."""
    pos = space.positions()
    for s, (idx, stage) in enumerate(zip(cand.layers, cand.net.stages)):
        for i, b in zip(idx, stage.blocks):
            if s >= len(pos) or i >= len(pos[s]) or b.out_channels > pos[s][i].block.out_channels:
                return False
    return True


# ----------------------------------------------------------------------------------------------
# demo


def demo_space(base: str = 'scalenet', width_scale: float = 0.25, resolutions=DEMO_RESOLUTIONS,
               max_depth: int = 2) -> dict:
    """The demo's small space: channels x ``width_scale``, resolutions x 24/224 (24..38 px), base depths <= 2.

    ``resolutions`` (one list per scaling stage) and ``max_depth`` shrink it further for tests.
    """
    from .space import load_space

    raw = load_space(base, width_scale=width_scale).to_dict()
    raw['name'] = f'{base}_demo'
    if raw['kind'] == 'scaling':
        for st in raw['stages']:
            st['depths'] = [d for d in st['depths'] if d <= max_depth]
        for stage, res in zip(raw['scaling_stages'], resolutions):
            stage['resolution'] = list(res)
        raw.pop('base_macs', None)
    else:
        raw['resolution'] = resolutions[0][0]
        for st in raw['stages']:
            st['layers'] = min(st['layers'], max_depth)
        raw.pop('macs_window', None)
        # shrunk channels are no longer multiples of 8: round8 would change them even at width 1.0
        raw.setdefault('scaling_rule', {})['channels'] = 'ceil'
    return raw


def middle_window(space, fraction: float = 0.5, samples: int = 300, seed: int = 0,
                  num_classes: int = 1000) -> tuple[int, int]:
    """The central ``fraction`` of sampled bases' MACs: the demo's base FLOPs window."""
    rng = random.Random(seed)
    macs = sorted(space.macs(space.candidate(space.sample_base(rng), space.scaling_stages[0][0]), num_classes)
                  for _ in range(samples))
    lo = macs[int(len(macs) * (0.5 - fraction / 2))]
    hi = macs[min(len(macs) - 1, int(len(macs) * (0.5 + fraction / 2)))]
    return lo, hi


def run_demo(out: str | Path, seed: int = 0, steps: int = 150, space: str = 'scalenet', dataset: str = 'synthetic',
             data_dir: str | None = None, threads: int | None = 1, progress: bool = True) -> dict:
    """The whole pipeline, small: supernet training, MCEA (or NSGA-II), family, report, weights, a timm model."""
    import timm
    import torch

    import scalenet_models
    from scalenet_models.spec import write_json_atomic

    from .evaluation import EvalSettings
    from .evolution import MCEAConfig, NSGAConfig
    from .report import format_table
    from .space import load_space

    out = Path(out)
    t0 = time.time()
    if threads:
        torch.set_num_threads(threads)
    raw = demo_space(space)
    write_json_atomic(out / 'space.json', raw)
    sp = load_space(out / 'space.json')
    run_dir = out / 'supernet'
    cfg = TrainConfig(space=str(out / 'space.json'), out=str(run_dir), dataset=dataset, data_dir=data_dir,
                      synthetic_samples=3000, synthetic_classes=DEMO_CLASSES, steps=steps, batch_size=32, lr=0.1,
                      weight_decay=4e-5, warmup_steps=max(1, steps // 20), seed=seed, threads=threads,
                      checkpoint_every=max(1, steps // 2), log_with='none', eval_candidates=0,
                      resume=(run_dir / 'checkpoints').is_dir() and not (run_dir / 'supernet.safetensors').exists())
    if not (run_dir / 'supernet.safetensors').exists():
        print(f'[demo] 1/3 training the supernet ({steps} steps, space {sp.name})', flush=True)
        train_supernet(cfg)
    print(f'[demo] 2/3 searching ({time.time() - t0:.0f}s so far)', flush=True)
    settings = EvalSettings(calib_batches=2, calib_batch_size=64, val_images=240, batch_size=120, seed=seed)
    if sp.kind == 'scaling':
        window = middle_window(sp, seed=seed)
        mcea = MCEAConfig(iterations=2, population=6, generations=2, init_bases=2, max_triples=3, grid_limit=4,
                          tolerance=0.15, base_macs=window, extrapolate=2, seed=seed)
        summary = run_search(run_dir, out, 'demo', mcea=mcea, eval_settings=settings, progress=progress)
    else:
        summary = run_search(run_dir, out, 'demo', nsga=NSGAConfig(population=8, generations=3, seed=seed),
                             eval_settings=settings, progress=progress)
    print(f'[demo] 3/3 family written ({time.time() - t0:.0f}s so far)\n', flush=True)
    print(format_table(summary['rows'], summary['macs_classes']), '\n', flush=True)
    names = scalenet_models.register_family(out / 'family.json', overwrite=True)
    num_classes = DEMO_CLASSES if dataset == 'synthetic' else None
    pick = names[min(2, len(names) - 1)]
    wfile = out / 'weights' / f'{pick}.safetensors'
    if wfile.exists() and num_classes:
        model = timm.create_model(pick, pretrained=True, pretrained_cfg_overlay=dict(file=str(wfile),
                                                                                       num_classes=num_classes))
        how = f'with inherited weights from {wfile}'
    else:
        model = timm.create_model(pick)
        how = 'randomly initialised'
    params = sum(p.numel() for p in model.parameters())
    print(f"timm.create_model('{pick}') -> {type(model).__name__}, {params:,} parameters, {how}")
    print(f'report: {out / "report.md"}; total {time.time() - t0:.0f}s')
    summary['model'] = pick
    summary['seconds'] = round(time.time() - t0, 1)
    return summary


# ----------------------------------------------------------------------------------------------
# argument parsing


def _add_train_args(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    p.add_argument('--config', metavar='YAML', help='a YAML file of defaults for these options (e.g. '
                                                    'search/configs/scalenet_imagenet.yaml); flags override it')
    p.add_argument('--space', default=d.space, help='search space: scalenet, scarlet, or a space JSON path')
    p.add_argument('--out', default=d.out, help='run folder: checkpoints/, supernet.safetensors, train_config.json')
    p.add_argument('--dataset', default=d.dataset,
                   help='synthetic (built in), folder (an ImageFolder tree at --data-dir) or a torchvision name '
                        '(cifar10, cifar100, svhn, stl10) already under --data-dir')
    p.add_argument('--data-dir', default=d.data_dir, help='folder of the dataset (only its training images are read)')
    p.add_argument('--load-size', type=int, default=d.load_size,
                   help='size images are loaded at before the per-step resize (default: the space\'s largest resolution)')
    p.add_argument('--val-fraction', type=float, default=d.val_fraction,
                   help='share of the training images held out (seeded, stratified) for the search\'s evaluation')
    p.add_argument('--max-images', type=int, default=d.max_images, help='use a stratified subset of this many images')
    p.add_argument('--synthetic-samples', type=int, default=d.synthetic_samples, help='size of the synthetic dataset')
    p.add_argument('--synthetic-classes', type=int, default=d.synthetic_classes, help='classes of the synthetic dataset')
    p.add_argument('--steps', type=int, default=d.steps, help='optimizer updates')
    p.add_argument('--batch-size', type=int, default=d.batch_size, help='images per process and micro-batch')
    p.add_argument('--grad-accum', type=int, default=d.grad_accum, help='micro-batches per optimizer update')
    p.add_argument('--opt', default=d.opt, help="timm optimizer name (default 'sgd': SGD with Nesterov momentum, the "
                                               "authors' recipe; 'adamw' converges faster on short CPU runs)")
    p.add_argument('--lr', type=float, default=d.lr, help='peak learning rate')
    p.add_argument('--momentum', type=float, default=d.momentum, help='SGD momentum')
    p.add_argument('--weight-decay', type=float, default=d.weight_decay, help='weight decay (not on BN and biases)')
    p.add_argument('--warmup-steps', type=int, default=d.warmup_steps, help='linear warm-up updates before the cosine')
    p.add_argument('--label-smoothing', type=float, default=d.label_smoothing, help='label smoothing of the loss')
    p.add_argument('--sampling', default=d.sampling, choices=SAMPLINGS,
                   help='paths per update: auto (hierarchical for ScaleNet, fair for SCARLET), hierarchical, '
                        'sandwich (smallest + largest + random), fair (FairNAS), uniform')
    p.add_argument('--mixed-precision', default=d.mixed_precision, choices=('no', 'fp16', 'bf16'),
                   help='autocast precision (Accelerate)')
    p.add_argument('--seed', type=int, default=d.seed, help='seed of every random choice (init, data, paths, split)')
    p.add_argument('--checkpoint-every', type=int, default=d.checkpoint_every, help='updates between checkpoints (0: none)')
    p.add_argument('--keep-checkpoints', type=int, default=d.keep_checkpoints, help='how many checkpoints to keep')
    p.add_argument('--workers', type=int, default=d.workers, help='data-loader worker processes')
    p.add_argument('--log-with', default=d.log_with, choices=('tensorboard', 'none'), help='Accelerate tracker')
    p.add_argument('--eval-candidates', type=int, default=d.eval_candidates,
                   help='random candidates scored on the held-out split at the end (a learning check)')
    p.add_argument('--threads', type=int, default=d.threads,
                   help='torch CPU threads (default: torch\'s choice; 1 is fastest on a busy small machine)')
    p.add_argument('--resume', action='store_true', help='continue the run in --out from its latest checkpoint')


def _add_search_args(p: argparse.ArgumentParser) -> None:
    from .evaluation import EvalSettings
    from .evolution import MCEAConfig, NSGAConfig

    m, n, e = MCEAConfig(), NSGAConfig(), EvalSettings()
    p.add_argument('--supernet', required=True, help='a finished train-supernet run folder')
    p.add_argument('--out', required=True, help='family folder: family.json, weights/, report.md, plots, state')
    p.add_argument('--name', default='searched', help='family name; members are <name>_s0, <name>_s1, ...')
    g = p.add_argument_group('MCEA (scaling spaces)')
    g.add_argument('--iterations', type=int, default=m.iterations, help='Markov-chain alternations K (authors: 8)')
    g.add_argument('--population', type=int, default=m.population, help='GA / NSGA-II population (authors: 64)')
    g.add_argument('--generations', type=int, default=m.generations, help='generations per GA run (authors: 40)')
    g.add_argument('--init-bases', type=int, default=m.init_bases, help='feasible bases sampled to initialise')
    g.add_argument('--max-triples', type=int, default=m.max_triples,
                   help='per stage, how many feasible (d, w, r) closest to the target the initialisation scores')
    g.add_argument('--grid-limit', type=int, default=m.grid_limit,
                   help='per stage, score only this many feasible (d, w, r) closest to the target in the grid '
                        'search (default: the whole feasible grid, as the authors)')
    g.add_argument('--tolerance', type=float, default=m.tolerance, help='allowed |MACs / (2^s x base) - 1|')
    g.add_argument('--base-macs', type=int, nargs=2, metavar=('LOW', 'HIGH'),
                   help='base MACs window (default: the space\'s base_macs)')
    g.add_argument('--extrapolate', type=int, default=m.extrapolate, help='members beyond the trained stages')
    g = p.add_argument_group('NSGA-II (layerwise spaces)')
    g.add_argument('--max-macs', type=int, default=n.max_macs, help='MACs budget of the chosen member')
    g = p.add_argument_group('evaluation')
    g.add_argument('--calib-batches', type=int, default=e.calib_batches, help='BN recalibration batches')
    g.add_argument('--calib-batch-size', type=int, default=e.calib_batch_size, help='BN recalibration batch size')
    g.add_argument('--val-images', type=int, default=e.val_images, help='held-out images per candidate (default: all)')
    g.add_argument('--eval-batch-size', type=int, default=e.batch_size, help='held-out evaluation batch size')
    p.add_argument('--macs-classes', type=int, default=m.macs_classes, help='classifier size MACs are counted with')
    p.add_argument('--seed', type=int, default=m.seed, help='search seed')
    p.add_argument('--no-weights', action='store_true', help='skip writing inherited weights per member')
    p.add_argument('--workers', type=int, default=0, help='data-loader workers for the calibration/held-out sets')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m search', description='ScaleNet / SCARLET-style search: train a '
                                     'supernet, search a family, export weights, check exports, or run the demo.',
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = sub.add_parser('train-supernet', formatter_class=fmt, help='train a weight-sharing supernet (Accelerate)',
                       description='Train a super-supernet on one CPU or N GPUs (accelerate launch -m search '
                                   'train-supernet ...); checkpoints resume exactly with --resume.')
    _add_train_args(p)
    p = sub.add_parser('search', formatter_class=fmt, help='search a family on a trained supernet',
                       description='MCEA (ScaleNet spaces) or NSGA-II (SCARLET spaces) with inherited weights; '
                                   'writes family.json, report.md, plots and weights/. Restarting resumes.')
    _add_search_args(p)
    p = sub.add_parser('export', formatter_class=fmt, help='write inherited weights for a searched family',
                       description='Recalibrate BN for each member and write <family dir>/weights/<member>.safetensors.')
    p.add_argument('--supernet', required=True, help='the train-supernet run folder the family was searched on')
    p.add_argument('--family-dir', required=True, help='the folder written by `search`')
    p = sub.add_parser('check-export', formatter_class=fmt, help='verify exported models equal the supernet',
                       description='Export random candidates to timm models and print the largest logit difference.')
    p.add_argument('--space', default='scalenet', help='scalenet, scarlet or a space JSON path')
    p.add_argument('--samples', type=int, default=20, help='random candidates to check')
    p.add_argument('--seed', type=int, default=0, help='sampling seed')
    p.add_argument('--num-classes', type=int, default=10, help='classifier size of the test supernet')
    p.add_argument('--resolution', type=int, default=None, help='input size (default: each candidate\'s own)')
    p.add_argument('--width-scale', type=float, default=None, help='shrink every channel count (faster checks)')
    p.add_argument('--tolerance', type=float, default=1e-5, help='exit with status 1 above this difference')
    p = sub.add_parser('demo', formatter_class=fmt, help='the whole pipeline, small, on a CPU in minutes',
                       description='Train a small supernet on built-in synthetic images (or your data), run a short '
                                   'MCEA, write a family with report, plots and weights, and build a member with timm.')
    p.add_argument('--out', required=True, help='output folder')
    p.add_argument('--steps', type=int, default=150, help='supernet training updates')
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads (0: torch\'s default)')
    p.add_argument('--seed', type=int, default=0, help='seed of everything')
    p.add_argument('--space', default='scalenet', choices=('scalenet', 'scarlet'), help='which space to shrink')
    p.add_argument('--dataset', default='synthetic', help='synthetic, folder, or a torchvision dataset name')
    p.add_argument('--data-dir', default=None, help='folder of --dataset when it is not synthetic')
    return parser


def _parse(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == 'train-supernet' and args.config:
        import yaml

        path = Path(args.config)
        if not path.is_file():
            parser.error(f'--config {path}: no such file')
        defaults = yaml.safe_load(path.read_text()) or {}
        known = {f for f in vars(args)}
        unknown = [k for k in defaults if k.replace('-', '_') not in known]
        if unknown:
            parser.error(f'--config {path}: unknown keys {unknown} (use the option names, e.g. batch_size)')
        sub = parser._subparsers._group_actions[0].choices['train-supernet']
        sub.set_defaults(**{k.replace('-', '_'): v for k, v in defaults.items()})
        args = parser.parse_args(argv)
    return args


def main(argv=None) -> int:
    from .data import DataError
    from .evolution import InfeasibleError, SearchStateError
    from .space import SpaceError
    from .training import ResumeError

    from accelerate import PartialState

    args = _parse(argv)
    try:
        if args.command == 'train-supernet':
            summary = train_supernet(config_from_args(args))
            PartialState().print(json.dumps(summary, indent=1))  # once, not per process
        elif args.command == 'search':
            from .evaluation import EvalSettings
            from .evolution import MCEAConfig, NSGAConfig

            mcea = MCEAConfig(iterations=args.iterations, population=args.population, generations=args.generations,
                              init_bases=args.init_bases, max_triples=args.max_triples, grid_limit=args.grid_limit,
                              tolerance=args.tolerance,
                              base_macs=tuple(args.base_macs) if args.base_macs else None,
                              extrapolate=args.extrapolate, macs_classes=args.macs_classes, seed=args.seed)
            nsga = NSGAConfig(population=args.population, generations=args.generations, max_macs=args.max_macs,
                              macs_classes=args.macs_classes, seed=args.seed)
            settings = EvalSettings(args.calib_batches, args.calib_batch_size, args.val_images, args.eval_batch_size,
                                    args.seed)
            summary = run_search(args.supernet, args.out, args.name, mcea, nsga, settings, not args.no_weights,
                                 args.workers)
            from .report import format_table
            PartialState().print(format_table(summary['rows'], summary['macs_classes']))
            PartialState().print(f'wrote {args.out}/family.json, report.md, plots'
                                 + (' and weights/' if not args.no_weights else ''))
        elif args.command == 'export':
            for p in export_weights(args.supernet, args.family_dir):
                print(p)
        elif args.command == 'check-export':
            from .export import check_export

            diff = check_export(args.space, args.samples, seed=args.seed, num_classes=args.num_classes,
                                resolution=args.resolution, width_scale=args.width_scale)
            ok = diff <= args.tolerance
            print(f'max |logit difference| over {args.samples} candidates of {args.space}: {diff:.3g} '
                  f'({"ok" if ok else "ABOVE"} tolerance {args.tolerance:g})')
            return 0 if ok else 1
        elif args.command == 'demo':
            run_demo(args.out, args.seed, args.steps, args.space, args.dataset, args.data_dir, args.threads or None)
    except (DataError, SpaceError, InfeasibleError, SearchStateError, ResumeError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0
