"""A torchdata ``StatefulDataLoader`` over the synthetic tokens, one data-parallel rank's share each: the reference
recipe of DataModuleResumeConformance's loader backend (no Lightning anywhere).

Each rank's loader is a ``StatefulDataLoader`` with a shuffling ``DistributedSampler`` (seed 7, reshuffled per epoch
through ``set_epoch``, which the kit's epoch loop calls before each epoch) and batches of ``GLOBAL_BATCH //
world_size``, so the ranks' batches of a step are together the one-rank batch of that step. 44 samples, global batch
8: 5 steps per epoch (the partial batch is dropped).

:class:`ShuffledTokenStream` is the same data as an iterable dataset that keeps its own position (torchdata saves
each worker's copy of its state): shuffled per epoch, shared out over ranks, then over loader workers. The
conformance classes are at module level: the two-rank checks import them by name in fresh processes.
"""

from __future__ import annotations

import unittest
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DistributedSampler, IterableDataset, get_worker_info
from torchdata.stateful_dataloader import StatefulDataLoader

from conformance import DataModuleResumeConformance
from reference_models.data import SyntheticTokens

__all__ = ["GLOBAL_BATCH", "NUM_SAMPLES", "ShuffledTokenStream", "TestStatefulLoaderResume",
           "TestStatefulStreamResume", "make_loader", "make_stream_loader"]

GLOBAL_BATCH = 8
NUM_SAMPLES = 44


def make_loader(rank: int, world_size: int, num_workers: int, *, persistent_workers: bool = False,
                dataset: SyntheticTokens | None = None) -> StatefulDataLoader:
    """Rank ``rank``'s shuffled, sharded, resumable loader of the synthetic tokens."""
    dataset = dataset or SyntheticTokens(NUM_SAMPLES, seq_len=16, vocab_size=64, seed=7)
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=7, drop_last=True)
    return StatefulDataLoader(dataset, batch_size=GLOBAL_BATCH // world_size, sampler=sampler, drop_last=True,
                              num_workers=num_workers, persistent_workers=persistent_workers and num_workers > 0)


class ShuffledTokenStream(IterableDataset):
    """The synthetic tokens as a stream: epoch ``e`` is a permutation seeded by ``7 + e``, of which rank ``r`` of
    ``w`` takes every ``w``-th sample and worker ``k`` of ``n`` every ``n``-th of those; ``position`` counts what this
    copy (one per worker) has yielded in the epoch, which is its state."""

    def __init__(self, rank: int, world_size: int) -> None:
        self.tokens = SyntheticTokens(NUM_SAMPLES, seq_len=16, vocab_size=64, seed=7)
        self.rank, self.world_size = rank, world_size
        self.epoch, self.position = 0, 0

    def shard(self, order: list[int]) -> list[int]:
        """This copy's share of an epoch's order: its rank's, then its worker's."""
        order = order[self.rank::self.world_size]
        worker = get_worker_info()
        return order if worker is None else order[worker.id::worker.num_workers]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        order = torch.randperm(NUM_SAMPLES, generator=torch.Generator().manual_seed(7 + self.epoch)).tolist()
        for index in self.shard(order)[self.position:]:
            self.position += 1
            yield self.tokens[index]
        self.position = 0  # the epoch is over: the next one starts at its beginning

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = int(state["position"])


def make_stream_loader(rank: int, world_size: int, num_workers: int,
                       stream: type[ShuffledTokenStream] = ShuffledTokenStream) -> StatefulDataLoader:
    """Rank ``rank``'s resumable loader of the token stream."""
    return StatefulDataLoader(stream(rank, world_size), batch_size=GLOBAL_BATCH // world_size,
                              num_workers=num_workers)


class TestStatefulLoaderResume(DataModuleResumeConformance, unittest.TestCase):
    """The kit's epoch loop over torchdata's StatefulDataLoader: must resume at exactly the next sample."""

    @classmethod
    def make_loader(cls, rank: int, world_size: int, num_workers: int) -> StatefulDataLoader:
        return make_loader(rank, world_size, num_workers)


class TestStatefulStreamResume(DataModuleResumeConformance, unittest.TestCase):
    """The kit's epoch loop over a StatefulDataLoader of an iterable dataset with its own state."""

    @classmethod
    def make_loader(cls, rank: int, world_size: int, num_workers: int) -> StatefulDataLoader:
        return make_stream_loader(rank, world_size, num_workers)

    @classmethod
    def start_epoch(cls, loader: StatefulDataLoader, epoch: int) -> None:
        loader.dataset.epoch = epoch  # before iter(): the workers' copies are made from it
