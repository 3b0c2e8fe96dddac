"""Compare one recorded stream of a resumed run with the same stream of the reference run.

The reference run is uninterrupted. By default it is also the run that wrote the checkpoint (the *shared
trajectory*): the resumed run must then record exactly the reference's records from the resume point on, and
none before it. Where a separate run was interrupted after writing the checkpoint, the trajectory is every record
of the interrupted run followed by every record of the resumed run, and it must have exactly the reference's
keys. Either way a record may be missing only where ``may_be_lost`` allows it (e.g. a validation that the
interruption pre-empted), no key may come twice, and values must be equal within tolerance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from conformance._text import indent, listing
from conformance.compare import ComparisonResult, LeafStat, compare
from conformance.training import recordfile
from conformance.training.recordstore import Key, RecordStore

__all__ = ["RankedComparison", "StreamComparison", "compare_stream", "describe_key"]

BEFORE = "before the interruption"
AFTER = "after the resume"
#: Not a difference between runs: the reference run's own count disagrees with what it trained on.
MISCOUNTED = "the reference run's own count"


def describe_key(key: Key) -> str:
    """A record key (see :mod:`conformance.runs.lightning.recorder`) in words, counting optimizer steps from 1."""
    if len(key) == 1:
        return f"optimizer step {key[0]}"
    if len(key) == 2:
        return f"optimizer step {key[0] + 1}, micro-batch {key[1]}"
    if len(key) == 4:
        return f"the validation after optimizer step {key[0]} (pass {key[1]}), dataloader {key[2]}, batch {key[3]}"
    return f"record {key}"


@dataclass
class StreamComparison:
    """The outcome of :func:`compare_stream`: structural problems, diverging records, the worst leaf seen."""

    stream: str
    #: The rank whose records these are, when the runs have several (named in every message).
    rank: int | None = None
    #: The runs compared with the reference: "resumed run", or "interrupted+resumed runs".
    compared_runs: str = "resumed run"
    compared: int = 0
    missing: list[Key] = field(default_factory=list)
    extra: list[Key] = field(default_factory=list)
    repeated: list[Key] = field(default_factory=list)
    diverging: list[tuple[Key, str, ComparisonResult]] = field(default_factory=list)
    worst: LeafStat | None = None

    @property
    def ok(self) -> bool:
        """True when the trajectory matches the reference run record for record."""
        return not (self.missing or self.extra or self.repeated or self.diverging)

    def first_divergence(self) -> tuple[Key, str] | None:
        """The earliest record that differs, is missing, extra or repeated, and on which side of the resume."""
        found = [(key, segment) for key, segment, _ in self.diverging[:1]]
        found += [(keys[0], AFTER) for keys in (self.missing, self.extra, self.repeated) if keys]
        return min(found, default=None)

    def failure_message(self, check: str, limit: int = 10) -> str:
        """Where the runs first diverge, what differs there and by how much, and how many other records differ."""
        lines = [f"{check}: {self.headline()}"]
        if self.repeated:
            lines.append(f"  the resumed run recorded {_keys(self.repeated)}, which lie before the checkpoint it "
                         "restored: the resume restarted from an earlier point")
        if self.missing:
            lines.append(f"  missing from the {self.compared_runs}: {_keys(self.missing)}")
        if self.extra:
            lines.append(f"  not in the reference run: {_keys(self.extra)}")
        if self.diverging:
            _, segment, result = self.diverging[0]
            if segment == BEFORE:
                lines.append("  the runs differ before any interruption: the recipe is not deterministic under "
                             "identical seeding, so resume cannot be judged (seed everything, avoid "
                             "nondeterministic kernels, or widen this check's tolerance)")
            lines.append(indent(result.format(limit), 4))
        return "\n".join(lines)

    def headline(self) -> str:
        on_rank = "" if self.rank is None else f" on rank {self.rank}"
        if self.diverging:
            key, segment, result = self.diverging[0]
            first = result.differences[0] if result.differences else None
            return (f"first divergence{on_rank} at {describe_key(key)} ({segment}); {len(self.diverging)} of "
                    f"{self.compared} compared records of '{self.stream}' differ" + (f"; {first}" if first else ""))
        return f"the '{self.stream}' records of the {self.compared_runs} are not the reference run's{on_rank}"


@dataclass
class RankedComparison:
    """One stream compared rank by rank (rank ``r`` of every run with rank ``r`` of the others)."""

    per_rank: list[StreamComparison]

    @property
    def ok(self) -> bool:
        return all(outcome.ok for outcome in self.per_rank)

    @property
    def compared(self) -> int:
        return sum(outcome.compared for outcome in self.per_rank)

    @property
    def worst(self) -> LeafStat | None:
        found = [outcome.worst for outcome in self.per_rank if outcome.worst is not None]
        return max(found, key=lambda leaf: leaf.usage, default=None)

    def first_divergence(self) -> tuple[Key, str, int | None] | None:
        """The earliest divergence over all ranks, with its rank (None when the runs have one rank)."""
        found = [(*first, outcome.rank) for outcome in self.per_rank
                 if (first := outcome.first_divergence()) is not None]
        return min(found, key=lambda item: (item[0], item[2] or 0), default=None)

    def failure_message(self, check: str, limit: int = 10) -> str:
        """The message of the rank that diverges first, then one line for each other rank."""
        failing = [outcome for outcome in self.per_rank if not outcome.ok]
        if not failing:
            return f"{check}: every rank matches"
        first = min(failing, key=lambda outcome: (outcome.first_divergence() or ((), "", 0))[0])
        lines = [first.failure_message(check, limit)]
        for outcome in self.per_rank:
            if outcome is not first and len(self.per_rank) > 1:
                lines.append(f"  rank {outcome.rank}: " + ("matches the reference run" if outcome.ok
                                                           else outcome.headline()))
        return "\n".join(lines)


def compare_stream(stream: str, reference: RecordStore, resumed: RecordStore, *,
                   options: Callable[[Key], dict[str, Any]],
                   interrupted: RecordStore | None = None,
                   owned_by_resumed: Callable[[Key], bool] = lambda key: True,
                   may_be_lost: Callable[[Key], bool] = lambda key: False,
                   may_be_extra: Callable[[Key], bool] = lambda key: False,
                   rank: int | None = None) -> StreamComparison:
    """Compare ``stream`` record by record, the reference run's records being the expected values.

    Without ``interrupted`` (the shared trajectory) the resumed run must have the reference's records whose keys
    ``owned_by_resumed`` accepts, and no other; with it, the interrupted run's records followed by the resumed
    run's must have all of them. A record the reference has may be missing only where ``may_be_lost`` allows it,
    one it lacks only where ``may_be_extra`` does. ``options(key)`` are the comparator's options for record ``key``.
    """
    outcome = StreamComparison(stream, rank, "resumed run" if interrupted is None else "interrupted+resumed runs")
    if interrupted is None:
        trajectory: dict[Key, tuple[RecordStore, str]] = {}
        expected_keys = [key for key in reference.keys(stream) if owned_by_resumed(key)]
    else:
        trajectory = {key: (interrupted, BEFORE) for key in interrupted.keys(stream)}
        expected_keys = reference.keys(stream)
    for key in resumed.keys(stream):
        if key in trajectory or not owned_by_resumed(key):
            outcome.repeated.append(key)
        trajectory[key] = (resumed, AFTER)
    outcome.missing = [key for key in expected_keys if key not in trajectory and not may_be_lost(key)]
    outcome.extra = sorted(key for key in set(trajectory) - set(expected_keys)
                           if not may_be_extra(key) and key not in outcome.repeated)
    for key in expected_keys:
        if key not in trajectory:
            continue
        store, segment = trajectory[key]
        actual, expected = store.record_bytes(stream, key), reference.record_bytes(stream, key)
        outcome.compared += 1
        if outcome.worst is not None and recordfile.identical_without_nan(actual, expected):
            continue  # equal values: compare() would find no difference and no leaf worse than the worst so far
        result = compare(recordfile.decode(actual), recordfile.decode(expected), **options(key))
        if result.worst is not None and (outcome.worst is None or result.worst.usage > outcome.worst.usage):
            outcome.worst = result.worst
        if not result.ok:
            outcome.diverging.append((key, segment, result))
    return outcome


def _keys(keys: list[Key]) -> str:
    return listing(keys, 5, show=describe_key, separator="; ")
