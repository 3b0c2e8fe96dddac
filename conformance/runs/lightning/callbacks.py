"""Callbacks the kit adds to the runs it drives: interrupt after a step, stop a run that cannot progress, show
progress. None of them changes what the recipe computes."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

import lightning.pytorch as pl
from typing_extensions import override

from conformance.runs.processes import PROGRESS_FD_ENV, SimulatedPreemption, exit_by_signal_as_planned

__all__ = ["InterruptAfterStep", "Interruption", "ProgressPrinter", "SimulatedPreemption", "StallGuard"]


@dataclass(frozen=True)
class Interruption:
    """Save ``checkpoint`` right after optimizer step ``step``, then train on (``None``), stop cleanly (``clean``),
    raise (``crash``) or have the process killed by SIGKILL (``kill``, kit-launched rank processes only)."""

    step: int
    style: Literal["clean", "crash", "kill"] | None
    checkpoint: Path


class InterruptAfterStep(pl.Callback):
    """Saves a checkpoint after optimizer step ``step`` (where ``ModelCheckpoint`` would) and, unless the run trains
    on, ends it."""

    def __init__(self, interruption: Interruption) -> None:
        self.interruption = interruption
        self._step_at_batch_start = -1

    @override
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._step_at_batch_start = trainer.global_step

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        stepped = trainer.global_step != self._step_at_batch_start
        if not stepped or trainer.global_step != self.interruption.step:
            return
        trainer.save_checkpoint(self.interruption.checkpoint)
        if self.interruption.style == "kill":
            exit_by_signal_as_planned()
        if self.interruption.style == "crash":
            raise SimulatedPreemption(f"simulated preemption after optimizer step {self.interruption.step}")
        if self.interruption.style == "clean":
            trainer.should_stop = True


class StallGuard(pl.Callback):
    """Ends a run once two epochs in a row complete without an optimizer step (it would loop forever).

    One empty epoch is legitimate: a run resumed from a checkpoint of an epoch's last batch may re-enter that
    epoch with nothing left in it.
    """

    def __init__(self) -> None:
        self._step_at_epoch_start = 0
        self._empty_epochs = 0

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._step_at_epoch_start = trainer.global_step

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._empty_epochs = self._empty_epochs + 1 if trainer.global_step == self._step_at_epoch_start else 0
        if self._empty_epochs >= 2:
            raise RuntimeError(
                f"epochs {trainer.current_epoch - 1} and {trainer.current_epoch} ended without an optimizer step: the "
                "train loader is empty or training_step returned None for every batch, so training would never "
                "reach max_steps"
            )


class ProgressPrinter(pl.Callback):
    """One line per optimizer step on stderr (the launching process's, in a rank process), for ``certify``."""

    def __init__(self, label: str, max_steps: int) -> None:
        self.label = label
        self.max_steps = max_steps
        self._shown = -1
        fd = os.environ.get(PROGRESS_FD_ENV)
        self._stream: TextIO = os.fdopen(int(fd), "w", closefd=False) if fd else sys.stderr

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._shown = trainer.global_step  # a resumed run shows its first own step first

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step != self._shown:
            self._shown = trainer.global_step
            print(f"\r  {self.label}: step {self._shown}/{self.max_steps}", end="", file=self._stream, flush=True)

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        print(file=self._stream, flush=True)
