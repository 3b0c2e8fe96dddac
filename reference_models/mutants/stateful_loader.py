"""Deliberately broken stateful loaders under DataModuleResumeConformance's loader backend, each a realistic
resume bug of a loop that owns its loader. ``LOADER_MUTANTS`` says what each must make fail; the classes are at
module level (the two-rank checks import them by name in fresh processes). Not collected as tests.
"""

from __future__ import annotations

import unittest
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from torchdata.stateful_dataloader import StatefulDataLoader

from conformance import DataModuleResumeConformance
from reference_models.data import SyntheticTokens
from reference_models.mutants import Mutant
from reference_models.stateful_loader import (
    GLOBAL_BATCH,
    NUM_SAMPLES,
    ShuffledTokenStream,
    TestStatefulStreamResume,
    make_loader,
    make_stream_loader,
)

# --- broken loaders -------------------------------------------------------------------------------------------------


class EpochOnlyLoader(DataLoader):
    """A plain DataLoader whose author checkpoints only the epoch: a resume restarts the epoch from its first
    batch."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.epoch = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = state["epoch"]


class GlobalRNGShuffle(Sampler[int]):
    """Shuffles with ``torch.randperm`` from the global RNG each time it is iterated (every rank draws the same
    permutation, its processes being seeded alike, and takes every ``world_size``-th sample) and keeps no state of
    its own: on a resume the loader replays a permutation drawn from the fresh process's RNG (Megatron-Bridge
    #5257)."""

    def __init__(self, size: int, rank: int, world_size: int) -> None:
        self.size, self.rank, self.world_size = size, rank, world_size

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(torch.randperm(self.size).tolist()[self.rank::self.world_size])


class SkipAheadLoader(DataLoader):
    """Resumes by skipping the saved number of batches, but counts in its state only the batches yielded since its
    iterator started: a checkpoint saved after a resume forgets the batches skipped, so a second resume repeats
    them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._skip, self._yielded = 0, 0

    def state_dict(self) -> dict[str, int]:
        return {"batches": self._yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._skip = state["batches"]

    def __iter__(self) -> Iterator[Any]:
        self._yielded = 0
        skip, self._skip = self._skip, 0
        for number, batch in enumerate(super().__iter__()):
            if number >= skip:
                self._yielded += 1
                yield batch


class NumpyCountingLoader(StatefulDataLoader):
    """Counts the batches it served in a numpy integer and keeps the count in its state: once it has served a batch,
    its checkpoint no longer loads with ``torch.load(weights_only=True)`` (a fresh loader's state still does)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._served: int | np.int64 = 0

    def __iter__(self) -> Iterator[Any]:
        for batch in super().__iter__():
            self._served = np.int64(self._served) + 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "served": self._served}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._served = state["served"]
        super().load_state_dict({key: value for key, value in state.items() if key != "served"})


class WorkerBlindStream(ShuffledTokenStream):
    """Shares the stream out over ranks but not over loader workers: with 2 workers each yields the rank's whole
    share, so every sample comes twice."""

    def shard(self, order: list[int]) -> list[int]:
        return order[self.rank::self.world_size]


def _dataset() -> SyntheticTokens:
    return SyntheticTokens(NUM_SAMPLES, seq_len=16, vocab_size=64, seed=7)


# --- the conformance classes ----------------------------------------------------------------------------------------


def _suite(name: str, **hooks: Any) -> type:
    """A module-level DataModuleResumeConformance class with the loader hooks given (callables become
    classmethods)."""
    members = {key: classmethod(value) for key, value in hooks.items()}
    return type(f"Mutant_{name}", (DataModuleResumeConformance, unittest.TestCase),
                {"__module__": __name__, "__qualname__": f"Mutant_{name}", **members})


def _global_rng_shuffle(cls: type, rank: int, world_size: int, num_workers: int) -> StatefulDataLoader:
    return StatefulDataLoader(_dataset(), batch_size=GLOBAL_BATCH // world_size,
                              sampler=GlobalRNGShuffle(NUM_SAMPLES, rank, world_size), drop_last=True,
                              num_workers=num_workers)


def _reloaded(loader_class: type) -> Any:
    """A ``make_loader`` hook building ``loader_class`` with the reference loader's dataset, sampler and batch size."""
    def build(cls: type, rank: int, world_size: int, num_workers: int) -> Any:
        reference = make_loader(rank, world_size, num_workers)
        return loader_class(reference.dataset, batch_size=reference.batch_size, sampler=reference.sampler,
                            drop_last=True, num_workers=num_workers)
    return build


def _rank_blind(cls: type, rank: int, world_size: int, num_workers: int) -> StatefulDataLoader:
    """Builds every rank's loader as rank 0's (the rank never reaches the sampler)."""
    return make_loader(0, world_size, num_workers)


def _forgets_set_epoch(cls: type, loader: Any, epoch: int) -> None:
    """The loop never calls sampler.set_epoch: DistributedSampler shuffles every epoch alike."""


Mutant_loader_keeps_only_epoch = _suite("loader_keeps_only_epoch", make_loader=_reloaded(EpochOnlyLoader))
Mutant_loader_forgets_skipped_batches = _suite("loader_forgets_skipped_batches", make_loader=_reloaded(SkipAheadLoader))
Mutant_loader_state_not_weights_only = _suite("loader_state_not_weights_only",
                                              make_loader=_reloaded(NumpyCountingLoader))
Mutant_loader_workers_not_sharded = _suite(
    "loader_workers_not_sharded", make_loader=lambda cls, *args: make_stream_loader(*args, stream=WorkerBlindStream),
    start_epoch=lambda cls, loader, epoch: TestStatefulStreamResume.start_epoch(loader, epoch))
Mutant_loader_ignores_rank = _suite("loader_ignores_rank", make_loader=_rank_blind)
Mutant_loader_set_epoch_forgotten = _suite("loader_set_epoch_forgotten",
                                           make_loader=lambda cls, *args: make_loader(*args),
                                           start_epoch=_forgets_set_epoch)
Mutant_loader_shuffles_from_global_rng = _suite("loader_shuffles_from_global_rng", make_loader=_global_rng_shuffle)

#: What a loader that resumes at the wrong place also breaks.
_REPLAY = frozenset({"test_resume_continues_exactly", "test_no_sample_repeated_or_skipped", "test_repeated_resumes",
                     "test_num_workers", "test_multi_epoch_shuffle", "test_data_parallel_streams"})
_NOT_APPLICABLE = frozenset({"test_validation_starts_at_first_sample", "test_state_restored_before_first_batch",
                             "test_elastic_resume"})

LOADER_MUTANTS: tuple[Mutant, ...] = (
    Mutant("loader_keeps_only_epoch", "the loader's state holds only the epoch: a resume restarts the epoch",
           Mutant_loader_keeps_only_epoch,
           kills={"test_resume_continues_exactly": "steps differ",
                  "test_no_sample_repeated_or_skipped": "repeated samples"},
           may_also_fail=_REPLAY, skips=_NOT_APPLICABLE),
    Mutant("loader_forgets_skipped_batches", "a resumed loader's state forgets the batches it skipped: the second "
           "resume repeats them", Mutant_loader_forgets_skipped_batches,
           kills={"test_repeated_resumes": "steps"}, skips=_NOT_APPLICABLE),
    Mutant("loader_state_not_weights_only", "the loader counts batches in a numpy integer kept in its state: "
           "checkpoints do not load weights-only", Mutant_loader_state_not_weights_only,
           kills={"test_checkpoint_state": "torch.load(weights_only=True)"}, may_also_fail=_REPLAY,
           skips=_NOT_APPLICABLE),
    Mutant("loader_workers_not_sharded", "an iterable dataset not shared out over loader workers: each of 2 "
           "workers yields every sample", Mutant_loader_workers_not_sharded,
           kills={"test_num_workers": "num_workers=2, uninterrupted, epoch 0: repeated samples"},
           skips=_NOT_APPLICABLE),
    Mutant("loader_ignores_rank", "every rank builds rank 0's loader: the ranks train on the same samples",
           Mutant_loader_ignores_rank, kills={"test_data_parallel_streams": "ranks share samples"},
           skips=_NOT_APPLICABLE),
    Mutant("loader_set_epoch_forgotten", "the loop never calls sampler.set_epoch: every epoch has the same order",
           Mutant_loader_set_epoch_forgotten,
           kills={"test_multi_epoch_shuffle": "the shuffle ignores the epoch"}, skips=_NOT_APPLICABLE),
    Mutant("loader_shuffles_from_global_rng", "a stateless sampler shuffles from the global RNG at iter(): a resume "
           "in epoch 2 replays another permutation", Mutant_loader_shuffles_from_global_rng,
           kills={"test_resume_continues_exactly": "mid_second_epoch",
                  "test_multi_epoch_shuffle": "mid_second_epoch"},
           may_also_fail=_REPLAY, skips=_NOT_APPLICABLE),
)
