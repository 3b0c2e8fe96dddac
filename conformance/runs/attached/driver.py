"""One rank of one run of an attached recipe: the kit seeds, makes the run's :class:`AttachedRun` and calls the
recipe's ``run_training(run)``; the recipe's own trainer trains, saves and resumes, watched by the kit.

    python -m conformance.runs.attached.driver SPEC.json    # one rank of a run in its own process (internal)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import torch.distributed as dist

from conformance.runs.attached.observer import AttachedObserver
from conformance.runs.attached.run import AttachedRun
from conformance.runs.backend import FitPlan, RunOutcome
from conformance.runs.checkpoint_snapshot import snapshot_checkpoint
from conformance.runs.fit_runs import FitLog, fit_attempt, run_fit_plans
from conformance.runs.processes import recipe_rank_main
from conformance.training.recorder import StepRecorder
from conformance.training.rng import seed_everything

__all__ = ["attached_fit_run", "attached_run", "checkpoint_dir", "run_attached_fits"]


def attached_run(plan: FitPlan, observer: AttachedObserver) -> AttachedRun:
    """What ``plan`` asks of a rank: a clean stop trains only to the stop step; every rank of a run shares its
    checkpoint folder (:func:`checkpoint_dir`)."""
    clean_stop = plan.interruption == "clean" and plan.stop_step is not None
    folder = checkpoint_dir(plan)
    folder.mkdir(parents=True, exist_ok=True)
    return AttachedRun(num_steps=plan.max_steps, max_steps=plan.stop_step if clean_stop else plan.max_steps,
                       save_step=plan.stop_step if plan.checkpoint is not None else None,
                       checkpoint_dir=folder,
                       resume_from=None if plan.resume_from is None else Path(plan.resume_from), seed=plan.seed,
                       _observer=observer)


def checkpoint_dir(plan: FitPlan) -> Path:
    """Where the recipe saves in ``plan``: the plan's checkpoint folder when the run dies after saving, else one of
    the run's own (a run that trains on has its checkpoint copied into the plan's folder once it is written)."""
    if plan.dies_after_saving:
        return Path(str(plan.checkpoint))
    return Path(plan.work_dir) / plan.name / "checkpoints"


def attached_fit_run(recipe: type, plan: FitPlan, rank: int = 0) -> FitLog:
    """Seed and let the recipe's own trainer run ``plan`` as rank ``rank``, watched by an :class:`AttachedObserver`."""
    with fit_attempt(plan, rank) as (log, store):
        seed_everything(plan.seed)
        after_save = (functools.partial(_copy_when_every_rank_saved, plan, copies=rank == 0)
                      if plan.trains_on_after_saving else None)
        observer = AttachedObserver(plan, StepRecorder(store) if plan.record else None, after_save)
        try:
            recipe.run_training(attached_run(plan, observer))
            observer.run_ends()
        finally:
            observer.detach()
    return log


def _copy_when_every_rank_saved(plan: FitPlan, *, copies: bool) -> None:
    """Once every rank of the run has saved (a barrier where the recipe joined a process group), rank 0 copies the
    run's checkpoint folder into the plan's."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
    if copies:
        assert plan.checkpoint is not None
        snapshot_checkpoint(checkpoint_dir(plan), Path(plan.checkpoint))


def run_attached_fits(recipe: type, plans: Sequence[FitPlan], *, world_size: int, in_process: bool,
                      deadline_s: float) -> list[list[RunOutcome]]:
    """Run ``plans`` one after the other, in this process (one rank) or in ``world_size`` fresh rank processes
    killed at ``deadline_s``; each run's outcome per rank."""
    return run_fit_plans(__name__, recipe, plans, run_rank=attached_fit_run, world_size=lambda plan: world_size,
                         in_process=in_process, deadline_s=deadline_s)


if __name__ == "__main__":
    recipe_rank_main(attached_fit_run, FitPlan)
