"""Launch details shared by the search and the recipes."""
from __future__ import annotations

import os

import torch


def cpu_only_ddp() -> bool:
    """Launched as several processes (torchrun, ``accelerate launch --multi_gpu``) on a machine without GPUs.

    Accelerate then needs ``cpu=True``: otherwise each process runs alone as process 0 of 1 (no gradient
    sync, every process writing the same files); with it they talk over gloo.
    """
    return int(os.environ.get('WORLD_SIZE', '1')) > 1 and not torch.cuda.is_available()
