"""Supernet training with Accelerate: the same loop on 1 CPU or N GPUs, resumable bit-for-bit.

One optimizer update = ``grad_accum`` micro-batches x the step's paths (one hierarchical path, a
sandwich, or FairNAS's m fair paths); gradients of all of them are summed and the optimizer steps
once. Each update's paths are drawn from ``random.Random(f'{seed}:{update}')`` and each batch is a
pure function of (seed, micro-step) (see :mod:`search.data`), so a run resumed from a checkpoint
continues exactly where it stopped. Checkpoints are Accelerate ``save_state`` folders written under
a temporary name and renamed when complete.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from tqdm.auto import tqdm

from scalenet_models.atomic import save_safetensors_atomic
from scalenet_models.distributed import cpu_only_ddp
from scalenet_models.spec import write_json_atomic

from .data import StepBatchSampler, build_search_data, resize_batch

SAMPLINGS = ('auto', 'hierarchical', 'sandwich', 'fair', 'uniform')
# settings that may change between a run and its resume without changing the result
_RESUME_FREE = ('out', 'resume', 'workers', 'log_with', 'eval_candidates', 'threads')


class ResumeError(ValueError):
    """A checkpoint that cannot continue with the current settings; the message says what differs."""


@dataclass
class TrainConfig:
    """Everything that defines a supernet run (saved as ``train_config.json`` and checked on resume)."""
    space: str = 'scalenet'
    out: str = 'runs/supernet'
    dataset: str = 'synthetic'
    data_dir: str | None = None
    load_size: int | None = None          # None: the space's largest resolution
    val_fraction: float = 0.1
    max_images: int | None = None
    synthetic_samples: int = 4000
    synthetic_classes: int = 10
    steps: int = 1000
    batch_size: int = 64                  # per process and micro-batch
    grad_accum: int = 1
    opt: str = 'sgd'                      # timm optimizer name: sgd (Nesterov), adamw, rmsproptf, ...
    lr: float = 0.12
    momentum: float = 0.9
    weight_decay: float = 4e-5
    warmup_steps: int = 375
    label_smoothing: float = 0.1
    sampling: str = 'auto'
    mixed_precision: str = 'no'
    seed: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    workers: int = 0
    log_with: str = 'tensorboard'
    eval_candidates: int = 3
    threads: int | None = None            # torch CPU threads (None: torch's default)
    resume: bool = False

    def identity(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in _RESUME_FREE}


class _Progress:
    """Checkpointed alongside the model: the number of finished updates."""

    def __init__(self):
        self.step = 0

    def state_dict(self):
        return {'step': self.step}

    def load_state_dict(self, d):
        self.step = int(d['step'])


def path_sampler(space, sampling: str):
    """The per-update path generator: ``rng -> list[Candidate]``."""
    if sampling == 'auto':
        sampling = 'hierarchical' if space.kind == 'scaling' else 'fair'
    if sampling == 'uniform':
        return lambda rng: [space.sample(rng)]
    from . import sampling as smp

    if sampling == 'hierarchical':
        if space.kind != 'scaling':
            raise ValueError(f'sampling: hierarchical needs a scaling space; {space.name!r} is {space.kind}')
        return lambda rng: [smp.hierarchical_sample(space, rng)]
    if sampling == 'sandwich':
        return lambda rng: smp.sandwich_samples(space, rng)
    if sampling == 'fair':
        return lambda rng: smp.fair_paths(space, rng)
    raise ValueError(f'sampling: unknown {sampling!r}; choose one of {", ".join(SAMPLINGS)}')


def checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    d = out / 'checkpoints'
    found = [p for p in d.glob('step_*') if p.is_dir() and p.name[5:].isdigit()] if d.is_dir() else []
    return sorted(found, key=lambda p: int(p.name[5:]))


def _diff(saved: dict, now: dict) -> list[str]:
    lines = []
    for k in sorted(set(saved) | set(now)):
        if saved.get(k) != now.get(k):
            a, b = json.dumps(saved.get(k))[:80], json.dumps(now.get(k))[:80]
            lines.append(f'  {k}: {a} in the checkpoint, {b} now')
    return lines


def check_resume(out: Path, cfg: TrainConfig, space_def: dict, num_processes: int = 1) -> None:
    """Refuse to resume a run whose settings, search space or process count differ, naming every difference.

    The process count is part of the run: each process takes its slice of a global batch of
    ``batch_size x num_processes`` images, so another count would silently change the training.
    """
    saved_path = out / 'train_config.json'
    if not saved_path.is_file():
        raise ResumeError(f'{out}: no train_config.json, so this is not a supernet run folder; '
                          f'start a new run without --resume')
    saved = json.loads(saved_path.read_text())
    lines = _diff(saved['config'], cfg.identity())
    if saved.get('space_def') != space_def:
        lines.append(f'  space definition: the checkpoint was trained on space {saved.get("space_def", {}).get("name")!r} '
                     f'with different contents than {space_def.get("name")!r} now')
    saved_processes = saved.get('num_processes', num_processes)
    if saved_processes != num_processes:
        lines.append(f'  processes: {saved_processes} in the checkpoint, {num_processes} now (the global batch is '
                     f'--batch-size x processes; launch {saved_processes} processes to resume)')
    if lines:
        raise ResumeError(f'cannot resume {out}: the checkpoint was made with other settings:\n' + '\n'.join(lines) +
                          f'\nResume with the original settings (see {saved_path}) or start a new run in another --out.')


def _save_checkpoint(accelerator, out: Path, step: int, keep: int) -> None:
    final = out / 'checkpoints' / f'step_{step}'
    tmp = out / 'checkpoints' / f'.tmp_step_{step}'
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        os.replace(tmp, final)
        for old in checkpoints(out)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()




def train_supernet(cfg: TrainConfig) -> dict:
    """Train (or resume) a supernet into ``cfg.out``; returns the run summary written to train_metrics.json."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed
    from timm.loss import LabelSmoothingCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler

    from .space import load_space
    from .supernet import SuperNet

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    space = load_space(cfg.space)
    space_def = space.to_dict()
    if cfg.sampling not in SAMPLINGS:
        raise ValueError(f'sampling: unknown {cfg.sampling!r}; choose one of {", ".join(SAMPLINGS)}')
    load_size = cfg.load_size or max_resolution(space)
    log_with = None if cfg.log_with == 'none' else cfg.log_with
    accelerator = Accelerator(
        cpu=cpu_only_ddp(), mixed_precision=cfg.mixed_precision, log_with=log_with, project_dir=str(out),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    if cfg.resume:
        if not checkpoints(out):
            raise ResumeError(f'{out}: no checkpoint to resume from (looked in {out / "checkpoints"}); '
                              f'drop --resume to start a new run')
        check_resume(out, cfg, space_def, accelerator.num_processes)
    elif checkpoints(out) or (out / 'supernet.safetensors').exists():
        raise ResumeError(f'{out} already holds a supernet run; pass --resume to continue it or choose another --out')
    if accelerator.is_main_process:
        write_json_atomic(out / 'train_config.json', {'config': cfg.identity(), 'space_def': space_def,
                                                      'num_processes': accelerator.num_processes,
                                                      'command': ' '.join(sys.argv)})
    set_seed(cfg.seed)
    data = build_search_data(cfg.dataset, cfg.data_dir, load_size, cfg.val_fraction, cfg.seed,
                             cfg.synthetic_samples, cfg.synthetic_classes, cfg.max_images)
    model = SuperNet(space, num_classes=data.num_classes)
    opt_kwargs = {'momentum': cfg.momentum} if cfg.opt in ('sgd', 'nesterov', 'momentum', 'rmsprop', 'rmsproptf') else {}
    optimizer = create_optimizer_v2(model, cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay, **opt_kwargs)
    scheduler = CosineLRScheduler(optimizer, t_initial=cfg.steps, warmup_t=cfg.warmup_steps,
                                  warmup_lr_init=cfg.lr * 0.01, lr_min=cfg.lr * 1e-3, t_in_epochs=False)
    model, optimizer = accelerator.prepare(model, optimizer)
    progress = _Progress()
    accelerator.register_for_checkpointing(progress)
    if cfg.resume:
        accelerator.load_state(str(checkpoints(out)[-1]))
    start = progress.step
    scheduler.step_update(start)
    if log_with:
        accelerator.init_trackers('supernet', config={k: v for k, v in cfg.identity().items() if v is not None})

    sampler = StepBatchSampler(data.train_indices, cfg.batch_size, cfg.seed, start * cfg.grad_accum,
                               cfg.steps * cfg.grad_accum, accelerator.process_index, accelerator.num_processes)
    loader = torch.utils.data.DataLoader(data.train, batch_sampler=sampler, num_workers=cfg.workers,
                                         pin_memory=accelerator.device.type == 'cuda')
    paths_of = path_sampler(space, cfg.sampling)
    criterion = LabelSmoothingCrossEntropy(cfg.label_smoothing) if cfg.label_smoothing else torch.nn.CrossEntropyLoss()
    net = accelerator.unwrap_model(model)
    model.train()
    bar = tqdm(total=cfg.steps, initial=start, desc='supernet', disable=not accelerator.is_local_main_process,
               dynamic_ncols=True)
    batches = iter(loader)
    t0, images, loss_avg = time.time(), 0, None
    for step in range(start, cfg.steps):
        paths = paths_of(random.Random(f'{cfg.seed}:{step}'))
        step_loss = 0.0
        for micro in range(cfg.grad_accum):
            x, y = next(batches)
            x, y = x.to(accelerator.device, non_blocking=True), y.to(accelerator.device, non_blocking=True)
            images += len(y) * accelerator.num_processes
            for pi, cand in enumerate(paths):
                last = micro == cfg.grad_accum - 1 and pi == len(paths) - 1
                net.set_active(cand)
                ctx = accelerator.no_sync(model) if not last else contextlib.nullcontext()
                with ctx, accelerator.autocast():
                    loss = criterion(model(resize_batch(x, cand.resolution)), y) / cfg.grad_accum
                    accelerator.backward(loss)
                step_loss += loss.item()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step_update(step + 1)
        step_loss /= len(paths)
        if accelerator.num_processes > 1:  # the loss of the whole global batch, not of this process's slice
            step_loss = accelerator.reduce(torch.tensor(step_loss, device=accelerator.device), 'mean').item()
        loss_avg = step_loss if loss_avg is None else 0.9 * loss_avg + 0.1 * step_loss
        lr = optimizer.param_groups[0]['lr']
        bar.update(1)
        bar.set_postfix(loss=f'{loss_avg:.3f}', lr=f'{lr:.4f}')
        if log_with:
            accelerator.log({'train/loss': step_loss, 'train/lr': lr}, step=step + 1)
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            progress.step = step + 1
            _save_checkpoint(accelerator, out, step + 1, cfg.keep_checkpoints)
    bar.close()
    elapsed = time.time() - t0
    progress.step = cfg.steps
    summary = {'steps': cfg.steps, 'resumed_from': start, 'final_loss_ema': loss_avg,
               'seconds': round(elapsed, 2), 'img_per_s': round(images / elapsed, 1) if elapsed else None,
               'num_classes': data.num_classes, 'data': data.description, 'space': space.name,
               'load_size': load_size}
    accelerator.wait_for_everyone()
    if cfg.eval_candidates:
        summary['sample_top1'] = sample_accuracy(net, space, data, cfg, accelerator)
    if accelerator.is_main_process:
        save_safetensors_atomic(net.state_dict(), out / 'supernet.safetensors',
                                metadata={'space': space.name, 'num_classes': str(data.num_classes)})
        write_json_atomic(out / 'train_metrics.json', summary)
    if log_with:
        accelerator.end_training()
    return summary


def sample_accuracy(net, space, data, cfg: TrainConfig, accelerator) -> list[dict]:
    """Held-out top-1 of a few seeded random candidates: a quick check that the supernet learned."""
    from .evaluation import EvalSettings, Evaluator

    ev = Evaluator(net, data, EvalSettings(calib_batches=4, calib_batch_size=min(64, cfg.batch_size),
                                           val_images=1000, seed=cfg.seed), device=accelerator.device,
                   accelerator=accelerator)
    rng = random.Random(f'{cfg.seed}:sample-accuracy')
    cands = [space.sample(rng) for _ in range(cfg.eval_candidates)]
    top1 = ev.evaluate(cands)
    return [{'candidate': c.key(), 'resolution': c.resolution, 'macs': space.macs(c, data.num_classes), 'top1': t}
            for c, t in zip(cands, top1)]


def max_resolution(space) -> int:
    """The largest resolution a space can sample (the data load size)."""
    return int(space.resolution_max)


def config_from_args(args) -> TrainConfig:
    """A TrainConfig from an argparse namespace holding the same names."""
    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)})


def load_supernet(run_dir: str | os.PathLike, space=None, device='cpu'):
    """The trained supernet of a run folder (weights from ``supernet.safetensors``) and its space."""
    from safetensors.torch import load_file

    from .space import load_space
    from .supernet import SuperNet

    run = Path(run_dir)
    weights = run / 'supernet.safetensors'
    if not weights.is_file():
        raise FileNotFoundError(f'{weights}: missing; train a supernet first (python -m search train-supernet '
                                f'--out {run}) or pass the folder of a finished run')
    saved = json.loads((run / 'train_config.json').read_text())
    space = space or load_space(saved['config']['space'])
    if space.to_dict() != saved['space_def']:
        raise ResumeError(f'{run}: the supernet was trained on a different definition of space {space.name!r}; '
                          f'pass the original space file')
    metrics = json.loads((run / 'train_metrics.json').read_text())
    net = SuperNet(space, num_classes=int(metrics['num_classes']))
    net.load_state_dict(load_file(str(weights)))
    return net.to(device).eval(), space, saved['config']
