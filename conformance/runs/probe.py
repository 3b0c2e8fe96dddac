"""Drive a data module through real Lightning fits with a probe model that only records which samples it gets.

One probe run trains a one-parameter model (loss ``0 * weight``, SGD with learning rate 0) on the adopter's data
module, with gradient accumulation matching the data module's global batch size, validating after every optimizer
step. It records every training micro-batch's sample ids with its global step and epoch, every validation batch's
ids, and the data module's state when training starts. It can save a checkpoint after a step and crash (as a
pre-empted job), or resume from a checkpoint. Runs with ``world_size > 1`` are real processes joined by gloo.

    python -m conformance.runs.probe SPEC.json    # one rank of a multi-process run (used internally)
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from typing_extensions import override

from conformance.runs.callbacks import InterruptAfterStep, Interruption, SimulatedPreemption, StallGuard
from conformance.runs.processes import RankLog, recipe_rank_main, run_recipe_ranks
from conformance.runs.trainer import build_trainer, quiet_lightning, seeded

__all__ = ["OWNED_TRAINER_KWARGS", "ProbeLog", "ProbePlan", "accumulation_steps", "run_probe"]

#: Trainer arguments a probe run sets itself; a recipe's ``trainer_kwargs()`` may not set them.
OWNED_TRAINER_KWARGS = frozenset({
    "devices", "strategy", "num_nodes", "max_epochs", "max_steps", "accumulate_grad_batches", "val_check_interval",
    "callbacks", "use_distributed_sampler", "enable_checkpointing", "default_root_dir",
})


@dataclass(frozen=True)
class ProbePlan:
    """One probe run: how long, on how many ranks, with how many loader workers, interrupted or resumed."""

    max_epochs: int
    world_size: int = 1
    num_workers: int | None = None
    stop_after_step: int | None = None
    checkpoint: str | None = None
    resume_from: str | None = None


@dataclass
class ProbeLog(RankLog):
    """What one rank of a probe run saw."""

    train: list[tuple[int, int, list[int]]] = field(default_factory=list)  # (global step, epoch, ids)
    valid: list[tuple[int, int, list[int]]] = field(default_factory=list)  # (global step, batch index, ids)
    start_state: dict[str, Any] | None = None


class SampleProbe(pl.LightningModule):
    """A model that trains nothing and records the sample ids of every batch it is given."""

    def __init__(self, sample_ids: Callable[[Any], list[int]], log: ProbeLog) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.sample_ids = sample_ids
        self.probe_log = log

    @override
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.probe_log.train.append((self.trainer.global_step, self.trainer.current_epoch, self.sample_ids(batch)))
        return self.weight * 0.0

    @override
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.probe_log.valid.append((self.trainer.global_step, batch_idx, self.sample_ids(batch)))

    @override
    def on_train_start(self) -> None:
        datamodule = self.trainer.datamodule
        self.probe_log.start_state = dict(datamodule.state_dict()) if datamodule is not None else None

    @override
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def run_probe(recipe: type, plan: ProbePlan) -> list[ProbeLog]:
    """Run ``plan`` on ``recipe`` (a class with ``make_datamodule``/``sample_ids`` hooks); one log per rank."""
    if plan.world_size == 1:
        return [_run_rank(recipe, plan, rank=0)]
    try:
        accumulation_steps(recipe.make_datamodule(), plan.world_size)  # fail fast, before starting processes
    except (AttributeError, ValueError) as exc:
        return [ProbeLog(rank=rank, error=f"{type(exc).__name__}: {exc}") for rank in range(plan.world_size)]
    return run_recipe_ranks(__name__, recipe, plan, plan.world_size, ProbeLog)


def _run_rank(recipe: type, plan: ProbePlan, rank: int) -> ProbeLog:
    log = ProbeLog(rank=rank)
    try:
        datamodule = recipe.make_datamodule()
        if plan.num_workers is not None:
            recipe.set_num_workers(datamodule, plan.num_workers)
        accumulation = accumulation_steps(datamodule, plan.world_size)
        callbacks: list[pl.Callback] = [StallGuard()]
        if plan.stop_after_step is not None:
            callbacks.append(InterruptAfterStep(Interruption(plan.stop_after_step, "crash", Path(plan.checkpoint))))
        with quiet_lightning(), seeded(0):
            trainer = build_trainer(recipe.trainer_kwargs(), owned=OWNED_TRAINER_KWARGS, run_defaults={
                "limit_val_batches": 2,
            }, run_settings={
                "devices": plan.world_size, "max_epochs": plan.max_epochs, "accumulate_grad_batches": accumulation,
                "val_check_interval": accumulation, "callbacks": callbacks, "use_distributed_sampler": False,
                "enable_checkpointing": False, "default_root_dir": tempfile.gettempdir(),
                **({"strategy": "ddp"} if plan.world_size > 1 else {}),
            })
            try:
                trainer.fit(SampleProbe(recipe.sample_ids, log), datamodule=datamodule, ckpt_path=plan.resume_from)
            except SimulatedPreemption:
                pass
    except Exception as exc:  # noqa: BLE001 - the data module's failure is a finding the checks report
        log.record_failure(exc)
    return log


def accumulation_steps(datamodule: Any, world_size: int) -> int:
    """Micro-batches per optimizer step on each of ``world_size`` ranks; raises if the sizes do not divide."""
    missing = [name for name in ("micro_batch_size", "global_batch_size") if not hasattr(datamodule, name)]
    if missing:
        raise AttributeError(
            f"{type(datamodule).__qualname__} has no {' or '.join(missing)}: data-module conformance needs "
            "Megatron-style batch sizes; set micro_batch_size and global_batch_size as attributes"
        )
    micro, global_ = int(datamodule.micro_batch_size), int(datamodule.global_batch_size)
    accumulation, remainder = divmod(global_, micro * world_size)
    if remainder or accumulation == 0:
        raise ValueError(
            f"global_batch_size {global_} is not a multiple of micro_batch_size x world size = {micro} x "
            f"{world_size}: this world size cannot split the global batch; choose sizes that divide"
        )
    return accumulation


if __name__ == "__main__":
    recipe_rank_main(_run_rank, ProbePlan)
