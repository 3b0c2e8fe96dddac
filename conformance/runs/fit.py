"""Drive one Lightning training run of a recipe: seeded, optionally recorded, interrupted or resumed.

A *recipe* is anything with the conformance hooks (``make_model``, ``make_datamodule`` and optionally
``trainer_kwargs``, ``make_callbacks``, ``consumed_samples``); the suites pass their test class.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Checkpoint

from conformance.runs.callbacks import (
    InterruptAfterStep,
    Interruption,
    ProgressPrinter,
    SimulatedPreemption,
    StallGuard,
)
from conformance.runs.processes import failure_text
from conformance.runs.trainer import build_trainer, quiet_lightning, seeded
from conformance.training.records import RecordStore, TrainingRecorder

__all__ = ["OWNED_TRAINER_KWARGS", "Recipe", "RunOutcome", "fit_run"]

#: Trainer arguments a fit run sets itself; a recipe's ``trainer_kwargs()`` may not set them.
OWNED_TRAINER_KWARGS = frozenset({"max_steps", "max_epochs", "callbacks", "default_root_dir"})


class Recipe(Protocol):
    """The hooks a run needs from the code under test."""

    def make_model(self) -> pl.LightningModule: ...
    def make_datamodule(self) -> pl.LightningDataModule: ...
    def trainer_kwargs(self) -> dict[str, Any]: ...
    def make_callbacks(self) -> list[pl.Callback]: ...
    def consumed_samples(self, trainer: pl.Trainer) -> int | None: ...


@dataclass(frozen=True)
class RunOutcome:
    """What one run left behind: its records, the error that ended it (if unexpected) and its wall time."""

    name: str
    records: RecordStore
    error: str | None
    seconds: float
    rank: int = 0


def fit_run(recipe: Recipe, name: str, work_dir: Path, *, max_steps: int, seed: int, record: bool = True,
            interruption: Interruption | None = None, resume_from: Path | None = None,
            trainer_defaults: Mapping[str, Any] | None = None) -> RunOutcome:
    """Seed, build the recipe afresh and ``fit`` it; an interruption's own preemption is not an error.

    ``trainer_defaults`` are Trainer arguments the recipe's ``trainer_kwargs()`` may override.
    """
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
    with quiet_lightning(), seeded(seed):
        try:
            model = recipe.make_model()
            datamodule = recipe.make_datamodule()
            has_checkpointing = any(isinstance(callback, Checkpoint) for callback in callbacks)
            trainer = build_trainer(recipe.trainer_kwargs(), owned=OWNED_TRAINER_KWARGS,
                                    run_defaults={"enable_checkpointing": has_checkpointing, **(trainer_defaults or {})},
                                    run_settings={"max_steps": max_steps, "max_epochs": -1, "callbacks": callbacks,
                                                  "default_root_dir": run_dir})
            if trainer.world_size != 1:
                raise NotImplementedError(
                    f"this run has world size {trainer.world_size}; stop-and-go runs are single-process for now "
                    "(records are not yet kept per rank): set devices=1 in trainer_kwargs()"
                )
            trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
        except SimulatedPreemption:
            pass
        except Exception as exc:  # noqa: BLE001 - the recipe's failure is a finding, reported by the checks
            error = failure_text(exc)
    return RunOutcome(name, store, error, time.perf_counter() - started)
