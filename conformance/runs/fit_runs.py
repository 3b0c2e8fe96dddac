"""Running fit plans one after the other, whichever backend trains them: in this process (one rank) or in fresh
rank processes launched by the kit; each run's outcome per rank."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from conformance.determinism import deterministic_mode
from conformance.runs.backend import FitPlan, RunOutcome
from conformance.runs.processes import RankLog, SimulatedPreemption, finish_jobs
from conformance.runs.rank_jobs import start_recipe_job
from conformance.training.recordstore import RecordStore

__all__ = ["FitLog", "fit_attempt", "run_fit_plans"]


@dataclass
class FitLog(RankLog):
    """What a rank of a fit reports besides its records on disk."""

    seconds: float = 0.0


@contextlib.contextmanager
def fit_attempt(plan: FitPlan, rank: int) -> Iterator[tuple[FitLog, RecordStore]]:
    """One rank's attempt at ``plan`` in an emptied run folder, in deterministic mode if the plan asks: yields its
    log and record store, records the recipe's failure (an interruption's own preemption is none) and the time
    taken, and closes the store."""
    started = time.perf_counter()
    log = FitLog(rank=rank)
    run_dir = plan.rank_dir(rank)
    shutil.rmtree(run_dir, ignore_errors=True)  # left by an attempt the launcher restarted (its port was taken)
    run_dir.mkdir(parents=True)
    store = plan.store(rank)
    try:
        with deterministic_mode(plan.deterministic):
            yield log, store
    except SimulatedPreemption:
        pass
    except Exception as exc:  # noqa: BLE001 - the recipe's failure is a finding, reported by the checks
        log.record_failure(exc)
    finally:
        store.close()  # also where a framework skipped the recorder's teardown
        log.seconds = time.perf_counter() - started


def run_fit_plans(module: str, recipe: type, plans: Sequence[FitPlan], *,
                  run_rank: Callable[[type, FitPlan, int], FitLog], world_size: Callable[[FitPlan], int],
                  in_process: bool, deadline_s: float) -> list[list[RunOutcome]]:
    """Run ``plans`` with ``run_rank``: in this process, or each as ``world_size(plan)`` processes of ``python -m
    module`` killed at ``deadline_s``.

    Never two runs at once: two processes using every core each (torch's intra-op threads) slow each other down
    many times over, and a run must see the same machine as the run it is compared with.
    """
    if in_process:
        return [[_outcome(plan, run_rank(recipe, plan, 0))] for plan in plans]
    outcomes = []
    for plan in plans:
        job = start_recipe_job(module, recipe, plan, world_size(plan), deadline_s=deadline_s, owner_of="")
        finish_jobs([job])
        outcomes.append([_outcome(plan, exit_.as_log(FitLog)) for exit_ in job.exits()])
    return outcomes


def _outcome(plan: FitPlan, log: FitLog) -> RunOutcome:
    return RunOutcome(plan.name, RecordStore(plan.rank_dir(log.rank) / "records"), log.error, log.seconds, log.rank,
                      log.failed_at)
