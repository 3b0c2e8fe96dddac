"""The attached backend for any trainer the kit does not own (NeMo AutoModel- or torchtitan-style, or your own): a
recipe of ``run_training(run)`` that trains, saves and resumes as :class:`~.run.AttachedRun` asks and names its parts
in ``run.watch()``; the kit seeds, watches (:mod:`.observer`) and interrupts, and reads the checkpoint folder
whatever its layout (:mod:`.checkpoint_contents`)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

from conformance.runs.backend import FitPlan, RunOutcome
from conformance.runs.ranked_backend import RankedBackend
from conformance.training.recordstore import RecordStore

__all__ = ["ATTACHED", "AttachedBackend"]

_REMEDIES = {
    "rng_state": "the random state differs where the step starts: save python's, numpy's and torch's RNG states "
                 "(every device's) with each checkpoint and restore them after everything else that draws random "
                 "numbers at start-up (model building, the loader's iterator), just before the first resumed step",
    "train_inputs": "the data position is not restored: save the train loader's state_dict() per rank with each "
                    "checkpoint (torchdata's StatefulDataLoader) and load it before iterating, keep the sampler's "
                    "epoch, and draw nothing from the global RNG between the restore and the first resumed batch",
    "learning_rate": "the learning rate differs: save and load the LR schedulers' state, and size schedules by "
                     "run.num_steps (not run.max_steps, which is shorter in a clean stop)",
    "global_step": "the trainer's step counter (what run.watch(step=...) returns) is not restored from the "
                   "checkpoint",
}

_HINTS = {
    "learning_rate": "no optimizer named in run.watch() stepped: pass the optimizers the trainer steps",
    "train_outputs": "the watched model's forward was never called in training mode: pass run.watch() the module "
                     "the trainer calls (the DDP or FSDP wrapper, or the model it wraps)",
    "train_inputs": "the watched model's forward was never called in training mode",
    "train_loss": "no loss was recorded: the model's forward returns no loss (a 0-dim tensor or an output's "
                  "'loss'); pass the module computing it as run.watch(loss_module=...)",
    "valid_inputs": "the trainer ran no validation after the resume point in the uninterrupted run (the watched "
                    "model in eval mode): validate on the trainer's own schedule, or list the validation checks in "
                    "expected_failures",
    "valid_outputs": "the watched model's forward was never called in eval mode after the resume point",
    "valid_loss": "no validation loss was recorded: the model's eval forward returns none and no loss_module ran",
}


class AttachedBackend(RankedBackend):
    """Runs recipes whose own trainer drives the loop (see the module docstring)."""

    required_hooks: ClassVar[tuple[str, ...]] = ("run_training",)
    not_applicable: ClassVar[Mapping[str, str]] = {}
    unreported_consumed_samples: ClassVar[str] = (
        "the kit does not see a consumed-samples count of a trainer it does not own; the data position is judged "
        "by test_train_inputs and the checkpoint's loader state by test_checkpoint_contents")

    def label(self, recipe: type) -> str:
        return "attached trainer"

    def settings_problems(self, recipe: type) -> list[str]:
        problems = self.ranks_problems(recipe)
        if recipe.elastic_resume_world_sizes:
            problems.append("elastic_resume_world_sizes is not supported for an attached trainer yet: remove it")
        hook = inspect.getattr_static(recipe, "run_training", None)
        if hook is not None and not isinstance(hook, (classmethod, staticmethod)):
            problems.append("hook 'run_training' must be a @classmethod taking the kit's AttachedRun")
        elif hook is not None and len(inspect.signature(recipe.run_training).parameters) != 1:
            problems.append(f"hook 'run_training' takes {inspect.signature(recipe.run_training)}: it must take one "
                            "argument, the kit's AttachedRun")
        return problems

    def recipe_problems(self, recipe: type) -> list[str]:
        return []  # the hook is the run itself; a wrong run.watch() is a set-up error raised where it is called

    def run_fits(self, recipe: type, plans: Sequence[FitPlan], *, in_process: bool, deadline_s: float
                 ) -> list[list[RunOutcome]]:
        from conformance.runs.attached.driver import run_attached_fits

        return run_attached_fits(recipe, plans, world_size=self.world_size(recipe), in_process=in_process,
                                 deadline_s=deadline_s)

    def saved_checkpoint(self, path: Path) -> Path | None:
        """The interrupted run's checkpoint folder ``path``, if its trainer saved anything into it."""
        return path if path.is_dir() and any(path.iterdir()) else None

    def checkpoint_problems(self, path: Path, records: Sequence[RecordStore], stop_step: int
                            ) -> tuple[str, list[str]]:
        from conformance.runs.attached.checkpoint_contents import attached_checkpoint_problems

        return attached_checkpoint_problems(path, records, stop_step)

    def remedies(self) -> Mapping[str, str]:
        return _REMEDIES

    def hints(self) -> Mapping[str, str]:
        return _HINTS


#: The one instance suites use.
ATTACHED = AttachedBackend()
