"""What the kit hands an attached recipe's ``run_training(run)``: how far to train, where to save and resume, and
``watch()``, through which the recipe names the parts the kit observes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from conformance.runs.attached.observer import AttachedObserver, WatchedParts

__all__ = ["AttachedRun"]


@dataclass
class AttachedRun:
    """One run of an attached recipe: train to ``max_steps`` of a ``num_steps``-step schedule, save a checkpoint
    into ``checkpoint_dir`` after optimizer step ``save_step`` (None: none), resuming first from the latest
    checkpoint in ``resume_from`` (None: a fresh start); the kit has seeded python, numpy and torch with ``seed``."""

    #: The length of training: size learning-rate schedules (and anything else sized by the run's length) by it.
    num_steps: int
    #: Stop training after this optimizer step: ``num_steps``, or the stop step in an interrupted run stopped cleanly.
    max_steps: int
    #: Save a checkpoint after this optimizer step (None: the run needs none).
    save_step: int | None
    #: The folder to save checkpoints into, in the recipe's own layout.
    checkpoint_dir: Path
    #: An earlier run's ``checkpoint_dir`` to resume from (its latest checkpoint), or None.
    resume_from: Path | None
    seed: int
    _observer: AttachedObserver = field(repr=False, default_factory=AttachedObserver.inert)

    def watch(self, model: torch.nn.Module, optimizers: Sequence[torch.optim.Optimizer], *, step: Callable[[], int],
              lr_schedulers: Sequence[Any] = (), loader: Any = None, epoch: Callable[[], float] | None = None,
              loss_module: torch.nn.Module | None = None) -> None:
        """Name what the kit observes, once, after the parts are built and before the first training forward:
        ``step()`` is the trainer's count of completed optimizer steps, ``epoch()`` its epoch, ``loader`` the train
        loader whose ``state_dict()`` the checkpoint must hold, ``loss_module`` the module computing the loss when
        the model's forward returns none."""
        self._observer.attach(WatchedParts.checked(model, optimizers, step, lr_schedulers, loader, epoch,
                                                   loss_module))
