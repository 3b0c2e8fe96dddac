"""Which rank writes predictions: data-parallel coordinates from Megatron's parallel_state, or from plain DDP.

Under Megatron model parallelism every tensor-parallel and context-parallel rank of a pipeline's last stage holds
the same outputs; one copy is written, by tensor-parallel rank 0 / context-parallel rank 0 on the last stage.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, TypeVar

import torch.distributed as dist

__all__ = ["WriterRank", "from_replica_writer", "writer_rank"]

T = TypeVar("T")


@dataclass(frozen=True)
class WriterRank:
    """A process's place in the prediction job."""

    global_rank: int
    dp_rank: int
    dp_size: int
    writes: bool  # whether this process writes files
    first_of_replica: bool = True  # whether it is the one rank of its model replica whose outputs are written


def writer_rank(global_rank: int, world_size: int, *, save_all_model_parallel_ranks: bool = False) -> WriterRank:
    """This process's :class:`WriterRank`: Megatron's when its parallel_state is initialised, else DDP's."""
    state = _initialised_parallel_state()
    if state is None:
        return WriterRank(global_rank, global_rank, world_size, writes=True)
    first_of_model_replica = (state.get_tensor_model_parallel_rank() == 0
                              and state.get_context_parallel_rank() == 0
                              and state.is_pipeline_last_stage(ignore_virtual=True))
    return WriterRank(global_rank, state.get_data_parallel_rank(), state.get_data_parallel_world_size(),
                      writes=first_of_model_replica or save_all_model_parallel_ranks,
                      first_of_replica=first_of_model_replica)


def from_replica_writer(value: T, rank: WriterRank) -> T:
    """The ``value`` of the first rank of this process's model replica (its data-parallel rank's tensor, context
    and pipeline-parallel ranks), on every rank (collective over the whole job); ``value`` itself without Megatron's
    model parallelism. Ranks of one replica compute every batch together, so they must agree on what to skip.
    Every rank must call it (Lightning's ``on_predict_start`` runs on a rank with at least one batch); with
    ``save_all_model_parallel_ranks`` the replica's other writing ranks take the first rank's set too."""
    if _initialised_parallel_state() is None or not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (rank.dp_rank, rank.first_of_replica, value))
    return next(shared for dp_rank, first, shared in gathered if first and dp_rank == rank.dp_rank)


def _initialised_parallel_state() -> Any:
    """megatron.core.parallel_state if Megatron is imported and its model parallel groups exist, else None."""
    state = sys.modules.get("megatron.core.parallel_state")
    if state is None or not state.model_parallel_is_initialized():
        return None
    return state
