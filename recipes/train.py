"""Train or fine-tune a timm model with Accelerate, from one CPU to many GPUs.

    accelerate launch -m recipes.train --config recipes/configs/<recipe>.yaml [--key value ...]
    python -m recipes.train --config recipes/configs/cifar10_finetune.yaml --data-dir ~/data/cifar10
    python -m recipes.train --resume runs/my_run              (continues exactly where the run stopped)

Every key below may be given in the YAML recipe or on the command line (--batch-size 64 or --batch_size 64);
the command line wins. The run directory (--output) receives config.yaml, model.safetensors,
model_ema.safetensors (with --model-ema), metrics.json, curves.png, log.txt and checkpoints/.
"""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
from tqdm import tqdm

from scalenet_models.distributed import cpu_only_ddp

from .config import ConfigError, resolve, write_yaml_atomic


def _mixed_precision(cfg: dict) -> str:
    if not cfg['amp']:
        return 'no'
    return 'bf16' if cfg['amp_dtype'] == 'bfloat16' else 'fp16'


def _dataset_name(cfg: dict) -> str:
    if cfg['dataset'] in ('auto', 'folder') and cfg['data_dir']:
        return Path(cfg['data_dir']).expanduser().resolve().name
    return cfg['dataset']


def _loss_fns(cfg: dict, mixup_on: bool):
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    if mixup_on:
        train_loss = SoftTargetCrossEntropy()  # mixup already smooths the targets
    elif cfg['smoothing'] > 0:
        train_loss = LabelSmoothingCrossEntropy(smoothing=cfg['smoothing'])
    else:
        train_loss = nn.CrossEntropyLoss()
    return train_loss


def _build_scheduler(cfg: dict, optimizer, updates_per_epoch: int):
    from timm.scheduler import create_scheduler_v2
    if cfg['sched'] == 'none':
        return None, cfg['epochs']
    return create_scheduler_v2(
        optimizer, sched=cfg['sched'], num_epochs=cfg['epochs'], decay_epochs=cfg['decay_epochs'],
        decay_rate=cfg['decay_rate'], cooldown_epochs=cfg['cooldown_epochs'], min_lr=cfg['min_lr'],
        warmup_lr=cfg['warmup_lr'], warmup_epochs=cfg['warmup_epochs'], step_on_epochs=not cfg['sched_on_updates'],
        updates_per_epoch=updates_per_epoch)


def _current_lr(optimizer) -> float:
    """The largest group lr: the un-decayed one when layer decay scales the others down."""
    return max(g['lr'] for g in optimizer.param_groups)


def train(cfg: dict, splits=None) -> nn.Module:
    """Run the recipe described by a resolved config; returns the trained (unwrapped) model.

    ``splits`` (a :class:`recipes.data.Splits`) replaces the datasets named by the config, transforms
    included: for data that already lives in Python (tensors in memory, a custom Dataset).
    """
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.utils import ProjectConfiguration, set_seed
    from timm.data import Mixup, create_transform, resolve_model_data_config
    from timm.optim import create_optimizer_v2
    from timm.utils import ModelEmaV3
    from torch.utils.data import DataLoader

    import scalenet_models  # noqa: F401  (registers the zoo)

    from .checkpoint import TrainState, check_pickles_safe, find_checkpoint, next_iteration, save_checkpoint
    from .data import DatasetError, build_splits
    from .evaluate import evaluate_loader
    from .model import batchnorm_layers, create_model, freeze, set_train_mode
    from .report import CSVTracker, make_logger

    run_dir = Path(cfg['output']).expanduser()
    resume_from = find_checkpoint(cfg['resume']) if cfg['resume'] else None
    if cfg['log_with'] == 'csv':
        log_with = [CSVTracker('train', run_dir / 'tracker')]
    else:
        log_with = None if cfg['log_with'] == 'none' else cfg['log_with']
    accelerator = Accelerator(
        cpu=cpu_only_ddp(),
        mixed_precision=_mixed_precision(cfg),
        gradient_accumulation_steps=cfg['grad_accum_steps'],
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / 'tracker'),
                                            automatic_checkpoint_naming=True,
                                            total_limit=cfg['checkpoint_total_limit']),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg['seed']),
        step_scheduler_with_optimizer=False,
    )
    set_seed(cfg['seed'])
    if cfg['deterministic']:
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')  # cuBLAS needs it for determinism
        torch.use_deterministic_algorithms(True)

    # data first (its class count sizes the head), transforms once the model's pretrained cfg is known
    own_data = splits is None
    if own_data:
        splits = build_splits(cfg, None, None)
    if cfg['num_classes'] is None:
        cfg['num_classes'] = splits.num_classes
    elif cfg['num_classes'] < splits.num_classes:
        raise ConfigError(f'num_classes={cfg["num_classes"]} but the dataset has {splits.num_classes} classes')
    if cfg['dataset'] == 'auto':
        cfg['dataset'] = 'folder'
    model = create_model(cfg, cfg['num_classes'])
    data_cfg = resolve_model_data_config(model, args={'img_size': cfg['img_size']} if cfg['img_size'] else None)
    cfg['img_size'] = int(data_cfg['input_size'][-1])
    if own_data:
        splits.train.transform = create_transform(
            data_cfg['input_size'], is_training=True, scale=tuple(cfg['scale']), hflip=cfg['hflip'],
            color_jitter=cfg['color_jitter'], auto_augment=cfg['aa'], interpolation=data_cfg['interpolation'],
            mean=data_cfg['mean'], std=data_cfg['std'], re_prob=cfg['reprob'], re_mode=cfg['remode'])
        splits.val.transform = create_transform(**data_cfg, is_training=False)

    world = accelerator.num_processes
    if len(splits.train) < cfg['batch_size'] * world:
        raise DatasetError(f'{cfg["data_dir"]}: the training split has {len(splits.train)} images, fewer than one '
                           f'global batch ({cfg["batch_size"]} x {world} processes); lower --batch-size')
    run_dir.mkdir(parents=True, exist_ok=True)  # only once data and model are known to be usable
    log = make_logger(run_dir, accelerator.is_main_process)
    eval_bns = freeze(model, cfg['freeze'], cfg['freeze_stages'])
    if cfg['freeze_bn']:
        eval_bns = batchnorm_layers(model)
    if cfg['channels_last']:
        model.to(memory_format=torch.channels_last)
    opt_kwargs = {'eps': cfg['opt_eps']} if cfg['opt_eps'] is not None else {}
    optimizer = create_optimizer_v2(model, opt=cfg['opt'], lr=cfg['lr'], weight_decay=cfg['weight_decay'],
                                    momentum=cfg['momentum'], layer_decay=cfg['layer_decay'], **opt_kwargs)

    loader_seed = torch.Generator().manual_seed(cfg['seed'])  # keeps worker seeding off the global RNG
    train_dl = DataLoader(splits.train, batch_size=cfg['batch_size'], shuffle=True, drop_last=True,
                          num_workers=cfg['workers'], pin_memory=cfg['pin_mem'], generator=loader_seed)
    val_dl = DataLoader(splits.val, batch_size=cfg['validation_batch_size'] or cfg['batch_size'], shuffle=False,
                        num_workers=cfg['workers'], pin_memory=cfg['pin_mem'])
    model, optimizer, train_dl, val_dl = accelerator.prepare(model, optimizer, train_dl, val_dl)
    batches_per_epoch = len(train_dl)
    updates_per_epoch = math.ceil(batches_per_epoch / cfg['grad_accum_steps'])
    scheduler, num_epochs = _build_scheduler(cfg, optimizer, updates_per_epoch)

    mixup_on = cfg['mixup'] > 0 or cfg['cutmix'] > 0
    mixup = None
    if mixup_on:
        if cfg['batch_size'] % 2:
            raise ConfigError(f'batch_size={cfg["batch_size"]} must be even with mixup/cutmix')
        mixup = Mixup(mixup_alpha=cfg['mixup'], cutmix_alpha=cfg['cutmix'], prob=cfg['mixup_prob'],
                      switch_prob=cfg['mixup_switch_prob'], mode=cfg['mixup_mode'], label_smoothing=cfg['smoothing'],
                      num_classes=cfg['num_classes'])
    train_loss_fn = _loss_fns(cfg, mixup_on)

    ema = None
    if cfg['model_ema']:
        ema = ModelEmaV3(accelerator.unwrap_model(model), decay=cfg['model_ema_decay'],
                         use_warmup=cfg['model_ema_warmup'])
    state = TrainState()
    accelerator.register_for_checkpointing(state)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    if scheduler is not None:
        accelerator.register_for_checkpointing(scheduler)

    if resume_from is not None:
        check_pickles_safe(resume_from)
        accelerator.load_state(str(resume_from))
        log.info(f'resumed from {resume_from}: epoch {state.epoch + 1}, batch {state.step_in_epoch}, '
                 f'{state.updates} updates done')
    ckpt_root = run_dir / 'checkpoints'
    if ckpt_root.is_dir() and any(ckpt_root.glob('checkpoint_*')):
        accelerator.project_configuration.iteration = next_iteration(next(ckpt_root.glob('checkpoint_*')))
    if accelerator.is_main_process:
        write_yaml_atomic(run_dir / 'config.yaml', {**cfg, 'resume': None})  # reusable as a --config
    accelerator.init_trackers('train', config={k: v if isinstance(v, (int, float, str, bool)) else str(v)
                                               for k, v in cfg.items()})
    log.info(f'{cfg["model"]} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, '
             f'{cfg["num_classes"]} classes, {cfg["img_size"]} px) on {splits.description}: '
             f'{len(splits.train)} train / {len(splits.val)} val images, {world} process(es), '
             f'{batches_per_epoch} batches of {cfg["batch_size"]} per process per epoch, '
             f'mixed precision {_mixed_precision(cfg)}')

    max_updates = cfg['max_train_steps']
    pending = torch.zeros(2, dtype=torch.float64, device=accelerator.device)  # local loss sum, count

    def fold_pending() -> None:
        """Add every process's loss sums since the last fold into the (saved) state."""
        total = accelerator.reduce(pending.clone(), reduction='sum')
        state.loss_sum += float(total[0])
        state.loss_count += int(total[1])
        pending.zero_()

    def checkpoint() -> None:
        fold_pending()
        save_checkpoint(accelerator, state)

    done = state.epoch >= num_epochs or (max_updates is not None and state.updates >= max_updates)
    while not done:
        epoch = state.epoch
        for dl in (train_dl, val_dl):
            dl.set_epoch(epoch)
        if hasattr(splits.train, 'set_epoch'):
            splits.train.set_epoch(epoch)
        set_train_mode(model, eval_bns)
        start = state.step_in_epoch
        loader = accelerator.skip_first_batches(train_dl, start) if start else train_dl
        bar = tqdm(loader, total=batches_per_epoch, initial=start, desc=f'epoch {epoch + 1}/{num_epochs}',
                   disable=not accelerator.is_local_main_process, dynamic_ncols=True)
        seen, t0, cpu0 = 0, time.perf_counter(), time.process_time()
        for batch_idx, (x, y) in enumerate(bar, start=start):
            if cfg['channels_last']:
                x = x.contiguous(memory_format=torch.channels_last)
            with accelerator.accumulate(model):
                if mixup is not None:
                    x, y = mixup(x, y)
                with accelerator.autocast():
                    loss = train_loss_fn(model(x), y)
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg['clip_grad']:
                    accelerator.clip_grad_norm_(model.parameters(), cfg['clip_grad'])
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            pending[0] += loss.detach().double()
            pending[1] += 1
            seen += x.shape[0] * world
            state.step_in_epoch = batch_idx + 1
            if not accelerator.sync_gradients:
                continue
            state.updates += 1
            if ema is not None:
                ema.update(accelerator.unwrap_model(model), step=state.updates)
            if scheduler is not None:
                scheduler.step_update(num_updates=state.updates)
            if state.updates % cfg['log_interval'] == 0:
                accelerator.log({'train/loss': loss.item(), 'train/lr': _current_lr(optimizer)}, step=state.updates)
            bar.set_postfix(loss=f'{loss.item():.3f}', lr=f'{_current_lr(optimizer):.2e}')
            if max_updates is not None and state.updates >= max_updates:
                break
            if cfg['checkpoint_steps'] and state.updates % cfg['checkpoint_steps'] == 0 \
                    and state.step_in_epoch < batches_per_epoch:
                checkpoint()
        bar.close()
        train_time, train_cpu = time.perf_counter() - t0, time.process_time() - cpu0
        fold_pending()
        train_loss = state.loss_sum / max(state.loss_count, 1)
        lr = _current_lr(optimizer)
        metrics = evaluate_loader(model, val_dl, accelerator, desc='validate', channels_last=cfg['channels_last'])
        row = {'epoch': epoch + 1, 'train_loss': train_loss, 'top1': metrics['top1'], 'top5': metrics['top5'],
               'val_loss': metrics['loss'], 'lr': lr, 'img_per_s': seen / max(train_time, 1e-9),
               'img_per_cpu_s': seen / world / max(train_cpu, 1e-9), 'updates': state.updates}
        if ema is not None:
            ema_metrics = evaluate_loader(ema.module, val_dl, accelerator, desc='validate EMA',
                                          channels_last=cfg['channels_last'])
            row.update(top1_ema=ema_metrics['top1'], top5_ema=ema_metrics['top5'], val_loss_ema=ema_metrics['loss'])
        if scheduler is not None:
            scheduler.step(epoch + 1, metric=metrics['top1'])
        state.history.append(row)
        if metrics['top1'] > state.best_top1:
            state.best_top1, state.best_epoch = metrics['top1'], epoch + 1
        state.epoch, state.step_in_epoch, state.loss_sum, state.loss_count = epoch + 1, 0, 0.0, 0
        accelerator.log({'val/top1': row['top1'], 'val/top5': row['top5'], 'val/loss': row['val_loss'],
                         'train/epoch_loss': train_loss, 'train/img_per_s': row['img_per_s']}, step=state.updates)
        ema_text = f'  top1 EMA {row["top1_ema"]:.2f}' if ema is not None else ''
        log.info(f'epoch {epoch + 1}/{num_epochs}  loss {train_loss:.4f}  top1 {row["top1"]:.2f}  '
                 f'top5 {row["top5"]:.2f}{ema_text}  lr {lr:.3e}  {row["img_per_s"]:.1f} img/s')
        done = state.epoch >= num_epochs or (max_updates is not None and state.updates >= max_updates)
        checkpoint()
        if accelerator.is_main_process:
            _write_outputs(cfg, run_dir, state, accelerator.unwrap_model(model), ema, final=done)

    accelerator.wait_for_everyone()
    if accelerator.is_main_process and state.history and not (run_dir / 'model.safetensors').is_file():
        _write_outputs(cfg, run_dir, state, accelerator.unwrap_model(model), ema, final=True)
    accelerator.end_training()
    log.info(f'run directory: {run_dir}')
    return accelerator.unwrap_model(model)


def _write_outputs(cfg: dict, run_dir: Path, state, model: nn.Module, ema, final: bool) -> None:
    """metrics.json and curves.png after every epoch; the weight files once training is over."""
    from scalenet_models.atomic import save_safetensors_atomic
    from .report import metrics_document, plot_curves, write_metrics

    last = state.history[-1]
    final_metrics = {'top1': last['top1'], 'top5': last['top5'], 'loss': last['val_loss']}
    final_ema = None
    if ema is not None:
        final_ema = {'top1': last['top1_ema'], 'top5': last['top5_ema'], 'loss': last['val_loss_ema']}
    doc = metrics_document(cfg, _dataset_name(cfg), state, final_metrics, final_ema)
    doc['finished'] = final
    meta = {'model': cfg['model'], 'num_classes': cfg['num_classes'], 'format': 'pt'}
    if final:
        save_safetensors_atomic(model.state_dict(), run_dir / 'model.safetensors', meta)
        if ema is not None:
            save_safetensors_atomic(ema.module.state_dict(), run_dir / 'model_ema.safetensors', meta)
    write_metrics(run_dir / 'metrics.json', doc)
    plot_curves(state.history, run_dir / 'curves.png', f'{cfg["model"]} on {_dataset_name(cfg)}')


def main(argv: list[str] | None = None) -> None:
    from .checkpoint import ResumeError
    from .data import DatasetError
    from .model import ModelError
    try:
        cfg = resolve(argv, prog='recipes.train', description=__doc__)
        train(cfg)
    except (ConfigError, DatasetError, ModelError, ResumeError) as e:
        print(f'error: {e}', file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == '__main__':
    main()
