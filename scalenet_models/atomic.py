"""Atomic file writes shared by the zoo, search, recipes and hub: write beside, then rename.

A crash or a kill never leaves half a file that another tool would read as complete.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temp path beside ``path`` (same suffix, so writers that read it still work); renamed into place
    when the block succeeds, removed when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.stem}.', suffix=f'.tmp{path.suffix}')
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_safetensors_atomic(state: dict, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Contiguous CPU tensors to a safetensors file, atomically (metadata values stored as strings)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to('cpu').contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
