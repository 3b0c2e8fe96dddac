"""What an elastic resume must keep: the global data stream and the loss trajectory, however many ranks train.

After a change of the data-parallel size, rank ``r``'s records no longer correspond to rank ``r``'s of the
uninterrupted run, nor do its random streams. What must hold is global: every optimizer step after the resume
trains on the same samples (as a multiset over ranks and micro-batches) and reaches the same mean loss, within the
tolerance the adopter sets for ``test_elastic_resume``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from conformance._text import listing
from conformance.compare import compare
from conformance.training.recordstore import RecordStore

__all__ = ["GlobalStep", "elastic_problems", "global_steps"]


@dataclass
class GlobalStep:
    """One optimizer step over all ranks: the sample ids it trained on (sorted) and its micro-batches' losses."""

    sample_ids: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)

    @property
    def mean_loss(self) -> float:
        return sum(self.losses) / len(self.losses)


def global_steps(stores: Sequence[RecordStore], sample_ids: Callable[[Any], list[int]], *, after: int
                 ) -> dict[int, GlobalStep]:
    """The optimizer steps after global step ``after`` (numbered from 1), gathered over the ranks' records."""
    steps: dict[int, GlobalStep] = {}
    for store in stores:
        losses = dict(store.items("train_loss"))
        for key, batch in store.items("train_inputs"):
            if key[0] < after:
                continue
            step = steps.setdefault(key[0] + 1, GlobalStep())
            step.sample_ids.extend(sample_ids(batch))
            loss = losses.get(key)
            if loss is not None:
                step.losses.append(float(loss.float().mean()) if isinstance(loss, torch.Tensor) else float(loss))
    for step in steps.values():
        step.sample_ids.sort()
    return steps


def elastic_problems(label: str, expected: dict[int, GlobalStep], actual: dict[int, GlobalStep],
                     options: dict[str, Any], *, training_draws_randomness: bool = False) -> list[str]:
    """Where the elastic run's steps (``actual``) differ from the uninterrupted run's: samples, then mean loss (with
    per-rank randomness named as the likely cause when the samples agree and training draws random numbers)."""
    problems = []
    other_losses = False
    missing, extra = sorted(set(expected) - set(actual)), sorted(set(actual) - set(expected))
    if missing:
        problems.append(f"{label}: the elastic run did not train optimizer steps {listing(missing, 5)}")
    if extra:
        problems.append(f"{label}: the elastic run trained optimizer steps {listing(extra, 5)}, which the "
                        "uninterrupted run did not")
    for step in sorted(set(expected) & set(actual)):
        want, got = expected[step], actual[step]
        if got.sample_ids != want.sample_ids:
            hint = "" if any("trained on samples" in problem for problem in problems) else (
                " (the uninterrupted run is the reference; if it is the one that repeats or skips samples, "
                "DataModuleResumeConformance on the data module shows where)")
            problems.append(f"{label}: optimizer step {step} trained on samples {listing(got.sample_ids, 8)} (as a "
                            f"set over ranks), the uninterrupted run on {listing(want.sample_ids, 8)}{hint}")
            continue
        if not got.losses or not want.losses:
            problems.append(f"{label}: optimizer step {step} recorded no training loss to compare")
            continue
        result = compare(got.mean_loss, want.mean_loss, **options)
        if not result.ok:
            other_losses = True
            problems.append(f"{label}: optimizer step {step} has mean loss {got.mean_loss:.7g} over "
                            f"{len(got.losses)} micro-batches, the uninterrupted run {want.mean_loss:.7g} over "
                            f"{len(want.losses)}; {result.differences[0] if result.differences else ''}".rstrip("; "))
    if other_losses and training_draws_randomness:
        problems.append(f"{label}: the steps trained on the same samples but reached other losses, and the recipe's "
                        "training steps draw random numbers (dropout, random masks): a random stream per rank cannot "
                        "carry over to another number of ranks, so the elastic run draws other masks; draw nothing "
                        "random that depends on the rank layout, or give test_elastic_resume a tolerance that the new "
                        "randomness stays within")
    return problems
