"""Drive ``trainer.predict`` of a recipe with its prediction writer, observed by the kit; in this process or in
fresh ones (two ranks joined by gloo, a run killed mid-write, a run whose memory is sampled).

The observer (:class:`PredictObserver`) comes after the writer in the callback list, so it sees each batch once
the writer has handled it. It records which batches were computed and how many bytes they predicted, samples
the resident memory, and can inject failures: a Python exception before a batch, or death mid-write (the file
size limit is lowered before a batch, and SIGXFSZ, whose default action kills the process, is re-armed).

    python -m conformance.runs.lightning.predict SPEC.json    # one rank of a run in a fresh process (used internally)
"""

from __future__ import annotations

import os
import resource
import signal
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from typing_extensions import override

from conformance.predictions.collate import flatten_prediction
from conformance.predictions.ranks import writer_rank
from conformance.runs.lightning.repeated_predict import repeat_predict_loaders
from conformance.runs.lightning.trainer import build_trainer, quiet_lightning, rank_process_strategy, seeded
from conformance.runs.processes import RankLog, process_group_timeout, recipe_rank_main
from conformance.runs.rank_jobs import run_recipe_ranks
from conformance.training import recordfile

__all__ = ["OWNED_TRAINER_KWARGS", "InjectedPredictError", "PredictLog", "PredictObserver", "PredictPlan",
           "load_memory", "run_predict"]

#: Trainer arguments a predict run sets itself; a recipe's ``trainer_kwargs()`` may not set them. (A recipe may set
#: ``strategy``: a model-parallel one takes every run's ranks in groups of the suite's ``model_parallel_size``.)
OWNED_TRAINER_KWARGS = frozenset({"devices", "callbacks", "default_root_dir", "num_nodes"})

_PAGE = os.sysconf("SC_PAGE_SIZE")


class InjectedPredictError(RuntimeError):
    """Raised by the kit before a batch, to check what a failing predict job leaves behind."""


@dataclass(frozen=True)
class PredictPlan:
    """One predict run: where it writes, on how many ranks, with which writer changes and injected failure."""

    output_dir: str
    world_size: int = 1
    writer_changes: dict[str, Any] = field(default_factory=dict)
    keep_in_memory: bool = True  # return_predictions=True, saved beside the output for comparison
    raise_before_batch: int | None = None
    kill_during_batch: int | None = None
    sample_memory: bool = False
    memory_datamodule: bool = False  # use the recipe's make_memory_datamodule()
    loader_passes: int = 1  # how many times over the predict loaders' batches (see repeat_predict_loaders)
    in_subprocess: bool = False


@dataclass
class PredictLog(RankLog):
    """What one rank of a predict run did."""

    computed_batches: list[int] = field(default_factory=list)  # batches whose prediction was not None
    payload_bytes: list[int] = field(default_factory=list)
    rss_bytes: list[int] = field(default_factory=list)  # after each batch, when sampled
    num_samples: int | None = None
    #: Why a predict loader could not be repeated the plan's ``loader_passes`` times (empty: each was).
    unrepeated_loaders: list[str] = field(default_factory=list)
    memory_file: str | None = None  # the in-memory predictions (recordfile encoding)
    #: This rank's model replica (its data-parallel rank), and whether it is the replica's first rank: the one
    #: rank of a tensor/context-parallel group whose copy of the outputs is written (Megatron's parallel state).
    data_parallel_rank: int = 0
    replica_first: bool = True


class PredictObserver(pl.Callback):
    """Records each batch after the writer has handled it; injects the plan's failure."""

    def __init__(self, plan: PredictPlan, log: PredictLog) -> None:
        self.plan = plan
        self.record = log

    @override
    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loaders = trainer.predict_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        dataset = getattr(loader, "dataset", None)
        self.record.num_samples = len(dataset) if hasattr(dataset, "__len__") else None
        place = writer_rank(trainer.global_rank, trainer.world_size)
        self.record.data_parallel_rank, self.record.replica_first = place.dp_rank, place.first_of_replica

    @override
    def on_predict_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int,
                               dataloader_idx: int = 0) -> None:
        if batch_idx == self.plan.raise_before_batch:
            raise InjectedPredictError(f"injected failure before predict batch {batch_idx}")
        if batch_idx == self.plan.kill_during_batch:
            limit = max(1, min(self.record.payload_bytes or [2]) // 2)
            signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it by default: writes would just fail
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    @override
    def on_predict_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        flat = flatten_prediction(outputs, f"the prediction of batch {batch_idx}")
        if flat is not None:
            self.record.computed_batches.append(batch_idx)
            self.record.payload_bytes.append(sum(t.numel() * t.element_size() for t in flat[1].values()))
        if self.plan.sample_memory:
            with open("/proc/self/statm") as statm:
                self.record.rss_bytes.append(int(statm.read().split()[1]) * _PAGE)


def run_predict(recipe: type, plan: PredictPlan) -> list[PredictLog]:
    """Run ``plan`` on ``recipe`` (a class with the prediction hooks); one log per rank."""
    if plan.world_size == 1 and not plan.in_subprocess:
        return [_run_rank(recipe, plan, rank=0)]
    return run_recipe_ranks(__name__, recipe, plan, plan.world_size, PredictLog)


def load_memory(log: PredictLog) -> list[Any]:
    """The in-memory predictions a run returned (``return_predictions=True``), batch by batch."""
    if log.memory_file is None:
        return []
    return recordfile.decode(Path(log.memory_file).read_bytes())


def _run_rank(recipe: type, plan: PredictPlan, rank: int) -> PredictLog:
    log = PredictLog(rank=rank)
    try:
        with quiet_lightning(), seeded(0), warnings.catch_warnings():
            # a resumed run's writer skips finished batches, whose predict_step then returns None
            warnings.filterwarnings("ignore", message="predict returned None")
            model = recipe.make_model()
            datamodule = recipe.make_memory_datamodule() if plan.memory_datamodule else recipe.make_datamodule()
            if plan.loader_passes > 1:
                log.unrepeated_loaders = repeat_predict_loaders(datamodule, plan.loader_passes)
            writer = recipe.make_writer(Path(plan.output_dir))
            if plan.writer_changes:
                writer = writer.replace(**plan.writer_changes)
            recipe_kwargs = dict(recipe.trainer_kwargs())
            strategy = recipe_kwargs.get("strategy", "auto")
            if plan.world_size > 1 or strategy != "auto":  # a recipe's "ddp_spawn" on one rank launches nothing
                recipe_kwargs["strategy"] = rank_process_strategy(strategy, process_group_timeout())
            trainer = build_trainer(recipe_kwargs, owned=OWNED_TRAINER_KWARGS, run_settings={
                "devices": plan.world_size, "callbacks": [writer, PredictObserver(plan, log)],
                "default_root_dir": plan.output_dir + ".trainer",
            })
            predictions = trainer.predict(model, datamodule=datamodule, return_predictions=plan.keep_in_memory)
        if plan.keep_in_memory:
            log.memory_file = f"{plan.output_dir}.memory__rank_{rank}"
            Path(log.memory_file).write_bytes(recordfile.encode(list(predictions or [])))
    except Exception as exc:  # noqa: BLE001 - the recipe's failure is a finding the checks report
        log.record_failure(exc)
    return log


if __name__ == "__main__":
    torch.set_num_threads(1)
    recipe_rank_main(_run_rank, PredictPlan)
