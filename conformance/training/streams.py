"""The streams a stop-and-go run records, declared once: what each holds, how it is keyed, where it sits in the
causal order of a training step, what is wrong when it is the first to diverge, and what to do when a run recorded
nothing in it. The recorders, the checks and the root-cause diagnosis all read this table.

Keys line up between runs. "global step" is the count of completed optimizer steps: a training micro-batch of key
(4, m) belongs to optimizer step 5; a validation after step 5 has key (5, pass, dataloader, batch), ``pass``
counting validations run at the same global step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["CAUSAL_ORDER", "STREAMS", "Stream", "stream"]

#: How a stream is keyed: after an optimizer step ``(step,)``, per micro-batch ``(global step, micro-batch)``,
#: per validation batch ``(global step, pass, dataloader, batch)``, or once per run ``(global step,)``.
Keying = Literal["step", "micro_batch", "validation", "run"]


def _everything(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Stream:
    """One recorded stream of a stop-and-go run."""

    name: str
    keying: Keying
    #: What one record holds.
    holds: str
    #: What is wrong with the resume when this stream is the first to diverge after it.
    remedy: str
    #: Why a run may record nothing to compare in it, and what to do about it.
    hint: str = "nothing was recorded"
    #: The part of a record that must hold something for a comparison to mean anything.
    content: Callable[[Any], Any] = _everything

    @property
    def per_micro_batch(self) -> bool:
        """Keyed by the global step before the record (the resumed run owns the stop step's micro-batches)."""
        return self.keying == "micro_batch"


def _optimizer_moments(optimizers: list[Any]) -> list[Any]:
    return [optimizer.get("state") for optimizer in optimizers]


#: Every compared stream, in the order one feeds the next within the same moment of training (ties in the
#: root-cause diagnosis go to the earlier one).
STREAMS: tuple[Stream, ...] = (
    Stream("restored_state", "run", "the resumed run's weights, optimizer and LR scheduler states as its first "
           "training step starts, held bit for bit against the saving run's when it saved",
           "the checkpoint does not give back the state the run had when it saved it",
           "the resumed run recorded no state at its start"),
    Stream("rng_state", "micro_batch", "global RNG states as the training step starts (after every hook before it)",
           "the random state is not restored: checkpoint and restore it where the step starts, or reseed python, "
           "numpy and torch (and Megatron's model-parallel RNG tracker, if the model draws from it) from the global "
           "step (and micro-batch and data-parallel rank, so that ranks draw different masks)"),
    Stream("train_inputs", "micro_batch", "the training batch, as the training step receives it",
           "the data position is not restored: checkpoint the loader's position and start the train loader after it",
           "the training step received no batch"),
    Stream("train_outputs", "micro_batch", "what the model's forward returned during the training step",
           "with the same inputs and random state the model computes something else: weights or module state are "
           "not restored",
           "the model's forward was never called during the training step; call the model itself (its __call__) so "
           "the kit can observe its outputs"),
    Stream("train_loss", "micro_batch", "the loss the training step returned",
           "with the same inputs and random state the loss differs: weights or module state are not restored",
           "the training step returned no loss"),
    Stream("global_step", "step", "global step and epoch after the optimizer step",
           "the loop state (global step, epoch) is not restored: keep it in checkpoints"),
    Stream("learning_rate", "step", "every param group's learning rate used by the optimizer step",
           "the learning rate differs: the LR scheduler's state is not restored",
           "no optimizer step used a learning rate: the recipe has no optimizer"),
    Stream("consumed_samples", "step", "the data's consumed-samples count after the optimizer step",
           "the data's consumed-samples count is not restored or counted from the wrong step",
           "the data reports no consumed samples"),
    Stream("lr_scheduler_state", "step", "every LR scheduler's state_dict() after the optimizer step",
           "the LR scheduler's state is not restored",
           "the recipe configures no LR scheduler; list the check in expected_failures if that is intended"),
    Stream("optimizer_state", "step", "every optimizer's state_dict() after the optimizer step",
           "the optimizer's state (e.g. Adam's moments) is not restored",
           "the optimizer keeps no state to compare (plain SGD has none); list the check in expected_failures if "
           "that is intended", _optimizer_moments),
    Stream("callback_state", "step", "the tensors the recipe's callbacks hold after the optimizer step (an EMA's "
           "shadow weights), per callback",
           "a callback's state differs after the resume although its tensors were restored: it keeps something "
           "else that its state_dict() leaves out (a step counter, a warm-up position); save and load all of it",
           "no callback of the recipe holds tensors"),
    Stream("valid_inputs", "validation", "the validation batch, as the validation step receives it",
           "validation draws other samples after the resume: its loader must start at sample 0",
           "no validation ran after the resume point in the uninterrupted run"),
    Stream("valid_outputs", "validation", "what the model's forward returned during the validation step",
           "validation computes something else after the resume",
           "the model's forward was never called during the validation step, or no validation ran after the resume "
           "point"),
    Stream("valid_loss", "validation", "the loss the validation step returned",
           "the validation loss differs after the resume",
           "the validation step returned no loss, or no validation ran after the resume point"),
    Stream("final_weights", "run", "the model's state_dict() when training ends", "the final weights differ",
           "the model has no weights"),
)

#: The streams' names in causal order.
CAUSAL_ORDER: tuple[str, ...] = tuple(entry.name for entry in STREAMS)

_BY_NAME = {entry.name: entry for entry in STREAMS}


def stream(name: str) -> Stream:
    """The declared stream called ``name``."""
    return _BY_NAME[name]
