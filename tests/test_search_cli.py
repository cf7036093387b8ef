"""The search CLI and its outputs: --help everywhere, a family directory that timm builds, loadable weights."""
from __future__ import annotations

import json

import pytest
import timm
import torch
from PIL import Image

import scalenet_models
from scalenet_models.complexity import complexity
from scalenet_models.spec import write_json_atomic
from search.cli import build_parser, demo_space, main, middle_window, run_search
from search.data import build_search_data
from search.evaluation import EvalSettings, Evaluator
from search.evolution import MCEAConfig, NSGAConfig
from search.space import Candidate, load_space
from search.training import TrainConfig, load_supernet, train_supernet

TINY_RES = [[20], [16, 18, 20], [20, 22, 24], [30, 32, 34]]
SETTINGS = EvalSettings(calib_batches=1, calib_batch_size=32, val_images=40, batch_size=40)


def test_every_command_and_option_has_help(capsys):
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices
    assert set(sub) == {'train-supernet', 'search', 'export', 'check-export', 'demo'}
    for name, p in sub.items():
        for action in p._actions:
            assert action.help, f'{name} {action.option_strings} has no help'
        with pytest.raises(SystemExit) as e:
            parser.parse_args([name, '--help'])
        assert e.value.code == 0 and 'usage: python -m search ' + name in capsys.readouterr().out


def _train(tmp, base, steps, **kw):
    space_file = tmp / f'{base}.json'
    write_json_atomic(space_file, demo_space(base, width_scale=0.125, resolutions=TINY_RES, max_depth=2))
    run = tmp / f'{base}_run'
    train_supernet(TrainConfig(space=str(space_file), out=str(run), steps=steps, batch_size=16, warmup_steps=2,
                               checkpoint_every=0, synthetic_samples=200, synthetic_classes=4, log_with='none',
                               eval_candidates=0, lr=0.05, seed=0, threads=1, **kw))
    return run


@pytest.fixture(scope='module')
def family_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('cli')
    run = _train(tmp, 'scalenet', 12)
    space = load_space(tmp / 'scalenet.json')
    cfg = MCEAConfig(iterations=1, population=6, generations=2, init_bases=2, max_triples=2, tolerance=0.25,
                     base_macs=middle_window(space, samples=100, num_classes=10), macs_classes=10, seed=0)
    out = tmp / 'family'
    summary = run_search(run, out, 'clitest', mcea=cfg, eval_settings=SETTINGS, progress=False)
    return run, out, summary


def test_search_writes_a_family_that_timm_builds(family_dir):
    run, out, summary = family_dir
    names = scalenet_models.register_family(out / 'family.json', overwrite=True)
    assert names == [f'clitest_s{i}' for i in range(6)]
    model = timm.create_model('clitest_s2', num_classes=10).eval()
    row = summary['rows'][2]
    assert complexity(scalenet_models.member_net('clitest_s2')[0], row['resolution'], 10).macs == row['macs']
    assert model(torch.randn(1, 3, 24, 24)).shape == (1, 10)
    for row in summary['rows'][:4]:
        assert row['top1'] is not None and 0 <= row['top1'] <= 100
    assert [r['top1'] for r in summary['rows'][4:]] == [None, None]    # extrapolated members


def test_inherited_weights_load_with_timm_and_match_the_supernet(family_dir):
    run, out, summary = family_dir
    scalenet_models.register_family(out / 'family.json', overwrite=True)
    files = sorted(p.name for p in (out / 'weights').iterdir())
    assert files == [f'clitest_s{i}.safetensors' for i in range(4)]    # none for the extrapolated members
    wfile = out / 'weights' / 'clitest_s1.safetensors'
    model = timm.create_model('clitest_s1', pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(wfile), num_classes=4)).eval()
    net, space, tcfg = load_supernet(run)
    cand = Candidate.from_dict(json.loads((out / 'candidates.json').read_text())['clitest_s1'])
    data = build_search_data(tcfg['dataset'], None, space.resolution_max, tcfg['val_fraction'], tcfg['seed'],
                             tcfg['synthetic_samples'], tcfg['synthetic_classes'])
    Evaluator(net, data, SETTINGS).recalibrate(cand)        # the same recalibration the search did
    net.eval()
    x = torch.randn(2, 3, cand.resolution, cand.resolution)
    with torch.no_grad():
        assert (model(x) - net(x)).abs().max() < 1e-5


def test_report_and_plots(family_dir):
    _, out, _ = family_dir
    text = (out / 'report.md').read_text()
    assert '| member | d | w | resolution | depth per stage | MACs (10-class head) | params (10-class head) | supernet top-1 |' in text
    assert all(f'| clitest_s{i} |' in text for i in range(6)) and 'extrapolated' in text
    for png in ('top1_vs_macs.png', 'scaling_strategy.png'):
        with Image.open(out / png) as im:
            assert im.format == 'PNG' and im.size[0] > 400
    assert not list(out.glob('.*tmp*'))                  # nothing half-written left behind


def test_a_restarted_search_evaluates_nothing_again(family_dir):
    run, out, summary = family_dir
    space = load_space(out.parent / 'scalenet.json')
    cfg = MCEAConfig(iterations=1, population=6, generations=2, init_bases=2, max_triples=2, tolerance=0.25,
                     base_macs=middle_window(space, samples=100, num_classes=10), macs_classes=10, seed=0)
    again = run_search(run, out, 'clitest', mcea=cfg, eval_settings=SETTINGS, weights=False, progress=False)
    assert again['evaluations'] == 0 and again['rows'] == summary['rows']


def test_nsga2_search_on_a_layerwise_space(tmp_path):
    run = _train(tmp_path, 'scarlet', 2)
    out = tmp_path / 'fam'
    summary = run_search(run, out, 'scar', nsga=NSGAConfig(population=6, generations=2, macs_classes=10),
                         eval_settings=SETTINGS, progress=False)
    assert [r['member'] for r in summary['rows']] == ['scar_s0']
    front = json.loads((out / 'pareto.json').read_text())
    assert front and all(set(p) == {'genes', 'top1', 'macs'} for p in front)
    scalenet_models.register_family(out / 'family.json', overwrite=True)
    timm.create_model('scar_s0', pretrained=True, pretrained_cfg_overlay=dict(
        file=str(out / 'weights' / 'scar_s0.safetensors'), num_classes=4))


def test_cli_errors_are_clear(tmp_path, capsys):
    assert main(['train-supernet', '--space', 'nosuchspace', '--out', str(tmp_path / 'r')]) == 2
    assert "space 'nosuchspace': unknown (known spaces: scalenet, scarlet" in capsys.readouterr().err
    assert main(['train-supernet', '--space', 'scalenet', '--dataset', 'folder', '--data-dir',
                 str(tmp_path / 'nothing'), '--out', str(tmp_path / 'r2'), '--log-with', 'none']) == 2
    assert 'no such folder' in capsys.readouterr().err
    assert main(['search', '--supernet', str(tmp_path / 'norun'), '--out', str(tmp_path / 'f')]) == 2
    assert 'train a supernet first' in capsys.readouterr().err


def test_check_export_command(capsys):
    assert main(['check-export', '--space', 'scalenet', '--samples', '2', '--width-scale', '0.125',
                 '--resolution', '32']) == 0
    assert 'max |logit difference| over 2 candidates of scalenet' in capsys.readouterr().out


def test_export_command_reproduces_the_searched_weights(family_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file

    run, out, _ = family_dir
    copy = tmp_path / 'copy'
    shutil.copytree(out, copy)
    shutil.rmtree(copy / 'weights')
    assert main(['export', '--supernet', str(run), '--family-dir', str(copy)]) == 0
    for i in range(4):
        a = load_file(out / 'weights' / f'clitest_s{i}.safetensors')
        b = load_file(copy / 'weights' / f'clitest_s{i}.safetensors')
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
