"""read_predictions(): reassemble a prediction folder of any of the kit's layouts into dataset order, verified.

It reads batch files, epoch files (``.pt`` or ``.safetensors``, any ``subdir_{n}``) and parquet shards of every
rank, orders the rows by sample id, drops padding duplicates (the same sample predicted identically on two ranks,
fewer than the number of data-parallel ranks) and checks coverage against the dataset size the ranks recorded in
their manifests. Reading never unpickles objects: ``torch.load(weights_only=True)``, safetensors, parquet.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from conformance.atomic import is_temporary
from conformance.collate import CollationDims, collate, take_rows, unflatten_prediction
from conformance.parquet_writer import SCHEMA_KEY, import_pyarrow, shape_column
from conformance.prediction_files import PredictionFile, is_subdir, parse_file_name
from conformance.tensorfile import METADATA_KEY
from conformance.writer_base import read_rank_manifest

__all__ = ["PredictionReadError", "PredictionSet", "StoredPart", "find_prediction_files", "load_part",
           "read_predictions"]


class PredictionReadError(ValueError):
    """A prediction folder is incomplete, inconsistent or holds unreadable files."""


@dataclass(frozen=True)
class PredictionSet:
    """Predictions in dataset order: ``predictions`` (a dict of tensors or a tensor) row ``i`` is ``sample_ids[i]``."""

    sample_ids: torch.Tensor
    predictions: Any
    dataloader_idx: int
    complete: bool  # every rank finished and every sample is present


@dataclass(frozen=True)
class StoredPart:
    """Rows read from one batch, epoch file or parquet row group."""

    path: Path
    kind: str
    tensors: dict[str, torch.Tensor]
    sample_ids: torch.Tensor
    dims: CollationDims
    dataloader_idx: int
    pad_value: float = 0.0  # what its writer pads shorter sequences with


def find_prediction_files(folder: Path) -> list[tuple[PredictionFile, Path]]:
    """Every prediction file in ``folder`` and its ``subdir_{n}`` folders; unfinished temporary files excluded.

    Raises for a ``predictions__*`` name that does not parse: such a file would otherwise be silently ignored.
    """
    if not folder.is_dir():
        raise PredictionReadError(f"{folder} is not a folder of predictions")
    found, strange = [], []
    candidates = [*folder.iterdir(), *(path for sub in folder.iterdir() if sub.is_dir() and is_subdir(sub)
                                       for path in sub.iterdir())]
    for path in sorted(candidates):
        if path.is_dir() or is_temporary(path) or not path.name.startswith("predictions__"):
            continue
        parsed = parse_file_name(path)
        if parsed is None:
            strange.append(path.name)
        else:
            found.append((parsed, path))
    if strange:
        raise PredictionReadError(f"{folder} holds files named like predictions that no writer of the kit makes: "
                                  f"{', '.join(strange[:10])}; move them away")
    return found


def read_predictions(path: str | Path, *, dataloader_idx: int | None = None,
                     allow_incomplete: bool = False) -> PredictionSet:
    """The predictions in folder ``path`` in dataset order; raises :class:`PredictionReadError` when the folder is
    incomplete (unless ``allow_incomplete``), holds missing or duplicated sample ids, or unreadable files."""
    folder = Path(path)
    files = find_prediction_files(folder)
    manifests = {(file.rank, file.dp_rank): read_rank_manifest(p) for file, p in files if file.kind == "rank_manifest"}
    data_files = _chosen_data_files(files, dataloader_idx)
    loader = _single_dataloader(data_files, dataloader_idx, folder)
    parts = [part for file, p in data_files if (file.dataloader_idx or 0) == loader for part in load_part(p)]
    expected, complete = _expected_samples(manifests, loader, folder, allow_incomplete)
    if not parts:
        if expected:
            raise PredictionReadError(f"{folder} holds no predictions of dataloader {loader} but its manifests "
                                      f"expect {expected} samples")
        return PredictionSet(torch.zeros(0, dtype=torch.int64), {}, loader, complete)
    kinds = {part.kind for part in parts}
    if len(kinds) > 1:
        raise PredictionReadError(f"{folder} mixes prediction kinds {sorted(kinds)} (dict and bare tensor)")
    dims = parts[0].dims
    values = collate([part.tensors for part in parts], dims, parts[0].pad_value)
    ids = torch.cat([part.sample_ids for part in parts])
    order = _dataset_order(ids, values, dims, manifests, folder)
    ids = ids[order]
    values = take_rows(values, dims, order)
    _check_coverage(ids, expected, folder, allow_incomplete)
    return PredictionSet(ids, unflatten_prediction(kinds.pop(), values), loader,
                         complete and (expected is None or len(ids) == expected))


def _chosen_data_files(files: list[tuple[PredictionFile, Path]],
                       dataloader_idx: int | None) -> list[tuple[PredictionFile, Path]]:
    """The data files to read: per rank and dataloader, batch files when present, else its epoch file."""
    groups: dict[tuple[int, int, int], list[tuple[PredictionFile, Path]]] = defaultdict(list)
    for file, path in files:
        if file.kind in ("batch", "epoch", "shard"):
            groups[(file.rank, file.dp_rank, file.dataloader_idx or 0)].append((file, path))
    chosen = []
    for key, group in sorted(groups.items()):
        suffixes = {file.suffix for file, _ in group}
        if len(suffixes) > 1:
            raise PredictionReadError(f"rank {key[0]} wrote {', '.join(sorted(suffixes))} files into one folder; "
                                      "keep one format per folder")
        batches = [(file, path) for file, path in group if file.kind != "epoch"]
        chosen += batches or group
    return chosen


def _single_dataloader(data_files: list[tuple[PredictionFile, Path]], wanted: int | None, folder: Path) -> int:
    present = sorted({file.dataloader_idx or 0 for file, _ in data_files})
    if wanted is not None:
        return wanted
    if len(present) > 1:
        raise PredictionReadError(f"{folder} holds predictions of dataloaders {present}: pass dataloader_idx=")
    return present[0] if present else 0


def load_part(path: Path) -> list[StoredPart]:
    """The rows of one data file (one part per parquet row group), loaded without unpickling objects."""
    try:
        if path.suffix == ".parquet":
            return _load_parquet(path)
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "pt") as stream:
                tensors = {key: stream.get_tensor(key) for key in stream.keys()}  # noqa: SIM118 - not a dict
                metadata = stream.metadata() or {}
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(loaded, dict):
                raise TypeError(f"holds a {type(loaded).__qualname__}, not a dict of tensors")
            metadata = loaded.pop(METADATA_KEY, {})
            tensors = loaded
        return [_part_from_tensors(path, tensors, metadata)]
    except PredictionReadError:
        raise
    except Exception as exc:
        raise PredictionReadError(f"cannot read {path}: {type(exc).__name__}: {exc} (a truncated or foreign file; "
                                  "the kit's writers never leave partial files)") from exc


def _part_from_tensors(path: Path, tensors: dict[str, Any], metadata: dict[str, str]) -> StoredPart:
    if "sample_ids" not in tensors:
        raise PredictionReadError(f"{path} has no 'sample_ids' entry: it was not written by the kit's writers, so "
                                  "its rows cannot be placed in dataset order")
    dims = CollationDims(json.loads(metadata.get("batch_dims", "{}")), json.loads(metadata.get("seq_dims", "{}")))
    ids = tensors.pop("sample_ids").to(torch.int64)
    tensors.pop("batch_idx", None)
    return StoredPart(path, metadata.get("kind", "dict"), tensors, ids, dims,
                      int(metadata.get("dataloader_idx", "0")), float(metadata.get("pad_value", "0.0")))


def _load_parquet(path: Path) -> list[StoredPart]:
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
        parts.append(StoredPart(path, metadata["kind"], tensors, ids, dims, metadata["dataloader_idx"]))
    return parts


def _column_tensor(table: Any, key: str, dtype_name: str, batch_dim: int) -> torch.Tensor:
    """Rows of one binary column back into a tensor, the batch dim restored to its place."""
    dtype = getattr(torch, dtype_name)
    shapes = table.column(shape_column(key)).to_pylist()
    if len({tuple(shape) for shape in shapes}) > 1:
        raise PredictionReadError(f"column {key!r} has different per-sample shapes within one row group")
    column = table.column(key).combine_chunks()
    if not len(column):
        return torch.zeros(0, dtype=dtype)
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int64)[column.offset:column.offset + len(column) + 1]
    data = np.frombuffer(column.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
    flat = torch.frombuffer(bytearray(data), dtype=dtype) if len(data) else torch.zeros(0, dtype=dtype)
    return flat.reshape(len(shapes), *shapes[0]).movedim(0, batch_dim)


def _expected_samples(manifests: dict[tuple[int, int], dict[str, Any]], loader: int, folder: Path,
                      allow_incomplete: bool) -> tuple[int | None, bool]:
    """The dataset size the ranks recorded, and whether every data-parallel rank finished."""
    if not manifests:
        if allow_incomplete:
            return None, False
        raise PredictionReadError(f"{folder} has no rank manifest: the job did not finish (each rank writes its "
                                  "manifest last), or another writer made these files. Re-run the job to resume "
                                  "it, or pass allow_incomplete=True to read what is there")
    dp_size = max(manifest["dp_size"] for manifest in manifests.values())
    finished = {manifest["dp_rank"] for manifest in manifests.values()}
    missing_ranks = sorted(set(range(dp_size)) - finished)
    if missing_ranks and not allow_incomplete:
        raise PredictionReadError(f"{folder}: data-parallel ranks {missing_ranks} of {dp_size} did not finish (no "
                                  "manifest); re-run the job to resume it, or pass allow_incomplete=True")
    for manifest in manifests.values():
        if str(loader) not in manifest["dataloaders"]:
            raise PredictionReadError(f"{folder}: the job had no dataloader {loader} (its ranks predicted dataloaders "
                                      f"{sorted(map(int, manifest['dataloaders']))})")
    sizes = {manifest["dataloaders"][str(loader)]["num_samples"] for manifest in manifests.values()}
    sizes.discard(None)
    if len(sizes) > 1:
        raise PredictionReadError(f"{folder}: the ranks saw datasets of different sizes {sorted(sizes)}")
    return (sizes.pop() if sizes else None), not missing_ranks


def _dataset_order(ids: torch.Tensor, values: dict[str, torch.Tensor], dims: CollationDims,
                   manifests: dict[tuple[int, int], dict[str, Any]], folder: Path) -> torch.Tensor:
    """Row positions in sample-id order with padding duplicates dropped; raises on any other duplicate."""
    order = torch.argsort(ids, stable=True)
    sorted_ids = ids[order]
    repeated = torch.zeros_like(sorted_ids, dtype=torch.bool)
    repeated[1:] = sorted_ids[1:] == sorted_ids[:-1]
    if not repeated.any():
        return order
    dp_size = max((manifest["dp_size"] for manifest in manifests.values()), default=1)
    duplicated = sorted(set(sorted_ids[repeated].tolist()))
    if int(repeated.sum()) >= dp_size:
        raise PredictionReadError(f"{folder}: sample ids {_listing(duplicated)} were written more than once "
                                  f"({int(repeated.sum())} extra rows with {dp_size} data-parallel ranks): two files "
                                  "hold the same samples")
    for position in torch.nonzero(repeated).flatten().tolist():
        first, again = order[position - 1:position], order[position:position + 1]
        if any(not torch.equal(take_rows(values, dims, first)[key], take_rows(values, dims, again)[key])
               for key in values):
            raise PredictionReadError(f"{folder}: sample id {int(sorted_ids[position])} was written twice with "
                                      "different values")
    return order[~repeated]


def _check_coverage(ids: torch.Tensor, expected: int | None, folder: Path, allow_incomplete: bool) -> None:
    if expected is None:
        return
    present = set(ids.tolist())
    outside = sorted(i for i in present if not 0 <= i < expected)
    if outside:
        raise PredictionReadError(f"{folder}: sample ids {_listing(outside)} lie outside the dataset of {expected}")
    missing = sorted(set(range(expected)) - present)
    if missing and not allow_incomplete:
        raise PredictionReadError(f"{folder}: {len(missing)} of {expected} samples have no prediction: ids "
                                  f"{_listing(missing)}")


def _listing(ids: list[int], limit: int = 20) -> str:
    shown = ", ".join(map(str, ids[:limit]))
    return f"[{shown}{', ...' if len(ids) > limit else ''}] ({len(ids)} in all)"
