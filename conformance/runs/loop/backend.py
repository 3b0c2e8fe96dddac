"""The loop backend: a recipe of ``make_training_state()`` and ``train_step(state, batch)`` whose loop the kit drives
itself (:mod:`.driver`), checkpointed through ``torch.distributed.checkpoint`` unless the recipe saves its own."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import torch

from conformance._setup_checks import described
from conformance.runs.backend import FitPlan, RunOutcome
from conformance.runs.loop.checkpoint import quiet
from conformance.runs.loop.checkpoint_contents import checkpoint_problems, read_values
from conformance.runs.loop.driver import run_loop_fits
from conformance.runs.loop.state import TrainingState
from conformance.runs.ranked_backend import RankedBackend
from conformance.training.recordstore import RecordStore

__all__ = ["LOOP", "LoopBackend"]

_REMEDIES = {
    "rng_state": "the random state is not restored: add conformance.LoopRNGState() to the TrainingState's stateful "
                 "(it restores the stream at the first resumed step, after the loader's iterator exists), or reseed "
                 "python, numpy and torch from state.step (and the rank) where train_step starts",
    "train_inputs": "the data position is not restored: use a stateful loader (torchdata's StatefulDataLoader) "
                    "whose state the checkpoint keeps for every rank (TrainingState.state_dict() does), and draw "
                    "nothing from the global RNG between restoring and the first resumed batch",
    "global_step": "the loop position (state.step, state.epoch) is not restored: keep TrainingState.state_dict()'s "
                   "'loop' entry in the checkpoint",
}

_HINTS = {
    "learning_rate": "no optimizer step used a learning rate: train_step never called step() on the "
                     "TrainingState's optimizers",
    "train_outputs": "the model's forward was never called during train_step: call state.model(...) itself (its "
                     "__call__), so the kit can observe its outputs",
    "train_inputs": "train_step received no batch",
    "train_loss": "train_step returned no loss",
    "valid_inputs": "no validation ran after the resume point in the uninterrupted run: give the TrainingState a "
                    "val_loader and the class a validation_step(state, batch) classmethod (the loop validates every "
                    "validate_every_n_steps steps), or list the validation checks in expected_failures",
    "valid_outputs": "the model's forward was never called during validation_step, or no validation ran after the "
                     "resume point",
    "valid_loss": "validation_step returned no loss, or no validation ran after the resume point",
}

#: Classmethod hooks a loop recipe may define besides the required ones.
OPTIONAL_HOOKS = ("validation_step", "start_epoch", "save_state", "load_state")


class LoopBackend(RankedBackend):
    """Runs recipes in the kit's own PyTorch loop (see the module docstring)."""

    required_hooks: ClassVar[tuple[str, ...]] = ("make_training_state", "train_step")
    not_applicable: ClassVar[Mapping[str, str]] = {}
    #: Why the consumed-samples checks do not apply to a loop whose data reports no such count.
    unreported_consumed_samples: ClassVar[str] = (
        "the train loader keeps its position in its own state, not as a consumed-samples count (override the "
        "classmethod consumed_samples(state) to report one); the data position is judged by test_train_inputs")

    def label(self, recipe: type) -> str:
        return "PyTorch loop"

    def settings_problems(self, recipe: type) -> list[str]:
        problems = self.ranks_problems(recipe)
        if recipe.elastic_resume_world_sizes:
            problems.append("elastic_resume_world_sizes is not supported for a loop the kit drives yet: remove it")
        for name in OPTIONAL_HOOKS:
            hook = inspect.getattr_static(recipe, name, None)
            if hook is not None and not isinstance(hook, (classmethod, staticmethod)):
                problems.append(f"hook '{name}' must be a @classmethod taking the TrainingState")
        return problems

    def recipe_problems(self, recipe: type) -> list[str]:
        with quiet():
            first, second = recipe.make_training_state(), recipe.make_training_state()
        if not isinstance(first, TrainingState):
            return [(f"make_training_state() returned {described(first)}, not a conformance.TrainingState: return "
                    "TrainingState(model=..., optimizers=[...], train_loader=..., lr_schedulers=[...])")]
        problems = []
        if not isinstance(first.model, torch.nn.Module):
            problems.append(f"make_training_state()'s model is {described(first.model)}, not a torch.nn.Module")
        elif first.model is second.model:
            problems.append("make_training_state() returned the same model object twice: build a new one on every "
                            "call, since every run of the kit starts from its own")
        if not isinstance(first.optimizers, (list, tuple)) or not first.optimizers or not all(
                isinstance(optimizer, torch.optim.Optimizer) for optimizer in first.optimizers):
            problems.append(f"make_training_state()'s optimizers is {described(first.optimizers)}: give a list of "
                            "torch.optim.Optimizer objects")
        if not isinstance(first.train_loader, Iterable):
            problems.append(f"make_training_state()'s train_loader is {described(first.train_loader)}, which cannot "
                            "be iterated: give a DataLoader (torchdata's StatefulDataLoader resumes its position)")
        problems += [f"make_training_state()'s stateful['{name}'] ({type(value).__qualname__}) has no state_dict() "
                     "and load_state_dict(): the kit saves and restores it through them"
                     for name, value in first.stateful.items()
                     if not (callable(getattr(value, "state_dict", None))
                             and callable(getattr(value, "load_state_dict", None)))]
        has_step = inspect.getattr_static(recipe, "validation_step", None) is not None
        if has_step != (first.val_loader is not None):
            problems.append("validation needs both a TrainingState val_loader and a validation_step(state, batch) "
                            "classmethod: give both or neither")
        return problems

    def run_fits(self, recipe: type, plans: Sequence[FitPlan], *, in_process: bool, deadline_s: float
                 ) -> list[list[RunOutcome]]:
        return run_loop_fits(recipe, plans, world_size=self.world_size(recipe), in_process=in_process,
                             deadline_s=deadline_s)

    def saved_checkpoint(self, path: Path) -> Path | None:
        return path if path.exists() else None

    def checkpoint_problems(self, path: Path, records: Sequence[RecordStore], stop_step: int
                            ) -> tuple[str, list[str]]:
        values = read_values(path)
        kind = "DCP checkpoint" if path.is_dir() else "torch.save file"
        return f"{kind}: {len(values)} values verified", checkpoint_problems(values, records, stop_step)

    def remedies(self) -> Mapping[str, str]:
        return _REMEDIES

    def hints(self) -> Mapping[str, str]:
        return _HINTS


#: The one instance suites use.
LOOP = LoopBackend()
