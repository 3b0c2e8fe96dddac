"""How the kit watches a trainer it does not own: the forwards through :class:`ModelWatch`, the end of each optimizer
step through the first optimizer's step post-hook, and the interruption at the first forward after the stop step.

A step is closed lazily, at the next forward (training or validation) or when the run ends, so that the recipe's
scheduler step and counter increment after ``optimizer.step()`` are in what the kit records; its epoch and the
loader's position are taken as the optimizer steps (before the loop may find the epoch's data exhausted). The interrupted run
is crashed or killed as the first training forward after the stop step begins: by then the recipe has saved the
checkpoint of the stop step, since nothing of the next step has run but fetching its batch. A run that trains on
after saving calls its ``after_save`` there instead (the copy of the checkpoint the resumed run restores).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

from conformance._setup_checks import described
from conformance.errors import ConformanceSetupError
from conformance.runs.backend import FitPlan
from conformance.runs.model_watch import ModelWatch
from conformance.runs.processes import SimulatedPreemption, exit_by_signal_as_planned
from conformance.training.recorder import StepRecorder

__all__ = ["AttachedObserver", "WatchedParts"]


@dataclass(frozen=True)
class WatchedParts:
    """What an attached recipe named in ``run.watch()``."""

    model: torch.nn.Module
    optimizers: Sequence[torch.optim.Optimizer]
    step: Callable[[], int]
    lr_schedulers: Sequence[Any]
    loader: Any
    epoch: Callable[[], float] | None
    loss_module: torch.nn.Module | None

    @classmethod
    def checked(cls, model: Any, optimizers: Any, step: Any, lr_schedulers: Any, loader: Any, epoch: Any,
                loss_module: Any) -> WatchedParts:
        """The parts, or one :class:`ConformanceSetupError` naming every argument of ``run.watch()`` that is wrong."""
        problems = []
        if not isinstance(model, torch.nn.Module):
            problems.append(f"model is {described(model)}: pass the torch.nn.Module the trainer calls")
        if not isinstance(optimizers, (list, tuple)) or not optimizers or not all(
                isinstance(optimizer, torch.optim.Optimizer) for optimizer in optimizers):
            problems.append(f"optimizers is {described(optimizers)}: pass a list of the trainer's "
                            "torch.optim.Optimizer objects")
        for name, getter in (("step", step), ("epoch", epoch)):
            if not callable(getter) and not (name == "epoch" and getter is None):
                problems.append(f"{name} is {described(getter)}: pass a function of no arguments returning the "
                                f"trainer's {'completed optimizer steps' if name == 'step' else 'epoch'}, e.g. "
                                f"{name}=lambda: trainer.{name}")
        if not isinstance(lr_schedulers, (list, tuple)) or not all(
                callable(getattr(scheduler, "state_dict", None)) for scheduler in lr_schedulers):
            problems.append(f"lr_schedulers is {described(lr_schedulers)}: pass a list of the trainer's LR "
                            "schedulers (objects with state_dict())")
        if loader is not None and not callable(getattr(loader, "state_dict", None)):
            problems.append(f"loader is {described(loader)}, which has no state_dict(): pass the train loader whose "
                            "state the checkpoint keeps (torchdata's StatefulDataLoader), or leave it out")
        if loss_module is not None and not isinstance(loss_module, torch.nn.Module):
            problems.append(f"loss_module is {described(loss_module)}: pass the torch.nn.Module that computes the "
                            "loss (e.g. the trainer's nn.CrossEntropyLoss()), or leave it out")
        if problems:
            raise ConformanceSetupError("run.watch() was called wrongly:\n" + "\n".join(
                f"  - {problem}" for problem in problems))
        return cls(model, list(optimizers), step, list(lr_schedulers), loader, epoch, loss_module)


class AttachedObserver:
    """Records one rank of one run into ``recorder`` (None: records nothing) and interrupts it as ``plan`` says, or
    calls ``after_save`` once the checkpoint of a run that trains on is written."""

    def __init__(self, plan: FitPlan | None, recorder: StepRecorder | None,
                 after_save: Callable[[], None] | None = None) -> None:
        self.plan, self.recorder, self.after_save = plan, recorder, after_save
        self.parts: WatchedParts | None = None
        self._forwards: ModelWatch | None = None
        self._step_handle: RemovableHandle | None = None
        self._started = False
        self._step_open = False
        self._loader_state_after_step: Any = None
        self._epoch_of_step: float | None = None
        self._saved_step: int | None = None

    @classmethod
    def inert(cls) -> AttachedObserver:
        """An observer that records nothing and interrupts nothing (an ``AttachedRun`` made outside the kit)."""
        return cls(None, None)

    def attach(self, parts: WatchedParts) -> None:
        if self.parts is not None:
            raise ConformanceSetupError("run.watch() was called twice in one run: call it once, after the trainer's "
                                        "parts are built")
        self.parts = parts
        self._forwards = ModelWatch(self.recorder, parts.step, self._forward_begins)
        self._forwards.attach(parts.model, parts.loss_module)
        self._step_handle = parts.optimizers[0].register_step_post_hook(self._optimizer_stepped)

    def run_ends(self) -> None:
        """The recipe's ``run_training`` returned: close the last step and record the final weights."""
        if self.parts is None:
            raise ConformanceSetupError("run_training(run) returned without calling run.watch(model, optimizers, "
                                        "step=...): the kit observed nothing; call it once the trainer's parts are "
                                        "built, before training")
        self._close_step()
        if self.recorder is not None and self._started:
            self.recorder.training_ends(self.parts.step(), self.parts.model.state_dict())

    def detach(self) -> None:
        """Remove every hook (also when the run ends by an exception)."""
        if self._forwards is not None:
            self._forwards.detach()
        if self._step_handle is not None:
            self._step_handle.remove()

    # --- moments -------------------------------------------------------------------------------------------
    def _optimizer_stepped(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        assert self.parts is not None and self._forwards is not None
        if not self._forwards.step_has_trained():
            return  # no training step: torch.distributed.checkpoint creating a stateless optimizer's state
        self._step_open = True
        self._epoch_of_step = None if self.parts.epoch is None else self.parts.epoch()  # before an epoch ends
        loader = self.parts.loader  # its position now is the one a checkpoint after this step saves
        self._loader_state_after_step = None if loader is None else copy.deepcopy(loader.state_dict())

    def _forward_begins(self, training: bool) -> None:
        assert self.parts is not None and self._forwards is not None
        if training and not self._started:
            self._started = True
            if self.recorder is not None:
                self.recorder.training_starts(self.parts.step(), None, _class_name(self.parts.loader),
                                              self.parts.model.state_dict())
                self.recorder.state_restored(self.parts.step(), self.parts.model, self.parts.optimizers,
                                             self.parts.lr_schedulers)
        self._close_step()
        plan = self.plan
        if not training or plan is None or self._saved_step is None:
            return
        self._saved_step = None
        if plan.interruption == "kill":
            exit_by_signal_as_planned()
        if plan.interruption == "crash":
            raise SimulatedPreemption(f"simulated preemption after optimizer step {plan.stop_step}")
        if self.after_save is not None:
            self.after_save()

    def _close_step(self) -> None:
        """Record what the loop and the optimizers hold after the step that last called ``optimizer.step()``."""
        if not self._step_open:
            return
        assert self.parts is not None and self._forwards is not None
        self._step_open = False
        parts, step = self.parts, self.parts.step()
        if self.recorder is not None:
            self.recorder.optimizer_step_ends(
                step, self._epoch_of_step, self._forwards.learning_rates, None,
                [optimizer.state_dict() for optimizer in parts.optimizers],
                [scheduler.state_dict() for scheduler in parts.lr_schedulers])
        plan = self.plan
        if plan is not None and plan.checkpoint is not None and step == plan.stop_step:
            self._saved_step = step
            if self.recorder is not None:
                self.recorder.checkpoint_saved(step, parts.model.state_dict(), self._loader_state_after_step)
        self._forwards.step_begins()


def _class_name(value: Any) -> str | None:
    return None if value is None else type(value).__qualname__
