"""What the kit attaches to a recipe's Hugging Face ``Trainer``: one ``TrainerCallback`` and torch's own hooks. It
records every stream of a step, asks the Trainer for an evaluation every ``validate_every_n_steps`` steps and for a
checkpoint after the plan's stop step, and once that checkpoint is written interrupts the run or, where the run
trains on, copies it into the plan's checkpoint folder.

Where each stream is taken: the training batch and the global RNG states by a forward pre-hook on the model (the
Trainer has fetched the step's micro-batches and restored its RNG by then), outputs and loss (the output's
``loss``) by a forward hook, learning rates by torch's global optimizer step pre-hook, the loop position and the
optimizer and scheduler states in ``on_step_end`` (after ``optimizer.step()``, ``lr_scheduler.step()`` and the
global step's increment), validation batches by the same model hooks while the model is in eval mode. Requests go
through the Trainer's own ``TrainerControl``; nothing of the recipe's code is patched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from conformance.runs.backend import FitPlan
from conformance.runs.checkpoint_snapshot import snapshot_checkpoint
from conformance.runs.model_watch import ModelWatch
from conformance.runs.processes import SimulatedPreemption, exit_by_signal_as_planned
from conformance.training.recorder import StepRecorder

__all__ = ["TrainerObserver"]


class TrainerObserver(TrainerCallback):
    """Records one rank of one run of a Trainer recipe into ``recorder`` (None: records nothing) and carries out
    ``plan``'s validation schedule and interruption."""

    def __init__(self, plan: FitPlan, recorder: StepRecorder | None, *, evaluates: bool) -> None:
        self.plan, self.recorder, self.evaluates = plan, recorder, evaluates
        self._state: TrainerState | None = None
        self._model: torch.nn.Module | None = None
        self._optimizer: Any = None
        self._scheduler: Any = None
        self._forwards = ModelWatch(recorder, self._completed_steps, self._forward_begins)

    # --- the Trainer's events ------------------------------------------------------------------------------
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: torch.nn.Module | None = None, optimizer: Any = None, lr_scheduler: Any = None,
                       train_dataloader: Any = None, **kwargs: Any) -> None:
        if model is None:
            raise RuntimeError("the Trainer began training without a model: the kit cannot observe it")
        self._state, self._model, self._optimizer, self._scheduler = state, model, optimizer, lr_scheduler
        self._forwards.attach(model)
        if self.recorder is not None:
            self.recorder.training_starts(state.global_step, None, type(train_dataloader).__qualname__,
                                          model.state_dict())

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                      **kwargs: Any) -> None:
        self._forwards.step_begins()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        step = state.global_step
        if self.recorder is not None:
            self.recorder.optimizer_step_ends(
                step, state.epoch, self._forwards.learning_rates, None,
                [] if self._optimizer is None else [self._optimizer.state_dict()],
                [] if self._scheduler is None else [self._scheduler.state_dict()])
        every = self.plan.validate_every_n_steps
        if self.evaluates and every and step % every == 0:
            control.should_evaluate = True
        if step == self.plan.stop_step and self.plan.checkpoint is not None:
            control.should_save = True

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        plan = self.plan
        if state.global_step != plan.stop_step or plan.checkpoint is None:
            return
        if self.recorder is not None and self._model is not None:
            self.recorder.checkpoint_saved(state.global_step, self._model.state_dict(), None)
        if plan.interruption is None:
            name = f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            snapshot_checkpoint(Path(args.output_dir) / name, Path(plan.checkpoint) / name)
            return
        if plan.interruption == "kill":
            exit_by_signal_as_planned()
        if plan.interruption == "crash":
            raise SimulatedPreemption(f"simulated preemption after optimizer step {plan.stop_step}")
        control.should_training_stop = True

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        if self.recorder is not None and self._model is not None:
            self.recorder.training_ends(state.global_step, self._model.state_dict())
        self.detach()

    def detach(self) -> None:
        """Remove the torch hooks (also when the run ends by an exception)."""
        self._forwards.detach()

    def _forward_begins(self, training: bool) -> None:
        if training and self.recorder is not None and self._model is not None and self._state is not None:
            self.recorder.state_restored(self._state.global_step, self._model,
                                         [] if self._optimizer is None else [self._optimizer],
                                         [] if self._scheduler is None else [self._scheduler])

    def _completed_steps(self) -> int:
        assert self._state is not None
        return self._state.global_step
