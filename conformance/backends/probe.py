"""Drive a data module through real Lightning fits with a probe model that only records which samples it gets.

One probe run trains a one-parameter model (loss ``0 * weight``, SGD with learning rate 0) on the adopter's data
module, with gradient accumulation matching the data module's global batch size, validating after every optimizer
step. It records every training micro-batch's sample ids with its global step and epoch, every validation batch's
ids, and the data module's state when training starts. It can save a checkpoint after a step and crash (as a
pre-empted job), or resume from a checkpoint. Runs with ``world_size > 1`` are real processes joined by gloo.

    python -m conformance.backends.probe SPEC.json    # one rank of a multi-process run (used internally)
"""

from __future__ import annotations

import dataclasses
import importlib
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from conformance.backends.lightning import (
    InterruptAfterStep,
    Interruption,
    SimulatedPreemption,
    StallGuard,
    quiet_lightning,
)
from conformance.backends.processes import importable_name, rank_main, resolve_name, run_ranks

__all__ = ["ProbeLog", "ProbePlan", "accumulation_steps", "run_probe"]


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
class ProbeLog:
    """What one rank of a probe run saw; JSON-serialisable."""

    rank: int = 0
    train: list[tuple[int, int, list[int]]] = field(default_factory=list)  # (global step, epoch, ids)
    valid: list[tuple[int, int, list[int]]] = field(default_factory=list)  # (global step, batch index, ids)
    start_state: dict[str, Any] | None = None
    error: str | None = None


class SampleProbe(pl.LightningModule):
    """A model that trains nothing and records the sample ids of every batch it is given."""

    def __init__(self, sample_ids: Callable[[Any], list[int]], log: ProbeLog) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.sample_ids = sample_ids
        self.probe_log = log

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.probe_log.train.append((self.trainer.global_step, self.trainer.current_epoch, self.sample_ids(batch)))
        return self.weight * 0.0

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.probe_log.valid.append((self.trainer.global_step, batch_idx, self.sample_ids(batch)))

    def on_train_start(self) -> None:
        datamodule = self.trainer.datamodule
        self.probe_log.start_state = dict(datamodule.state_dict()) if datamodule is not None else None

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
    return _run_ranks_in_processes(recipe, plan)


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
        trainer_kwargs = {
            "accelerator": "cpu", "devices": plan.world_size, "logger": False, "enable_checkpointing": False,
            "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
            "max_epochs": plan.max_epochs, "accumulate_grad_batches": accumulation,
            "val_check_interval": accumulation, "limit_val_batches": 2, "callbacks": callbacks,
            "use_distributed_sampler": False,
            "default_root_dir": tempfile.gettempdir(),
            **({"strategy": "ddp"} if plan.world_size > 1 else {}),
        }
        with quiet_lightning():
            pl.seed_everything(0, verbose=False)
            trainer = pl.Trainer(**trainer_kwargs)
            try:
                trainer.fit(SampleProbe(recipe.sample_ids, log), datamodule=datamodule, ckpt_path=plan.resume_from)
            except SimulatedPreemption:
                pass
    except Exception as exc:  # noqa: BLE001 - the data module's failure is a finding the checks report
        log.error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
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


# --- multi-process runs ----------------------------------------------------------------------------------------


def _run_ranks_in_processes(recipe: type, plan: ProbePlan) -> list[ProbeLog]:
    ranks = run_ranks("conformance.backends.probe", {"recipe": importable_name(recipe), "plan": dataclasses.asdict(plan)},
                      plan.world_size)
    return [ProbeLog(**process.result) if process.result is not None else ProbeLog(
        rank=process.rank, error=f"rank {process.rank} exited with {process.returncode} and wrote no log; its "
                                 f"output:\n{process.output}") for process in ranks]


def _main(spec: dict[str, Any]) -> dict[str, Any]:
    module_name, qualname = spec["recipe"].split(":")
    recipe = resolve_name(importlib.import_module(module_name), qualname)
    return dataclasses.asdict(_run_rank(recipe, ProbePlan(**spec["plan"]), rank=spec["rank"]))


if __name__ == "__main__":
    rank_main(_main)
