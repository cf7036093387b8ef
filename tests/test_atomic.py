"""Atomic writes: a failed write leaves the old file and no temp file behind."""
import pytest
import torch
from safetensors.torch import load_file

from scalenet_models.atomic import atomic_path, save_safetensors_atomic, write_text_atomic


def test_success_replaces_and_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / 'sub' / 'report.md'
    write_text_atomic(target, 'first')
    assert target.read_text() == 'first'
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.parent == target.parent and tmp.suffix == '.md'
            tmp.write_text('half')
            raise RuntimeError('killed mid-write')
    assert target.read_text() == 'first'
    assert sorted(p.name for p in target.parent.iterdir()) == ['report.md']


def test_safetensors_round_trip_with_metadata(tmp_path):
    state = {'w': torch.arange(6.0).reshape(2, 3).t()}          # non-contiguous on purpose
    save_safetensors_atomic(state, tmp_path / 'm.safetensors', metadata={'num_classes': 10})
    assert torch.equal(load_file(str(tmp_path / 'm.safetensors'))['w'], state['w'])
    assert [p.name for p in tmp_path.iterdir()] == ['m.safetensors']
