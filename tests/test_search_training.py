"""Supernet training: exact resume after SIGKILL, refusals on changed settings, paths per update."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from scalenet_models.spec import write_json_atomic
from search.cli import demo_space
from search.space import load_space
from search.training import ResumeError, TrainConfig, path_sampler, train_supernet

ROOT = Path(__file__).resolve().parents[1]
TINY_RES = [[16], [16, 18], [20, 22], [24, 26]]


def tiny_space_file(tmp: Path, base: str = 'scalenet') -> Path:
    path = tmp / f'{base}_tiny.json'
    write_json_atomic(path, demo_space(base, width_scale=0.125, resolutions=TINY_RES, max_depth=1))
    return path


def _cmd(space: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, '-m', 'search', 'train-supernet', '--space', str(space), '--out', str(out),
            '--steps', '24', '--batch-size', '8', '--warmup-steps', '3', '--checkpoint-every', '4',
            '--synthetic-samples', '200', '--synthetic-classes', '4', '--log-with', 'none',
            '--eval-candidates', '0', '--lr', '0.05', '--seed', '3', *extra]


def _env():
    return {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(ROOT)}


def test_sigkill_and_resume_gives_bit_identical_weights(tmp_path):
    """Kill -9 a training process mid-run, resume it: the weights equal an uninterrupted run's, bit for bit."""
    space = tiny_space_file(tmp_path)
    full, killed = tmp_path / 'full', tmp_path / 'killed'
    proc = subprocess.Popen(_cmd(space, killed), env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    train_supernet(_train_cfg(space, full))   # the uninterrupted run, in this process meanwhile
    deadline = time.time() + 150
    while not (killed / 'checkpoints' / 'step_8').exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, 'the run finished before it could be killed'
    assert not (killed / 'supernet.safetensors').exists()
    train_supernet(_train_cfg(space, killed, resume=True))
    a, b = load_file(full / 'supernet.safetensors'), load_file(killed / 'supernet.safetensors')
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the second run really resumed from a checkpoint (it did not start over)
    assert json.loads((killed / 'train_metrics.json').read_text())['resumed_from'] >= 8


def _train_cfg(space, out, **kw):
    """The same settings as _cmd, for an in-process run."""
    return TrainConfig(space=str(space), out=str(out), steps=24, batch_size=8, warmup_steps=3, checkpoint_every=4,
                       synthetic_samples=200, synthetic_classes=4, log_with='none', eval_candidates=0, lr=0.05,
                       seed=3, threads=1, **kw)


def _cfg(tmp_path, space, **kw):
    base = dict(space=str(space), out=str(tmp_path / 'run'), steps=4, batch_size=8, warmup_steps=1,
                checkpoint_every=2, synthetic_samples=64, synthetic_classes=4, log_with='none', eval_candidates=0,
                seed=1, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def test_resume_refuses_changed_settings_and_other_space(tmp_path):
    space = tiny_space_file(tmp_path)
    train_supernet(_cfg(tmp_path, space, steps=3))
    # an unfinished run: drop the final weights so that only the checkpoint is left
    (tmp_path / 'run' / 'supernet.safetensors').unlink()
    with pytest.raises(ResumeError, match=r'lr: 0\.12 in the checkpoint, 0\.3 now'):
        train_supernet(_cfg(tmp_path, space, steps=3, resume=True, lr=0.3))
    other = tiny_space_file(tmp_path, 'scarlet')
    with pytest.raises(ResumeError, match='space'):
        train_supernet(_cfg(tmp_path, other, steps=3, resume=True))
    with pytest.raises(ResumeError, match='--resume'):
        train_supernet(_cfg(tmp_path, space, steps=3))
    # a run made by two processes cannot go on in one: the global batch would halve
    saved_path = tmp_path / 'run' / 'train_config.json'
    saved = json.loads(saved_path.read_text())
    assert saved['num_processes'] == 1
    saved_path.write_text(json.dumps({**saved, 'num_processes': 2}))
    with pytest.raises(ResumeError, match=r'processes: 2 in the checkpoint, 1 now .*launch 2 processes'):
        train_supernet(_cfg(tmp_path, space, steps=3, resume=True))


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ResumeError, match='no checkpoint'):
        train_supernet(_cfg(tmp_path, tiny_space_file(tmp_path), resume=True))


def test_path_sampler_per_space_kind(tmp_path):
    scale = load_space(tiny_space_file(tmp_path))
    scar = load_space(tiny_space_file(tmp_path, 'scarlet'))
    rng = random.Random(0)
    assert len(path_sampler(scale, 'auto')(rng)) == 1
    assert len(path_sampler(scale, 'sandwich')(rng)) == 3
    fair = path_sampler(scar, 'auto')(rng)
    assert len(fair) == max(h for h in scar.gene_bounds()[1]) + 1
    with pytest.raises(ValueError, match='hierarchical needs a scaling space'):
        path_sampler(scar, 'hierarchical')
    # the same update number always gives the same paths (what makes resume exact)
    assert [c.key() for c in path_sampler(scale, 'auto')(random.Random('0:7'))] == \
           [c.key() for c in path_sampler(scale, 'auto')(random.Random('0:7'))]
