"""A copy of the checkpoint the resumed run restores, taken as soon as the run that wrote it has written it: that run
trains on, and may rotate, overwrite or delete its own checkpoints later (a top-k policy, a save limit)."""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["snapshot_checkpoint"]


def snapshot_checkpoint(source: Path, destination: Path) -> None:
    """Copy the checkpoint file or folder ``source`` to ``destination``, replacing what an earlier attempt left there."""
    if destination.is_dir():
        shutil.rmtree(destination)
    elif destination.exists():
        destination.unlink()
    destination.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, destination)
    else:
        shutil.copy2(source, destination)
