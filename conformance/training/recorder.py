"""What a training run records, whatever drives its loop: one method per moment of a step, each writing the
streams of :mod:`conformance.training.streams` into a :class:`RecordStore`.

A backend calls these where its framework exposes the moment (the Lightning callback, the kit's own loop); the
recorder only observes: it never changes the model, the optimizer, the data or any random state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from conformance._environment import launched_by
from conformance.determinism import determinism_settings
from conformance.training.recordstore import Key, RecordStore
from conformance.training.rng import capture_rng_state

__all__ = ["RESTORED_CALLBACKS", "RESTORED_STATE", "RNG_DRAWN", "SAVED_CALLBACKS", "StepRecorder", "same_state"]

#: Evidence beside the compared streams: per training micro-batch, whether its step drew random numbers.
RNG_DRAWN = "rng_drawn"
#: The state a resumed run starts training from (see :meth:`StepRecorder.state_restored`).
RESTORED_STATE = "restored_state"
#: The tensors the recipe's callbacks hold as a run saves its checkpoint, and as a resumed run starts training.
SAVED_CALLBACKS, RESTORED_CALLBACKS = "saved_callbacks", "restored_callbacks"


class StepRecorder:
    """Writes one run's records; keys as in :mod:`conformance.training.streams`."""

    def __init__(self, store: RecordStore) -> None:
        self.store = store
        self._rng_at_start: dict[str, Any] | None = None
        self._restored_recorded = False
        self._saved_steps: set[int] = set()

    def training_starts(self, step: int, consumed_samples: int | None, data_class: str | None,
                        weights: dict[str, Any], *, data_keeps_count: bool = False) -> None:
        """Where the run starts: its global step, the data's consumed samples and class (``data_keeps_count``: its
        own state holds the count, so its checkpoint must), the determinism switches in force, how the process was
        launched, the model's weights."""
        self.store.write("start", (step,), {"global_step": step, "consumed_samples": consumed_samples,
                                            "datamodule_class": data_class, "data_keeps_count": data_keeps_count,
                                            "determinism": determinism_settings(), "launched_by": launched_by()})
        self.store.write("initial_weights", (step,), weights)

    def state_restored(self, step: int, model: torch.nn.Module, optimizers: Sequence[Any],
                       lr_schedulers: Sequence[Any]) -> None:
        """The state a resumed run starts training from, as its first training step starts (before any update):
        weights, every optimizer's and LR scheduler's ``state_dict()``, and the parameters' names in each optimizer's
        order. Recorded once, and only by a run that starts after global step 0 (one that restored something)."""
        if self._restored_recorded or step == 0:
            return
        self._restored_recorded = True
        names = {id(parameter): name for name, parameter in model.named_parameters()}
        parameter_names = [[names.get(id(parameter), f"#{index}") for index, parameter in
                            enumerate(parameter for group in optimizer.param_groups for parameter in group["params"])]
                           for optimizer in optimizers]
        self.store.write(RESTORED_STATE, (step,), {
            "weights": model.state_dict(), "optimizers": [optimizer.state_dict() for optimizer in optimizers],
            "lr_schedulers": [scheduler.state_dict() for scheduler in lr_schedulers],
            "parameter_names": parameter_names})

    def callbacks_restored(self, step: int, callback_state: dict[str, Any]) -> None:
        """The tensors the recipe's callbacks hold as a run that restored a checkpoint (``step`` > 0) starts
        training, before any training batch."""
        if step > 0:
            self.store.write(RESTORED_CALLBACKS, (step,), callback_state)

    def micro_batch_starts(self, key: Key, batch: Any) -> None:
        """The RNG state and the batch as the step's code receives them (before any in-place change)."""
        self._rng_at_start = capture_rng_state()
        self.store.write("rng_state", key, self._rng_at_start)
        self.store.write("train_inputs", key, batch)

    def step_computed(self, phase: str, key: Key, outputs: list[Any], loss: Any) -> None:
        """What the model's forward returned inside a training (``phase="train"``) or validation (``"valid"``) step,
        and the loss it returned; for a training step also whether it drew random numbers (``rng_drawn``: the RNG
        states now differ from where it started)."""
        self.store.write(f"{phase}_outputs", key, outputs)
        self.store.write(f"{phase}_loss", key, loss)
        if phase == "train" and self._rng_at_start is not None:
            self.store.write(RNG_DRAWN, key, not same_state(self._rng_at_start, capture_rng_state()))
            self._rng_at_start = None

    def validation_batch_starts(self, key: Key, batch: Any) -> None:
        self.store.write("valid_inputs", key, batch)

    def optimizer_step_ends(self, step: int, epoch: float | None, learning_rates: list[list[float]],
                            consumed_samples: int | None, optimizer_states: Sequence[Any],
                            scheduler_states: Sequence[Any], callback_state: dict[str, Any] | None = None) -> None:
        """Everything the loop, the optimizers and, where the backend has callbacks, the tensors they hold after
        optimizer step ``step``."""
        self.store.write("global_step", (step,), {"global_step": step, "epoch": epoch})
        self.store.write("learning_rate", (step,), learning_rates)
        self.store.write("consumed_samples", (step,), consumed_samples)
        self.store.write("optimizer_state", (step,), list(optimizer_states))
        self.store.write("lr_scheduler_state", (step,), list(scheduler_states))
        if callback_state is not None:
            self.store.write("callback_state", (step,), callback_state)

    def checkpoint_saved(self, step: int, weights: dict[str, Any], data_state: Any,
                         callback_state: dict[str, Any] | None = None) -> None:
        """The model's weights, this rank's data position (its loader's state) and, where the backend has
        callbacks, the tensors they hold, as the run saves its checkpoint after ``step``: what the checkpoint must
        hold. A second save after the same step records nothing."""
        if step in self._saved_steps:
            return
        self._saved_steps.add(step)
        self.store.write("saved_weights", (step,), weights)
        self.store.write("saved_data_state", (step,), data_state)
        if callback_state is not None:
            self.store.write(SAVED_CALLBACKS, (step,), callback_state)

    def training_ends(self, step: int, weights: dict[str, Any]) -> None:
        self.store.write("final_weights", (step,), weights)

    def close(self) -> None:
        self.store.close()


def same_state(first: Any, second: Any) -> bool:
    """Whether two RNG states (nested dicts, lists and tuples of tensors and plain values) are equal exactly."""
    if isinstance(first, torch.Tensor) or isinstance(second, torch.Tensor):
        return (isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor)
                and first.shape == second.shape and first.dtype == second.dtype and torch.equal(first, second))
    if isinstance(first, dict) and isinstance(second, dict):
        return first.keys() == second.keys() and all(same_state(first[key], second[key]) for key in first)
    if isinstance(first, (list, tuple)) and isinstance(second, (list, tuple)):
        return len(first) == len(second) and all(map(same_state, first, second))
    return bool(first == second)
