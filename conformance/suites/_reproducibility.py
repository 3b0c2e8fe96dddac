"""Reproducibility as a diagnosis, never a verdict: when a value the resumed run computes differs although it
started from the saved state bit for bit, a second uninterrupted run with the same seed tells the two possible
reasons apart. If it already differs from the reference, the recipe (or its hardware) does not repeat itself and
the difference need not be the checkpoint's; if it repeats the reference exactly, the resume lost state that the
checkpoint does not hold.
"""

from __future__ import annotations

from collections.abc import Sequence

from conformance.compare import compare
from conformance.suites._diagnosis import Divergence
from conformance.suites._trajectory import AFTER, describe_key
from conformance.tolerance_profiles import COMPUTED_CHECKS
from conformance.training.recordstore import RecordStore

__all__ = ["reproducibility_diagnosis"]

#: The streams compared between the reference and the second run: those of the checks a profile loosens.
_COMPUTED_STREAMS = tuple(sorted(check.removeprefix("test_") for check in COMPUTED_CHECKS))


def reproducibility_diagnosis(reference: Sequence[RecordStore], repeat: Sequence[RecordStore],
                              repeat_failures: Sequence[str]) -> str:
    """The remedy for a computed value diverging after an exact restore, from the reference's and the second
    run's records (one store per rank) and the second run's failures."""
    gate = "the restored state is bit-identical to the saved one (test_restored_state passed)"
    if repeat_failures:
        return (f"{gate}; a second uninterrupted run, trained to tell nondeterminism from lost state, failed "
                f"({repeat_failures[0]}), so which one it is stays open")
    found = [difference for rank, (expected, actual) in enumerate(zip(reference, repeat))
             if (difference := _first_difference(expected, actual, rank)) is not None]
    if not found:
        return (f"{gate} and a second uninterrupted run repeats the reference bit for bit, so the resume lost "
                "state the checkpoint does not hold: a module attribute outside state_dict(), module-level or "
                "global state, or a cache that is rebuilt differently after loading")
    first = min(found, key=lambda difference: (difference.moment(), difference.rank))
    on_rank = f" on rank {first.rank}" if len(reference) > 1 else ""
    return (f"{gate}, but the recipe does not repeat itself: a second uninterrupted run with the same seed already "
            f"differs from the reference{on_rank} at {describe_key(first.key)} ('{first.stream}'), before any resume. On a GPU "
            "that is the kernels' nondeterminism, not the checkpoint: switch on deterministic_mode, or choose a "
            "tolerance_profile that allows it ('gpu_fp32', 'gpu_bf16'; see conformance.TOLERANCE_PROFILES); "
            "elsewhere, seed every source of randomness")


def _first_difference(expected: RecordStore, actual: RecordStore, rank: int) -> Divergence | None:
    """The earliest record of a computed stream that differs at all (or is missing) in ``actual``."""
    found = []
    for stream in _COMPUTED_STREAMS:
        for key in expected.keys(stream):
            if key not in actual.keys(stream) or not compare(actual.read(stream, key), expected.read(stream, key),
                                                              atol=0, rtol=0).ok:
                found.append(Divergence(stream, key, AFTER, rank))
                break
    return min(found, key=Divergence.moment, default=None)
