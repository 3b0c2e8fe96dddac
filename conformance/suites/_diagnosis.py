"""Which divergence of a stop-and-go class came first, and what it means.

When a resume is wrong, one fault shows in many streams: RNG not restored changes the dropout masks, hence the
outputs, the losses, the gradients, the optimizer state and the weights. The *root cause* is the stream whose
first diverging record happened earliest in training; ties in time go to the stream that feeds the others (RNG
and inputs before outputs and loss, before optimizer and weights). Every other failing stream is reported as its
consequence, and the root cause carries the kit's remedy.
"""

from __future__ import annotations

from dataclasses import dataclass

from conformance.suites._trajectory import BEFORE, describe_key
from conformance.training.recordstore import Key

__all__ = ["CAUSAL_ORDER", "Divergence", "root_cause"]

#: Streams in the order one feeds the next within the same moment of training.
CAUSAL_ORDER = ("rng_state", "train_inputs", "train_outputs", "train_loss", "global_step", "learning_rate",
                "consumed_samples", "lr_scheduler_state", "optimizer_state", "valid_inputs", "valid_outputs",
                "valid_loss", "final_weights")

_REMEDIES = {
    "rng_state": "the random state is not restored: add conformance.RNGStateCallback() to make_callbacks(), or "
                 "reseed python, numpy and torch (and Megatron's model-parallel RNG tracker, if the model draws "
                 "from it) from the global step (and micro-batch and data-parallel rank, so that ranks draw "
                 "different masks) where each micro-batch starts: the model's on_train_batch_start, or its "
                 "data_step under NeMo's strategy (one Lightning batch holds all micro-batches of a step there)",
    "train_inputs": "the data position is not restored: keep the consumed-samples count in the data module's "
                    "state_dict() and start the train loader after it (conformance.ResumableDataModule does)",
    "train_outputs": "with the same inputs and random state the model computes something else: weights or module "
                     "state are not restored",
    "train_loss": "with the same inputs and random state the loss differs: weights or module state are not restored",
    "global_step": "the trainer's loop state (global step, epoch) is not restored: keep 'loops' in checkpoints",
    "learning_rate": "the learning rate differs: the LR scheduler's state is not restored",
    "consumed_samples": "the data module's consumed-samples count is not restored or counted from the wrong step",
    "lr_scheduler_state": "the LR scheduler's state is not restored",
    "optimizer_state": "the optimizer's state (e.g. Adam's moments) is not restored",
    "valid_inputs": "validation draws other samples after the resume: its loader must start at sample 0",
    "valid_outputs": "validation computes something else after the resume",
    "valid_loss": "the validation loss differs after the resume",
    "final_weights": "the final weights differ",
}


@dataclass(frozen=True)
class Divergence:
    """The first diverging record of one stream, and whether it lies before the interruption or after the resume."""

    stream: str
    key: Key
    segment: str
    #: The rank it was seen on, when the runs have several.
    rank: int | None = None

    @property
    def check(self) -> str:
        return f"test_{self.stream}"

    def moment(self) -> tuple[int, ...]:
        """When in training the record was taken: (optimizer step it belongs to, phase, position within it)."""
        if self.stream == "final_weights":
            return (self.key[0], 3)
        if len(self.key) == 2:  # a micro-batch of the step after global step key[0]
            return (self.key[0] + 1, 0, self.key[1])
        if len(self.key) == 4:  # a validation batch after step key[0]
            return (self.key[0], 2, *self.key[1:])
        return (self.key[0], 1)  # the end of optimizer step key[0]

    def describe(self) -> str:
        """The divergence and its remedy, in one sentence."""
        on_rank = "" if self.rank is None else f" on rank {self.rank}"
        where = f"{self.check} first diverges{on_rank} at {describe_key(self.key)} ({self.segment})"
        if self.segment == BEFORE:
            return (f"{where}: the runs differ before any interruption, so the recipe is not deterministic under "
                    "identical seeding and its resume cannot be judged")
        return f"{where}: {_REMEDIES[self.stream]}"


def root_cause(divergences: list[Divergence]) -> Divergence | None:
    """The earliest divergence in training; ties go to the stream earlier in :data:`CAUSAL_ORDER`."""
    if not divergences:
        return None
    return min(divergences, key=lambda found: (found.moment(), CAUSAL_ORDER.index(found.stream), found.rank or 0))
