"""What the kit attaches to a recipe's Hugging Face ``Trainer``: one ``TrainerCallback`` and torch's own hooks. It
records every stream of a step, asks the Trainer for an evaluation every ``validate_every_n_steps`` steps and for a
checkpoint after the plan's stop step, and interrupts the run once that checkpoint is written.

Where each stream is taken: the training batch and the global RNG states by a forward pre-hook on the model (the
Trainer has fetched the step's micro-batches and restored its RNG by then), outputs and loss (the output's
``loss``) by a forward hook, learning rates by torch's global optimizer step pre-hook, the loop position and the
optimizer and scheduler states in ``on_step_end`` (after ``optimizer.step()``, ``lr_scheduler.step()`` and the
global step's increment), validation batches by the same model hooks while the model is in eval mode. Requests go
through the Trainer's own ``TrainerControl``; nothing of the recipe's code is patched.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.hooks import RemovableHandle
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from conformance.runs.backend import FitPlan
from conformance.runs.processes import SimulatedPreemption, exit_by_signal_as_planned
from conformance.training.recorder import StepRecorder
from conformance.training.recordstore import to_record

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
        self._handles: list[RemovableHandle] = []
        self._micro_batch = 0
        self._validation_batch = 0
        self._learning_rates: list[list[float]] = []

    # --- the Trainer's events ------------------------------------------------------------------------------
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: torch.nn.Module | None = None, optimizer: Any = None, lr_scheduler: Any = None,
                       train_dataloader: Any = None, **kwargs: Any) -> None:
        if model is None:
            raise RuntimeError("the Trainer began training without a model: the kit cannot observe it")
        self._state, self._model, self._optimizer, self._scheduler = state, model, optimizer, lr_scheduler
        self._handles = [model.register_forward_pre_hook(self._forward_starts, with_kwargs=True),
                         model.register_forward_hook(self._forward_ends, with_kwargs=True),
                         register_optimizer_step_pre_hook(self._optimizer_steps)]
        if self.recorder is not None:
            self.recorder.training_starts(state.global_step, None, type(train_dataloader).__qualname__,
                                          model.state_dict())

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                      **kwargs: Any) -> None:
        self._micro_batch, self._learning_rates = 0, []

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        step = state.global_step
        if self.recorder is not None:
            self.recorder.optimizer_step_ends(
                step, state.epoch, self._learning_rates, None,
                [] if self._optimizer is None else [self._optimizer.state_dict()],
                [] if self._scheduler is None else [self._scheduler.state_dict()])
        every = self.plan.validate_every_n_steps
        if self.evaluates and every and step % every == 0:
            control.should_evaluate = True
            self._validation_batch = 0
        if step == self.plan.stop_step and self.plan.checkpoint is not None:
            control.should_save = True

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        plan = self.plan
        if state.global_step != plan.stop_step or plan.checkpoint is None:
            return
        if self.recorder is not None and self._model is not None:
            self.recorder.checkpoint_saved(state.global_step, self._model.state_dict(), None)
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
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # --- torch's hooks -------------------------------------------------------------------------------------
    def _forward_starts(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self.recorder is None or self._state is None:
            return
        batch = {**dict(enumerate(args)), **kwargs} if args else kwargs
        if module.training:
            key = (self._state.global_step, self._micro_batch)
            self.recorder.micro_batch_starts(key, batch)
        else:
            self.recorder.validation_batch_starts(self._validation_key(), batch)

    def _forward_ends(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                      output: Any) -> None:
        if self.recorder is None or self._state is None:
            return
        loss = _loss_of(output)
        if module.training:
            self.recorder.step_computed("train", (self._state.global_step, self._micro_batch), [to_record(output)],
                                        loss)
            self._micro_batch += 1
        else:
            self.recorder.step_computed("valid", self._validation_key(), [to_record(output)], loss)
            self._validation_batch += 1

    def _validation_key(self) -> tuple[int, int, int, int]:
        assert self._state is not None
        return (self._state.global_step, 0, 0, self._validation_batch)

    def _optimizer_steps(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._learning_rates.append([group["lr"] for group in optimizer.param_groups])


def _loss_of(output: Any) -> Any:
    """The ``loss`` a Transformers model returns with its outputs (None when it computed none)."""
    loss = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", None)
    return loss.detach() if isinstance(loss, torch.Tensor) else loss
