"""hub export: a verified local-dir folder with a model card, and clear refusals of bad inputs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
import yaml
from safetensors.torch import save_file

import scalenet_models
from hub.__main__ import build_parser, main
from hub.card import model_card, parse_front_matter
from hub.errors import HubError
from hub.export import export_model
from hub.source import ExportSource, ensure_family, load_source

TINY_FAMILY = {
    'format': 'scalenet-family/1', 'name': 'hubtest',
    'cfg': {'license': 'apache-2.0', 'description': 'A tiny family for the hub tests.'},
    'base': {'stem_channels': 8, 'head_channels': 64, 'stages': [
        {'blocks': [{'type': 'ds', 'kernel': 3, 'out_channels': 8}]},
        {'blocks': [{'kernel': 3, 'stride': 2, 'expansion': 3, 'out_channels': 16}]},
        {'blocks': [{'kernel': 5, 'stride': 2, 'expansion': 3, 'se': 0.25, 'out_channels': 24}]}]},
    'members': [{'name': 'hubtest_s0', 'resolution': 32, 'metrics': {'top1': 55.5, 'top5': 91.0}},
                {'name': 'hubtest_s1', 'depth': 1.5, 'width': 1.25, 'resolution': 40}],
}


def tiny_family(tmp: Path) -> Path:
    path = tmp / 'family' / 'family.json'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(TINY_FAMILY))
    ensure_family(path)
    return path


def make_run(run: Path, model: str, num_classes: int = 5, img_size: int = 32, family: Path | None = None,
             ema: bool = False, seed: int = 0) -> torch.nn.Module:
    """A run directory exactly as the recipes' contract describes it (with a randomly initialised model)."""
    torch.manual_seed(seed)
    net = timm.create_model(model, num_classes=num_classes).eval()
    run.mkdir(parents=True)
    save_file(net.state_dict(), str(run / 'model.safetensors'))
    command = f'accelerate launch -m recipes.train --model {model} --epochs 2 --img-size {img_size}'
    final = {'top1': 61.25, 'top5': 97.5, 'loss': 1.1}
    metrics = {'model': model, 'num_classes': num_classes, 'dataset': 'cifar10', 'img_size': img_size,
               'final': final, 'best': {'top1': 62.0, 'epoch': 1},
               'epochs': [{'epoch': e, 'train_loss': 2.0 - e, 'top1': 50.0 + e, 'top5': 90.0, 'lr': 0.1,
                           'img_per_s': 100.0} for e in range(2)], 'command': command}
    if ema:
        ema_net = timm.create_model(model, num_classes=num_classes)
        save_file(ema_net.state_dict(), str(run / 'model_ema.safetensors'))
        metrics['final_ema'] = {'top1': 63.0, 'top5': 98.0, 'loss': 1.0}
    config = {'model': model, 'num_classes': num_classes, 'img_size': img_size, 'data_dir': '/data/cifar10',
              'dataset': 'cifar10', 'family': str(family) if family else None, 'epochs': 2, 'lr': 0.1,
              'hub_token': 'hf_should_never_appear', 'command': command}
    if family:
        metrics['family'] = str(family)
    (run / 'config.yaml').write_text(yaml.safe_dump(config))
    (run / 'metrics.json').write_text(json.dumps(metrics))
    return net


def fixed_input(size: int) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_export_run_loads_with_local_dir_and_gives_equal_logits(tmp_path):
    family = tiny_family(tmp_path)
    net = make_run(tmp_path / 'run', 'hubtest_s1', num_classes=7, img_size=40, family=family)
    out = tmp_path / 'export'
    result = export_model(load_source(tmp_path / 'run'), out, repo_id='org/hubtest_s1.cifar10')
    assert entries(out) == ['README.md', 'config.json', 'family.json', 'model.safetensors']
    assert entries(tmp_path) == ['export', 'family', 'run']          # no temp folders left beside it
    loaded = timm.create_model(f'local-dir:{out}', pretrained=True).eval()
    x = fixed_input(40)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    config = json.loads((out / 'config.json').read_text())
    assert config['architecture'] == 'hubtest_s1' and config['num_classes'] == 7
    assert config['pretrained_cfg']['input_size'] == [3, 40, 40]
    net_spec, _ = scalenet_models.member_net('hubtest_s1')
    assert (result.macs, result.params) == tuple(scalenet_models.complexity(net_spec, 40, 7))
    assert result.params == sum(p.numel() for p in net.parameters())
    assert result.sha256 == scalenet_models.weights.sha256_file(out / 'model.safetensors')


def test_card_front_matter_and_body(tmp_path):
    family = tiny_family(tmp_path)
    make_run(tmp_path / 'run', 'hubtest_s0', family=family)
    out = tmp_path / 'export'
    result = export_model(load_source(tmp_path / 'run'), out, repo_id='org/hubtest_s0.cifar10')
    card = (out / 'README.md').read_text()
    meta = parse_front_matter(card)
    assert meta['library_name'] == 'timm'
    assert meta['license'] == 'apache-2.0'
    assert {'image-classification', 'timm', 'scalenet-models', 'hubtest'} <= set(meta['tags'])
    assert meta['datasets'] == ['uoft-cs/cifar10']
    assert meta['metrics'] == ['accuracy']
    values = {m['name']: m['value'] for m in meta['model-index'][0]['results'][0]['metrics']}
    assert values == {'Top-1 accuracy': 61.25, 'Top-5 accuracy': 97.5}
    body = card.split('\n---\n', 1)[1]
    assert f'| 32 | 61.25 | 97.50 | {result.macs / 1e6:.1f} M | {result.params / 1e6:.3f} M | 5 |' in body
    assert '| **hubtest_s0** | 1 | 1 | 32 |' in body and '| hubtest_s1 | 1.5 | 1.25 | 40 |' in body
    usage = body[body.index('```python'):]
    assert usage.splitlines()[1].startswith('import scalenet_models')
    assert 'register_family(hf_hub_download("org/hubtest_s0.cifar10", "family.json"))' in usage
    assert 'accelerate launch -m recipes.train --model hubtest_s0 --epochs 2' in body
    assert '@inproceedings{xie2022scalenet' in body and '@inproceedings{chu2021scarlet' in body
    assert 'hf_should_never_appear' not in card and 'hub_token: <removed>' in card


def test_reconstructed_member_card_says_so():
    # building scarlet_a2 (8M parameters) is slow on a small CPU, and the card needs only the spec
    cfg = timm.models.get_pretrained_cfg('scarlet_a2').to_dict()
    src = ExportSource(model_name='scarlet_a2', num_classes=3, state_dict={}, weights_path=Path('w.safetensors'),
                       img_size=260, origin='file')
    card = model_card(src, 'org/scarlet_a2.test', cfg)
    assert "> **Note:** Reconstruction, not the authors' model" in card
    assert any('Reconstruction' in n for n in cfg['notes'])
    assert '| **scarlet_a2** | 1.2 | 1.1 | 260 |' in card
    assert 'register_family' not in card                      # zoo families need no family file
    plain = model_card(ExportSource(model_name='scarlet_a', num_classes=3, state_dict={},
                                    weights_path=Path('w.safetensors'), img_size=224, origin='file'),
                       'org/scarlet_a.test', timm.models.get_pretrained_cfg('scarlet_a').to_dict())
    assert '**Note:**' not in plain


def test_ema_weights_and_their_metrics(tmp_path):
    family = tiny_family(tmp_path)
    make_run(tmp_path / 'run', 'hubtest_s0', family=family, ema=True)
    src = load_source(tmp_path / 'run', ema=True)
    assert src.weights_path.name == 'model_ema.safetensors' and src.metrics['top1'] == 63.0
    out = tmp_path / 'export'
    export_model(src, out)
    from safetensors.torch import load_file
    exported = load_file(str(out / 'model.safetensors'))
    ema = load_file(str(tmp_path / 'run' / 'model_ema.safetensors'))
    assert exported.keys() == ema.keys() and all(torch.equal(exported[k], ema[k]) for k in ema)


def test_bare_searched_weights_file_with_family(tmp_path):
    family = tiny_family(tmp_path)
    torch.manual_seed(3)
    net = timm.create_model('hubtest_s0', num_classes=4).eval()
    weights = tmp_path / 'family' / 'weights' / 'hubtest_s0.safetensors'
    weights.parent.mkdir()
    save_file(net.state_dict(), str(weights))
    with pytest.raises(HubError, match='needs --model'):
        load_source(weights, family=family)
    with pytest.raises(HubError, match='--num-classes 10 disagrees .* pass --num-classes 4'):
        load_source(weights, model='hubtest_s0', family=family, num_classes=10)
    src = load_source(weights, model='hubtest_s0', family=family, dataset='imagenette')
    assert src.origin == 'search' and src.num_classes == 4 and src.metrics == {'top1': 55.5, 'top5': 91.0}
    out = tmp_path / 'export'
    export_model(src, out)
    card = (out / 'README.md').read_text()
    assert 'inherited (supernet) weights' in card and parse_front_matter(card)['datasets'] == ['frgfm/imagenette']
    assert json.loads((out / 'family.json').read_text()) == TINY_FAMILY


def test_search_metrics_in_the_card(tmp_path):
    tiny_family(tmp_path)
    src = ExportSource(model_name='hubtest_s0', num_classes=6, state_dict={}, weights_path=Path('w.safetensors'),
                       img_size=32, dataset='synthetic', metrics={'supernet_top1': 29.0}, origin='search')
    card = model_card(src, 'org/hubtest_s0.synth', timm.models.get_pretrained_cfg('hubtest_s0').to_dict())
    result = parse_front_matter(card)['model-index'][0]['results'][0]['metrics']
    assert result == [{'type': 'accuracy', 'name': 'Top-1 accuracy (supernet weights)', 'value': 29.0}]
    assert '| 32 | 29.00 | – |' in card and 'Other recorded metrics' not in card


def _assert_refused(tmp_path, source, match, **kwargs):
    before = entries(tmp_path)
    with pytest.raises(HubError, match=match):
        export_model(load_source(source, **kwargs), tmp_path / 'export')
    assert entries(tmp_path) == before        # nothing written, no temp folder left


def test_missing_weights_refused(tmp_path):
    family = tiny_family(tmp_path)
    make_run(tmp_path / 'run', 'hubtest_s0', family=family)
    (tmp_path / 'run' / 'model.safetensors').unlink()
    _assert_refused(tmp_path, tmp_path / 'run', 'missing model.safetensors')
    _assert_refused(tmp_path, tmp_path / 'run', 'no EMA weights', ema=True)
    _assert_refused(tmp_path, tmp_path / 'nowhere', 'no such run directory or weights file')
    (tmp_path / 'empty').mkdir()
    _assert_refused(tmp_path, tmp_path / 'empty', 'not a run directory')


def test_corrupt_safetensors_refused(tmp_path):
    family = tiny_family(tmp_path)
    make_run(tmp_path / 'run', 'hubtest_s0', family=family)
    weights = tmp_path / 'run' / 'model.safetensors'
    weights.write_bytes(weights.read_bytes()[:1000])
    _assert_refused(tmp_path, tmp_path / 'run', 'not a readable safetensors file')
    pickle = tmp_path / 'weights.pth'
    torch.save({'a': torch.zeros(1)}, pickle)
    _assert_refused(tmp_path, pickle, 'only .safetensors', model='hubtest_s0')


def test_nan_weights_refused(tmp_path):
    family = tiny_family(tmp_path)
    make_run(tmp_path / 'run', 'hubtest_s0', family=family)
    weights = tmp_path / 'run' / 'model.safetensors'
    from safetensors.torch import load_file
    sd = load_file(str(weights))
    sd['classifier.weight'][0, 0] = float('nan')
    sd['conv_stem.weight'][0] = float('inf')
    save_file(sd, str(weights))
    _assert_refused(tmp_path, tmp_path / 'run', r'NaN or Inf values in 2 tensor\(s\) \(.*classifier.weight')


def test_wrong_architecture_and_shapes_refused(tmp_path):
    family = tiny_family(tmp_path)
    make_run(tmp_path / 'run', 'hubtest_s0', family=family)
    weights = tmp_path / 'run' / 'model.safetensors'
    _assert_refused(tmp_path, weights, "unknown architecture 'resnet18'", model='resnet18')
    _assert_refused(tmp_path, weights, r'does not fit hubtest_s1 .*shape mismatch', model='hubtest_s1')
    _assert_refused(tmp_path, tmp_path / 'run', 'disagrees with the run', model='hubtest_s1')
    config = yaml.safe_load((tmp_path / 'run' / 'config.yaml').read_text())
    (tmp_path / 'run' / 'config.yaml').write_text(yaml.safe_dump({**config, 'num_classes': 9}))
    _assert_refused(tmp_path, tmp_path / 'run', r'does not fit hubtest_s0 with 9 classes \(shape mismatch')


def test_run_details_as_the_recipes_write_them(tmp_path):
    family = tiny_family(tmp_path)
    make_run(tmp_path / 'run', 'hubtest_s0', family=family)
    config = yaml.safe_load((tmp_path / 'run' / 'config.yaml').read_text())
    metrics = json.loads((tmp_path / 'run' / 'metrics.json').read_text())
    # an ImageFolder run: config.yaml says "folder", metrics.json names the data set
    (tmp_path / 'run' / 'config.yaml').write_text(yaml.safe_dump({**config, 'dataset': 'folder',
                                                                   'data_dir': '/data/imagewoof', 'img_size': None}))
    (tmp_path / 'run' / 'metrics.json').write_text(json.dumps({**metrics, 'dataset': 'imagewoof'}))
    src = load_source(tmp_path / 'run')
    assert (src.dataset, src.img_size) == ('imagewoof', 32)          # img_size None: the member's resolution
    assert load_source(tmp_path / 'run', dataset='my-org/woof').dataset == 'my-org/woof'
    with pytest.raises(HubError, match='--metrics applies to bare weights files'):
        load_source(tmp_path / 'run', metrics={'top1': 1.0})
    (tmp_path / 'run' / 'metrics.json').write_text(json.dumps({**metrics, 'finished': False}))
    with pytest.raises(HubError, match='the run has not finished'):
        load_source(tmp_path / 'run')
    (tmp_path / 'run' / 'metrics.json').write_text(json.dumps(metrics))
    (tmp_path / 'run' / 'config.yaml').write_text(yaml.safe_dump({**config, 'model': 'hf-hub:org/hubtest_s0.in1k'}))
    with pytest.raises(HubError, match='started from hf-hub:org/hubtest_s0.in1k; pass --model'):
        load_source(tmp_path / 'run')
    assert load_source(tmp_path / 'run', model='hubtest_s0').model_name == 'hubtest_s0'


def test_existing_output_needs_overwrite(tmp_path):
    family = tiny_family(tmp_path)
    make_run(tmp_path / 'run', 'hubtest_s0', family=family)
    out = tmp_path / 'export'
    out.mkdir()
    (out / 'keep.txt').write_text('x')
    with pytest.raises(HubError, match='already exists; pass --overwrite'):
        export_model(load_source(tmp_path / 'run'), out)
    assert entries(out) == ['keep.txt']
    export_model(load_source(tmp_path / 'run'), out, overwrite=True)
    assert 'keep.txt' not in entries(out) and entries(tmp_path) == ['export', 'family', 'run']


def test_cli_export_and_clear_error(tmp_path, capsys):
    family = tiny_family(tmp_path)
    make_run(tmp_path / 'run', 'hubtest_s0', family=family)
    assert main(['export', '--run', str(tmp_path / 'run'), '--out', str(tmp_path / 'export')]) == 0
    assert 'verified' in capsys.readouterr().out
    assert main(['export', '--run', str(tmp_path / 'run'), '--out', str(tmp_path / 'export')]) == 2
    assert 'already exists; pass --overwrite' in capsys.readouterr().err


@pytest.mark.parametrize('command', [[], ['export'], ['push'], ['pull'], ['publish-family']])
def test_help_on_every_command(command, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(command + ['--help'])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert 'usage: python -m hub' in out
    assert '--help' in out
