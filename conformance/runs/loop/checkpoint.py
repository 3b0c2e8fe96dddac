"""A loop recipe's checkpoint through ``torch.distributed.checkpoint`` (DCP), read and written without unpickling.

DCP stores tensors in ``.distcp`` files and every other value as a ``torch.save`` blob that its own planner loads
with ``weights_only=False``, i.e. by unpickling arbitrary objects. The kit loads those blobs with
``weights_only=True`` instead, both when it restores a recipe's state and when it reads a checkpoint for
``test_checkpoint_contents``: a checkpoint holding anything but tensors and plain values fails to load, as it would
under any safe loader.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.metadata import BytesStorageMetadata, TensorStorageMetadata

from conformance.runs.loop.state import TrainingState

__all__ = ["is_dcp_checkpoint", "load_training_state", "quiet", "read_checkpoint", "save_training_state"]

#: The one entry of the saved dict: DCP calls its ``state_dict()``/``load_state_dict()`` (the ``Stateful`` protocol).
_ENTRY = "training_state"


class _WeightsOnlyLoadPlanner(DefaultLoadPlanner):
    """DCP's default load planner, loading non-tensor values with ``torch.load(weights_only=True)``."""

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        loaded = torch.load(value, weights_only=True)
        set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence two warnings printed on every run that no recipe can fix: torchdata 0.11 calling torch's deprecated
    ``set_vital``, and DCP loading without a process group (a one-rank run has none)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="'set_vital' is deprecated")
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def is_dcp_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a DCP checkpoint folder (it has DCP's ``.metadata``)."""
    return (path / ".metadata").is_file()


def save_training_state(state: TrainingState, directory: Path) -> None:
    """Save ``state`` with DCP into ``directory`` (collective: every rank calls it)."""
    with quiet():
        dcp.save({_ENTRY: state}, checkpoint_id=str(directory))


def load_training_state(state: TrainingState, directory: Path) -> None:
    """Restore ``state`` in place from a folder :func:`save_training_state` wrote (collective)."""
    with quiet():
        dcp.load({_ENTRY: state}, checkpoint_id=str(directory), planner=_WeightsOnlyLoadPlanner())


def read_checkpoint(directory: Path) -> dict[str, Any]:
    """Every value of the DCP checkpoint in ``directory`` by its flattened key (``training_state.model.w``,
    ``training_state.loop.step``, ...), tensors whole, read in this process alone without the recipe's code."""
    reader = FileSystemReader(str(directory))
    metadata = reader.read_metadata().state_dict_metadata
    values: dict[str, Any] = {key: torch.empty(entry.size, dtype=entry.properties.dtype)
                              for key, entry in metadata.items() if isinstance(entry, TensorStorageMetadata)}
    values.update({key: None for key, entry in metadata.items() if isinstance(entry, BytesStorageMetadata)})
    with quiet():
        dcp.load(values, storage_reader=reader, planner=_WeightsOnlyLoadPlanner(), no_dist=True)
    return values

