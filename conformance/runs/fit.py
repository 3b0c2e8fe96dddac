"""Drive one Lightning training run of a recipe: seeded, recorded per rank, interrupted or resumed.

A *recipe* is anything with the conformance hooks (``make_model``, ``make_datamodule`` and optionally
``trainer_kwargs``, ``make_callbacks``, ``consumed_samples``); the suites pass their test class. A run either
happens in this process (one rank) or in fresh rank processes the kit launches (:mod:`conformance.runs.processes`),
one per device the recipe's ``trainer_kwargs()`` asks for; each rank records into its own folder,
``<work_dir>/<run>/rank<r>/records``.

    python -m conformance.runs.fit SPEC.json    # one rank of a run in its own process (used internally)
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Checkpoint

from conformance.runs.callbacks import (
    InterruptAfterStep,
    Interruption,
    ProgressPrinter,
    SimulatedPreemption,
    StallGuard,
)
from conformance.runs.processes import (
    RankLog,
    finish_jobs,
    process_group_timeout,
    recipe_rank_main,
    start_recipe_job,
)
from conformance.runs.trainer import (
    build_trainer,
    quiet_lightning,
    rank_process_strategy,
    run_context,
    seeded,
    world_size_of,
)
from conformance.training.records import TrainingRecorder
from conformance.training.recordstore import RecordStore

__all__ = ["OWNED_TRAINER_KWARGS", "FitPlan", "Recipe", "RunOutcome", "fit_run", "run_fits"]

#: Trainer arguments a fit run sets itself; a recipe's ``trainer_kwargs()`` may not set them.
OWNED_TRAINER_KWARGS = frozenset({"max_steps", "max_epochs", "callbacks", "default_root_dir"})


class Recipe(Protocol):
    """The hooks a run needs from the code under test."""

    def make_model(self) -> pl.LightningModule: ...
    def make_datamodule(self) -> pl.LightningDataModule: ...
    def trainer_kwargs(self) -> dict[str, Any]: ...
    def make_callbacks(self) -> list[pl.Callback]: ...
    def consumed_samples(self, trainer: pl.Trainer) -> int | None: ...
    def elastic_trainer_kwargs(self, world_size: int) -> dict[str, Any]: ...


@dataclass(frozen=True)
class FitPlan:
    """One fit: where it records, how long it trains, and whether it is interrupted or resumed. JSON-serialisable.

    ``trainer_defaults`` are Trainer arguments the recipe's ``trainer_kwargs()`` may override. ``world_size``, when
    set, runs the recipe on that many ranks with its ``elastic_trainer_kwargs(world_size)`` (an elastic resume).
    """

    name: str
    work_dir: str
    max_steps: int
    seed: int
    record: bool = True
    stop_step: int | None = None
    interruption: Literal["clean", "crash", "kill"] | None = None
    checkpoint: str | None = None
    resume_from: str | None = None
    trainer_defaults: dict[str, Any] = field(default_factory=dict)
    world_size: int | None = None
    #: The run (same rank) whose records this one's may share where they are byte for byte the same.
    shares_records_with: str | None = None

    def trainer_kwargs(self, recipe: Recipe) -> dict[str, Any]:
        """The recipe's trainer arguments for this run."""
        if self.world_size is None:
            return dict(recipe.trainer_kwargs())
        return dict(recipe.elastic_trainer_kwargs(self.world_size))

    def rank_dir(self, rank: int) -> Path:
        return Path(self.work_dir) / self.name / f"rank{rank}"


@dataclass(frozen=True)
class RunOutcome:
    """What one rank of a run left behind: its records, the error that ended it (if unexpected) and its wall time."""

    name: str
    records: RecordStore
    error: str | None
    seconds: float
    rank: int = 0
    failed_at: float | None = None


@dataclass
class FitLog(RankLog):
    """What a rank process reports besides its records on disk."""

    seconds: float = 0.0


def fit_run(recipe: Recipe, plan: FitPlan, rank: int = 0) -> FitLog:
    """Seed, build the recipe afresh and ``fit`` it as rank ``rank`` of this process's world; an interruption's
    own preemption is not an error."""
    started = time.perf_counter()
    log = FitLog(rank=rank)
    run_dir = plan.rank_dir(rank)
    shutil.rmtree(run_dir, ignore_errors=True)  # left by an attempt the launcher restarted (its port was taken)
    run_dir.mkdir(parents=True)
    callbacks = [*recipe.make_callbacks(), StallGuard()]
    reference = plan.shares_records_with
    store = RecordStore(run_dir / "records", reference=None if reference is None else RecordStore(
        Path(plan.work_dir) / reference / f"rank{rank}" / "records"))
    if plan.record:
        callbacks.append(TrainingRecorder(store, recipe.consumed_samples))
    if plan.stop_step is not None:
        callbacks.append(InterruptAfterStep(Interruption(plan.stop_step, plan.interruption, Path(plan.checkpoint))))
    if os.environ.get("CONFORMANCE_PROGRESS") and rank == 0:
        callbacks.append(ProgressPrinter(plan.name, plan.max_steps))
    recipe_kwargs = plan.trainer_kwargs(recipe)
    with quiet_lightning(), seeded(plan.seed), run_context(recipe_kwargs):
        try:
            model = recipe.make_model()
            datamodule = recipe.make_datamodule()
            has_checkpointing = any(isinstance(callback, Checkpoint) for callback in callbacks)
            if world_size_of(recipe_kwargs) > 1:
                recipe_kwargs["strategy"] = rank_process_strategy(recipe_kwargs.get("strategy", "auto"),
                                                                  process_group_timeout())
            trainer = build_trainer(recipe_kwargs, owned=OWNED_TRAINER_KWARGS,
                                    run_defaults={"enable_checkpointing": has_checkpointing, **plan.trainer_defaults},
                                    run_settings={"max_steps": plan.max_steps, "max_epochs": -1, "callbacks": callbacks,
                                                  "default_root_dir": str(run_dir)})
            trainer.fit(model, datamodule=datamodule, ckpt_path=plan.resume_from)
        except SimulatedPreemption:
            pass
        except Exception as exc:  # noqa: BLE001 - the recipe's failure is a finding, reported by the checks
            log.record_failure(exc)
        finally:
            store.close()  # where Lightning skipped the recorder's teardown
    log.seconds = time.perf_counter() - started
    return log


def run_fits(recipe: Recipe, plans: Sequence[FitPlan], *, in_process: bool, deadline_s: float
             ) -> list[list[RunOutcome]]:
    """Run ``plans`` one after the other and return each one's outcome per rank: in this process (one rank), or in
    fresh processes, one per rank (``trainer_kwargs()``'s devices), killed at ``deadline_s``.

    Never two runs at once: two processes using every core each (torch's intra-op threads) slow each other down
    many times over, and a run must see the same machine as the run it is compared with.
    """
    if in_process:
        return [[_outcome(plan, fit_run(recipe, plan))] for plan in plans]
    outcomes = []
    for plan in plans:
        job = start_recipe_job(__name__, recipe, plan, world_size_of(plan.trainer_kwargs(recipe)),
                               deadline_s=deadline_s, owner_of="")
        finish_jobs([job])
        outcomes.append([_outcome(plan, exit_.as_log(FitLog)) for exit_ in job.exits()])
    return outcomes


def _outcome(plan: FitPlan, log: FitLog) -> RunOutcome:
    return RunOutcome(plan.name, RecordStore(plan.rank_dir(log.rank) / "records"), log.error, log.seconds, log.rank,
                      log.failed_at)


if __name__ == "__main__":
    recipe_rank_main(fit_run, FitPlan)
