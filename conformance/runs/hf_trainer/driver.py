"""One rank of one run of a Hugging Face ``Trainer`` recipe: the kit seeds, asks the recipe for a fresh Trainer
(``make_trainer(output_dir, max_steps)``), attaches its :class:`TrainerObserver` and calls
``trainer.train(resume_from_checkpoint=...)``; the Trainer runs its own loop, checkpoints and resumes.

    python -m conformance.runs.hf_trainer.driver SPEC.json    # one rank of a run in its own process (internal)
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.utils import logging as transformers_logging

from conformance.runs.backend import FitPlan, RunOutcome
from conformance.runs.fit_runs import FitLog, fit_attempt, run_fit_plans
from conformance.runs.hf_trainer.observer import TrainerObserver
from conformance.runs.processes import recipe_rank_main
from conformance.training.recorder import StepRecorder
from conformance.training.rng import seed_everything

__all__ = ["output_dir", "run_trainer_fits", "trainer_fit_run"]


def output_dir(plan: FitPlan, rank: int) -> Path:
    """The Trainer's ``output_dir`` in a run: the checkpoint folder the plan asks for when the run dies after saving
    (the Trainer writes its ``checkpoint-<step>`` inside), else a folder of the run's own (a run that trains on has
    its checkpoint copied into the plan's folder as soon as it is written)."""
    return Path(str(plan.checkpoint)) if plan.dies_after_saving else plan.rank_dir(rank) / "trainer"


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Transformers' info logging and warnings off while the kit runs a recipe's Trainer (failures still raise)."""
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        transformers_logging.set_verbosity(verbosity)


def trainer_fit_run(recipe: type, plan: FitPlan, rank: int = 0) -> FitLog:
    """Seed, build the recipe's Trainer afresh and train it (resumed from ``plan.resume_from`` when set) as rank
    ``rank``."""
    with fit_attempt(plan, rank) as (log, store), quiet_transformers():
        seed_everything(plan.seed)
        trainer = recipe.make_trainer(str(output_dir(plan, rank)), plan.max_steps)
        observer = TrainerObserver(plan, StepRecorder(store) if plan.record else None,
                                   evaluates=trainer.eval_dataset is not None)
        trainer.add_callback(observer)
        for printer in (PrinterCallback, ProgressCallback):  # they only print the logs (to the test's stdout)
            trainer.remove_callback(printer)
        try:
            trainer.train(resume_from_checkpoint=plan.resume_from)
        finally:
            observer.detach()
    return log


def run_trainer_fits(recipe: type, plans: Sequence[FitPlan], *, in_process: bool, deadline_s: float
                     ) -> list[list[RunOutcome]]:
    """Run ``plans`` one after the other, in this process or each in a fresh rank process killed at
    ``deadline_s``; each run's outcome (one rank)."""
    return run_fit_plans(__name__, recipe, plans, run_rank=trainer_fit_run, world_size=lambda plan: 1,
                         in_process=in_process, deadline_s=deadline_s)


if __name__ == "__main__":
    recipe_rank_main(trainer_fit_run, FitPlan)
