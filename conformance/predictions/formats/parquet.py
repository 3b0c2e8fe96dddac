"""The parquet format: one row per sample, one row group per batch, and a JSON manifest beside each shard.

Columns: ``sample_id`` and ``batch_idx`` (int64), then for each prediction key its per-sample raw bytes
(``large_binary``, C order, the batch dim removed) and ``{key}__shape`` (the per-sample shape). The schema
metadata ``conformance`` (JSON) holds the kind, dtypes, dataloader and collation dims. The manifest
(``....manifest.json`` beside ``....parquet``) records rows, sample-id range, batches, schema and the CRC-32 of the
shard, which :meth:`ParquetFormat.verify` checks. The kit writes shards itself (:mod:`._parquet_file`) and reads
them with pyarrow.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from conformance.errors import PredictionReadError
from conformance.predictions.collate import CollationDims
from conformance.predictions.formats._base import FileFormat, StoredPart
from conformance.predictions.formats._parquet_file import Int64Column, RowsColumn, ShapeColumn
from conformance.predictions.formats._tensors import crc32, tensor_bytes

__all__ = ["FORMAT", "SCHEMA_KEY", "ParquetFormat", "batch_columns", "batch_schema", "empty_schema", "file_crc32",
           "import_pyarrow", "shard_manifest_path"]

#: The schema metadata key of the kit's description of a shard.
SCHEMA_KEY = b"conformance"
_CRC_CHUNK = 8 << 20


def import_pyarrow() -> Any:
    """pyarrow and pyarrow.parquet, or an error saying how to install them."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError("parquet predictions need pyarrow: pip install 'conformance[writers]' (or pyarrow)") from exc
    return pa, pq


def shard_manifest_path(shard: Path) -> Path:
    """The manifest written beside a finished shard."""
    return shard.with_name(shard.name.removesuffix(ParquetFormat.suffix) + ".manifest.json")


def file_crc32(path: Path) -> str:
    """The CRC-32 of a file as 8 hex digits (what shard manifests record).

    CRC-32 rather than a cryptographic hash: it guards against damage and runs at 1.5 GB/s (zlib) to 10 GB/s
    (isal) here, where sha256 ran at 0.2 GB/s and dominated the writer's time. The file is read into one reusable
    buffer: reading into a fresh buffer per chunk took 3.5 times longer, and a memory map of the whole shard made
    the writer's resident memory grow with the shard.
    """
    checksum, buffer = 0, bytearray(_CRC_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as stream:
        while size := stream.readinto(buffer):
            checksum = crc32(view[:size], checksum)
    return f"{checksum:08x}"


def _shape_column(key: str) -> str:
    """The column holding the per-sample shapes of prediction key ``key``."""
    return f"{key}__shape"


def batch_schema(kind: str, tensors: dict[str, torch.Tensor], dataloader_idx: int, dims: CollationDims) -> Any:
    """The Arrow schema of a shard holding batches like this one (its keys, dtypes and collation dims); batches
    alike get the same schema object."""
    keys = tuple((key, str(tensor.dtype).removeprefix("torch."), dims.batch_dim(key))
                 for key, tensor in tensors.items())
    return _schema(kind, keys, dataloader_idx, json.dumps(dict(dims.seq_dim_key_defaults), sort_keys=True))


@functools.lru_cache(maxsize=64)
def _schema(kind: str, keys: tuple[tuple[str, str, int], ...], dataloader_idx: int, seq_dims: str) -> Any:
    pa, _ = import_pyarrow()
    fields = [("sample_id", pa.int64()), ("batch_idx", pa.int64())]
    for key, _dtype, _dim in keys:
        fields += [(key, pa.large_binary()), (_shape_column(key), pa.list_(pa.int32()))]
    metadata = {"kind": kind, "dtypes": {key: dtype for key, dtype, _ in keys}, "dataloader_idx": dataloader_idx,
                "batch_dims": {key: dim for key, _, dim in keys}, "seq_dims": json.loads(seq_dims)}
    return pa.schema(fields, metadata={SCHEMA_KEY: json.dumps(metadata, sort_keys=True)})


def batch_columns(tensors: dict[str, torch.Tensor], sample_ids: torch.Tensor, batch_idx: int,
                  dims: CollationDims) -> list[Any]:
    """One batch as the columns of one row group of :func:`batch_schema`, one row per sample."""
    rows = len(sample_ids)
    columns = [Int64Column(sample_ids.numpy()), Int64Column(np.full(rows, batch_idx, dtype=np.int64))]
    for tensor in (tensors[key].detach().cpu().movedim(dims.batch_dim(key), 0) for key in tensors):
        row_bytes = tensor[0].numel() * tensor.element_size() if rows else 0
        columns += [RowsColumn(tensor_bytes(tensor), rows, row_bytes), ShapeColumn(tuple(tensor.shape[1:]), rows)]
    return columns


def empty_schema() -> Any:
    """The schema of a zero-row shard (an empty dataset): the id columns only."""
    pa, _ = import_pyarrow()
    description = {"kind": "dict", "dtypes": {}, "dataloader_idx": 0, "batch_dims": {}, "seq_dims": {}}
    return pa.schema([("sample_id", pa.int64()), ("batch_idx", pa.int64())],
                     metadata={SCHEMA_KEY: json.dumps(description)})


class ParquetFormat(FileFormat):
    """Parquet shards of :class:`conformance.ParquetPredictionWriter`."""

    name = "parquet"
    suffix = ".parquet"
    sharded = True

    def load(self, path: Path) -> list[StoredPart]:
        """One part per row group (a batch)."""
        _, pq = import_pyarrow()
        shard = pq.ParquetFile(path)
        metadata = json.loads(shard.schema_arrow.metadata[SCHEMA_KEY])
        dims = CollationDims(metadata["batch_dims"], metadata["seq_dims"])
        parts = []
        for group in range(shard.num_row_groups):
            table = shard.read_row_group(group)
            tensors = {key: _column_tensor(table, key, dtype, dims.batch_dim(key))
                       for key, dtype in metadata["dtypes"].items()}
            ids = torch.from_numpy(table.column("sample_id").to_numpy().copy())
            batch_idx = torch.from_numpy(table.column("batch_idx").to_numpy().copy())
            parts.append(StoredPart(path, metadata["kind"], tensors, ids, dims, metadata["dataloader_idx"],
                                    batch_idx=batch_idx))
        return parts

    def verify(self, path: Path) -> list[str]:
        """The shard matches its manifest: CRC-32, rows, and one row group per batch."""
        manifest_path = shard_manifest_path(path)
        if not manifest_path.exists():
            return [f"{path} has no manifest {manifest_path.name}"]
        manifest = json.loads(manifest_path.read_text())
        problems = []
        if manifest.get("crc32") != file_crc32(path):
            problems.append(f"{path} does not match the crc32 in {manifest_path.name}")
        try:
            parts = self.load(path)
        except Exception as exc:  # noqa: BLE001 - reported as the problem it is
            return [*problems, f"cannot read {path}: {type(exc).__name__}: {exc}"]
        rows = sum(len(part.sample_ids) for part in parts)
        if rows != manifest.get("rows"):
            problems.append(f"{path} has {rows} rows, its manifest says {manifest.get('rows')}")
        if rows and len(parts) != len(manifest.get("batches", [])):
            problems.append(f"{path} has {len(parts)} row groups for {len(manifest.get('batches', []))} batches")
        return problems


def _column_tensor(table: Any, key: str, dtype_name: str, batch_dim: int) -> torch.Tensor:
    """Rows of one binary column back into a tensor, the batch dim restored to its place."""
    dtype = getattr(torch, dtype_name)
    shapes = table.column(_shape_column(key)).to_pylist()
    if len({tuple(shape) for shape in shapes}) > 1:
        raise PredictionReadError(f"column {key!r} has different per-sample shapes within one row group")
    column = table.column(key).combine_chunks()
    if not len(column):
        return torch.zeros(0, dtype=dtype)
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int64)[column.offset:column.offset + len(column) + 1]
    data = np.frombuffer(column.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
    flat = torch.frombuffer(bytearray(data), dtype=dtype) if len(data) else torch.zeros(0, dtype=dtype)
    return flat.reshape(len(shapes), *shapes[0]).movedim(0, batch_dim)


FORMAT = ParquetFormat()
