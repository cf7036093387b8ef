"""Supernet training in two CPU processes (DDP over gloo) is one training run, not two.

The tested command is ``accelerate launch --multi_gpu --num_processes 2 --num_machines 1
--main_process_port PORT --mixed_precision no --dynamo_backend no WORKER train-supernet ...`` with
OMP_NUM_THREADS=1 and without ACCELERATE_USE_CPU, on a machine without GPUs (``--multi_gpu`` then
runs the processes over gloo; ``accelerate launch --cpu --num_processes 2`` would start only one).
WORKER runs ``python -m search train-supernet``'s own entry point (:func:`search.cli.main`) and
after it saves the weights of its process's supernet, recorded when train_supernet builds it, and the
files its process wrote through search.training's writers.

Each update runs the sandwich rule (smallest, largest and a random path) over two micro-batches,
so five of six backward passes run under ``no_sync`` and some parameters that the earlier paths
trained are unused by the last one: DDP (``find_unused_parameters=True``) must still average their
gradients.

Why the comparison is with one process running batch B and 4 micro-batches, not batch 2B: BatchNorm
normalises with the statistics of the batch it sees. Two processes each see B images, so a single
process that is to compute the same thing must also normalise groups of B images: with
``--grad-accum`` doubled, its micro-batches of one update are exactly the two processes' slices
(:class:`search.data.StepBatchSampler`), the paths are the same (seeded per update) and the summed
loss / accumulation equals DDP's gradient average. Only the order of floating-point sums differs
(the processes sum their paths first), and this tiny net, BatchNorm over 4 images at 1x1 feature
maps, amplifies that about a hundredfold per update, so the run is 2 updates long and the tolerance
is 1e-3 (measured: 2e-5; a single process with batch 2B, i.e. BatchNorm over 2B images, ends 0.29
away, as far as the weights moved from their initial values).
"""
from __future__ import annotations

import json
import os
import random
import socket
import subprocess
from pathlib import Path

import torch
from safetensors.torch import load_file

from test_search_cli import TINY_RES as CLI_RES
from test_search_training import TINY_RES

ROOT = Path(__file__).resolve().parents[1]
SEED, STEPS, BATCH, ACCUM = 0, 2, 4, 2

WORKER = '''
import json
import sys
from pathlib import Path

import search.supernet
import search.training
from accelerate import PartialState
from safetensors.torch import save_file
from search.cli import main

nets, writes = [], []


class Recorded(search.supernet.SuperNet):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        nets.append(self)


search.supernet.SuperNet = Recorded
json_writer, weights_writer = search.training.write_json_atomic, search.training.save_safetensors_atomic
search.training.write_json_atomic = lambda path, *a, **k: (writes.append(Path(path).name), json_writer(path, *a, **k))
search.training.save_safetensors_atomic = lambda state, path, *a, **k: (
    writes.append(Path(path).name), weights_writer(state, path, *a, **k))
code = main(sys.argv[2:])
state = PartialState()
save_file({k: v.contiguous() for k, v in nets[0].state_dict().items()},
          f"{sys.argv[1]}/rank{state.process_index}.safetensors")
Path(f"{sys.argv[1]}/rank{state.process_index}.json").write_text(json.dumps(
    {"code": code, "num_processes": state.num_processes, "nets": len(nets), "writes": writes}))
sys.exit(code)
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _launch_two(*args: str) -> subprocess.CompletedProcess:
    """``accelerate launch`` two CPU processes (gloo) on ``args``; fails the test with their output if they fail."""
    env = {k: v for k, v in os.environ.items() if k != 'ACCELERATE_USE_CPU'}
    env.update(OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT))
    cmd = ['accelerate', 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
           '--main_process_port', str(_free_port()), '--mixed_precision', 'no', '--dynamo_backend', 'no', *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _params(state: dict) -> dict:
    """Trained tensors only: BN running statistics are per process (each updates them with its own
    slice, and the closing evaluation recalibrates them per candidate, different ones per process)."""
    return {k: v for k, v in state.items() if 'running_' not in k and 'num_batches_tracked' not in k}


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def _space_file(tmp: Path) -> Path:
    """The tests' tiny ScaleNet space with every scaling stage equally likely (the default makes the
    one-block base, stage 0, 1 in 17): a random last path on the base leaves the second blocks that the
    largest path trained out of the synced backward."""
    from scalenet_models.spec import write_json_atomic
    from search.cli import demo_space

    raw = demo_space('scalenet', width_scale=0.125, resolutions=TINY_RES, max_depth=1)
    raw['stage_probs'] = [1] * len(raw['scaling_stages'])
    write_json_atomic(tmp / 'space.json', raw)
    return tmp / 'space.json'


def _some_parameters_skip_the_last_path(space) -> bool:
    """Whether the run's updates leave parameters that earlier paths used out of the last (synced) backward."""
    from search.supernet import SuperNet
    from search.training import path_sampler

    net = SuperNet(space, num_classes=4)
    for step in range(STEPS):
        *_, last = path_sampler(space, 'sandwich')(random.Random(f'{SEED}:{step}'))
        net.zero_grad(set_to_none=True)
        net.set_active(last)
        net(torch.randn(2, 3, last.resolution, last.resolution)).sum().backward()
        if any(p.grad is None for p in net.parameters()):
            return True
    return False


def test_two_cpu_processes_train_one_supernet(tmp_path, one_torch_thread):
    from accelerate import PartialState
    from accelerate.utils import set_seed

    from search.data import build_search_data
    from search.space import load_space
    from search.supernet import SuperNet
    from search.training import TrainConfig, load_supernet, max_resolution, sample_accuracy, train_supernet

    space_file = _space_file(tmp_path)
    space = load_space(space_file)
    assert _some_parameters_skip_the_last_path(space)  # the case DDP's unused-parameter handling must get right
    settings = dict(space=str(space_file), steps=STEPS, batch_size=BATCH, grad_accum=ACCUM, sampling='sandwich',
                    warmup_steps=1, checkpoint_every=1, synthetic_samples=64, synthetic_classes=4,
                    log_with='none', eval_candidates=3, lr=0.05, seed=SEED, threads=1)
    flags = [f'--{k.replace("_", "-")}={v}' for k, v in settings.items()]
    worker = tmp_path / 'worker.py'
    worker.write_text(WORKER)
    run = tmp_path / 'ddp'
    proc = _launch_two(str(worker), str(tmp_path), 'train-supernet', '--out', str(run), *flags)

    # two processes of one group, each with its own supernet; only the main process writes the run's files
    ranks = [json.loads((tmp_path / f'rank{r}.json').read_text()) for r in (0, 1)]
    assert [(r['code'], r['num_processes'], r['nets']) for r in ranks] == [(0, 2, 1)] * 2
    assert ranks[0]['writes'] == ['train_config.json', 'supernet.safetensors', 'train_metrics.json']
    assert ranks[1]['writes'] == []
    assert sorted(p.name for p in (run / 'checkpoints' / 'step_1').glob('random_states_*')) == \
           ['random_states_0.pkl', 'random_states_1.pkl']   # the checkpoint was saved by both processes

    # DDP kept the ranks in sync, and the saved supernet is theirs
    rank0, rank1 = (_params(load_file(tmp_path / f'rank{r}.safetensors')) for r in (0, 1))
    assert _max_diff(rank0, rank1) == 0
    assert _max_diff(rank0, _params(load_file(run / 'supernet.safetensors'))) == 0

    # the summary counts both processes' images
    metrics = json.loads((run / 'train_metrics.json').read_text())
    images = STEPS * ACCUM * BATCH * 2
    assert abs(metrics['img_per_s'] * metrics['seconds'] / images - 1) < 0.05, metrics
    # the closing evaluation, its candidates split between the processes and gathered, equals one process's
    net, _, _ = load_supernet(run)
    data = build_search_data('synthetic', None, max_resolution(space), 0.1, SEED, 64, 4)
    assert sample_accuracy(net, space, data, TrainConfig(**settings), PartialState()) == metrics['sample_top1']

    # one process, same global batch in the same groups of BATCH images: the same training
    single = train_supernet(TrainConfig(**{**settings, 'grad_accum': 2 * ACCUM, 'out': str(tmp_path / 'single')}))
    single_params = _params(load_file(tmp_path / 'single' / 'supernet.safetensors'))
    assert _max_diff(rank0, single_params) < 1e-3
    assert abs(single['img_per_s'] * single['seconds'] / images - 1) < 0.05, single
    # the reported loss is the global batch's (averaged over the processes), printed once
    assert abs(metrics['final_loss_ema'] - single['final_loss_ema']) < 1e-4, (metrics, single)
    assert proc.stdout.count('"resumed_from"') == 1
    set_seed(SEED)  # train_supernet's seed before it builds the net: the initial weights of both runs
    initial = _params(SuperNet(space, num_classes=4).state_dict())
    assert _max_diff(rank0, initial) > 0.05  # it trained (by 0.29 here)


def test_two_cpu_processes_search_the_same_family_as_one(tmp_path, one_torch_thread):
    """``search`` divides candidates between the processes and gathers the scores: the family, every
    score and the report's numbers equal one process's search (each candidate is recalibrated and scored
    whole on one process, so nothing about it depends on the process count)."""
    from scalenet_models.spec import write_json_atomic
    from search.cli import demo_space, main, middle_window
    from search.space import load_space
    from search.training import TrainConfig, train_supernet

    space_file = tmp_path / 'space.json'   # the search CLI tests' space: its scaling stages reach 2^s x base
    write_json_atomic(space_file, demo_space('scalenet', width_scale=0.125, resolutions=CLI_RES, max_depth=2))
    run = tmp_path / 'run'
    train_supernet(TrainConfig(space=str(space_file), out=str(run), steps=3, batch_size=8, warmup_steps=1,
                               checkpoint_every=0, synthetic_samples=96, synthetic_classes=4, log_with='none',
                               eval_candidates=0, lr=0.05, seed=SEED, threads=1))
    low, high = middle_window(load_space(space_file), samples=100, num_classes=10)
    flags = ['--supernet', str(run), '--name', 'mp', '--iterations', '1', '--population', '6', '--generations', '2',
             '--init-bases', '2', '--max-triples', '2', '--tolerance', '0.25', '--base-macs', str(low), str(high),
             '--macs-classes', '10', '--calib-batches', '1', '--calib-batch-size', '8', '--eval-batch-size', '16',
             '--no-weights']
    _launch_two('-m', 'search', 'search', '--out', str(tmp_path / 'ddp'), *flags)
    assert main(['search', '--out', str(tmp_path / 'single'), *flags]) == 0

    reports = [(tmp_path / d / 'report.md').read_text() for d in ('ddp', 'single')]
    assert '- processes: 2\n' in reports[0] and '- processes: 1\n' in reports[1]
    ddp, single = (json.loads((tmp_path / d / 'family.json').read_text()) for d in ('ddp', 'single'))
    assert ddp == single
    caches = [json.loads((tmp_path / d / 'fitness_cache.json').read_text()) for d in ('ddp', 'single')]
    assert caches[0] == caches[1] and len(caches[0]['top1']) > 4
