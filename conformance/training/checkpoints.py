"""Reading a checkpoint as a resume would find it, without the recipe's code: a Lightning checkpoint file, or the
directory NeMo's MegatronStrategy writes.

NeMo's directory holds ``weights/common.pt`` (the trainer's state: global step, loops, callbacks, LR schedulers,
data module, optimizer param groups) and the model and optimizer tensors in ``torch.distributed.checkpoint``
format (``weights/.metadata`` and ``__<rank>_<k>.distcp``), each tensor whole (not split by tensor-parallel rank)
under its sharded key: ``module.<parameter>`` and ``optimizer.state.<moment>.module.<parameter>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["SavedCheckpoint", "load_checkpoint", "saved_checkpoint"]


@dataclass
class SavedCheckpoint:
    """A checkpoint's trainer state (the checkpoint dict, or NeMo's ``common.pt``) and, for NeMo's format, its
    sharded tensors by key."""

    state: dict[str, Any]
    sharded: dict[str, torch.Tensor] = field(default_factory=dict)
    format: str = "Lightning checkpoint file"

    @property
    def is_sharded(self) -> bool:
        return self.format != "Lightning checkpoint file"


def saved_checkpoint(path: Path) -> Path | None:
    """Where ``trainer.save_checkpoint(path)`` put the checkpoint: the file ``path``, or the directory NeMo's
    strategy writes instead (``path`` without its ``.ckpt`` suffix); None if neither exists."""
    if path.is_file():
        return path
    directory = path.with_suffix("") if path.suffix == ".ckpt" else path
    return directory if directory.is_dir() else None


def load_checkpoint(path: Path) -> SavedCheckpoint:
    """The checkpoint at ``path`` (a file, or NeMo's directory), every part loaded with ``weights_only=True`` onto
    the CPU; raises what loading raised."""
    if path.is_file():
        return SavedCheckpoint(torch.load(path, map_location="cpu", weights_only=True))
    weights = path / "weights"
    state = torch.load(weights / "common.pt", map_location="cpu", weights_only=True)
    return SavedCheckpoint(state, _load_sharded_tensors(weights), "NeMo distributed checkpoint")


def _load_sharded_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a ``torch.distributed.checkpoint`` folder, whole, by key (byte entries are skipped)."""
    from torch.distributed.checkpoint import FileSystemReader, load
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    reader = FileSystemReader(str(folder))
    tensors = {key: torch.empty(entry.size, dtype=entry.properties.dtype)
               for key, entry in reader.read_metadata().state_dict_metadata.items()
               if isinstance(entry, TensorStorageMetadata)}
    load(tensors, storage_reader=reader, no_dist=True)
    return tensors
