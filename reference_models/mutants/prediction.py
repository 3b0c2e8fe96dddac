"""Deliberately broken prediction writers, each a realistic bug, under PredictionWriterConformance.

The conformance classes are defined at module level (the two-rank, kill and memory runs start processes that
import them by name); this module is not collected as tests. ``PREDICTION_MUTANTS`` says what each must fail.
"""

from __future__ import annotations

import unittest
from pathlib import Path
from typing import Any

import torch

from conformance import ParquetPredictionWriter, PredictionWriter, PredictionWriterConformance
from conformance.predictions.atomic import atomic_write
from conformance.predictions.file_names import PredictionFile, file_name
from conformance.predictions.formats import tensor_entry
from conformance.predictions.writer_base import FlatBatch
from reference_models.mutants import Mutant
from reference_models.recipes import PredictionRecipe

# --- broken writers -----------------------------------------------------------------------------------------------


class DropsLastPartialBatch(PredictionWriter):
    """Skips a batch smaller than the first one ("incomplete batches are padding")."""

    def write_batch(self, batch: FlatBatch) -> None:
        self._full_rows = max(getattr(self, "_full_rows", 0), len(batch.sample_ids))
        if len(batch.sample_ids) == self._full_rows:
            super().write_batch(batch)


class BuffersAllBatches(PredictionWriter):
    """Keeps every batch in memory and writes them all at the end (the seed's epoch writer)."""

    def write_batch(self, batch: FlatBatch) -> None:
        self._buffered = [*getattr(self, "_buffered", []), batch]

    def finish(self) -> None:
        for batch in getattr(self, "_buffered", []):
            super().write_batch(batch)
        self._buffered = []
        super().finish()


class SharesFileNamesAcrossRanks(PredictionWriter):
    """Leaves the rank out of its file names: ranks overwrite each other's batch files."""

    def name(self, suffix: str, *, dataloader_idx: int | None = None, batch_idx: int | None = None,
             shard: int | None = None) -> str:
        return file_name(PredictionFile(0, 0, suffix, None, batch_idx, shard))


class RunningOffsetIds(PredictionWriter):
    """Numbers rows by a running offset on each rank instead of their dataset index (the seed's parquet writer)."""

    def _sample_ids(self, prediction: Any, batch_indices: Any, batch: Any, batch_idx: int, rows: int) -> torch.Tensor:
        self._offset = getattr(self, "_offset", 0)
        ids = torch.arange(self._offset, self._offset + rows, dtype=torch.int64)
        self._offset += rows
        return ids


class NonAtomicWrites(PredictionWriter):
    """Writes batch files in place: a kill mid-write leaves a truncated file under the final name."""

    def write_batch(self, batch: FlatBatch) -> None:
        entries = [tensor_entry(key, tensor) for key, tensor in batch.tensors.items()]
        entries += [tensor_entry("batch_idx", torch.tensor([batch.batch_idx])), tensor_entry("sample_ids",
                                                                                             batch.sample_ids)]
        path = self._batch_path(batch.dataloader_idx, batch.batch_idx)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as stream:
            self.file_format.write(stream, entries, self._metadata(batch.kind, batch.dataloader_idx))


class DropsBatchIdx(PredictionWriter):
    """Stores predictions without their batch_idx."""

    def write_batch(self, batch: FlatBatch) -> None:
        entries = [tensor_entry(key, tensor) for key, tensor in batch.tensors.items()]
        entries.append(tensor_entry("sample_ids", batch.sample_ids))
        with atomic_write(self._batch_path(batch.dataloader_idx, batch.batch_idx)) as stream:
            self.file_format.write(stream, entries, self._metadata(batch.kind, batch.dataloader_idx))


class PicklesNumpyArrays(PredictionWriter):
    """Saves predictions as numpy arrays with torch.save: loading them needs full unpickling."""

    def write_batch(self, batch: FlatBatch) -> None:
        content = {key: tensor.numpy() for key, tensor in batch.tensors.items()}
        content.update(batch_idx=torch.tensor([batch.batch_idx]), sample_ids=batch.sample_ids)
        with atomic_write(self._batch_path(batch.dataloader_idx, batch.batch_idx)) as stream:
            torch.save(content, stream)


class ReversesIdsInEpochFiles(PredictionWriter):
    """Its epoch collation pairs each batch's rows with its sample ids in reverse order."""

    def write_batch(self, batch: FlatBatch) -> None:
        if self.writes_epochs:
            batch = FlatBatch(batch.kind, batch.tensors, batch.sample_ids.flip(0), batch.batch_idx,
                              batch.dataloader_idx)
        super().write_batch(batch)


class SubdirByModulo(PredictionWriter):
    """Spreads batch files over subdirs round-robin (``batch_idx % n``) instead of ``batch_idx // n``."""

    def _batch_path(self, dataloader_idx: int, batch_idx: int) -> Path:
        path = super()._batch_path(dataloader_idx, batch_idx)
        if self.files_per_subdir is None:
            return path
        return self.output_dir / f"subdir_{batch_idx % self.files_per_subdir}" / path.name


class ParquetWithoutFooterOnError(ParquetPredictionWriter):
    """Does not close its shard when the job fails: no footer, so nothing finished is readable."""

    def abort(self, exception: BaseException) -> None:
        pass


class StoresBfloat16(PredictionWriter):
    """Halves file sizes by storing floating-point predictions as bfloat16."""

    def write_batch(self, batch: FlatBatch) -> None:
        narrowed = {key: tensor.to(torch.bfloat16) if tensor.is_floating_point() else tensor
                    for key, tensor in batch.tensors.items()}
        super().write_batch(FlatBatch(batch.kind, narrowed, batch.sample_ids, batch.batch_idx, batch.dataloader_idx))


# --- the conformance classes ------------------------------------------------------------------------------------


def _conformance_class(name: str, writer: type) -> type[unittest.TestCase]:
    """The module-level conformance class ``Mutant_<name>`` of the reference recipe with ``writer``."""
    attributes = {"__module__": __name__, "__qualname__": f"Mutant_{name}",
                  "make_writer": classmethod(lambda cls, output_dir: writer(output_dir))}
    return type(f"Mutant_{name}", (PredictionRecipe, PredictionWriterConformance, unittest.TestCase), attributes)


Mutant_last_partial_batch_dropped = _conformance_class("last_partial_batch_dropped", DropsLastPartialBatch)
Mutant_buffers_all_batches = _conformance_class("buffers_all_batches", BuffersAllBatches)
Mutant_ranks_share_file_names = _conformance_class("ranks_share_file_names", SharesFileNamesAcrossRanks)
Mutant_running_offset_ids = _conformance_class("running_offset_ids", RunningOffsetIds)
Mutant_non_atomic_writes = _conformance_class("non_atomic_writes", NonAtomicWrites)
Mutant_batch_idx_dropped = _conformance_class("batch_idx_dropped", DropsBatchIdx)
Mutant_pickled_numpy = _conformance_class("pickled_numpy", PicklesNumpyArrays)
Mutant_epoch_ids_reversed = _conformance_class("epoch_ids_reversed", ReversesIdsInEpochFiles)
Mutant_subdir_by_modulo = _conformance_class("subdir_by_modulo", SubdirByModulo)
Mutant_parquet_no_footer_on_error = _conformance_class("parquet_no_footer_on_error", ParquetWithoutFooterOnError)
Mutant_bfloat16_storage = _conformance_class("bfloat16_storage", StoresBfloat16)


_ALL = frozenset(PredictionWriterConformance.check_names())
_READ_BACK = frozenset({"test_predictions_equal_in_memory", "test_every_sample_exactly_once",
                        "test_batch_and_epoch_intervals_agree", "test_files_per_subdir",
                        "test_exception_leaves_valid_output", "test_resume_after_crash"})

PREDICTION_MUTANTS: tuple[Mutant, ...] = (
    Mutant("last_partial_batch_dropped", "a batch smaller than the first is not written",
           Mutant_last_partial_batch_dropped,
           kills={"test_predictions_equal_in_memory": "have no prediction",
                  "test_every_sample_exactly_once": "have no prediction"},
           may_also_fail=_READ_BACK | {"test_file_layout"}),
    Mutant("buffers_all_batches", "every batch is kept in memory until the end", Mutant_buffers_all_batches,
           kills={"test_memory_flat": "the writer keeps predictions in memory"},
           may_also_fail=frozenset({"test_exception_leaves_valid_output", "test_resume_after_crash"})),
    Mutant("ranks_share_file_names", "two ranks write the same file names", Mutant_ranks_share_file_names,
           kills={"test_every_sample_exactly_once": "samples have no prediction",  # overwritten by the other rank
                  "test_file_layout": "no data file carries rank 1"}),
    Mutant("running_offset_ids", "rows numbered by a running offset per rank", Mutant_running_offset_ids,
           kills={"test_every_sample_exactly_once": "were written more than once"},
           # a resumed run restarts the offset at 0 for the batches it still predicts
           may_also_fail=frozenset({"test_resume_after_crash"})),
    Mutant("non_atomic_writes", "batch files written in place", Mutant_non_atomic_writes,
           kills={"test_resume_after_crash": "the killed run left output that cannot be read"}),
    Mutant("batch_idx_dropped", "batch files without batch_idx", Mutant_batch_idx_dropped,
           kills={"test_file_layout": "stores no batch_idx tensor"}),
    Mutant("pickled_numpy", "predictions pickled as numpy arrays", Mutant_pickled_numpy,
           kills={"test_files_safe_to_read": "Weights only load failed"},
           may_also_fail=_ALL - {"test_memory_flat"}),
    Mutant("epoch_ids_reversed", "epoch files pair rows with reversed sample ids", Mutant_epoch_ids_reversed,
           kills={"test_batch_and_epoch_intervals_agree": "differ from the batch interval"}),
    Mutant("subdir_by_modulo", "batch files spread round-robin over subdirs", Mutant_subdir_by_modulo,
           kills={"test_files_per_subdir": "should be in subdir_"}),
    Mutant("parquet_no_footer_on_error", "a failing job's open parquet shard is never closed",
           Mutant_parquet_no_footer_on_error,
           kills={"test_exception_leaves_valid_output": "missing ids"},
           skips=frozenset({"test_batch_and_epoch_intervals_agree", "test_files_per_subdir"})),
    Mutant("bfloat16_storage", "floating-point predictions stored as bfloat16", Mutant_bfloat16_storage,
           kills={"test_predictions_equal_in_memory": "differ from the in-memory predictions"},
           may_also_fail=frozenset({"test_every_sample_exactly_once", "test_exception_leaves_valid_output",
                                    "test_resume_after_crash"})),
)
