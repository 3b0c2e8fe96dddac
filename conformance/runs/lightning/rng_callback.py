"""The Lightning callback that checkpoints the training RNG stream of every rank (states as in
:mod:`conformance.training.rng`: weights-only loadable)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch.distributed as dist
from typing_extensions import override

from conformance.training.rng import capture_rng_state, restore_rng_state

__all__ = ["RNGStateCallback"]


class RNGStateCallback(pl.Callback):
    """Checkpoints the training RNG stream and continues it exactly where an uninterrupted run would.

    The training stream is the RNG state at the end of each training batch, carried to the start of the next one.
    Anything that draws random numbers between two training batches (a validation loop, a new DataLoader iterator,
    which draws its base seed from the torch RNG) therefore cannot shift training randomness, in an uninterrupted
    run or a resumed one. Checkpoints hold the stream of every data-parallel rank; a resumed run restores its
    rank's state at its first training batch, after its loaders exist.
    """

    def __init__(self) -> None:
        self._carried: dict[str, Any] | None = None

    @property
    @override
    def state_key(self) -> str:
        """One entry per trainer: the class name is enough."""
        return type(self).__name__

    @override
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        """Continue the training stream from the previous training batch (or from the checkpoint)."""
        if self._carried is not None:
            restore_rng_state(self._carried)

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """Remember where the training stream stands after this batch."""
        self._carried = capture_rng_state()

    @override
    def state_dict(self) -> dict[str, Any]:
        """The training stream of every rank (collective under torch.distributed: every rank must call it)."""
        mine = self._carried if self._carried is not None else capture_rng_state()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            states: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(states, mine)
            return {"per_rank": states}
        return {"per_rank": [mine]}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Take this rank's saved stream; it is applied at the first training batch of the resumed run."""
        states = state_dict["per_rank"]
        rank, world_size = 0, 1
        if dist.is_available() and dist.is_initialized():
            rank, world_size = dist.get_rank(), dist.get_world_size()
        if len(states) != world_size:
            raise RuntimeError(
                f"{type(self).__name__}: the checkpoint holds RNG streams of {len(states)} rank(s) but this run has "
                f"{world_size}; per-rank random streams cannot continue on a different world size. Resume on "
                f"{len(states)} rank(s), or drop {type(self).__name__} to accept new randomness after resume"
            )
        self._carried = states[rank]
