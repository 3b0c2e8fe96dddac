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
import json
import os
import socket
import subprocess
import sys
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

__all__ = ["ProbeLog", "ProbePlan", "accumulation_steps", "importable_name", "run_probe"]


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


def importable_name(recipe: type) -> str:
    """``module:qualname`` of the class in ``recipe``'s MRO that defines ``make_datamodule``, if importable."""
    owner = next((cls for cls in recipe.__mro__ if "make_datamodule" in vars(cls)), recipe)
    for cls in (recipe, owner):
        module = sys.modules.get(cls.__module__)
        if module is not None and _resolve(module, cls.__qualname__) is cls and cls.__module__ != "__main__":
            return f"{cls.__module__}:{cls.__qualname__}"
    raise TypeError(
        f"{recipe.__qualname__}: multi-process checks start fresh processes that import the class defining "
        f"make_datamodule ({owner.__module__}.{owner.__qualname__}), but it cannot be imported by that name; define "
        "it at module level in an importable module"
    )


def _resolve(module: Any, qualname: str) -> Any:
    value = module
    for part in qualname.split("."):
        value = getattr(value, part, None)
    return value


def _run_ranks_in_processes(recipe: type, plan: ProbePlan) -> list[ProbeLog]:
    name = importable_name(recipe)
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="conformance-ranks-") as folder:
        processes = []
        for rank in range(plan.world_size):
            spec = Path(folder) / f"rank{rank}.json"
            spec.write_text(json.dumps({"recipe": name, "plan": dataclasses.asdict(plan), "rank": rank,
                                        "output": str(Path(folder) / f"log{rank}.json")}))
            env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE":
                   str(plan.world_size), "RANK": str(rank), "LOCAL_RANK": str(rank), "GROUP_RANK": "0",
                   "LOCAL_WORLD_SIZE": str(plan.world_size), "NODE_RANK": "0",
                   "PYTHONPATH": os.pathsep.join([*sys.path])}
            processes.append(subprocess.Popen([sys.executable, "-m", "conformance.backends.probe", str(spec)],
                                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outputs = [process.communicate(timeout=300)[0] for process in processes]
        logs = []
        for rank, (process, output) in enumerate(zip(processes, outputs)):
            path = Path(folder) / f"log{rank}.json"
            if path.exists():
                logs.append(ProbeLog(**json.loads(path.read_text())))
            else:
                logs.append(ProbeLog(rank=rank, error=f"rank {rank} exited with {process.returncode} and wrote no "
                                                      f"log; its output:\n{output[-4000:]}"))
        return logs


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    module_name, qualname = spec["recipe"].split(":")
    recipe = _resolve(importlib.import_module(module_name), qualname)
    log = _run_rank(recipe, ProbePlan(**spec["plan"]), rank=spec["rank"])
    Path(spec["output"]).write_text(json.dumps(dataclasses.asdict(log)))


if __name__ == "__main__":
    _main(sys.argv[1])
