"""Read what is to be exported (a recipe run directory or a bare weights file) and check it.

Every check names the problem and the fix: unreadable or non-safetensors files, NaN/Inf weights,
architectures that are not scalenet-models members, and tensors that do not fit the architecture.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

import scalenet_models
from scalenet_models import SpecError, get_family, load_family, register_family

from .errors import HubError

RUN_WEIGHTS = 'model.safetensors'
RUN_EMA_WEIGHTS = 'model_ema.safetensors'


@dataclass
class ExportSource:
    """Weights plus everything the model card says about them."""
    model_name: str
    num_classes: int
    state_dict: dict[str, torch.Tensor]
    weights_path: Path
    img_size: int
    dataset: str = ''
    ema: bool = False
    metrics: dict[str, float] = field(default_factory=dict)   # of the exported weights: top1, top5, loss
    run_metrics: dict[str, Any] | None = None                 # the whole metrics.json of a run
    config: dict[str, Any] | None = None                      # the run's resolved config.yaml
    command: str = ''
    family_path: Path | None = None                           # family JSON of a searched (non-zoo) family
    origin: str = 'run'                                       # 'run', 'file' or 'search'


def ensure_family(path: str | Path) -> list[str]:
    """Register a family JSON for this process; a zoo family may only be re-registered unchanged."""
    path = Path(path)
    try:
        family = load_family(path)
    except SpecError as e:
        raise HubError(f'--family {path}: not a valid family JSON ({e})') from None
    try:
        current = get_family(family.name)
    except KeyError:
        current = None
    if current is not None and current.to_dict() == family.to_dict():
        return [m.name for m in family.members]
    zoo = set(scalenet_models.ZOO)
    clash = [m.name for m in family.members if m.name in zoo]
    if clash or (current is not None and any(m.name in zoo for m in current.members)):
        raise HubError(f'--family {path}: family {family.name!r} (members {", ".join(clash) or "-"}) differs from '
                       f'the packaged zoo family of the same name; rename the family and its members.')
    try:
        return register_family(family, overwrite=True)
    except SpecError as e:
        raise HubError(f'--family {path}: cannot register it ({e})') from None


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file (never a pickle); refuse unreadable files and non-finite values."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise HubError(f'{path}: no such weights file')
    if path.suffix != '.safetensors':
        raise HubError(f'{path}: only .safetensors weights are exported (pickled .pt/.pth/.bin files are never '
                       f'loaded); save the state_dict with safetensors.torch.save_file first.')
    try:
        state_dict = load_file(str(path))
    except Exception as e:  # safetensors raises its own SafetensorError (and OSError) for damaged files
        raise HubError(f'{path}: not a readable safetensors file ({type(e).__name__}: {e}); the file is corrupt or '
                       f'truncated: copy or train it again.') from None
    if not state_dict:
        raise HubError(f'{path}: holds no tensors')
    bad = [k for k, t in state_dict.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        shown = ', '.join(bad[:5]) + (f' and {len(bad) - 5} more' if len(bad) > 5 else '')
        raise HubError(f'{path}: NaN or Inf values in {len(bad)} tensor(s) ({shown}); these weights diverged and '
                       f'cannot be published. Use an earlier checkpoint or retrain.')
    return state_dict


def check_architecture(model_name: str) -> None:
    """Refuse names that are not registered scalenet-models members (the card needs their spec)."""
    try:
        get_family(model_name)
    except KeyError:
        known = ', '.join(scalenet_models.ZOO)
        raise HubError(f'unknown architecture {model_name!r}: not a scalenet-models model. Zoo models: {known}. '
                       f'For a searched family pass --family DIR/family.json so its members are registered.') from None


def _classifier_rows(state_dict: dict[str, torch.Tensor], path: Path) -> int:
    w = state_dict.get('classifier.weight')
    if w is None or w.ndim != 2:
        raise HubError(f'{path}: has no 2-D "classifier.weight" tensor, so it is not a timm EfficientNet-style '
                       f'classifier state_dict (features-only or foreign checkpoints cannot be exported).')
    return int(w.shape[0])


def _load_yaml(path: Path) -> dict:
    try:
        d = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise HubError(f'{path}: not readable YAML ({e})') from None
    if not isinstance(d, dict):
        raise HubError(f'{path}: expected a mapping of config keys')
    return d


def _load_metrics(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise HubError(f'{path}: not valid JSON ({e})') from None
    if not isinstance(d, dict):
        raise HubError(f'{path}: expected a JSON object')
    return d


def _numbers(d: Any, path: str) -> dict[str, float]:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise HubError(f'{path}: expected an object of numbers')
    out = {}
    for k, v in d.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise HubError(f'{path}.{k}: {v!r} is not a finite number')
        out[k] = float(v)
    return out


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise HubError(f'{what}: expected a positive integer, got {value!r}')
    return value


def _run_architecture(name: Any, model: str | None, config_path: Path) -> str:
    """The architecture a run trained; a run started from ``hf-hub:``/``local-dir:`` names it in config.json."""
    if not name:
        raise HubError(f'{config_path}: has no "model" key')
    name = str(name)
    if name.startswith('local-dir:') and not model:
        hf_config = Path(name[len('local-dir:'):]) / 'config.json'
        try:
            return str(json.loads(hf_config.read_text())['architecture'])
        except (OSError, json.JSONDecodeError, KeyError) as e:
            raise HubError(f'{config_path}: the run started from {name}, whose config.json is unreadable ({e}); '
                           f'pass --model <architecture>') from None
    if name.startswith(('hf-hub:', 'local-dir:')):
        if not model:
            raise HubError(f'{config_path}: the run started from {name}; pass --model <architecture> (the member '
                           f'name in that repository\'s config.json)')
        return model
    return name


def _run_dataset(config: dict, metrics: dict | None) -> str:
    """metrics.json's data set name; config.yaml says only "folder" for ImageFolder trees."""
    name = (metrics or {}).get('dataset') or config.get('dataset') or ''
    if name in ('auto', 'folder') and config.get('data_dir'):
        name = Path(str(config['data_dir'])).name
    return str(name)


def _load_run(run: Path, model: str | None, num_classes: int | None, img_size: int | None, ema: bool,
              family: Path | None, dataset: str = '') -> ExportSource:
    config_path = run / 'config.yaml'
    if not config_path.is_file():
        raise HubError(f'{run}: not a run directory (no config.yaml). Pass the directory written by '
                       f'`recipes.train`, or a .safetensors file with --model and --num-classes.')
    config = _load_yaml(config_path)
    metrics = _load_metrics(run / 'metrics.json')
    family_path = family or (Path(config['family']) if config.get('family') else None)
    if family_path is not None and not family_path.is_absolute() and not family_path.exists():
        family_path = run / family_path
    if family_path is not None:
        ensure_family(family_path)
    run_model = _run_architecture(config.get('model') or (metrics or {}).get('model'), model, config_path)
    if model and model != run_model:
        raise HubError(f'--model {model} disagrees with the run, which trained {run_model!r} ({config_path})')
    if metrics is not None and metrics.get('finished') is False:
        raise HubError(f'{run}: the run has not finished (metrics.json says "finished": false); wait for it, or '
                       f'resume it with `accelerate launch -m recipes.train --resume {run}`')
    check_architecture(run_model)
    weights = run / (RUN_EMA_WEIGHTS if ema else RUN_WEIGHTS)
    if not weights.is_file():
        hint = ' (the run has no EMA weights: drop --ema)' if ema else ''
        raise HubError(f'{run}: missing {weights.name}{hint}; the run did not finish or was copied incompletely.')
    state_dict = read_safetensors(weights)
    run_classes = _positive_int(config.get('num_classes', _classifier_rows(state_dict, weights)),
                                f'{config_path}: num_classes')
    if num_classes is not None and num_classes != run_classes:
        raise HubError(f'--num-classes {num_classes} disagrees with the run ({run_classes} in {config_path})')
    final_key = 'final_ema' if ema else 'final'
    final = (metrics or {}).get(final_key)
    if metrics is not None and ema and final is None:
        raise HubError(f'{run / "metrics.json"}: has no "final_ema" results for the EMA weights')
    return ExportSource(
        model_name=run_model, num_classes=run_classes, state_dict=state_dict, weights_path=weights,
        img_size=_positive_int(img_size or config.get('img_size')
                               or scalenet_models.member_net(run_model)[1].resolution, 'img_size'),
        dataset=dataset or _run_dataset(config, metrics), ema=ema,
        metrics=_numbers(final, f'metrics.json.{final_key}'), run_metrics=metrics, config=config,
        command=str(config.get('command') or (metrics or {}).get('command') or ''),
        family_path=family_path if family_path and _is_searched(run_model) else None, origin='run')


def _is_searched(model_name: str) -> bool:
    return model_name not in scalenet_models.ZOO


def _load_file(path: Path, model: str | None, num_classes: int | None, img_size: int | None,
               family: Path | None, dataset: str, metrics: dict | None) -> ExportSource:
    if not model:
        raise HubError(f'{path}: a bare weights file needs --model <name> (the architecture it belongs to)')
    if family is not None:
        ensure_family(family)
    check_architecture(model)
    state_dict = read_safetensors(path)
    n = _classifier_rows(state_dict, path)
    if num_classes is not None and num_classes != n:
        raise HubError(f'--num-classes {num_classes} disagrees with {path}, whose classifier has {n} rows; '
                       f'pass --num-classes {n}.')
    member = scalenet_models.member_net(model)[1]
    searched = family is not None and _is_searched(model)
    return ExportSource(
        model_name=model, num_classes=n, state_dict=state_dict, weights_path=path,
        img_size=_positive_int(img_size or member.resolution, 'img_size'), dataset=dataset,
        metrics=_numbers(metrics if metrics is not None else member.metrics, 'metrics'),
        family_path=family if searched else None, origin='search' if searched else 'file')


def load_source(source: str | Path, model: str | None = None, num_classes: int | None = None,
                img_size: int | None = None, ema: bool = False, family: str | Path | None = None,
                dataset: str = '', metrics: dict | None = None) -> ExportSource:
    """A run directory or a ``.safetensors`` file, checked and ready to export.

    For a bare file of a searched family (``DIR/weights/<member>.safetensors``) pass ``family`` and the
    member's metrics default to those recorded in the family JSON.
    """
    source = Path(source)
    family = Path(family) if family else None
    if family is not None and not family.is_file():
        raise HubError(f'--family {family}: no such file (pass the family JSON, e.g. DIR/family.json)')
    if source.is_dir():
        if metrics is not None:
            raise HubError('--metrics applies to bare weights files; a run directory records its own metrics.json')
        return _load_run(source, model, num_classes, img_size, ema, family, dataset)
    if not source.exists():
        raise HubError(f'{source}: no such run directory or weights file')
    if ema:
        raise HubError('--ema applies to run directories only (a bare file holds one set of weights)')
    return _load_file(source, model, num_classes, img_size, family, dataset, metrics)
