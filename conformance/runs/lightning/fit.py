"""Drive one Lightning training run of a recipe: seeded, recorded per rank, interrupted or resumed.

A *recipe* is anything with the conformance hooks (``make_model``, ``make_datamodule`` and optionally
``trainer_kwargs``, ``make_callbacks``, ``consumed_samples``); the suites pass their test class. A run either
happens in this process (one rank) or in fresh rank processes the kit launches (:mod:`conformance.runs.processes`),
one per device the recipe's ``trainer_kwargs()`` asks for; each rank records into its own folder,
``<work_dir>/<run>/rank<r>/records``.

    python -m conformance.runs.lightning.fit SPEC.json    # one rank of a run in its own process (used internally)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Checkpoint

from conformance.runs.backend import FitPlan, RunOutcome
from conformance.runs.fit_runs import FitLog, fit_attempt, run_fit_plans
from conformance.runs.lightning.callbacks import (
    InterruptAfterStep,
    Interruption,
    ProgressPrinter,
    StallGuard,
)
from conformance.runs.lightning.recorder import TrainingRecorder
from conformance.runs.lightning.trainer import (
    build_trainer,
    quiet_lightning,
    rank_process_strategy,
    run_context,
    seeded,
    world_size_of,
)
from conformance.runs.processes import (
    process_group_timeout,
    recipe_rank_main,
)

__all__ = ["OWNED_TRAINER_KWARGS", "Recipe", "fit_run", "run_fits", "trainer_kwargs_of"]

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


def fit_run(recipe: Recipe, plan: FitPlan, rank: int = 0) -> FitLog:
    """Seed, build the recipe afresh and ``fit`` it as rank ``rank`` of this process's world."""
    recipe_kwargs = trainer_kwargs_of(recipe, plan)
    with fit_attempt(plan, rank) as (log, store), quiet_lightning(), seeded(plan.seed), run_context(recipe_kwargs):
        recipe_callbacks = recipe.make_callbacks()
        callbacks = [*recipe_callbacks, StallGuard()]
        if plan.record:
            callbacks.append(TrainingRecorder(store, recipe.consumed_samples, recipe_callbacks))
        if plan.stop_step is not None:
            callbacks.append(InterruptAfterStep(Interruption(plan.stop_step, plan.interruption,
                                                             Path(plan.checkpoint))))
        if os.environ.get("CONFORMANCE_PROGRESS") and rank == 0:
            callbacks.append(ProgressPrinter(plan.name, plan.max_steps))
        model = recipe.make_model()
        datamodule = recipe.make_datamodule()
        has_checkpointing = any(isinstance(callback, Checkpoint) for callback in callbacks)
        if world_size_of(recipe_kwargs) > 1:
            recipe_kwargs["strategy"] = rank_process_strategy(recipe_kwargs.get("strategy", "auto"),
                                                              process_group_timeout())
        trainer = build_trainer(recipe_kwargs, owned=OWNED_TRAINER_KWARGS,
                                run_defaults={"enable_checkpointing": has_checkpointing, **plan.trainer_defaults},
                                run_settings={"max_steps": plan.max_steps, "max_epochs": -1, "callbacks": callbacks,
                                              "default_root_dir": str(plan.rank_dir(rank))})
        trainer.fit(model, datamodule=datamodule, ckpt_path=plan.resume_from)
    return log


def trainer_kwargs_of(recipe: Recipe, plan: FitPlan) -> dict[str, Any]:
    """The recipe's trainer arguments for ``plan``: ``elastic_trainer_kwargs`` for an elastic resume."""
    if plan.world_size is None:
        return dict(recipe.trainer_kwargs())
    return dict(recipe.elastic_trainer_kwargs(plan.world_size))


def run_fits(recipe: Recipe, plans: Sequence[FitPlan], *, in_process: bool, deadline_s: float
             ) -> list[list[RunOutcome]]:
    """Run ``plans`` one after the other and return each one's outcome per rank: in this process (one rank), or in
    fresh processes, one per rank (``trainer_kwargs()``'s devices), killed at ``deadline_s``."""
    return run_fit_plans(__name__, recipe, plans, run_rank=fit_run, in_process=in_process, deadline_s=deadline_s,
                         world_size=lambda plan: world_size_of(trainer_kwargs_of(recipe, plan)))


if __name__ == "__main__":
    recipe_rank_main(fit_run, FitPlan)
