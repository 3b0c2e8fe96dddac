"""PredictionWriter: streams ``trainer.predict`` outputs to ``.pt`` (BioNeMo-compatible names) or ``.safetensors``.

Every file is written atomically and without pickling, in a registered tensor-file format
(:mod:`conformance.predictions.formats`). Each stored prediction
carries ``batch_idx`` and ``sample_ids`` (int64 tensors; one entry per batch file, one per row in epoch files) and
a ``__metadata__`` dict of strings (kind, dataloader, collation dims). The epoch interval streams too: batches are
spilled to a journal on disk and collated into the epoch file at the end, so memory does not grow with the job.
Re-running a crashed job into the same folder skips the batches already written.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from typing_extensions import override

from conformance.predictions.atomic import atomic_write
from conformance.predictions.collate import RESERVED_KEYS, output_shape
from conformance.predictions.file_names import parse_file_name, subdir_name
from conformance.predictions.formats import TensorEntry, tensor_entry, tensor_file_format
from conformance.predictions.formats._tensors import check_storable
from conformance.predictions.spill import BatchSpill
from conformance.predictions.writer_base import FlatBatch, StreamingWriter

__all__ = ["WRITE_INTERVALS", "PredictionWriter"]

WRITE_INTERVALS = ("batch", "epoch", "batch_and_epoch")


class PredictionWriter(StreamingWriter):
    """Writes each batch's prediction, or each rank's collated epoch, or both, to ``output_dir``.

    Args:
        output_dir: the folder of the prediction files (created if needed).
        write_interval: ``"batch"`` (one file per batch), ``"epoch"`` (one file per rank and dataloader) or
            ``"batch_and_epoch"``.
        format: a tensor-file format of :mod:`conformance.predictions.formats`: ``"pt"`` (loads with
            ``torch.load(weights_only=True)``) or ``"safetensors"``.
        files_per_subdir: put batch files into ``subdir_{batch_idx // files_per_subdir}`` folders.
        save_all_model_parallel_ranks: also write from tensor/context-parallel ranks other than 0.
        batch_dim_key_defaults / seq_dim_key_defaults: per-key batch and sequence dims for epoch collation.
        pad_value: what shorter sequences are padded with in epoch files.
        sample_ids: ``prediction -> ids``; default: Lightning's sampler indices, else an ``idx``-like key.
        fsync: flush every file to the device before it is renamed into place (survives power loss).
    """

    def __init__(self, output_dir: str | Path, write_interval: str = "batch", *, format: str = "pt",
                 files_per_subdir: int | None = None, save_all_model_parallel_ranks: bool = False,
                 batch_dim_key_defaults: dict[str, int] | None = None,
                 seq_dim_key_defaults: dict[str, int] | None = None, pad_value: float = 0.0,
                 sample_ids: Any = None, fsync: bool = False) -> None:
        if write_interval not in WRITE_INTERVALS:
            raise ValueError(f"write_interval={write_interval!r}; choose one of {', '.join(WRITE_INTERVALS)}")
        self.file_format = tensor_file_format(format)
        if files_per_subdir is not None and (not isinstance(files_per_subdir, int) or files_per_subdir < 1):
            raise ValueError(f"files_per_subdir={files_per_subdir!r}; give a positive int, or None for one folder")
        if files_per_subdir is not None and write_interval == "epoch":
            raise ValueError("files_per_subdir sorts batch files into folders, but write_interval='epoch' writes "
                             "no batch files: use write_interval='batch' or 'batch_and_epoch', or drop it")
        super().__init__(output_dir, sample_ids=sample_ids, fsync=fsync,
                         save_all_model_parallel_ranks=save_all_model_parallel_ranks,
                         batch_dim_key_defaults=batch_dim_key_defaults, seq_dim_key_defaults=seq_dim_key_defaults)
        self.write_interval = write_interval
        self.format = format
        self.files_per_subdir = files_per_subdir
        self.pad_value = pad_value
        self._spill: BatchSpill | None = None

    def replace(self, **changes: Any) -> PredictionWriter:
        """A new writer of the same class with some settings changed (used by the conformance checks)."""
        settings = {
            "output_dir": self.output_dir, "write_interval": self.write_interval, "format": self.format,
            "files_per_subdir": self.files_per_subdir, "pad_value": self.pad_value, "sample_ids": self.sample_ids,
            "save_all_model_parallel_ranks": self.save_all_model_parallel_ranks, "fsync": self.fsync,
            "batch_dim_key_defaults": dict(self.dims.batch_dim_key_defaults),
            "seq_dim_key_defaults": dict(self.dims.seq_dim_key_defaults), **changes,
        }
        return type(self)(settings.pop("output_dir"), **settings)

    @property
    def writes_batches(self) -> bool:
        return self.write_interval in ("batch", "batch_and_epoch")

    @property
    def writes_epochs(self) -> bool:
        return self.write_interval in ("epoch", "batch_and_epoch")

    def settings(self) -> dict[str, Any]:
        return {"format": self.format, "write_interval": self.write_interval,
                "files_per_subdir": self.files_per_subdir}

    # --- the subclass contract ---------------------------------------------------------------------------------
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "predict" and self.writes_epochs and trainer.world_size > 1:
            warnings.warn(
                f"write_interval={self.write_interval!r} on {trainer.world_size} processes writes one epoch file "
                "per data-parallel rank, each with only that rank's samples; read them together with "
                "conformance.read_predictions(output_dir)", UserWarning, stacklevel=2,
            )
        self._spill = BatchSpill(self.output_dir / f".spill__{self.name('')}", fsync=self.fsync)

    def completed_batches(self) -> set[tuple[int, int]]:
        if self.writes_epochs:
            assert self._spill is not None
            return {(batch.dataloader_idx, batch.batch_idx) for batch in self._spill.recover()}
        found = set()
        for path in self.output_dir.rglob(f"*{self.file_format.suffix}") if self.output_dir.exists() else ():
            parsed = parse_file_name(path)
            if parsed is None or parsed.kind != "batch" or parsed.rank != self.rank.global_rank:
                continue
            dataloader_idx = parsed.dataloader_idx or 0
            if path == self._batch_path(dataloader_idx, parsed.batch_idx):  # atomic writes: existing is complete
                found.add((dataloader_idx, parsed.batch_idx))
        return found

    def write_batch(self, batch: FlatBatch) -> None:
        if self.writes_epochs:
            for key, tensor in batch.tensors.items():
                check_storable(key, tensor.dtype)
            self._check_collatable(batch)
        if self.writes_batches:
            entries = [tensor_entry(key, tensor) for key, tensor in batch.tensors.items()]
            entries += [tensor_entry("batch_idx", _long([batch.batch_idx])), tensor_entry("sample_ids",
                                                                                          batch.sample_ids)]
            with atomic_write(self._batch_path(batch.dataloader_idx, batch.batch_idx), fsync=self.fsync,
                              size_hint=_size_hint(entries)) as stream:
                self.file_format.write(stream, entries, self._metadata(batch.kind, batch.dataloader_idx))
        if self.writes_epochs:
            assert self._spill is not None
            leading = self._leading(batch) if self._spill.first(batch.dataloader_idx) is None else None
            self._spill.append(batch.batch_idx, batch.dataloader_idx, batch.kind, batch.tensors,
                               batch.sample_ids.tolist(), leading)

    def finish(self) -> None:
        self._write_epoch_files(final=True)
        if self._spill is not None:
            self._spill.remove()

    def abort(self, exception: BaseException) -> None:
        """Batch files are complete as they are; an epoch file is written from the finished batches (the spill
        stays, so a re-run resumes and replaces it)."""
        self._write_epoch_files(final=False)
        if self._spill is not None:
            self._spill.close()

    def _leading(self, batch: FlatBatch) -> tuple[str, int] | None:
        """The key of a dataloader's first batch whose bytes the spill writes straight into the epoch file (the
        largest along batch dim 0), and the room the format needs before them; None when there is none."""
        candidates = [key for key in batch.tensors if self.dims.batch_dim(key) == 0]
        if not candidates:
            return None
        key = max(candidates, key=lambda name: batch.tensors[name].nbytes)
        rows = (len(batch.sample_ids),)
        provisional = [TensorEntry(name, tensor.dtype, tuple(tensor.shape), ()) for name, tensor in batch.tensors.items()]
        provisional += [TensorEntry(name, torch.int64, rows, ()) for name in RESERVED_KEYS]  # as the spill adds them
        hole = self.file_format.leading_data_offset(provisional, list(batch.tensors).index(key),
                                                    self._metadata(batch.kind, batch.dataloader_idx))
        return None if hole is None else (key, hole)

    def _check_collatable(self, batch: FlatBatch) -> None:
        """Refuse, before anything of it is written, a batch that the epoch file could not collate with those spilled
        before it: other keys, kind or dtypes (its bytes would be misread), or sizes that may not vary."""
        assert self._spill is not None
        first = self._spill.first(batch.dataloader_idx)
        if first is None:
            return
        dtypes = {key: str(tensor.dtype).removeprefix("torch.") for key, tensor in batch.tensors.items()}
        spilled = {key: dtype for key, (dtype, _, _) in first.tensors.items()}
        where = f"the prediction of batch {batch.batch_idx}"
        if batch.kind != first.kind or dtypes != spilled:
            raise ValueError(f"{where} ({batch.kind}) has keys and dtypes {dtypes}, that of batch {first.batch_idx} "
                             f"({first.kind}) had {spilled}: every prediction must have the same keys and dtypes")
        for key, tensor in batch.tensors.items():
            try:
                output_shape(key, [first.tensors[key][1], tuple(tensor.shape)], self.dims)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None

    # --- files -------------------------------------------------------------------------------------------------
    def _batch_path(self, dataloader_idx: int, batch_idx: int) -> Path:
        name = self.name(self.file_format.suffix, dataloader_idx=dataloader_idx, batch_idx=batch_idx)
        if self.files_per_subdir is None:
            return self.output_dir / name
        return self.output_dir / subdir_name(batch_idx, self.files_per_subdir) / name

    def _write_epoch_files(self, *, final: bool) -> None:
        """One epoch file per dataloader; ``final``: the spill is not needed after, so its leading files may become
        the epoch files."""
        if not self.writes_epochs or self._spill is None or not self._spill.batches:
            return
        for dataloader_idx in sorted({batch.dataloader_idx for batch in self._spill.batches}):
            batches = sorted((b for b in self._spill.batches if b.dataloader_idx == dataloader_idx),
                             key=lambda b: b.batch_idx)
            entries = self._spill.collated_entries(batches, self.dims, self.pad_value)
            path = self.output_dir / self.name(self.file_format.suffix, dataloader_idx=dataloader_idx)
            metadata = self._metadata(batches[0].kind, dataloader_idx)
            leading = self._spill.leading_file(batches, self.dims) if final else None
            if leading is not None and self.file_format.leading_data_offset(entries, leading.index,
                                                                            metadata) == leading.hole:
                with open(leading.path, "r+b") as stream:
                    stream.seek(leading.end)
                    self.file_format.write_after_leading(stream, entries, leading.index, leading.crc32, metadata)
                    if self.fsync:
                        stream.flush()
                        os.fsync(stream.fileno())
                os.replace(leading.path, path)
                continue
            with atomic_write(path, fsync=self.fsync, size_hint=_size_hint(entries)) as stream:
                self.file_format.write(stream, entries, metadata)

    def _metadata(self, kind: str, dataloader_idx: int) -> dict[str, str]:
        return {"writer": "conformance.PredictionWriter", "kind": kind, "dataloader_idx": str(dataloader_idx),
                "batch_dims": json.dumps(dict(self.dims.batch_dim_key_defaults)),
                "seq_dims": json.dumps(dict(self.dims.seq_dim_key_defaults)), "pad_value": repr(self.pad_value)}


def _size_hint(entries: list[TensorEntry]) -> int:
    """About the size of a file of ``entries``: their bytes plus room for any format's headers."""
    return sum(entry.nbytes for entry in entries) + 4096


def _long(values: Any) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.int64)
