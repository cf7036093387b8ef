"""The trainer's key table: YAML recipes, both override spellings, clear errors, --help and docs from one table."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from recipes.config import KEYS, ConfigError, build_parser, load_yaml, markdown_table, resolve

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / 'recipes' / 'configs').glob('*.yaml'))


def test_defaults_then_yaml_then_command_line(tmp_path):
    recipe = tmp_path / 'r.yaml'
    recipe.write_text('model: scarlet_b\nbatch_size: 16\nlr: 0.1\nscale: [0.5, 1.0]\n')
    cfg = resolve(['--config', str(recipe), '--lr', '0.2'])
    assert (cfg['model'], cfg['batch_size'], cfg['lr'], cfg['scale']) == ('scarlet_b', 16, 0.2, [0.5, 1.0])
    assert cfg['epochs'] == next(k.default for k in KEYS if k.name == 'epochs')
    assert cfg['command'].endswith(f'recipes.train --config {recipe} --lr 0.2')


@pytest.mark.parametrize('argv', [['--batch-size', '64'], ['--batch_size', '64'], ['--batch-size=64'], ['-b', '64']])
def test_both_spellings_of_an_override(argv):
    assert resolve(argv)['batch_size'] == 64


@pytest.mark.parametrize('argv, expected', [
    (['--model-ema'], True), (['--model-ema', 'false'], False), (['--model_ema', 'yes'], True),
    (['--no-model-ema'], False), ([], False)])
def test_boolean_flags(argv, expected):
    assert resolve(argv)['model_ema'] is expected


def test_optional_values_accept_none_and_aliases():
    cfg = resolve(['--layer-decay', '0.75', '--initial-checkpoint', 'w.safetensors', '--grad-accum', '4',
                   '--drop-path', 'none', '--scale', '0.3', '1'])
    assert (cfg['layer_decay'], cfg['pretrained_file'], cfg['grad_accum_steps'], cfg['drop_path']) == \
        (0.75, 'w.safetensors', 4, None)
    assert cfg['scale'] == [0.3, 1.0]


@pytest.mark.parametrize('argv, match', [
    (['--batch-sise', '3'], "unknown key 'batch_sise'; did you mean batch_size"),
    (['--lrr', '0.1'], 'did you mean lr'),
    (['--epochs', 'ten'], "epochs='ten' is not a valid int"),
    (['--lr', '1e-3', 'extra'], 'unexpected value'),
    (['--amp-dtype', 'float8'], 'not one of float16, bfloat16'),
    (['--batch-size', '0'], 'batch_size=0 must be at least 1'),
    (['--val-fraction', '1.5'], r'val_fraction=1.5 must be in \[0, 1\)'),
    (['--pretrained', '--pretrained-file', 'x.safetensors'], 'exclusive'),
    (['--num-classes', '2.5'], 'not a valid int'),
])
def test_bad_command_line_names_the_problem(argv, match):
    with pytest.raises(ConfigError, match=match):
        resolve(argv)


def test_bad_yaml_names_file_key_and_close_match(tmp_path):
    recipe = tmp_path / 'r.yaml'
    recipe.write_text('modle: scalenet_s1\n')
    with pytest.raises(ConfigError, match=r"r.yaml: unknown key 'modle'; did you mean model"):
        load_yaml(recipe)
    recipe.write_text('- a list\n')
    with pytest.raises(ConfigError, match='expected a mapping'):
        load_yaml(recipe)
    recipe.write_text('epochs: [1\n')
    with pytest.raises(ConfigError, match='not valid YAML'):
        load_yaml(recipe)
    with pytest.raises(ConfigError, match='no such config file'):
        load_yaml(tmp_path / 'missing.yaml')


@pytest.mark.parametrize('path', CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_recipe_validates(path):
    cfg = resolve(['--config', str(path)])
    assert cfg['model'] in ('scalenet_s0', 'scarlet_a')
    assert cfg['output'].startswith('runs/')


def test_shipped_recipes_cover_the_promised_tasks():
    names = {p.stem for p in CONFIGS}
    assert {'imagenet_scalenet', 'imagenet_scarlet', 'cifar10_finetune', 'cifar100_finetune', 'food101_finetune',
            'finegrained_folder'} <= names
    for name in ('imagenet_scalenet', 'imagenet_scarlet'):
        text = (ROOT / 'recipes' / 'configs' / f'{name}.yaml').read_text()
        cfg = load_yaml(ROOT / 'recipes' / 'configs' / f'{name}.yaml')
        assert cfg['opt'] == 'rmsproptf' and cfg['decay_rate'] == 0.97 and cfg['decay_epochs'] == 2.4
        assert 'EfficientNet-style RMSProp' in text and re.search(r'NOT (confirmed|public)', text)


def test_help_documents_every_key_in_both_spellings():
    text = build_parser('recipes.train', '').format_help()
    for key in KEYS:
        assert f'--{key.name.replace("_", "-")}' in text
        assert f'--{key.name}' in text or '_' not in key.name
        assert key.help.split()[0] in text


def test_help_command_runs(capsys):
    from recipes.train import main
    with pytest.raises(SystemExit) as exit_info:
        main(['--help'])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert '--max-train-steps' in out and '--resume' in out and 'accelerate launch -m recipes.train' in out


def test_docs_key_reference_is_the_generated_table():
    docs = (ROOT / 'docs' / 'recipes.md').read_text()
    assert markdown_table() in docs, 'docs/recipes.md is stale: paste `python -m recipes.config` into it'
