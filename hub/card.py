"""The model card (``README.md``): YAML front matter the Hub indexes, and a body a practitioner can trust.

Every number in it comes from the run's ``metrics.json`` / the family JSON (accuracy) or from
``scalenet_models.complexity`` (MACs, parameters); nothing is typed in by hand.
"""
from __future__ import annotations

import re
from typing import Any

import yaml

import scalenet_models
from scalenet_models import complexity, get_family, member_net

from .source import ExportSource

CITATIONS = """\
@inproceedings{xie2022scalenet,
  title     = {ScaleNet: Searching for the Model to Scale},
  author    = {Xie, Jiyang and Su, Xiu and You, Shan and Ma, Zhanyu and Wang, Fei and Qian, Chen},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year      = {2022},
  note      = {arXiv:2207.07267}
}

@inproceedings{chu2021scarlet,
  title     = {SCARLET-NAS: Bridging the Gap between Stability and Scalability in Weight-sharing Neural Architecture Search},
  author    = {Chu, Xiangxiang and Zhang, Bo and Li, Qingyuan and Xu, Ruijun and Li, Xudong},
  booktitle = {IEEE/CVF International Conference on Computer Vision Workshops (ICCVW)},
  year      = {2021},
  note      = {arXiv:1908.06022}
}"""

# dataset names used by the recipes -> Hub dataset ids (the card's `datasets` field links to them)
HUB_DATASETS = {
    'cifar10': 'uoft-cs/cifar10', 'cifar-10': 'uoft-cs/cifar10', 'torch/cifar10': 'uoft-cs/cifar10',
    'cifar100': 'uoft-cs/cifar100', 'cifar-100': 'uoft-cs/cifar100', 'torch/cifar100': 'uoft-cs/cifar100',
    'imagenette': 'frgfm/imagenette', 'imagewoof': 'frgfm/imagewoof',
    'imagenet': 'imagenet-1k', 'imagenet-1k': 'imagenet-1k', 'in1k': 'imagenet-1k',
    'food101': 'ethz/food101', 'food-101': 'ethz/food101',
}
_SECRET_KEY = re.compile(r'token|secret|password|passwd|api_key|apikey|credential', re.IGNORECASE)

_RULE_TEXT = {
    'ceil': 'channels are ceil(c x width) (no divisor)',
    'round8': "channels are timm's make_divisible(c x width, 8)",
    'append_last': "extra blocks repeat each stage's last block",
    'ceil_spread': "extra blocks follow timm's ceil spread over a stage's blocks",
}


# accuracy keys the card reports: a run's final evaluation, or the search's supernet evaluation
ACCURACY_KEYS = ('top1', 'top5', 'supernet_top1', 'supernet_top5')


def accuracy(metrics: dict[str, float]) -> tuple[float | None, float | None]:
    """(top-1, top-5) in %, from a run's ``top1``/``top5`` or the search's ``supernet_top1``/``supernet_top5``."""
    return (metrics.get('top1', metrics.get('supernet_top1')), metrics.get('top5', metrics.get('supernet_top5')))


def dataset_id(dataset: str) -> str:
    """The Hub id of a dataset name used by the recipes (unknown names pass through unchanged)."""
    return HUB_DATASETS.get(dataset.strip().lower(), dataset.strip())


def _fmt(value: float | None, digits: int = 2) -> str:
    return '–' if value is None else f'{value:.{digits}f}'


def public_config(config: dict[str, Any]) -> dict[str, Any]:
    """The run config without anything that looks like a credential (cards are public)."""
    return {k: ('<removed>' if _SECRET_KEY.search(str(k)) else v) for k, v in config.items()}


def front_matter(src: ExportSource, repo_name: str) -> dict[str, Any]:
    family = get_family(src.model_name)
    tags = ['image-classification', 'timm', 'scalenet-models', family.name]
    if family.cfg.get('paper_ids'):
        tags.append(family.cfg['paper_ids'].replace('arXiv:', 'arxiv:'))
    meta: dict[str, Any] = {
        'library_name': 'timm',
        'license': family.cfg.get('license', 'apache-2.0'),
        'pipeline_tag': 'image-classification',
        'tags': tags,
    }
    if src.dataset:
        meta['datasets'] = [dataset_id(src.dataset)]
    suffix = ' (supernet weights)' if src.origin == 'search' else ''
    results = [{'type': 'accuracy', 'name': f'{label} accuracy{suffix}', 'value': round(value, 4)}
               for label, value in zip(('Top-1', 'Top-5'), accuracy(src.metrics)) if value is not None]
    if results:
        meta['metrics'] = ['accuracy']
        ds = dataset_id(src.dataset) if src.dataset else 'unspecified'
        meta['model-index'] = [{
            'name': repo_name,
            'results': [{
                'task': {'type': 'image-classification', 'name': 'Image Classification'},
                'dataset': {'name': src.dataset or 'unspecified', 'type': ds},
                'metrics': results,
            }],
        }]
    return meta


def _results_section(src: ExportSource) -> list[str]:
    net, _ = member_net(src.model_name)
    c = complexity(net, src.img_size, src.num_classes)
    top1, top5 = accuracy(src.metrics)
    what = {'run': 'evaluation at the end of training', 'file': 'supplied with the weights',
            'search': 'measured during the search with the inherited (supernet) weights'}[src.origin]
    lines = ['## Results', '',
             f'Accuracy on {src.dataset or "the training data set"} ({what}'
             + (', EMA weights' if src.ema else '') + '); MACs and parameters counted analytically by '
             '`scalenet_models.complexity` (equal to `torch.utils.flop_counter`).', '',
             '| resolution | top-1 (%) | top-5 (%) | MACs | params | classes |',
             '|---:|---:|---:|---:|---:|---:|',
             f'| {src.img_size} | {_fmt(top1)} | {_fmt(top5)} | '
             f'{c.macs / 1e6:.1f} M | {c.params / 1e6:.3f} M | {src.num_classes} |']
    extra = {k: v for k, v in src.metrics.items() if k not in ACCURACY_KEYS}
    if extra:
        lines += ['', 'Other recorded metrics: ' + ', '.join(f'{k} = {v:.4g}' for k, v in sorted(extra.items())) + '.']
    if not src.metrics:
        lines += ['', 'No accuracy was recorded with these weights.']
    best = (src.run_metrics or {}).get('best')
    if isinstance(best, dict) and 'top1' in best:
        which = 'of the model (not the EMA) ' if src.ema else ''
        lines += ['', f'Best top-1 {which}during training: {_fmt(best.get("top1"))} % '
                      f'(epoch {best.get("epoch", "?")}); the exported weights are the final ones.']
    return lines


def _scaling_section(src: ExportSource) -> list[str]:
    family = get_family(src.model_name)
    rule = family.scaling
    lines = ['## The family and its scaling', '',
             f'`{src.model_name}` is one member of the `{family.name}` family: one base network scaled by a depth '
             f'and a width multiplier and a resolution. Rule: {_RULE_TEXT[rule.channels]}; '
             f'{_RULE_TEXT[rule.depth]}; stem {"scaled" if rule.scale_stem else "fixed"}, '
             f'head {"scaled" if rule.scale_head else "fixed"}. MACs/params below are at each member\'s '
             f'resolution with {src.num_classes} classes.', '',
             '| member | depth | width | resolution | MACs | params |', '|---|---:|---:|---:|---:|---:|']
    for m in family.members:
        c = complexity(family.member_net(m.name), m.resolution, src.num_classes)
        name = f'**{m.name}**' if m.name == src.model_name else m.name
        lines.append(f'| {name} | {m.depth:g} | {m.width:g} | {m.resolution} | {c.macs / 1e6:.1f} M | '
                     f'{c.params / 1e6:.3f} M |')
    return lines


def _usage_section(src: ExportSource, repo_id: str) -> list[str]:
    register = []
    if src.family_path is not None:
        register = ['from huggingface_hub import hf_hub_download',
                    '# a searched family: register its members with timm first (family.json ships in this repo)',
                    f'scalenet_models.register_family(hf_hub_download("{repo_id}", "family.json"))']
    return ['## Usage', '', '```python',
            'import scalenet_models  # first: timm has no plugin mechanism, this import registers the models',
            'import timm', *register, '',
            f'model = timm.create_model("hf-hub:{repo_id}", pretrained=True).eval()',
            'config = timm.data.resolve_model_data_config(model)',
            'transform = timm.data.create_transform(**config, is_training=False)',
            '# logits = model(transform(image).unsqueeze(0))',
            '```', '',
            'Offline: `python -m hub pull ' + repo_id + '` fills the Hugging Face cache once; afterwards '
            '`HF_HUB_OFFLINE=1` loads it without network.']


def _training_section(src: ExportSource) -> list[str]:
    if src.origin == 'search':
        return ['## Training', '',
                'These weights are inherited from the weight-sharing supernet of the search (no stand-alone '
                'retraining); retrain with the recipes for final accuracy:', '', '```bash',
                f'accelerate launch -m recipes.train --model {src.model_name} ...', '```']
    if src.origin == 'file':
        return ['## Training', '', 'Exported from a bare weights file; no training record was supplied.']
    lines = ['## Training', '']
    if src.command:
        lines += ['Command:', '', '```bash', src.command, '```', '']
    epochs = (src.run_metrics or {}).get('epochs') or []
    if epochs:
        lines += [f'{len(epochs)} epoch(s); final train loss {_fmt(epochs[-1].get("train_loss"), 4)}.', '']
    if src.config:
        lines += ['<details><summary>Resolved recipe (config.yaml)</summary>', '', '```yaml',
                  yaml.safe_dump(public_config(src.config), sort_keys=True, width=1 << 16).rstrip(), '```', '',
                  '</details>']
    return lines


def model_card(src: ExportSource, repo_id: str, pretrained_cfg: dict[str, Any]) -> str:
    """The full README.md text for an export folder."""
    family = get_family(src.model_name)
    net, member = member_net(src.model_name)
    repo_name = repo_id.split('/')[-1]
    meta = yaml.safe_dump(front_matter(src, repo_name), sort_keys=False, allow_unicode=True)
    desc = family.cfg.get('description', '').strip()
    lines = ['---', meta.rstrip(), '---', '', f'# {repo_name}', '',
             f'`{src.model_name}` image classifier from the `{family.name}` family of scalenet-models: '
             f"a timm `EfficientNet` compiled from the family's architecture spec "
             f'({sum(net.depths)} blocks in {len(net.stages)} stages, stem {net.stem_channels}, '
             f'head {net.head_channels} channels), {src.num_classes} classes.']
    if desc:
        lines += ['', desc]
    if member.notes:
        lines += ['', f'> **Note:** {member.notes}']
    if family.cfg.get('paper_name'):
        ids = f' ({family.cfg["paper_ids"]})' if family.cfg.get('paper_ids') else ''
        code = f'; original code: {family.cfg["origin_url"]}' if family.cfg.get('origin_url') else ''
        lines += ['', f'Paper: *{family.cfg["paper_name"]}*{ids}{code}.']
    lines += ['', *_results_section(src), '', *_scaling_section(src), '', *_usage_section(src, repo_id), '',
              '## Preprocessing', '',
              f'input {tuple(pretrained_cfg["input_size"])}, interpolation {pretrained_cfg.get("interpolation")}, '
              f'crop_pct {pretrained_cfg.get("crop_pct")}, mean {tuple(pretrained_cfg.get("mean", ()))}, '
              f'std {tuple(pretrained_cfg.get("std", ()))} (from `config.json`).', '',
              *_training_section(src), '',
              '## Citation', '', '```bibtex', CITATIONS, '```', '',
              f'Exported with scalenet-models {scalenet_models.__version__}.', '']
    return '\n'.join(lines)


def parse_front_matter(text: str) -> dict[str, Any]:
    """The YAML front matter of a card (used by tests and by ``push`` to check a folder)."""
    if not text.startswith('---\n'):
        raise ValueError('the card does not start with YAML front matter (---)')
    end = text.index('\n---\n', 4)
    return yaml.safe_load(text[4:end])
