"""Which divergence of a stop-and-go class came first, and what it means.

When a resume is wrong, one fault shows in many streams: RNG not restored changes the dropout masks, hence the
outputs, the losses, the gradients, the optimizer state and the weights. The *root cause* is the stream whose
first diverging record happened earliest in training; ties in time go to the stream that feeds the others (RNG
and inputs before outputs and loss, before optimizer and weights). Every other failing stream is reported as its
consequence, and the root cause carries the kit's remedy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from conformance.suites._trajectory import BEFORE, MISCOUNTED, describe_key
from conformance.training.recordstore import Key
from conformance.training.streams import CAUSAL_ORDER, stream

__all__ = ["Divergence", "root_cause"]

@dataclass(frozen=True)
class Divergence:
    """The first diverging record of one stream, and whether it lies before the interruption or after the resume."""

    stream: str
    key: Key
    segment: str
    #: The rank it was seen on, when the runs have several.
    rank: int | None = None

    @property
    def check(self) -> str:
        return f"test_{self.stream}"

    def moment(self) -> tuple[int, ...]:
        """When in training the record was taken: (optimizer step it belongs to, phase, position within it)."""
        if self.stream == "final_weights":
            return (self.key[0], 3)
        if self.stream == "restored_state":  # after step key[0] ended, before the next one starts
            return (self.key[0], 1, 1)
        if len(self.key) == 2:  # a micro-batch of the step after global step key[0]
            return (self.key[0] + 1, 0, self.key[1])
        if len(self.key) == 4:  # a validation batch after step key[0]
            return (self.key[0], 2, *self.key[1:])
        return (self.key[0], 1)  # the end of optimizer step key[0]

    def describe(self, remedies: Mapping[str, str] | None = None) -> str:
        """The divergence and its remedy (``remedies[stream]``, else the stream table's), in one sentence."""
        on_rank = "" if self.rank is None else f" on rank {self.rank}"
        if self.stream == "restored_state":
            where = f"{self.check} fails{on_rank} as the resumed run starts after optimizer step {self.key[0]}"
        elif self.segment == MISCOUNTED:
            where = f"{self.check} fails{on_rank} at {describe_key(self.key)} ({self.segment})"
        else:
            where = f"{self.check} first diverges{on_rank} at {describe_key(self.key)} ({self.segment})"
        if self.segment == BEFORE:
            return (f"{where}: the runs differ before any interruption, so the recipe is not deterministic under "
                    "identical seeding and its resume cannot be judged")
        return f"{where}: {(remedies or {}).get(self.stream, stream(self.stream).remedy)}"


def root_cause(divergences: list[Divergence]) -> Divergence | None:
    """The earliest divergence in training; ties go to the stream earlier in :data:`CAUSAL_ORDER`."""
    if not divergences:
        return None
    return min(divergences, key=lambda found: (found.moment(), CAUSAL_ORDER.index(found.stream), found.rank or 0))
