"""Recording a model's forwards through torch's own hooks, for backends whose loop belongs to the recipe: each
training forward's batch, RNG state, outputs and loss under (completed optimizer steps, micro-batch), each
validation forward's under (completed steps, 0, 0, batch), and the learning rates every optimizer steps with after
a training forward (``torch.distributed.checkpoint.state_dict`` calls ``step()`` on an optimizer without state, at
learning rate 0, to create it: that is no training step).

The loss is the forward's own (a 0-dim tensor output, or an output's ``loss``), or the output of a loss module
the recipe names, which runs after the model's forward. Nothing of the recipe's code is patched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.hooks import RemovableHandle

from conformance.training.recorder import StepRecorder
from conformance.training.recordstore import Key, to_record

__all__ = ["ModelWatch", "loss_of"]


class ModelWatch:
    """Records the forwards of one model into ``recorder`` (None: records nothing), keyed by ``completed_steps()``;
    ``forward_begins(training)`` runs before each forward is recorded (a backend's moment to close a step)."""

    def __init__(self, recorder: StepRecorder | None, completed_steps: Callable[[], int],
                 forward_begins: Callable[[bool], None] = lambda training: None) -> None:
        self.recorder, self.completed_steps, self.forward_begins = recorder, completed_steps, forward_begins
        self.learning_rates: list[list[float]] = []
        self._handles: list[RemovableHandle] = []
        self._micro_batch = 0
        self._validation: tuple[int, int] | None = None  # (completed steps, next batch) of the current validation
        self._awaiting_loss: tuple[str, Key, list[Any]] | None = None

    def attach(self, model: torch.nn.Module, loss_module: torch.nn.Module | None = None) -> None:
        """Hook ``model`` (and ``loss_module``, whose output is then the loss) and every optimizer's steps."""
        self._handles = [model.register_forward_pre_hook(self._forward_starts, with_kwargs=True),
                         model.register_forward_hook(self._forward_ends, with_kwargs=True),
                         register_optimizer_step_pre_hook(self._optimizer_steps)]
        self._loss_module = loss_module
        if loss_module is not None:
            self._handles.append(loss_module.register_forward_hook(self._loss_computed))

    def step_begins(self) -> None:
        """A new optimizer step begins: its micro-batches count from 0 and its learning rates are collected anew."""
        self._micro_batch, self.learning_rates = 0, []

    def step_has_trained(self) -> bool:
        """Whether a training forward has run since the optimizer step began."""
        return self._micro_batch > 0

    def detach(self) -> None:
        """Record what still awaits its loss, and remove every hook (also when the run ends by an exception)."""
        self._record_awaiting(None)
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # --- torch's hooks -------------------------------------------------------------------------------------
    def _forward_starts(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._record_awaiting(None)  # a loss module that did not run after the last forward computed no loss
        self.forward_begins(module.training)
        if self.recorder is None:
            return
        batch = {**dict(enumerate(args)), **kwargs} if args else kwargs
        if module.training:
            self.recorder.micro_batch_starts(self._training_key(), batch)
        else:
            self.recorder.validation_batch_starts(self._validation_key(), batch)

    def _forward_ends(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                      output: Any) -> None:
        phase, key = ("train", self._training_key()) if module.training else ("valid", self._validation_key())
        if self.recorder is not None:
            if self._loss_module is None:
                self.recorder.step_computed(phase, key, [to_record(output)], loss_of(output))
            else:
                self._awaiting_loss = (phase, key, [to_record(output)])
        if module.training:
            self._micro_batch += 1
        else:
            assert self._validation is not None
            self._validation = (self._validation[0], self._validation[1] + 1)

    def _loss_computed(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        self._record_awaiting(output.detach() if isinstance(output, torch.Tensor) else output)

    def _record_awaiting(self, loss: Any) -> None:
        if self._awaiting_loss is not None and self.recorder is not None:
            phase, key, outputs = self._awaiting_loss
            self.recorder.step_computed(phase, key, outputs, loss)
        self._awaiting_loss = None

    def _optimizer_steps(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if not self.step_has_trained():
            return  # not a training step (torch.distributed.checkpoint steps a stateless optimizer to create state)
        self.learning_rates.append([group["lr"] for group in optimizer.param_groups])

    # --- keys ----------------------------------------------------------------------------------------------
    def _training_key(self) -> Key:
        return (self.completed_steps(), self._micro_batch)

    def _validation_key(self) -> Key:
        steps = self.completed_steps()
        if self._validation is None or self._validation[0] != steps:
            self._validation = (steps, 0)
        return (steps, 0, 0, self._validation[1])


def loss_of(output: Any) -> Any:
    """The loss a forward returned: the output itself when it is a 0-dim tensor, else its ``loss`` (a Transformers
    model's outputs), detached; None when it computed none."""
    if isinstance(output, torch.Tensor):
        return output.detach() if output.dim() == 0 else None
    loss = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", None)
    return loss.detach() if isinstance(loss, torch.Tensor) else loss
