"""The conditions a stop-and-go verdict was reached under, in one line of the report: the tolerance profile in
force, whether the runs trained in deterministic mode and who started their processes (as each rank recorded when
it started training)."""

from __future__ import annotations

from collections.abc import Sequence

from conformance.tolerance_profiles import TOLERANCE_PROFILES
from conformance.training.recordstore import RecordStore

__all__ = ["run_conditions"]


def run_conditions(profile: str, runs: Sequence[RecordStore]) -> str:
    """``profile``'s description and the deterministic mode of ``runs`` (every rank of every run)."""
    known = TOLERANCE_PROFILES.get(profile)
    described = known.describe() if known is not None else repr(profile)
    return f"tolerance profile {described}; deterministic mode {_deterministic_mode(runs)}{_launchers(runs)}"


def _launchers(runs: Sequence[RecordStore]) -> str:
    """Who started the runs' processes, where any run is not in the test process."""
    starters = sorted({run.read("start", keys[0]).get("launched_by", "unknown") for run in runs
                       if (keys := run.keys("start"))})
    if starters in ([], ["the test process"]):
        return ""
    return f"; ranks started by {' and '.join(starters)}"


def _deterministic_mode(runs: Sequence[RecordStore]) -> str:
    settings = [run.read("start", keys[0]).get("determinism") for run in runs if (keys := run.keys("start"))]
    switched_on = [bool(entry and entry.get("deterministic")) for entry in settings]
    if not switched_on:
        return "unknown (no run started training)"
    if all(switched_on):
        return "on in every run"
    if any(switched_on):
        return f"on in {sum(switched_on)} of {len(switched_on)} run ranks only"
    algorithms = any(entry and entry.get("deterministic_algorithms") for entry in settings)
    return "off" + (" (torch's deterministic algorithms on, other switches off)" if algorithms else "")
