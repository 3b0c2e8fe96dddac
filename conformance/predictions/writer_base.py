"""What every streaming prediction writer of the kit shares: which rank writes, the sample ids of each batch,
skipping batches a crashed run already wrote, and the per-rank manifest that marks a finished job.

Subclasses implement :meth:`StreamingWriter.completed_batches`, :meth:`StreamingWriter.write_batch`,
:meth:`StreamingWriter.finish` and :meth:`StreamingWriter.abort`. Lightning is always told to call the writer per
batch, so it never buffers predictions itself (its epoch interval keeps every prediction in memory).
"""

from __future__ import annotations

from collections.abc import Callable, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from typing_extensions import override

from conformance._wrapping import unwrap_method, wrap_method
from conformance.predictions.atomic import is_temporary
from conformance.predictions.collate import CollationDims, flatten_prediction, num_rows
from conformance.predictions.file_names import PredictionFile, file_name, parse_file_name
from conformance.predictions.manifest import rank_manifest_path, write_rank_manifest
from conformance.predictions.ranks import WriterRank, from_replica_writer, writer_rank
from conformance.sample_ids import default_sample_ids, ids_as_list

__all__ = ["FlatBatch", "StreamingWriter"]

SampleIds = Callable[[Any], "list[int] | torch.Tensor"]


@dataclass(frozen=True)
class FlatBatch:
    """One batch's prediction as stored: kind, flat tensors, sample ids, and where it came from."""

    kind: str  # "dict" or "tensor"
    tensors: dict[str, torch.Tensor]
    sample_ids: torch.Tensor  # int64, one per row
    batch_idx: int
    dataloader_idx: int


class StreamingWriter(BasePredictionWriter):
    """Base of the kit's writers; see the module docstring for the contract of subclasses."""

    #: Re-running a crashed job into the same folder completes it, skipping the batches already written.
    supports_resume: ClassVar[bool] = True

    def __init__(self, output_dir: str | Path, *, sample_ids: SampleIds | None = None,
                 save_all_model_parallel_ranks: bool = False, batch_dim_key_defaults: dict[str, int] | None = None,
                 seq_dim_key_defaults: dict[str, int] | None = None, fsync: bool = False) -> None:
        super().__init__("batch")
        self.output_dir = Path(output_dir)
        self.sample_ids = sample_ids
        self.save_all_model_parallel_ranks = save_all_model_parallel_ranks
        defaults = CollationDims()
        self.dims = CollationDims(
            defaults.batch_dim_key_defaults if batch_dim_key_defaults is None else dict(batch_dim_key_defaults),
            defaults.seq_dim_key_defaults if seq_dim_key_defaults is None else dict(seq_dim_key_defaults),
        )
        self.fsync = fsync
        self.rank = WriterRank(0, 0, 1, writes=True)
        self._num_dataloaders = 1
        self._completed: set[tuple[int, int]] = set()
        self._skip_current = False
        self._started = False
        self._written: dict[int, int] = {}

    # --- subclass contract -------------------------------------------------------------------------------------
    def completed_batches(self) -> set[tuple[int, int]]:
        """``(dataloader_idx, batch_idx)`` of batches a previous, interrupted run of this rank already wrote."""
        raise NotImplementedError

    def write_batch(self, batch: FlatBatch) -> None:
        """Store one batch."""
        raise NotImplementedError

    def finish(self) -> None:
        """Complete the output after the last batch (epoch files, closing shards)."""
        raise NotImplementedError

    def abort(self, exception: BaseException) -> None:
        """Leave valid output of the finished batches after ``exception`` ended the run."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """What the rank manifest records about this writer's configuration."""
        return {}

    # --- names -------------------------------------------------------------------------------------------------
    def name(self, suffix: str, *, dataloader_idx: int | None = None, batch_idx: int | None = None,
             shard: int | None = None) -> str:
        """This rank's file name; the dataloader index appears only when there are several dataloaders."""
        shown = dataloader_idx if self._num_dataloaders > 1 else None
        return file_name(PredictionFile(self.rank.global_rank, self.rank.dp_rank, suffix, shown, batch_idx, shard))

    @property
    def manifest_path(self) -> Path:
        return rank_manifest_path(self.output_dir, self.rank.global_rank, self.rank.dp_rank)

    # --- Lightning hooks ---------------------------------------------------------------------------------------
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "predict":
            return
        self.rank = writer_rank(trainer.global_rank, trainer.world_size,
                                save_all_model_parallel_ranks=self.save_all_model_parallel_ranks)
        self._written = {}
        self._completed = set()
        self._started = False
        if self.rank.writes:
            self._refuse_finished_job()
            self._remove_own_temporary_files()

    @override
    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = True
        self._num_dataloaders = len(_dataloaders(trainer))
        if self.rank.writes:
            self._completed = self.completed_batches()
        self._completed = from_replica_writer(self._completed, self.rank)
        if self._completed:
            wrap_method(pl_module, "predict_step", self._skip_finished_batch)

    @override
    def on_predict_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int,
                               dataloader_idx: int = 0) -> None:
        self._skip_current = (dataloader_idx, batch_idx) in self._completed

    @override
    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        if not self.rank.writes or (dataloader_idx, batch_idx) in self._completed:
            return
        flat = flatten_prediction(prediction, f"the prediction of batch {batch_idx}")
        if flat is None:
            return
        kind, tensors = flat
        rows = num_rows(tensors, self.dims, f"the prediction of batch {batch_idx}")
        ids = self._sample_ids(prediction, batch_indices, batch, batch_idx, rows)
        self.write_batch(FlatBatch(kind, tensors, ids, batch_idx, dataloader_idx))
        self._written[dataloader_idx] = self._written.get(dataloader_idx, 0) + 1

    @override
    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.rank.writes:
            self.finish()

    @override
    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        unwrap_method(pl_module, "predict_step")
        if self.rank.writes:
            self._write_rank_manifest(trainer)

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Lightning skips every predict hook when there is no batch at all: finish the (empty) output here."""
        if stage == "predict" and self.rank.writes and not self._started:
            self._num_dataloaders = max(1, len(_dataloaders(trainer)))
            self.finish()
            self._write_rank_manifest(trainer)

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        unwrap_method(pl_module, "predict_step")
        if self.rank.writes and trainer.state.stage is not None and trainer.state.stage.value == "predict":
            self.abort(exception)

    # --- helpers -----------------------------------------------------------------------------------------------
    def _skip_finished_batch(self, predict_step: Callable[..., Any], args: tuple[Any, ...],
                             kwargs: dict[str, Any]) -> Any:
        """``predict_step`` that returns None without computing for a batch a previous run already wrote."""
        return None if self._skip_current else predict_step(*args, **kwargs)

    def _sample_ids(self, prediction: Any, batch_indices: Any, batch: Any, batch_idx: int, rows: int) -> torch.Tensor:
        """The batch's sample ids: the ``sample_ids`` callable, else Lightning's sampler indices, else an id key."""
        where = f"batch {batch_idx}"
        if self.sample_ids is not None:
            ids = ids_as_list(self.sample_ids(prediction), where=f"sample_ids(prediction) of {where}")
        elif batch_indices:
            ids = ids_as_list(list(batch_indices), where=f"the sampler indices of {where}")
        else:
            ids = default_sample_ids(prediction if isinstance(prediction, dict) else batch)
        if len(ids) != rows:
            raise ValueError(f"{where} has {rows} prediction rows but {len(ids)} sample ids: give the writer a "
                             "sample_ids callable that returns one dataset index per predicted sample")
        return torch.tensor(ids, dtype=torch.int64)

    def _refuse_finished_job(self) -> None:
        if self.manifest_path.exists():
            raise FileExistsError(
                f"{self.manifest_path} says this rank's prediction job in {self.output_dir} already completed; "
                "predicting again would overwrite it: choose an empty output_dir or delete the old predictions"
            )

    def _remove_own_temporary_files(self) -> None:
        """Temporary files of this rank are unfinished writes of a killed run: never valid, so removed."""
        if not self.output_dir.exists():
            return
        for path in self.output_dir.rglob("*"):
            parsed = parse_file_name(Path(path.name.split("-", 2)[-1])) if is_temporary(path) else None
            if parsed is not None and (parsed.rank, parsed.dp_rank) == (self.rank.global_rank, self.rank.dp_rank):
                path.unlink()

    def _write_rank_manifest(self, trainer: pl.Trainer) -> None:
        dataloaders = _dataloaders(trainer)
        write_rank_manifest(
            self.output_dir, global_rank=self.rank.global_rank, dp_rank=self.rank.dp_rank, dp_size=self.rank.dp_size,
            dataloaders={index: {"num_samples": _dataset_size(loader), "batches_written": self._written.get(index, 0)}
                         for index, loader in enumerate(dataloaders)},
            writer=f"{type(self).__module__}.{type(self).__qualname__}", resumed_batches=len(self._completed),
            fsync=self.fsync, **self.settings())


def _dataloaders(trainer: pl.Trainer) -> list[Any]:
    loaders = trainer.predict_dataloaders
    if loaders is None:
        return []
    return list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]


def _dataset_size(loader: Any) -> int | None:
    dataset = getattr(loader, "dataset", None)
    return len(dataset) if isinstance(dataset, Sized) else None
