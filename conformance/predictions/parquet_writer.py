"""ParquetPredictionWriter: one parquet row group per batch, one row per sample, keyed by the true sample id.

The columns and the shard manifest are described in :mod:`conformance.predictions.formats.parquet`. Each rank
writes shards ``predictions__rank_{g}__dp_rank_{d}__shard_{s}.parquet``, each under a temporary name until its
footer is written, then beside it a ``.manifest.json`` (rows, sample-id range, batches, schema, CRC-32). A Python
exception still closes the open shard, so the finished batches stay readable; a killed process loses only the
open shard, whose batches a re-run predicts again.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from typing_extensions import override

from conformance.predictions.atomic import TEMP_PREFIX, write_json
from conformance.predictions.file_names import parse_file_name
from conformance.predictions.formats._parquet_file import ParquetFileWriter
from conformance.predictions.formats.parquet import (
    FORMAT,
    batch_columns,
    batch_schema,
    empty_schema,
    import_pyarrow,
    shard_manifest_path,
)
from conformance.predictions.writer_base import FlatBatch, StreamingWriter

__all__ = ["ParquetPredictionWriter"]


class _OpenShard:
    """A shard being written: its temporary file and what went into it."""

    def __init__(self, path: Path, schema: Any) -> None:
        self.path = path
        self.temporary = path.with_name(f"{TEMP_PREFIX}{os.getpid()}-{path.name}")
        self.file = ParquetFileWriter(self.temporary, schema)
        self.schema = schema
        self.batches: list[int] = []
        self.ids: tuple[int, int] | None = None


class ParquetPredictionWriter(StreamingWriter):
    """Streams predictions into parquet shards; ``batches_per_shard`` bounds what a kill can lose."""

    def __init__(self, output_dir: str | Path, *, batches_per_shard: int | None = None, sample_ids: Any = None,
                 save_all_model_parallel_ranks: bool = False, batch_dim_key_defaults: dict[str, int] | None = None,
                 seq_dim_key_defaults: dict[str, int] | None = None, fsync: bool = False) -> None:
        if batches_per_shard is not None and (not isinstance(batches_per_shard, int) or batches_per_shard < 1):
            raise ValueError(f"batches_per_shard={batches_per_shard!r}; give a positive int, or None for one "
                             "shard per rank and run")
        super().__init__(output_dir, sample_ids=sample_ids, save_all_model_parallel_ranks=save_all_model_parallel_ranks,
                         batch_dim_key_defaults=batch_dim_key_defaults, seq_dim_key_defaults=seq_dim_key_defaults,
                         fsync=fsync)
        self.batches_per_shard = batches_per_shard
        import_pyarrow()  # fails here, with how to install it, rather than at the first batch
        self._shard: _OpenShard | None = None
        self._next_shard = 0

    @override
    def settings(self) -> dict[str, Any]:
        return {"format": "parquet", "batches_per_shard": self.batches_per_shard}

    # --- the subclass contract ---------------------------------------------------------------------------------
    @override
    def completed_batches(self) -> set[tuple[int, int]]:
        self._shard = None
        done, shards = set(), []
        for path in sorted(self.output_dir.glob(f"*{FORMAT.suffix}")) if self.output_dir.exists() else ():
            parsed = parse_file_name(path)
            if parsed is None or parsed.kind != "shard" or parsed.rank != self.rank.global_rank:
                continue
            shards.append(parsed.shard)
            manifest = shard_manifest_path(path)
            if not manifest.exists():
                warnings.warn(f"{path} has no manifest: its run was killed while finishing it; deleting it, its "
                              "batches are predicted again", UserWarning, stacklevel=2)
                path.unlink()
                continue
            content = json.loads(manifest.read_text())
            done |= {(content["dataloader_idx"], batch_idx) for batch_idx in content["batches"]}
        self._next_shard = max(shards, default=-1) + 1
        return done

    @override
    def write_batch(self, batch: FlatBatch) -> None:
        schema = batch_schema(batch.kind, batch.tensors, batch.dataloader_idx, self.dims)
        shard = self._shard_for(batch.dataloader_idx, schema)
        if schema is not shard.schema and not schema.equals(shard.schema, check_metadata=True):
            raise ValueError(f"batch {batch.batch_idx} has columns {schema.names} with other types than the "
                             f"shard's {shard.schema.names}: every prediction must have the same keys and dtypes")
        rows = len(batch.sample_ids)
        shard.file.write_row_group(batch_columns(batch.tensors, batch.sample_ids, batch.batch_idx, self.dims), rows)
        shard.batches.append(batch.batch_idx)
        if rows:
            low, high = int(batch.sample_ids.min()), int(batch.sample_ids.max())
            shard.ids = (low, high) if shard.ids is None else (min(shard.ids[0], low), max(shard.ids[1], high))
        if self.batches_per_shard is not None and len(shard.batches) >= self.batches_per_shard:
            self._close_shard(batch.dataloader_idx, complete=True)

    @override
    def finish(self) -> None:
        if self._shard is not None:
            self._close_shard(self._shard_dataloader, complete=True)
        elif not self._completed and self._next_shard == 0:
            self._write_empty_shard()

    @override
    def abort(self, exception: BaseException) -> None:
        if self._shard is not None:
            self._close_shard(self._shard_dataloader, complete=False, reason=f"{type(exception).__name__}: "
                                                                             f"{exception}")

    # --- shards ------------------------------------------------------------------------------------------------
    def _shard_for(self, dataloader_idx: int, schema: Any) -> _OpenShard:
        if self._shard is not None and self._shard_dataloader != dataloader_idx:
            self._close_shard(self._shard_dataloader, complete=True)
        if self._shard is None:
            path = self.output_dir / self.name(FORMAT.suffix, dataloader_idx=dataloader_idx, shard=self._next_shard)
            self._next_shard += 1
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self._shard = _OpenShard(path, schema)
            self._shard_dataloader = dataloader_idx
        return self._shard

    def _close_shard(self, dataloader_idx: int, *, complete: bool, reason: str | None = None) -> None:
        shard, self._shard = self._shard, None
        assert shard is not None
        checksum = shard.file.close(fsync=self.fsync)
        os.replace(shard.temporary, shard.path)
        low, high = shard.ids if shard.ids is not None else (None, None)
        write_json(shard_manifest_path(shard.path), {
            "shard": shard.path.name, "rows": shard.file.rows, "min_sample_id": low, "max_sample_id": high,
            "batches": shard.batches, "dataloader_idx": dataloader_idx, "schema": shard.schema.to_string(),
            "crc32": checksum, "complete": complete, "interrupted_by": reason,
        }, fsync=self.fsync)

    def _write_empty_shard(self) -> None:
        """An empty dataset still gives a valid, zero-row shard with the id columns."""
        self._shard_for(0, empty_schema())
        self._close_shard(0, complete=True)
