"""Two CPU processes (gloo) end with identical weights on both ranks and match one process with the same global batch.

What makes them match: the seeded sampler gives process 0 and 1 the two halves of the single process's
batches, augmentation is seeded per sample (not per worker or process), DDP averages the two half-batch
gradients into the full-batch gradient, and BatchNorm uses its running statistics (``--freeze-bn``):
with per-process batch statistics each rank would normalise with statistics of a different half batch,
which is a different computation, not a numerical difference. Dropout, drop-path and label smoothing
are off so nothing else depends on the process layout.
"""
from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import torch
from safetensors.torch import load_file

from test_recipes_data import write_family, write_folder_dataset
from test_recipes_train import max_abs_diff, run

ROOT = Path(__file__).resolve().parents[1]

WORKER = '''
import sys
from accelerate import PartialState
from safetensors.torch import save_file
from recipes.config import resolve
from recipes.train import train
model = train(resolve(sys.argv[2:]))
save_file({k: v.contiguous() for k, v in model.state_dict().items()},
          f"{sys.argv[1]}/rank{PartialState().process_index}.safetensors")
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_cpu_processes_match_each_other_and_one_process(tmp_path):
    data = write_folder_dataset(tmp_path / 'data', classes=3, train=12, val=4)
    family = write_family(tmp_path / 'family.json')
    common = ['--family', str(family), '--model', 'recipetiny_s0', '--data-dir', str(data), '--epochs', '2',
              '--workers', '0', '--log-with', 'none', '--seed', '3', '--freeze-bn', '--drop', '0',
              '--drop-path', '0', '--smoothing', '0', '--model-ema', '--lr', '0.05']
    worker = tmp_path / 'worker.py'
    worker.write_text(WORKER)
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT))
    cmd = ['accelerate', 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
           '--main_process_port', str(_free_port()), '--mixed_precision', 'no', '--dynamo_backend', 'no',
           str(worker), str(tmp_path), *common, '--batch-size', '6', '--output', str(tmp_path / 'ddp')]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert '2 process(es), 3 batches of 6 per process' in (tmp_path / 'ddp' / 'log.txt').read_text()
    rank0, rank1 = (load_file(tmp_path / f'rank{r}.safetensors') for r in (0, 1))
    assert max_abs_diff(rank0, rank1) == 0
    torch.set_num_threads(1)
    single = run(common + ['--batch-size', '12', '--output', str(tmp_path / 'single')]).state_dict()
    assert max_abs_diff(rank0, single) < 1e-5
    import timm
    from accelerate.utils import set_seed
    set_seed(3)  # the trainer's seed: the initial weights of both runs
    initial = timm.create_model('recipetiny_s0', num_classes=3).state_dict()
    trainable = [k for k, v in initial.items() if v.is_floating_point() and 'running' not in k]
    assert max_abs_diff({k: rank0[k] for k in trainable}, {k: initial[k] for k in trainable}) > 1e-3  # it trained
