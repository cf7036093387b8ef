"""The trainer's configuration: one table of keys drives YAML validation, CLI overrides, ``--help`` and the docs.

Keys use the names of timm's ``train.py`` (``batch_size``, ``opt``, ``sched``, ``mixup`` ...), so a recipe
reads like a timm command line; an override may be spelled ``--batch-size`` or ``--batch_size``.
"""
from __future__ import annotations

import argparse
import difflib
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from scalenet_models.atomic import write_text_atomic


class ConfigError(ValueError):
    """A config file or override that does not validate; the message names the key and the fix."""


@dataclass(frozen=True)
class Key:
    name: str
    type: str  # str, int, float, bool, optionally suffixed with '?' (None allowed), or 'floats'
    default: Any
    help: str
    group: str
    choices: tuple = ()


_M, _D, _O, _A, _R, _C = 'model', 'data', 'optimization', 'augmentation and regularization', 'run', 'checkpoints'

KEYS: tuple[Key, ...] = (
    # model
    Key('model', 'str', 'scalenet_s0', 'timm model name (any registered name; `import scalenet_models` is done for you)', _M),
    Key('family', 'str?', None, 'family JSON to register before creating the model (e.g. a searched DIR/family.json)', _M),
    Key('pretrained', 'bool', False, 'start from the published weights of `model` (Hub / weights manifest)', _M),
    Key('pretrained_file', 'str?', None, 'start from a local weights file (.safetensors, or a .pth read with '
        'weights_only=True); the classifier is replaced when its class count differs', _M),
    Key('num_classes', 'int?', None, 'classes of the new head; default: the number of classes of the dataset', _M),
    Key('img_size', 'int?', None, 'training and evaluation image size; default: the model\'s pretrained cfg', _M),
    Key('drop', 'float?', None, 'dropout before the classifier; default: the model\'s', _M),
    Key('drop_path', 'float?', None, 'stochastic depth rate; default: the model\'s', _M),
    Key('freeze', 'bool', False, 'fine-tune the classifier only (everything else frozen, BatchNorm included)', _M),
    Key('freeze_stages', 'int', 0, 'freeze the stem and the first N block stages (timm group_matcher groups)', _M),
    Key('freeze_bn', 'bool', False, 'use BatchNorm running statistics in training too (FrozenBatchNorm2d)', _M),
    Key('channels_last', 'bool', False, 'channels-last memory format', _M),
    # data
    Key('data_dir', 'str?', None, 'dataset root: a folder with train/ and val/ or test/ class folders, or a '
        'torchvision CIFAR/Food-101 root', _D),
    Key('dataset', 'str', 'auto', 'auto (folder layout), folder, cifar10, cifar100, food101, or a timm '
        'create_dataset name such as torch/cifar10', _D),
    Key('train_split', 'str', 'train', 'split used for training', _D),
    Key('val_split', 'str?', None, 'split used for validation; default: val, validation or test, whichever exists', _D),
    Key('val_fraction', 'float', 0.0, 'carve a seeded, stratified validation split of this fraction from the '
        'training split (for datasets without one, e.g. Imagewoof train)', _D),
    Key('train_subset', 'int', 0, 'train on a seeded, stratified subset of this many images (0: all)', _D),
    Key('val_subset', 'int', 0, 'validate on a seeded, stratified subset of this many images (0: all)', _D),
    Key('batch_size', 'int', 128, 'images per process per step', _D),
    Key('validation_batch_size', 'int?', None, 'evaluation batch size; default: batch_size', _D),
    Key('workers', 'int', 4, 'DataLoader worker processes per process', _D),
    Key('pin_mem', 'bool', False, 'pin DataLoader memory (GPU training)', _D),
    # optimization
    Key('epochs', 'int', 10, 'training epochs', _O),
    Key('max_train_steps', 'int?', None, 'stop after this many optimizer updates (a cap for smoke runs)', _O),
    Key('grad_accum_steps', 'int', 1, 'micro-batches accumulated per optimizer update', _O),
    Key('opt', 'str', 'sgd', 'timm optimizer name (create_optimizer_v2): sgd, momentum, rmsproptf, adamw, lamb ...', _O),
    Key('lr', 'float', 0.01, 'peak learning rate', _O),
    Key('momentum', 'float', 0.9, 'optimizer momentum', _O),
    Key('opt_eps', 'float?', None, 'optimizer epsilon; default: the optimizer\'s', _O),
    Key('weight_decay', 'float', 2e-5, 'weight decay (not applied to biases and norm layers)', _O),
    Key('layer_decay', 'float?', None, 'layer-wise lr decay (timm group_matcher layers), e.g. 0.8 for fine-tuning', _O),
    Key('clip_grad', 'float?', None, 'clip the gradient norm to this value', _O),
    Key('sched', 'str', 'cosine', 'timm scheduler (create_scheduler_v2): cosine, step, multistep, plateau, poly, '
        'tanh, none', _O),
    Key('sched_on_updates', 'bool', True, 'step the schedule every optimizer update instead of every epoch', _O),
    Key('warmup_epochs', 'float', 0.0, 'linear warm-up epochs', _O),
    Key('warmup_lr', 'float', 1e-5, 'learning rate at the start of warm-up', _O),
    Key('min_lr', 'float', 0.0, 'lower bound of the schedule', _O),
    Key('decay_epochs', 'float', 90.0, 'epochs between decays (step schedule)', _O),
    Key('decay_rate', 'float', 0.1, 'decay factor (step schedule)', _O),
    Key('cooldown_epochs', 'int', 0, 'epochs at min_lr after the schedule', _O),
    Key('amp', 'bool', False, 'automatic mixed precision (Accelerate)', _O),
    Key('amp_dtype', 'str', 'float16', 'mixed-precision dtype', _O, ('float16', 'bfloat16')),
    # augmentation and regularization
    Key('smoothing', 'float', 0.1, 'label smoothing', _A),
    Key('mixup', 'float', 0.0, 'mixup alpha (0: off)', _A),
    Key('cutmix', 'float', 0.0, 'cutmix alpha (0: off)', _A),
    Key('mixup_prob', 'float', 1.0, 'probability of applying mixup or cutmix to a batch', _A),
    Key('mixup_switch_prob', 'float', 0.5, 'probability of cutmix instead of mixup when both are on', _A),
    Key('mixup_mode', 'str', 'batch', 'mixup granularity', _A, ('batch', 'pair', 'elem')),
    Key('aa', 'str?', None, 'timm auto-augment policy, e.g. rand-m9-mstd0.5-inc1, augmix-m5-w4-d2, original', _A),
    Key('reprob', 'float', 0.0, 'random-erasing probability', _A),
    Key('remode', 'str', 'pixel', 'random-erasing fill', _A, ('const', 'rand', 'pixel')),
    Key('scale', 'floats', [0.08, 1.0], 'RandomResizedCrop scale range', _A),
    Key('hflip', 'float', 0.5, 'horizontal-flip probability', _A),
    Key('color_jitter', 'float', 0.4, 'colour-jitter strength (ignored when aa is set)', _A),
    Key('model_ema', 'bool', False, 'keep an exponential moving average of the weights (timm ModelEmaV3)', _A),
    Key('model_ema_decay', 'float', 0.9998, 'EMA decay per update', _A),
    Key('model_ema_warmup', 'bool', False, 'ramp the EMA decay up over the first updates', _A),
    # run
    Key('output', 'str', 'runs/train', 'run directory (config.yaml, weights, metrics.json, curves.png, log.txt, '
        'checkpoints/)', _R),
    Key('seed', 'int', 42, 'seed for weights, data order, augmentation, mixup and dropout', _R),
    Key('deterministic', 'bool', False, 'torch.use_deterministic_algorithms (reproducible, slower on GPU)', _R),
    Key('log_with', 'str', 'csv', 'tracker: csv (RUN/tracker/metrics.csv), tensorboard, or none', _R,
        ('csv', 'tensorboard', 'none')),
    Key('log_interval', 'int', 50, 'updates between tracker loss/lr records', _R),
    # checkpoints
    Key('checkpoint_steps', 'int', 0, 'also save a resumable checkpoint every N optimizer updates (0: each epoch only)',
        _C),
    Key('checkpoint_total_limit', 'int', 3, 'number of checkpoints kept in RUN/checkpoints', _C),
    Key('resume', 'str?', None, 'resume from a run directory (its newest complete checkpoint) or a checkpoint '
        'folder; the run\'s config.yaml is the base config', _C),
)
KEY_BY_NAME = {k.name: k for k in KEYS}
ALIASES = {'grad_accum': 'grad_accum_steps', 'initial_checkpoint': 'pretrained_file', 'output_dir': 'output',
           'mixed_precision': 'amp', 'j': 'workers', 'b': 'batch_size'}
_NONE = ('none', 'null', '~', '')


def canonical(name: str) -> str:
    """``--batch-size``, ``batch-size`` and ``batch_size`` all name ``batch_size``."""
    name = name.lstrip('-').replace('-', '_')
    return ALIASES.get(name, name)


def unknown_key_error(name: str, where: str) -> ConfigError:
    close = difflib.get_close_matches(name, list(KEY_BY_NAME) + list(ALIASES), n=3, cutoff=0.6)
    hint = f'; did you mean {", ".join(close)}?' if close else '; see `python -m recipes.train --help`'
    return ConfigError(f'{where}: unknown key {name!r}{hint}')


def parse_value(key: Key, value: Any, where: str) -> Any:
    """Coerce a YAML value or a command-line string to the key's type, or explain what is wrong."""
    base, optional = key.type.rstrip('?'), key.type.endswith('?')
    if value is None or (isinstance(value, str) and value.strip().lower() in _NONE and base != 'str'):
        if optional:
            return None
        raise ConfigError(f'{where}: {key.name} may not be empty (expected {base})')
    if isinstance(value, str) and optional and value.strip().lower() in ('none', 'null'):
        return None
    try:
        if base == 'bool':
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in ('true', 'yes', '1', 'on'):
                return True
            if isinstance(value, str) and value.strip().lower() in ('false', 'no', '0', 'off'):
                return False
            raise ValueError
        if base == 'int':
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if base == 'float':
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if base == 'floats':
            items = value.replace(',', ' ').split() if isinstance(value, str) else list(value)
            return [float(v) for v in items]
        out = str(value)
    except (TypeError, ValueError):
        raise ConfigError(f'{where}: {key.name}={value!r:.60} is not a valid {base}') from None
    if key.choices and out not in key.choices:
        raise ConfigError(f'{where}: {key.name}={out!r} is not one of {", ".join(key.choices)}')
    return out


def defaults() -> dict:
    return {k.name: (list(k.default) if isinstance(k.default, list) else k.default) for k in KEYS}


def load_yaml(path: str | os.PathLike) -> dict:
    """A recipe file's keys, validated against the table (unknown keys name close matches)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f'{path}: no such config file (see recipes/configs/ for the shipped recipes)')
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f'{path}: not valid YAML ({e})') from None
    if not isinstance(raw, Mapping):
        raise ConfigError(f'{path}: expected a mapping of keys to values, got {type(raw).__name__}')
    out = {}
    for name, value in raw.items():
        if name == 'command':  # written into a run's config.yaml, informational
            continue
        key = KEY_BY_NAME.get(canonical(str(name)))
        if key is None:
            raise unknown_key_error(str(name), str(path))
        out[key.name] = parse_value(key, value, str(path))
    return out


def _help_default(key: Key) -> str:
    return 'none' if key.default is None else str(key.default)


def build_parser(prog: str, description: str, extra: Iterable[Key] = ()) -> argparse.ArgumentParser:
    """An argparse parser with both spellings of every key; values stay strings until :func:`parse_value`."""
    parser = argparse.ArgumentParser(prog=prog, description=description, allow_abbrev=False,
                                     argument_default=argparse.SUPPRESS,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', '-c', metavar='YAML', help='recipe file (recipes/configs/*.yaml); '
                        'command-line keys override it')
    groups: dict[str, argparse._ArgumentGroup] = {}
    for key in tuple(extra) + KEYS:
        group = groups.setdefault(key.group, parser.add_argument_group(key.group))
        flags = sorted({f'--{key.name.replace("_", "-")}', f'--{key.name}'}, key=lambda f: '_' in f)
        flags += [f'--{a.replace("_", "-")}' if len(a) > 1 else f'-{a}' for a, t in ALIASES.items() if t == key.name]
        base = key.type.rstrip('?')
        help_text = f'{key.help} [{base}{", or none" if key.type.endswith("?") else ""}; default: {_help_default(key)}]'
        if key.choices:
            help_text += f' {{{", ".join(key.choices)}}}'
        kwargs = dict(dest=key.name, help=help_text.replace('%', '%%'))
        if base == 'bool':
            kwargs.update(nargs='?', const='true', metavar='BOOL')
        elif base == 'floats':
            kwargs.update(nargs='+', metavar='F')
        else:
            kwargs.update(metavar=base.upper())
        group.add_argument(*flags, **kwargs)
        if base == 'bool':
            group.add_argument(f'--no-{key.name.replace("_", "-")}', dest=key.name, action='store_const',
                               const='false', help=argparse.SUPPRESS)
    return parser


def parse_overrides(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[str | None, dict]:
    """The ``--config`` path and the typed command-line overrides; unknown flags name close matches."""
    ns, unknown = parser.parse_known_args(argv)
    for token in unknown:
        if token.startswith('--'):
            raise unknown_key_error(token.split('=')[0].lstrip('-').replace('-', '_'), 'command line')
    if unknown:
        raise ConfigError(f'command line: unexpected value(s) {" ".join(unknown)!r} (every value follows a --key)')
    values = vars(ns)
    config = values.pop('config', None)
    out = {}
    for name, value in values.items():
        key = KEY_BY_NAME[name]
        if isinstance(value, list) and key.type != 'floats':
            value = value[0]
        out[name] = parse_value(key, value, 'command line')
    return config, out


def resolve(argv: list[str] | None = None, prog: str = 'recipes.train', description: str = '') -> dict:
    """Defaults ← recipe YAML (or the resumed run's config.yaml) ← command line, validated."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(prog, description)
    config_path, overrides = parse_overrides(parser, argv)
    cfg = defaults()
    command = command_line(argv)
    resume = overrides.get('resume')
    if resume and not config_path:
        run_config = Path(resume) / 'config.yaml'
        if not run_config.is_file():  # a checkpoint folder inside RUN/checkpoints/
            run_config = Path(resume).parent.parent / 'config.yaml'
        if run_config.is_file():
            cfg.update(load_yaml(run_config))
            # the command that started the run still describes it; resuming does not change the result
            command = (yaml.safe_load(run_config.read_text()) or {}).get('command') or command
    if config_path:
        cfg.update(load_yaml(config_path))
    cfg.update(overrides)
    cfg['command'] = command
    validate(cfg)
    return cfg


def validate(cfg: Mapping) -> None:
    """Cross-key checks that the type table cannot express."""
    positive = ('batch_size', 'epochs', 'grad_accum_steps', 'log_interval', 'checkpoint_total_limit')
    for name in positive:
        if cfg[name] < 1:
            raise ConfigError(f'{name}={cfg[name]} must be at least 1')
    for name in ('workers', 'freeze_stages', 'checkpoint_steps', 'train_subset', 'val_subset'):
        if cfg[name] < 0:
            raise ConfigError(f'{name}={cfg[name]} must be 0 or more')
    if not 0.0 <= cfg['val_fraction'] < 1.0:
        raise ConfigError(f'val_fraction={cfg["val_fraction"]} must be in [0, 1)')
    if cfg['max_train_steps'] is not None and cfg['max_train_steps'] < 1:
        raise ConfigError(f'max_train_steps={cfg["max_train_steps"]} must be at least 1 (or none)')
    if len(cfg['scale']) != 2 or not 0 < cfg['scale'][0] <= cfg['scale'][1] <= 1:
        raise ConfigError(f'scale={cfg["scale"]} must be two numbers 0 < lo <= hi <= 1')
    if cfg['pretrained'] and cfg['pretrained_file']:
        raise ConfigError('pretrained and pretrained_file are exclusive: pretrained_file already names the weights')


def command_line(argv: list[str]) -> str:
    """How this run was started, for config.yaml and metrics.json."""
    launcher = 'accelerate launch' if 'ACCELERATE_MIXED_PRECISION' in os.environ or int(
        os.environ.get('WORLD_SIZE', '1')) > 1 else 'python'
    return ' '.join([launcher, '-m', 'recipes.train'] + [shlex.quote(a) for a in argv])


def write_yaml_atomic(path: str | os.PathLike, cfg: Mapping) -> None:
    write_text_atomic(path, yaml.safe_dump(dict(cfg), sort_keys=False))


def markdown_table() -> str:
    """The key reference for docs/recipes.md, generated from the same table as ``--help``."""
    lines = ['| key | type | default | meaning |', '|---|---|---|---|']
    for k in KEYS:
        choices = f' ({", ".join(k.choices)})' if k.choices else ''
        lines.append(f'| `{k.name}` | {k.type} | `{_help_default(k)}` | {k.help}{choices} |')
    return '\n'.join(lines)


if __name__ == '__main__':
    if '--help' in sys.argv or '-h' in sys.argv:
        print('python -m recipes.config [--markdown]: print the key reference (Markdown table) used in docs/recipes.md')
    else:
        print(markdown_table())
