"""What a loop recipe's checkpoint must hold, checked against the records of the run that saved it, whatever its
layout: every weight of the model and every optimizer moment as saved (equal tensors), each LR scheduler's
position, every rank's loader state (its tensors, e.g. a shuffling generator's state), and the loop's step. A checkpoint is a DCP folder or one ``torch.save`` file, read weights-only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from conformance.runs.backend import CheckpointUnreadable
from conformance.runs.loop.checkpoint import is_dcp_checkpoint, read_checkpoint
from conformance.training.recordstore import RecordStore

__all__ = ["checkpoint_problems", "leaves", "read_values"]


def read_values(path: Path) -> dict[str, Any]:
    """Every value of the checkpoint at ``path`` by its flattened key, read weights-only; raises
    :class:`CheckpointUnreadable` saying why it cannot be read."""
    try:
        if is_dcp_checkpoint(path):
            return read_checkpoint(path)
        if path.is_file():
            return dict(leaves(torch.load(path, map_location="cpu", weights_only=True)))
    except Exception as exc:
        raise CheckpointUnreadable(
            f"the checkpoint at {path.name} cannot be read with weights-only loading: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}. Store state as tensors and plain Python values (no "
            "numpy arrays or custom objects)") from exc
    raise CheckpointUnreadable(f"save_state() wrote {path.name} as neither a torch.distributed.checkpoint folder "
                               "(with .metadata) nor a torch.save file: the kit cannot read it")


def checkpoint_problems(values: Mapping[str, Any], records: Sequence[RecordStore], stop_step: int,
                        step_key: str = "step") -> list[str]:
    """Everything the checkpoint's ``values`` lack, saved after ``stop_step`` by a run whose ranks recorded
    ``records`` (rank 0's records are the reference); the loop's step is an integer leaf called ``step_key``."""
    step = (stop_step,)
    tensors = [value for value in values.values() if isinstance(value, torch.Tensor)]
    problems = [f"the model's '{name}' is not in it (no tensor equal to the weights the run saved)"
                for name, weight in records[0].read("saved_weights", step).items() if not _held(weight, tensors)]
    for index, optimizer in enumerate(records[0].read("optimizer_state", step)):
        for parameter, state in optimizer.get("state", {}).items():
            problems += [f"optimizer {index}'s '{moment}' of parameter {parameter} is not in it (no equal tensor)"
                         for moment, value in state.items()
                         if isinstance(value, torch.Tensor) and value.dim() > 0 and not _held(value, tensors)]
    for index, scheduler in enumerate(records[0].read("lr_scheduler_state", step)):
        position = scheduler.get("last_epoch")
        if position is not None and not _has_leaf(values, "last_epoch", position):
            problems.append(f"LR scheduler {index}'s position (last_epoch={position}) is not in it")
    for rank, store in enumerate(records):
        problems += [f"rank {rank}'s train-loader state is not in it ({missing}): keep every rank's loader state, "
                     "under a key of its own (one key for all ranks keeps one rank's copy)"
                     for missing in _missing_loader_state(store.read("saved_data_state", step), values, tensors)][:1]
    if not _has_leaf(values, step_key, stop_step):
        problems.append(f"the loop's step ({stop_step}) is not in it: no integer '{step_key}' among its values")
    return problems


def _missing_loader_state(data_state: Any, values: Mapping[str, Any], tensors: list[torch.Tensor]) -> list[str]:
    """What of one rank's loader state the checkpoint lacks: its tensors (a shuffling generator's state) or, for a
    state of counts only (a DistributedSampler loader's), its integers by name."""
    state = list(leaves(data_state))
    if any(isinstance(value, torch.Tensor) for _, value in state):
        return [f"no tensor equal to its '{path}'" for path, value in state
                if isinstance(value, torch.Tensor) and not _held(value, tensors)]
    return [f"no integer '{path.rsplit('.', 1)[-1]}' equal to its {value}" for path, value in state
            if type(value) is int and not _has_leaf(values, path.rsplit(".", 1)[-1], value)]


def _held(expected: torch.Tensor, tensors: list[torch.Tensor]) -> bool:
    return any(tensor.shape == expected.shape and tensor.dtype == expected.dtype and torch.equal(tensor, expected)
               for tensor in tensors)


def _has_leaf(values: Mapping[str, Any], name: str, expected: int) -> bool:
    """Whether a plain integer leaf called ``name`` (the last part of its key) equals ``expected``."""
    return any(key.rsplit(".", 1)[-1] == name and type(value) is int and value == expected
               for key, value in values.items())


def leaves(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, leaf) of a nested structure of dicts and lists."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from leaves(item, f"{prefix}{key}.")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from leaves(item, f"{prefix}{index}.")
    else:
        yield prefix[:-1], value
