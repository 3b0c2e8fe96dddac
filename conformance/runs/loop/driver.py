"""The kit's own training loop for recipes of the loop backend: one rank of one run, seeded, recorded, interrupted
or resumed.

The loop is the plain PyTorch loop a researcher writes: a fresh :class:`TrainingState` from the recipe's
``make_training_state()``, restored from a checkpoint when the run resumes, then per optimizer step one batch from
the train loader's iterator (a new iterator, after the recipe's optional ``start_epoch(state, epoch)``, when an
epoch ends, and for the epoch a resumed run continues) handed to the recipe's ``train_step(state, batch)``.
Validation runs every ``validate_every_n_steps`` steps over ``state.val_loader`` with the recipe's optional
``validation_step(state, batch)``, the model in eval mode and gradients off. The interrupted run saves after its
stop step with the recipe's ``save_state(state, directory)`` (default: DCP of ``state.state_dict()``), before that
step's validation, as Lightning's step checkpoints do. The kit observes through torch's hooks (module forward
hooks, optimizer step pre-hooks) and never changes what the recipe computes.

    python -m conformance.runs.loop.driver SPEC.json    # one rank of a run in its own process (used internally)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from conformance.runs.backend import FitPlan, RunOutcome
from conformance.runs.fit_runs import FitLog, fit_attempt, run_fit_plans
from conformance.runs.loop.checkpoint import load_training_state, quiet, save_training_state
from conformance.runs.loop.state import TrainingState, loader_state
from conformance.runs.processes import (
    SimulatedPreemption,
    exit_by_signal_as_planned,
    process_group_timeout,
    recipe_rank_main,
)
from conformance.training.recorder import StepRecorder
from conformance.training.recordstore import to_record
from conformance.training.rng import seed_everything

__all__ = ["load_state", "loop_fit_run", "run_loop_fits", "save_state"]


def save_state(recipe: type, state: TrainingState, directory: Path) -> None:
    """The recipe's ``save_state(state, directory)``, or DCP of the whole state."""
    custom = getattr(recipe, "save_state", None)
    (custom or save_training_state)(state, directory)


def load_state(recipe: type, state: TrainingState, directory: Path) -> None:
    """The recipe's ``load_state(state, directory)``, or DCP's load (non-tensor values weights-only)."""
    custom = getattr(recipe, "load_state", None)
    (custom or load_training_state)(state, directory)


class _KitLoop:
    """One rank's loop over one run (see the module docstring)."""

    def __init__(self, recipe: type, state: TrainingState, plan: FitPlan, recorder: StepRecorder | None) -> None:
        self.recipe, self.state, self.plan, self.recorder = recipe, state, plan, recorder
        self._outputs: list[Any] | None = None
        self._learning_rates: list[list[float]] = []

    def run(self, resumed: bool) -> None:
        state, plan = self.state, self.plan
        if self.recorder is not None:
            self.recorder.training_starts(state.step, self._consumed_samples(), type(state.train_loader).__qualname__,
                                          state.model.state_dict())
        with self._observing():
            batches = self._batches(continue_epoch=resumed)
            while state.step < plan.max_steps:
                self._train_step(next(batches))
                if state.step == plan.stop_step and self._interrupt():
                    break
                every = plan.validate_every_n_steps
                if every and state.step % every == 0 and state.val_loader is not None:
                    self._validate()
        if self.recorder is not None:
            self.recorder.training_ends(state.step, state.model.state_dict())

    def _batches(self, *, continue_epoch: bool) -> Iterator[Any]:
        """Training batches across epochs; a resumed run first finishes the epoch its loader was saved in."""
        state, start_epoch = self.state, getattr(self.recipe, "start_epoch", None)
        empty_epochs = 0
        while True:
            if start_epoch is not None:
                start_epoch(state, state.epoch)
            yielded = False
            for batch in state.train_loader:
                yielded = True
                yield batch
            if not continue_epoch:
                empty_epochs = 0 if yielded else empty_epochs + 1
                if empty_epochs >= 2:
                    raise RuntimeError(f"epochs {state.epoch - 1} and {state.epoch} yielded no batch: the train "
                                       "loader is empty, so training would never reach the run's last step")
            continue_epoch = False
            state.epoch += 1

    def _train_step(self, batch: Any) -> None:
        state, recorder = self.state, self.recorder
        key = (state.step, 0)
        _call_each(state.stateful.values(), "on_train_step_start")
        if recorder is not None:
            recorder.state_restored(state.step, state.model, state.optimizers, state.lr_schedulers)
            recorder.micro_batch_starts(key, batch)
        self._outputs, self._learning_rates = [], []
        try:
            loss = self.recipe.train_step(state, batch)
        finally:
            outputs, self._outputs = self._outputs, None
        state.step += 1
        _call_each(state.stateful.values(), "on_train_step_end")
        if recorder is not None:
            recorder.step_computed("train", key, outputs, _detached(loss))
            recorder.optimizer_step_ends(state.step, state.epoch, self._learning_rates, self._consumed_samples(),
                                         [optimizer.state_dict() for optimizer in state.optimizers],
                                         [scheduler.state_dict() for scheduler in state.lr_schedulers])

    def _validate(self) -> None:
        state, recorder = self.state, self.recorder
        validation_step = getattr(self.recipe, "validation_step", None)
        if validation_step is None:
            return
        was_training = state.model.training
        state.model.eval()
        try:
            with torch.no_grad():
                for index, batch in enumerate(state.val_loader or ()):
                    key = (state.step, 0, 0, index)
                    if recorder is not None:
                        recorder.validation_batch_starts(key, batch)
                    self._outputs = []
                    loss = validation_step(state, batch)
                    outputs, self._outputs = self._outputs, None
                    if recorder is not None:
                        recorder.step_computed("valid", key, outputs, _detached(loss))
        finally:
            state.model.train(was_training)

    def _interrupt(self) -> bool:
        """Save the checkpoint, then die as the plan says; True for a clean stop (the loop ends here), False where
        the run trains on."""
        plan = self.plan
        if plan.checkpoint is None:
            return False
        if self.recorder is not None:
            self.recorder.checkpoint_saved(self.state.step, self.state.model.state_dict(),
                                           loader_state(self.state.train_loader))
        save_state(self.recipe, self.state, Path(plan.checkpoint))
        if plan.interruption == "kill":
            exit_by_signal_as_planned()
        if plan.interruption == "crash":
            raise SimulatedPreemption(f"simulated preemption after optimizer step {plan.stop_step}")
        return plan.interruption == "clean"

    def _consumed_samples(self) -> int | None:
        count = self.recipe.consumed_samples(self.state)
        return None if count is None else int(count)

    @contextlib.contextmanager
    def _observing(self) -> Iterator[None]:
        """Forward hooks on the model (outputs inside a step) and step pre-hooks on every optimizer (the learning
        rates each step uses), removed when the loop ends."""
        handles = [self.state.model.register_forward_hook(self._capture_forward)]
        handles += [optimizer.register_step_pre_hook(self._capture_learning_rates)
                    for optimizer in self.state.optimizers]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _capture_forward(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if self._outputs is not None:
            self._outputs.append(to_record(output))

    def _capture_learning_rates(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._learning_rates.append([group["lr"] for group in optimizer.param_groups])


def _call_each(objects: Any, method: str) -> None:
    for value in objects:
        hook = getattr(value, method, None)
        if callable(hook):
            hook()


def _detached(loss: Any) -> Any:
    return loss.detach() if isinstance(loss, torch.Tensor) else loss


@contextlib.contextmanager
def _process_group() -> Iterator[None]:
    """A torch.distributed process group over the kit's rank processes (gloo on the CPU, NCCL with CUDA), when the
    run has several ranks."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1 or dist.is_initialized():
        yield
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=process_group_timeout()))
    try:
        yield
    finally:
        dist.destroy_process_group()


def loop_fit_run(recipe: type, plan: FitPlan, rank: int = 0) -> FitLog:
    """Seed, build the recipe's state afresh, restore it when the run resumes, and train it as rank ``rank``."""
    with fit_attempt(plan, rank) as (log, store), _process_group(), quiet():
        seed_everything(plan.seed)
        state = recipe.make_training_state()
        if plan.resume_from is not None:
            load_state(recipe, state, Path(plan.resume_from))
        _KitLoop(recipe, state, plan, StepRecorder(store) if plan.record else None).run(
            resumed=plan.resume_from is not None)
    return log


def run_loop_fits(recipe: type, plans: Sequence[FitPlan], *, world_size: int, in_process: bool, deadline_s: float
                  ) -> list[list[RunOutcome]]:
    """Run ``plans`` one after the other, in this process (one rank) or in ``world_size`` fresh rank processes
    killed at ``deadline_s``; each run's outcome per rank."""
    return run_fit_plans(__name__, recipe, plans, run_rank=loop_fit_run, world_size=lambda plan: world_size,
                         in_process=in_process, deadline_s=deadline_s)


if __name__ == "__main__":
    recipe_rank_main(loop_fit_run, FitPlan)
