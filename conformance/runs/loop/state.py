"""What a recipe whose loop the kit drives hands the kit: its training state, and the kit's per-rank RNG state object.

The recipe's ``make_training_state()`` builds a fresh :class:`TrainingState` (model, optimizers, LR schedulers,
loaders, anything else it says is state); ``train_step(state, batch)`` makes one optimizer step. The kit owns the
loop position (``state.step``, ``state.epoch``) and checkpoints :meth:`TrainingState.state_dict` through
``torch.distributed.checkpoint`` unless the recipe saves and loads itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from conformance.training.rng import capture_rng_state, restore_rng_state

__all__ = ["LoopRNGState", "TrainingState", "loader_state", "rank_and_world_size"]


def rank_and_world_size() -> tuple[int, int]:
    """This process's rank and the world size (0 and 1 without a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@dataclass
class TrainingState:
    """Everything one rank of a training run holds, built afresh by the recipe's ``make_training_state()``.

    ``stateful`` holds any other object with ``state_dict()``/``load_state_dict()`` that must survive a resume (an
    RNG state, an EMA, a metric); an object there may also define ``on_train_step_start()`` and
    ``on_train_step_end()``, which the kit's loop calls right before and right after every ``train_step``.
    ``step`` (optimizer steps completed) and ``epoch`` are the loop's position, kept by the kit.
    """

    model: torch.nn.Module
    optimizers: list[torch.optim.Optimizer]
    train_loader: Iterable[Any]
    lr_schedulers: list[Any] = field(default_factory=list)
    val_loader: Iterable[Any] | None = None
    stateful: dict[str, Any] = field(default_factory=dict)
    step: int = 0
    epoch: int = 0

    def state_dict(self) -> dict[str, Any]:
        """The whole state as ``torch.distributed.checkpoint`` saves it: model and optimizers by parameter name
        (``get_state_dict``), schedulers, the loop position, this rank's loader state under its rank (ranks hold
        different positions; one key for all would keep one rank's), and every ``stateful`` object's state."""
        model, optimizers = get_state_dict(self.model, self.optimizers)
        rank, _ = rank_and_world_size()
        return {
            "model": model,
            "optimizers": optimizers,
            "lr_schedulers": [scheduler.state_dict() for scheduler in self.lr_schedulers],
            "loop": {"step": self.step, "epoch": self.epoch},
            "train_loader": {f"rank{rank}": loader_state(self.train_loader)},
            "stateful": {name: value.state_dict() for name, value in self.stateful.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (after ``torch.distributed.checkpoint`` filled it in)."""
        set_state_dict(self.model, self.optimizers, model_state_dict=state["model"],
                       optim_state_dict=state["optimizers"])
        for scheduler, saved in zip(self.lr_schedulers, state["lr_schedulers"], strict=True):
            scheduler.load_state_dict(saved)
        self.step, self.epoch = int(state["loop"]["step"]), int(state["loop"]["epoch"])
        rank, _ = rank_and_world_size()
        loader = state["train_loader"].get(f"rank{rank}")
        if loader is not None and hasattr(self.train_loader, "load_state_dict"):
            self.train_loader.load_state_dict(loader)
        for name, value in self.stateful.items():
            value.load_state_dict(state["stateful"][name])


def loader_state(loader: Any) -> dict[str, Any] | None:
    """A stateful loader's position (torchdata's ``StatefulDataLoader`` and alike), or None for a plain loader."""
    return loader.state_dict() if hasattr(loader, "state_dict") else None


class LoopRNGState:
    """This rank's training RNG stream (python, numpy, torch CPU and CUDA, Megatron's tracker when present), for
    ``TrainingState.stateful``: captured as each training step ends, restored as the next one starts.

    Anything that draws random numbers between two steps (a validation pass, a new loader iterator, which draws
    its base seed from the torch RNG) cannot shift training randomness, in an uninterrupted run or a resumed one:
    a loaded state is applied at the first resumed step, after the loader's iterator exists. States are tensors
    and plain values (weights-only loadable), saved under this rank's name.
    """

    def __init__(self) -> None:
        self._carried: dict[str, Any] | None = None

    def on_train_step_start(self) -> None:
        """Continue the training stream from the previous step (or from the checkpoint)."""
        if self._carried is not None:
            restore_rng_state(self._carried)

    def on_train_step_end(self) -> None:
        """Remember where the training stream stands after this step."""
        self._carried = capture_rng_state()

    def state_dict(self) -> dict[str, Any]:
        rank, _ = rank_and_world_size()
        return {f"rank{rank}": self._carried if self._carried is not None else capture_rng_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        rank, world_size = rank_and_world_size()
        mine = state.get(f"rank{rank}")
        if mine is None:
            raise RuntimeError(f"LoopRNGState: the checkpoint holds no RNG stream for rank {rank} (it has "
                               f"{sorted(state)}); per-rank random streams resume only on the world size they were "
                               f"saved on, here {world_size}")
        self._carried = dict(mine)
