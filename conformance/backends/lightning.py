"""Drive one Lightning training run of a recipe: seeded, optionally recorded, interrupted or resumed.

A *recipe* is anything with the conformance hooks (``make_model``, ``make_datamodule`` and optionally
``trainer_kwargs``, ``make_callbacks``, ``consumed_samples``); the suites pass their test class.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.utilities.warnings import PossibleUserWarning

from conformance.records import RecordStore, TrainingRecorder

__all__ = [
    "KIT_OWNED_TRAINER_KWARGS",
    "InterruptAfterStep",
    "Interruption",
    "Recipe",
    "RunOutcome",
    "SimulatedPreemption",
    "StallGuard",
    "fit_run",
    "quiet_lightning",
]

#: Trainer arguments the kit sets itself for every run; a recipe's ``trainer_kwargs()`` may not set them.
KIT_OWNED_TRAINER_KWARGS = frozenset({"max_steps", "max_epochs", "callbacks", "default_root_dir"})

#: Trainer defaults that keep conformance runs quiet and cheap; a recipe's ``trainer_kwargs()`` overrides them.
#: ``enable_checkpointing`` follows whether the recipe's callbacks include a checkpoint callback.
TRAINER_DEFAULTS: dict[str, Any] = {
    "accelerator": "cpu",
    "devices": 1,
    "logger": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "num_sanity_val_steps": 0,
}


class Recipe(Protocol):
    """The hooks a run needs from the code under test."""

    def make_model(self) -> pl.LightningModule: ...
    def make_datamodule(self) -> pl.LightningDataModule: ...
    def trainer_kwargs(self) -> dict[str, Any]: ...
    def make_callbacks(self) -> list[pl.Callback]: ...
    def consumed_samples(self, trainer: pl.Trainer) -> int | None: ...


class SimulatedPreemption(RuntimeError):
    """Raised by the kit right after the interrupted run's checkpoint, as a preempted job would die."""


@dataclass(frozen=True)
class Interruption:
    """Stop a run right after optimizer step ``step``: save ``checkpoint``, then stop cleanly or crash."""

    step: int
    style: Literal["clean", "crash"]
    checkpoint: Path


@dataclass(frozen=True)
class RunOutcome:
    """What one run left behind: its records, the error that ended it (if unexpected) and its wall time."""

    name: str
    records: RecordStore
    error: str | None
    seconds: float


class InterruptAfterStep(pl.Callback):
    """Saves a checkpoint after optimizer step ``step`` (where ``ModelCheckpoint`` would) and ends the run."""

    def __init__(self, interruption: Interruption) -> None:
        self.interruption = interruption
        self._step_at_batch_start = -1

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._step_at_batch_start = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        stepped = trainer.global_step != self._step_at_batch_start
        if not stepped or trainer.global_step != self.interruption.step:
            return
        trainer.save_checkpoint(self.interruption.checkpoint)
        if self.interruption.style == "crash":
            raise SimulatedPreemption(f"simulated preemption after optimizer step {self.interruption.step}")
        trainer.should_stop = True


class StallGuard(pl.Callback):
    """Ends a run once two epochs in a row complete without an optimizer step (it would loop forever).

    One empty epoch is legitimate: a run resumed from a checkpoint of an epoch's last batch may re-enter that
    epoch with nothing left in it.
    """

    def __init__(self) -> None:
        self._step_at_epoch_start = 0
        self._empty_epochs = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._step_at_epoch_start = trainer.global_step

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._empty_epochs = self._empty_epochs + 1 if trainer.global_step == self._step_at_epoch_start else 0
        if self._empty_epochs >= 2:
            raise RuntimeError(
                f"epochs {trainer.current_epoch - 1} and {trainer.current_epoch} ended without an optimizer step: the "
                "train loader is empty or training_step returned None for every batch, so training would never "
                "reach max_steps"
            )


class ProgressPrinter(pl.Callback):
    """One line per optimizer step on stderr, for the ``certify`` command."""

    def __init__(self, label: str, max_steps: int) -> None:
        self.label = label
        self.max_steps = max_steps
        self._shown = -1

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step != self._shown:
            self._shown = trainer.global_step
            print(f"\r  {self.label}: step {self._shown}/{self.max_steps}", end="", file=sys.stderr, flush=True)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        print(file=sys.stderr, flush=True)


def fit_run(recipe: Recipe, name: str, work_dir: Path, *, max_steps: int, seed: int, record: bool = True,
            interruption: Interruption | None = None, resume_from: Path | None = None) -> RunOutcome:
    """Seed, build the recipe afresh and ``fit`` it; an interruption's own preemption is not an error."""
    run_dir = work_dir / name
    run_dir.mkdir(parents=True, exist_ok=False)
    store = RecordStore(run_dir / "records")
    callbacks = [*recipe.make_callbacks(), StallGuard()]
    if record:
        callbacks.append(TrainingRecorder(store, recipe.consumed_samples))
    if interruption is not None:
        callbacks.append(InterruptAfterStep(interruption))
    if os.environ.get("CONFORMANCE_PROGRESS"):
        callbacks.append(ProgressPrinter(name, max_steps))
    started = time.perf_counter()
    error = None
    with quiet_lightning(), _seed_environment_restored():
        try:
            pl.seed_everything(seed, verbose=False)
            model = recipe.make_model()
            datamodule = recipe.make_datamodule()
            has_checkpointing = any(isinstance(callback, Checkpoint) for callback in callbacks)
            kwargs = {**TRAINER_DEFAULTS, "enable_checkpointing": has_checkpointing, **recipe.trainer_kwargs()}
            trainer = pl.Trainer(**kwargs, max_steps=max_steps, max_epochs=-1, callbacks=callbacks,
                                 default_root_dir=run_dir)
            if trainer.world_size != 1:
                raise NotImplementedError(
                    f"this run has world size {trainer.world_size}; stop-and-go runs are single-process for now "
                    "(records are not yet kept per rank): set devices=1 in trainer_kwargs()"
                )
            trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
        except SimulatedPreemption:
            pass
        except Exception as exc:  # noqa: BLE001 - the recipe's failure is a finding, reported by the checks
            error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
    return RunOutcome(name, store, error, time.perf_counter() - started)


@contextlib.contextmanager
def _seed_environment_restored() -> Iterator[None]:
    """``seed_everything`` exports the seed to the environment; keep that from leaking past a kit run."""
    saved = {name: os.environ.get(name) for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence Lightning's info chatter and generic performance hints during kit runs; other warnings pass."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=PossibleUserWarning)
            # Lightning 2.6 on torch 2.13 warns about its own pytree use on every fit; nothing a recipe can fix.
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
            yield
    finally:
        logger.setLevel(level)
