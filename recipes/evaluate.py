"""Top-1 / top-5 of a run or a model on a dataset, with the model's own eval transform.

    python -m recipes.evaluate --run RUN [--data-dir D]                (EMA weights when the run has them)
    python -m recipes.evaluate --model NAME [--checkpoint FILE] --data-dir D [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm


@torch.no_grad()
def evaluate_loader(model, loader, accelerator, desc: str = 'eval', channels_last: bool = False) -> dict:
    """Top-1, top-5 (%) and mean cross-entropy over the whole (sharded) loader, gathered across processes."""
    model.eval()
    device = accelerator.device
    correct1 = torch.zeros((), device=device, dtype=torch.float64)
    correct5 = torch.zeros_like(correct1)
    loss_sum = torch.zeros_like(correct1)
    count = 0
    bar = tqdm(loader, desc=desc, leave=False, disable=not accelerator.is_local_main_process)
    for x, y in bar:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with accelerator.autocast():
            out = model(x)
        out, y = accelerator.gather_for_metrics((out, y))
        out = out.float()
        k = min(5, out.shape[1])
        top = out.topk(k, dim=1).indices
        hit = top.eq(y[:, None])
        correct1 += hit[:, 0].sum()
        correct5 += hit.any(dim=1).sum()
        loss_sum += F.cross_entropy(out, y, reduction='sum')
        count += y.numel()
    if count == 0:
        raise RuntimeError('evaluation saw no images: the validation split is empty')
    return {'top1': 100.0 * correct1.item() / count, 'top5': 100.0 * correct5.item() / count,
            'loss': loss_sum.item() / count, 'images': count}


def _load_weights(model, path: Path, name: str) -> None:
    """Load a weights file; zoo members also accept official SCARLET checkpoints (converted on the fly)."""
    import scalenet_models
    from scalenet_models.checkpoints import checkpoint_filter_fn
    from timm.models import load_state_dict
    state = load_state_dict(str(path))  # safetensors, or a pickle read with weights_only=True
    try:
        scalenet_models.get_family(name)
    except KeyError:
        pass
    else:
        try:
            state = checkpoint_filter_fn(state, model)
        except scalenet_models.PretrainedWeightsError as e:
            raise SystemExit(f'error: {path}: {e}') from None
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise SystemExit(f'error: {path} does not fit {type(model).__name__} ({str(e).splitlines()[0]}); pass the '
                         f'--model (and --family) the weights were trained with') from None


def _checkpoint_classes(path: Path) -> int | None:
    from .model import file_num_classes
    return file_num_classes(str(path))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='python -m recipes.evaluate', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('--run', metavar='DIR', help='run directory written by recipes.train (config.yaml + weights)')
    src.add_argument('--model', metavar='NAME', help='timm model name (zoo, family member, hf-hub:...)')
    p.add_argument('--checkpoint', metavar='FILE', help='weights for --model (.safetensors, or .pth read with '
                   'weights_only=True); default: the model\'s published weights')
    p.add_argument('--family', metavar='JSON', help='family JSON to register first (searched families)')
    p.add_argument('--data-dir', '--data_dir', dest='data_dir', metavar='DIR',
                   help='dataset root (default for --run: the run\'s data_dir)')
    p.add_argument('--dataset', default=None, help='auto, folder, cifar10, cifar100, food101 or a timm name '
                   '(default: the run\'s, else auto)')
    p.add_argument('--split', default=None, help='split to evaluate (default: the run\'s validation split: '
                   'val/validation/test, or the carved one)')
    p.add_argument('--img-size', '--img_size', dest='img_size', type=int, default=None,
                   help='evaluation size (default: the run\'s img_size, else the model\'s pretrained cfg)')
    p.add_argument('--batch-size', '--batch_size', dest='batch_size', type=int, default=64, help='batch size')
    p.add_argument('--workers', type=int, default=2, help='DataLoader workers')
    p.add_argument('--no-ema', action='store_true', help='with --run: use model.safetensors even when EMA exists')
    p.add_argument('--json', metavar='FILE', help='also write the result as JSON (- for stdout)')
    return p


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    import timm
    from accelerate import Accelerator
    from timm.data import create_transform, resolve_model_data_config
    from torch.utils.data import DataLoader

    import scalenet_models  # registers the zoo

    from .config import defaults, load_yaml
    from .data import DatasetError, build_splits
    from .model import ModelError, register_family_file

    cfg = defaults()
    if args.run:
        run = Path(args.run)
        if not (run / 'config.yaml').is_file():
            raise SystemExit(f'error: {run}: not a run directory (no config.yaml; expected the --output of '
                             f'recipes.train)')
        cfg.update(load_yaml(run / 'config.yaml'))
        use_ema = (run / 'model_ema.safetensors').is_file() and not args.no_ema
        weights = run / ('model_ema.safetensors' if use_ema else 'model.safetensors')
        if not weights.is_file():
            raise SystemExit(f'error: {weights}: missing (the run has not finished; resume it with '
                             f'`python -m recipes.train --resume {run}`)')
    else:
        cfg.update(model=args.model, family=args.family, img_size=None, val_fraction=0.0, train_subset=0,
                   val_subset=0)
        weights = Path(args.checkpoint) if args.checkpoint else None
        use_ema = False
        if weights is not None and not weights.is_file():
            raise SystemExit(f'error: --checkpoint {weights}: no such file')
    for key in ('data_dir', 'dataset', 'img_size'):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.split:
        cfg.update(val_split=args.split, val_fraction=0.0)
    cfg['val_subset'] = 0 if not args.run else cfg['val_subset']
    try:
        register_family_file(cfg.get('family'))
        splits = build_splits(cfg, None, None)
    except (DatasetError, ModelError) as e:
        raise SystemExit(f'error: {e}') from None
    num_classes = cfg.get('num_classes') or splits.num_classes
    if weights is not None and not args.run:
        num_classes = _checkpoint_classes(weights) or num_classes
    if weights is None:
        try:
            model = timm.create_model(cfg['model'], pretrained=True)
        except scalenet_models.PretrainedWeightsError as e:
            raise SystemExit(f'error: {e}') from None
    else:
        model = timm.create_model(cfg['model'], num_classes=num_classes)
        _load_weights(model, weights, cfg['model'])
    if model.num_classes != splits.num_classes:
        raise SystemExit(f'error: the model predicts {model.num_classes} classes but the dataset has '
                         f'{splits.num_classes}; evaluate on the dataset the weights were trained for')
    data_cfg = resolve_model_data_config(model, args={'img_size': cfg['img_size']} if cfg['img_size'] else None)
    splits.val.transform = create_transform(**data_cfg, is_training=False)
    accelerator = Accelerator()
    loader = DataLoader(splits.val, batch_size=args.batch_size, shuffle=False, num_workers=args.workers)
    model, loader = accelerator.prepare(model, loader)
    result = evaluate_loader(model, loader, accelerator, desc='evaluate')
    result.update(model=cfg['model'], weights=str(weights) if weights else 'pretrained', ema=use_ema,
                  data=splits.description, input_size=list(data_cfg['input_size']),
                  crop_pct=data_cfg.get('crop_pct'), interpolation=data_cfg.get('interpolation'))
    if accelerator.is_main_process:
        print(f'{cfg["model"]}: top-1 {result["top1"]:.2f}  top-5 {result["top5"]:.2f}  loss {result["loss"]:.4f}  '
              f'({result["images"]} images, {"EMA " if use_ema else ""}{result["weights"]})')
        if args.json == '-':
            json.dump(result, sys.stdout, indent=2)
            print()
        elif args.json:
            from scalenet_models.spec import write_json_atomic
            write_json_atomic(args.json, result)
    return result


if __name__ == '__main__':
    main()
