"""The trainer end to end on tiny data: run directory contract, evaluation, fine-tuning, freezing, exact resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import timm
import torch
import yaml
from safetensors.torch import load_file, save_file

import scalenet_models
from recipes import evaluate
from recipes.checkpoint import MARKER, ResumeError, find_checkpoint
from recipes.config import resolve
from recipes.model import ModelError
from recipes.train import train
from test_recipes_data import write_family, write_folder_dataset

ROOT = Path(__file__).resolve().parents[1]
MODEL = 'recipetiny_s0'


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return write_folder_dataset(tmp_path_factory.mktemp('recipes') / 'data', classes=3, train=12, val=4)


@pytest.fixture(scope='module')
def family(tmp_path_factory):
    return write_family(tmp_path_factory.mktemp('family') / 'family.json')


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: faster than two on a shared 2-core machine, and the same as the subprocesses below.

    Also starts every test with a fresh Accelerate state (it is a per-process singleton).
    """
    from accelerate.state import AcceleratorState, GradientState
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run(argv: list[str]) -> torch.nn.Module:
    from accelerate.state import AcceleratorState, GradientState
    try:
        return train(resolve(argv))
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


def tiny_args(data, family, out, *extra) -> list[str]:
    return ['--family', str(family), '--model', MODEL, '--data-dir', str(data), '--batch-size', '6',
            '--workers', '0', '--log-with', 'csv', '--output', str(out), '--seed', '1', *extra]


def max_abs_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def test_run_directory_contract_and_evaluation(data, family, tmp_path, capsys):
    out = tmp_path / 'run'
    run(tiny_args(data, family, out, '--epochs', '2', '--model-ema', '--model-ema-decay', '0.5', '--lr', '0.05'))
    for name in ('config.yaml', 'model.safetensors', 'model_ema.safetensors', 'metrics.json', 'curves.png',
                 'log.txt'):
        assert (out / name).is_file(), name
    assert (out / 'curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    cfg = yaml.safe_load((out / 'config.yaml').read_text())
    assert cfg['model'] == MODEL and cfg['num_classes'] == 3 and cfg['img_size'] == 32
    assert cfg['family'] == str(family) and cfg['dataset'] == 'folder' and cfg['data_dir'] == str(data)
    assert cfg['command'].split()[1:3] == ['-m', 'recipes.train']
    m = json.loads((out / 'metrics.json').read_text())
    assert (m['model'], m['num_classes'], m['dataset'], m['img_size'], m['family']) == (MODEL, 3, 'data', 32,
                                                                                          str(family))
    assert set(m['final']) >= {'top1', 'top5', 'loss'} and set(m['final_ema']) >= {'top1', 'top5', 'loss'}
    assert [e['epoch'] for e in m['epochs']] == [1, 2]
    for e in m['epochs']:
        assert set(e) >= {'epoch', 'train_loss', 'top1', 'top5', 'lr', 'img_per_s'}
        assert 0 <= e['top1'] <= e['top5'] <= 100 and e['img_per_s'] > 0 and e['train_loss'] > 0
    assert m['best']['top1'] == max(e['top1'] for e in m['epochs'])
    assert m['epochs'][0]['lr'] > m['epochs'][1]['lr']  # cosine, stepped per update, ends at min_lr 0
    assert m['epochs'][-1]['updates'] == 2 * (36 // 6)
    log = (out / 'log.txt').read_text()
    assert 'epoch 2/2  loss' in log and 'img/s' in log and 'top1 EMA' in log
    csv_rows = (out / 'tracker' / 'metrics.csv').read_text().splitlines()
    assert csv_rows[0] == 'step,key,value' and any(r.startswith('12,val/top1,') for r in csv_rows)
    # the weights are plain timm state dicts a fresh model loads strictly
    scalenet_models.register_family(family, overwrite=True)
    model = timm.create_model(MODEL, num_classes=3)
    model.load_state_dict(load_file(out / 'model.safetensors'))
    ema = load_file(out / 'model_ema.safetensors')
    assert max_abs_diff(model.state_dict(), ema) > 0
    # evaluation reproduces the run's final numbers with the eval transform (EMA weights by default)
    got = evaluate.main(['--run', str(out), '--json', str(tmp_path / 'eval.json'), '--workers', '0'])
    assert got['ema'] and got['images'] == 12
    assert got['top1'] == pytest.approx(m['final_ema']['top1']) and got['loss'] == pytest.approx(
        m['final_ema']['loss'], rel=1e-5)
    assert json.loads((tmp_path / 'eval.json').read_text())['top1'] == got['top1']
    plain = evaluate.main(['--run', str(out), '--no-ema', '--workers', '0'])
    assert plain['top1'] == pytest.approx(m['final']['top1']) and plain['loss'] == pytest.approx(
        m['final']['loss'], rel=1e-5)
    by_model = evaluate.main(['--model', MODEL, '--family', str(family), '--checkpoint', str(out / 'model.safetensors'),
                              '--data-dir', str(data), '--img-size', '32', '--workers', '0'])
    assert by_model['top1'] == pytest.approx(plain['top1']) and 'top-1' in capsys.readouterr().out


def test_finetune_family_member_from_inherited_weights_with_new_head_and_frozen_body(data, tmp_path):
    """The searched-family contract: DIR/family.json + DIR/weights/<member>.safetensors (search's classes)."""
    fam = write_family(tmp_path / 'searched' / 'family.json')
    scalenet_models.register_family(fam, overwrite=True)
    torch.manual_seed(7)
    source = timm.create_model(MODEL, num_classes=5)
    weights = fam.parent / 'weights' / f'{MODEL}.safetensors'
    weights.parent.mkdir()
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, weights)
    model = run(tiny_args(data, fam, tmp_path / 'ft', '--pretrained-file', str(weights), '--freeze',
                          '--epochs', '1', '--lr', '0.1', '--layer-decay', '0.7'))
    got, start = model.state_dict(), source.state_dict()
    assert got['classifier.weight'].shape == (3, 32)
    body = [k for k in start if not k.startswith('classifier.')]
    assert max_abs_diff({k: got[k] for k in body}, {k: start[k] for k in body}) == 0  # BN statistics included
    assert not torch.equal(got['classifier.bias'], torch.zeros(3))


def test_freeze_stages_keeps_stem_and_first_stages(data, family, tmp_path):
    scalenet_models.register_family(family, overwrite=True)
    torch.manual_seed(3)
    start = timm.create_model(MODEL, num_classes=3)
    weights = tmp_path / 'start.safetensors'
    save_file(start.state_dict(), weights)
    got = run(tiny_args(data, family, tmp_path / 'fs', '--pretrained-file', str(weights), '--freeze-stages', '1',
                        '--epochs', '1', '--lr', '0.1', '--smoothing', '0')).state_dict()
    ref = start.state_dict()
    frozen = [k for k in ref if k.startswith(('conv_stem', 'bn1.', 'blocks.0.'))]
    trained = [k for k in ref if k.startswith(('blocks.1.', 'blocks.2.', 'conv_head', 'classifier'))
               and 'num_batches' not in k]
    assert frozen and all(torch.equal(got[k], ref[k]) for k in frozen)
    assert all(not torch.equal(got[k], ref[k]) for k in trained)
    with pytest.raises(ModelError, match='freeze_stages=9'):
        run(tiny_args(data, family, tmp_path / 'bad', '--freeze-stages', '9', '--epochs', '1'))


def test_max_train_steps_caps_updates_with_accumulation(data, family, tmp_path):
    out = tmp_path / 'cap'
    run(tiny_args(data, family, out, '--epochs', '5', '--max-train-steps', '2', '--grad-accum-steps', '2',
                  '--batch-size', '3'))
    m = json.loads((out / 'metrics.json').read_text())
    assert len(m['epochs']) == 1 and m['epochs'][0]['updates'] == 2 and m['finished']


def test_bf16_channels_last_and_tensorboard(data, family, tmp_path):
    out = tmp_path / 'bf16'
    run(tiny_args(data, family, out, '--amp', '--amp-dtype', 'bfloat16', '--channels-last', '--log-with',
                  'tensorboard', '--max-train-steps', '2', '--log-interval', '1'))
    m = json.loads((out / 'metrics.json').read_text())
    assert m['epochs'][0]['updates'] == 2 and m['final']['loss'] > 0
    assert list((out / 'tracker').rglob('events.out.tfevents.*'))
    model = timm.create_model(MODEL, num_classes=3)
    model.load_state_dict(load_file(out / 'model.safetensors'))


def test_clear_errors_for_model_weights_and_data(data, family, tmp_path, capsys):
    with pytest.raises(ModelError, match="'recipetiny_s9' is not a registered timm model.*recipetiny_s0"):
        run(tiny_args(data, family, tmp_path / 'e1', '--model', 'recipetiny_s9'))
    with pytest.raises(ModelError, match='No published weights'):
        run(tiny_args(data, family, tmp_path / 'e2', '--pretrained'))
    with pytest.raises(ModelError, match='no such file'):
        run(tiny_args(data, family, tmp_path / 'e3', '--pretrained-file', str(tmp_path / 'none.safetensors')))
    from recipes.data import DatasetError
    with pytest.raises(DatasetError, match='fewer than one global batch'):
        run(tiny_args(data, family, tmp_path / 'e4', '--batch-size', '64'))
    with pytest.raises(ResumeError, match='no complete checkpoint'):
        run(tiny_args(data, family, tmp_path / 'e5', '--resume', str(tmp_path)))
    scalenet_models.register_family(family, overwrite=True)
    five = tmp_path / 'five.safetensors'
    save_file(timm.create_model(MODEL, num_classes=5).state_dict(), five)
    for argv, match in ((['--run', str(tmp_path)], 'not a run directory'),
                        (['--model', MODEL, '--checkpoint', str(five), '--data-dir', str(data)],
                         'predicts 5 classes but the dataset has 3'),
                        (['--model', MODEL, '--data-dir', str(data)], 'No published weights')):
        with pytest.raises(SystemExit, match=match):
            evaluate.main(argv + ['--workers', '0'])
    from recipes.train import main
    with pytest.raises(SystemExit) as exit_info:
        main(['--data-dir', str(tmp_path / 'nowhere')])
    assert exit_info.value.code == 2 and 'nowhere: no such folder' in capsys.readouterr().err


def test_tampered_checkpoint_pickle_is_refused(data, family, tmp_path):
    out = tmp_path / 'run'
    run(tiny_args(data, family, out, '--epochs', '1'))
    ckpt = find_checkpoint(out)

    class Evil:
        def __reduce__(self):
            return (os.system, ('echo pwned',))

    import pickle
    (ckpt / 'custom_checkpoint_0.pkl').write_bytes(pickle.dumps({'epoch': Evil()}))
    with pytest.raises(ResumeError, match='weights_only=True'):
        run(tiny_args(data, family, out, '--epochs', '2', '--resume', str(out)))


def test_resume_after_sigkill_mid_epoch_gives_the_uninterrupted_weights(data, family, tmp_path):
    """Augmentation, mixup, dropout, drop-path, EMA and the schedule all continue exactly after kill -9.

    The killed run is a real subprocess; the uninterrupted run (in this process, meanwhile) and the
    resumed one use the same settings and one thread, so their weights must agree bit for bit.
    """
    common = ['--family', str(family), '--model', MODEL, '--data-dir', str(data), '--batch-size', '4',
              '--epochs', '2', '--workers', '0', '--model-ema', '--mixup', '0.2', '--drop', '0.2',
              '--drop-path', '0.1', '--checkpoint-steps', '1', '--log-with', 'none', '--deterministic',
              '--seed', '5']
    killed_dir = tmp_path / 'killed'
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT))
    log = (tmp_path / 'killed.log').open('w')
    killed = subprocess.Popen([sys.executable, '-m', 'recipes.train', *common, '--output', str(killed_dir)],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    status = {}

    def kill_after_second_checkpoint():
        deadline = time.time() + 300
        while not (killed_dir / 'checkpoints' / 'checkpoint_2' / MARKER).exists():
            if killed.poll() is not None or time.time() > deadline:
                status['error'] = f'exited {killed.poll()} before its third checkpoint'
                killed.kill()
                return
            time.sleep(0.01)
        killed.send_signal(signal.SIGKILL)

    watcher = threading.Thread(target=kill_after_second_checkpoint)
    watcher.start()
    try:
        run(common + ['--output', str(tmp_path / 'whole')])
    finally:
        watcher.join()
        killed.wait()
        log.close()
    assert 'error' not in status, status['error'] + (tmp_path / 'killed.log').read_text()[-2000:]
    assert killed.returncode == -signal.SIGKILL
    assert not (killed_dir / 'model.safetensors').exists()  # it really died before finishing
    marker = json.loads((find_checkpoint(killed_dir) / MARKER).read_text())
    assert marker['epoch'] == 0 and 0 < marker['step_in_epoch'] < 9, marker  # mid-epoch
    run(['--resume', str(killed_dir)])
    assert f'batch {marker["step_in_epoch"]}, ' in (killed_dir / 'log.txt').read_text()
    for name in ('model.safetensors', 'model_ema.safetensors'):
        assert max_abs_diff(load_file(tmp_path / 'whole' / name), load_file(killed_dir / name)) == 0, name
    a, b = (json.loads((d / 'metrics.json').read_text()) for d in (tmp_path / 'whole', killed_dir))
    assert [e['train_loss'] for e in a['epochs']] == pytest.approx([e['train_loss'] for e in b['epochs']], rel=1e-9)
    assert a['final'] == b['final']
