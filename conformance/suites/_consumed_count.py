"""Whether a run's consumed-samples count is the number of samples it trained on.

A count that follows the optimizer steps instead of the batches (two optimizers under manual optimization step
Lightning's global step twice per batch) is wrong in the same way in every run, so comparing runs cannot see it:
the resumed run skips data, and only the samples the reference run trained on tell why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from conformance.training.recordstore import RecordStore

__all__ = ["Miscount", "first_miscount"]


@dataclass(frozen=True)
class Miscount:
    """The first optimizer step after which a rank's reported count is not the samples trained so far."""

    step: int
    reported: Any
    trained: int
    rank: int | None

    def describe(self) -> str:
        on_rank = "" if self.rank is None else f" on rank {self.rank}"
        return (f"after optimizer step {self.step} the data reports {self.reported} consumed samples{on_rank}, but the "
                f"run had trained on {self.trained} samples by then (counted from the sample ids of its batches, over "
                "its data-parallel ranks), so a resume from that step "
                f"{'skips' if self.reported > self.trained else 'replays'} data")


def first_miscount(stores: Sequence[RecordStore], sample_ids: Callable[[Any], list[int]]) -> Miscount | None:
    """The earliest step at which a rank's ``consumed_samples`` record differs from the samples the ranks trained
    on up to it, counted from the run's start count; raises :class:`~conformance.sample_ids.SampleIdError` where
    batches carry no sample ids.

    Ranks that trained on the same samples throughout replicate one data-parallel rank (tensor or pipeline
    parallelism) and are counted once. A count may leave out the samples a distributed sampler repeats to even out
    the ranks (the same id twice in one optimizer step): either reading of such a step is right."""
    trained_by_rank = [[(key[0], tuple(sample_ids(batch))) for key, batch in store.items("train_inputs")]
                       for store in stores]
    replicas: list[list[tuple[int, tuple[int, ...]]]] = []
    for trained in trained_by_rank:
        if trained not in replicas:
            replicas.append(trained)
    by_step: dict[int, list[int]] = {}
    for trained in replicas:
        for step, ids in trained:
            by_step.setdefault(step, []).extend(ids)
    several = len(stores) > 1
    found = []
    for rank, store in enumerate(stores):
        start = next((record["consumed_samples"] for _, record in store.items("start")), None)
        if start is None:
            continue
        for (step,), reported in store.items("consumed_samples"):
            steps = [ids for batch_step, ids in by_step.items() if batch_step < step]
            every, distinct = (start + sum(map(count, steps)) for count in (len, lambda ids: len(set(ids))))
            if reported is not None and reported not in (every, distinct):
                found.append(Miscount(step, reported, every, rank if several else None))
                break
    return min(found, key=lambda miscount: miscount.step, default=None)
