"""What a stop-and-go checkpoint must hold, checked against the interrupted run's own records of the stop step.

A Lightning checkpoint file is compared part by part (optimizer and LR scheduler states exactly). NeMo's
distributed checkpoint keeps the optimizer's moments as whole tensors under parameter names, while the records hold
each rank's own shards by parameter index: its moments must be there for every moment the run has, and on one rank
their element counts and sums must equal the run's (with tensor parallelism, replicated parameters appear once per
rank in the records, so only their presence is checked).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from conformance._text import indent
from conformance.compare import compare
from conformance.training.checkpoints import SavedCheckpoint
from conformance.training.recordstore import RecordStore

__all__ = ["checkpoint_problems"]

#: Relative tolerance on the sum of a moment over all parameters (the order of summation differs).
_SUM_RTOL = 1e-5


def checkpoint_problems(checkpoint: SavedCheckpoint, records: Sequence[RecordStore], stop_step: int) -> list[str]:
    """Everything missing from or wrong in ``checkpoint``, saved after ``stop_step`` by a run whose ranks recorded
    ``records``."""
    state, step = checkpoint.state, (stop_step,)
    required = ("loops", "global_step") if checkpoint.is_sharded else (
        "state_dict", "optimizer_states", "loops", "global_step")
    problems = [f"'{key}' is missing" for key in required if key not in state]
    if checkpoint.is_sharded and not any(key.startswith("module.") for key in checkpoint.sharded):
        problems.append("no model weights ('module.*') among its sharded tensors")
    if state.get("global_step", stop_step) != stop_step:
        problems.append(f"global_step is {state['global_step']}, expected {stop_step}")
    optimizers = records[0].read("optimizer_state", step)
    if checkpoint.is_sharded:
        problems += _sharded_moment_problems(checkpoint.sharded, optimizers, single_rank=len(records) == 1)
    else:
        problems += _part_problems(state, "optimizer_states", optimizers, stop_step)
    problems += _part_problems(state, "lr_schedulers", records[0].read("lr_scheduler_state", step), stop_step)
    consumed = records[0].read("consumed_samples", step)
    start = records[0].read("start", (0,))
    datamodule_class = start["datamodule_class"]
    # a count the data module's own state keeps must be in its checkpoint entry; one the recipe derives elsewhere
    # (its consumed_samples(trainer) hook) is not demanded there
    if consumed is not None and start.get("data_keeps_count", True):
        saved = state.get(datamodule_class)
        if not isinstance(saved, dict) or saved.get("consumed_samples") != consumed:
            problems.append(f"the data module's state should be saved under '{datamodule_class}' with "
                            f"consumed_samples={consumed}, found {saved!r}")
    return problems


def _part_problems(state: dict[str, Any], key: str, expected: Any, stop_step: int) -> list[str]:
    """``state[key]`` must equal the run's ``expected`` state exactly, when the run has any."""
    if not expected:
        return []
    if key not in state:
        return [f"'{key}' is missing although the run has {len(expected)}"]
    result = compare(state[key], expected, atol=0, rtol=0)
    return [] if result.ok else [f"'{key}' differs from the run's state at step {stop_step}:\n"
                                 + indent(result.format(5), 4)]


def _sharded_moment_problems(sharded: dict[str, torch.Tensor], optimizers: list[Any], *,
                             single_rank: bool) -> list[str]:
    """The optimizer moments of the run (``optimizers``: each optimizer's ``state_dict()``) against the sharded
    ``optimizer.state.<moment>.*`` tensors."""
    recorded: dict[str, list[torch.Tensor]] = {}
    for optimizer in optimizers:
        for parameter_state in optimizer.get("state", {}).values():
            for moment, value in parameter_state.items():
                if isinstance(value, torch.Tensor) and value.dim() > 0:
                    recorded.setdefault(moment, []).append(value)
    problems = []
    for moment, tensors in recorded.items():
        saved = [tensor for key, tensor in sharded.items() if key.startswith(f"optimizer.state.{moment}.")]
        if not saved:
            problems.append(f"the optimizer's '{moment}' is not saved (no 'optimizer.state.{moment}.*' tensors), "
                            f"although the run has it for {len(tensors)} parameters")
        elif single_rank:
            problems += _total_problems(moment, saved, tensors)
    return problems


def _total_problems(moment: str, saved: list[torch.Tensor], recorded: list[torch.Tensor]) -> list[str]:
    saved_count, recorded_count = sum(t.numel() for t in saved), sum(t.numel() for t in recorded)
    if saved_count != recorded_count:
        return [f"the optimizer's '{moment}' has {saved_count} elements saved, the run has {recorded_count}"]
    saved_sum = sum(t.double().sum().item() for t in saved)
    recorded_sum = sum(t.double().sum().item() for t in recorded)
    scale = sum(t.double().abs().sum().item() for t in recorded)
    if not math.isclose(saved_sum, recorded_sum, rel_tol=0, abs_tol=_SUM_RTOL * scale):
        return [f"the optimizer's '{moment}' saved sums to {saved_sum:.9g}, the run's to {recorded_sum:.9g}"]
    return []
