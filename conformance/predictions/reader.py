"""read_predictions(): reassemble a prediction folder of any of the kit's layouts into dataset order, verified.

It reads batch files, epoch files (``.pt`` or ``.safetensors``, any ``subdir_{n}``) and parquet shards of every
rank, orders the rows by sample id, drops padding duplicates (the same sample predicted identically on two ranks,
fewer than the number of data-parallel ranks) and checks coverage against the dataset size the ranks recorded in
their manifests. Reading never unpickles objects: ``torch.load(weights_only=True)``, safetensors, parquet.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from conformance._text import listing
from conformance.errors import PredictionReadError
from conformance.predictions.atomic import is_temporary
from conformance.predictions.collate import CollationDims, collate, take_rows, unflatten_prediction
from conformance.predictions.file_names import PredictionFile, is_subdir, parse_file_name
from conformance.predictions.formats import StoredPart, load_part
from conformance.predictions.manifest import read_rank_manifest

__all__ = ["NoPredictionsFound", "PredictionSet", "find_prediction_files", "read_predictions"]


@dataclass(frozen=True)
class PredictionSet:
    """Predictions in dataset order: ``predictions`` (a dict of tensors or a tensor) row ``i`` is ``sample_ids[i]``."""

    sample_ids: torch.Tensor
    predictions: Any
    dataloader_idx: int
    complete: bool  # every rank finished and every sample is present


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


class NoPredictionsFound(UserWarning):
    """``read_predictions(allow_incomplete=True)`` found no prediction file and no manifest at all."""


def read_predictions(path: str | Path, *, dataloader_idx: int | None = None,
                     allow_incomplete: bool = False) -> PredictionSet:
    """The predictions in folder ``path`` in dataset order; raises :class:`PredictionReadError` when the folder is
    incomplete (unless ``allow_incomplete``), holds missing or duplicated sample ids, or unreadable files.

    A folder without any prediction file or manifest raises too; with ``allow_incomplete`` (a job that may have
    written nothing yet) it gives an empty result and a :class:`NoPredictionsFound` warning.
    """
    folder = Path(path)
    files = find_prediction_files(folder)
    if not files and not allow_incomplete:
        raise PredictionReadError(_nothing_found(folder))
    if not files:
        warnings.warn(_nothing_found(folder), NoPredictionsFound, stacklevel=2)
        return PredictionSet(torch.zeros(0, dtype=torch.int64), {}, dataloader_idx or 0, complete=False)
    manifests = {(file.rank, file.dp_rank): read_rank_manifest(p) for file, p in files if file.kind == "rank_manifest"}
    data_files = _chosen_data_files(files, dataloader_idx)
    loader = _single_dataloader(data_files, dataloader_idx, folder)
    parts = [part for file, p in data_files if (file.dataloader_idx or 0) == loader for part in load_part(p)]
    seed_layout = bool(parts) and not manifests and not any(part.kit_written for part in parts)
    if seed_layout:
        warnings.warn(f"{folder} holds files of a writer without rank manifests (the seed's layout): they are read, "
                      "but whether every sample is there cannot be verified (complete=False)", UserWarning,
                      stacklevel=2)
    expected, complete = _expected_samples(manifests, loader, folder, allow_incomplete or seed_layout)
    if not parts:
        if expected:
            raise PredictionReadError(f"{folder} holds no predictions of dataloader {loader} but its manifests "
                                      f"expect {expected} samples")
        return PredictionSet(torch.zeros(0, dtype=torch.int64), {}, loader, complete)
    _check_parts_agree(parts, folder)
    dims = parts[0].dims
    values = collate([part.tensors for part in parts], dims, parts[0].pad_value)
    ids = torch.cat([part.sample_ids for part in parts])
    order = _dataset_order(ids, values, dims, manifests, folder)
    ids = ids[order]
    values = take_rows(values, dims, order)
    _check_coverage(ids, expected, folder, allow_incomplete)
    return PredictionSet(ids, unflatten_prediction(parts[0].kind, values), loader,
                         complete and (expected is None or len(ids) == expected))


def _nothing_found(folder: Path) -> str:
    """Why a folder without any prediction file or manifest cannot be read, and where predictions may be instead."""
    nested = sorted({path.parent.relative_to(folder).parts[0] for path in folder.rglob("predictions__*")
                     if path.parent != folder and not is_subdir(path.parent)})
    where = (f"; its sub-folders {', '.join(nested[:5])} hold some: pass one of them" if nested
             else ": the job wrote nothing yet, or this is another tool's folder")
    return f"{folder} holds no prediction file and no rank manifest (predictions__rank_*){where}"


def _check_parts_agree(parts: list[StoredPart], folder: Path) -> None:
    """Every file stores the same kind of prediction under the same keys, or the files cannot be one result."""
    first = parts[0]
    for part in parts[1:]:
        if part.kind != first.kind:
            raise PredictionReadError(f"{folder} mixes prediction kinds: {part.path.name} holds a {part.kind} "
                                      f"prediction, {first.path.name} a {first.kind} one (dict and bare tensor)")
        if set(part.tensors) != set(first.tensors):
            raise PredictionReadError(f"{folder}: {part.path.name} holds keys {sorted(part.tensors)} but "
                                      f"{first.path.name} holds {sorted(first.tensors)}: every prediction must "
                                      "have the same keys")


def _chosen_data_files(files: list[tuple[PredictionFile, Path]],
                       dataloader_idx: int | None) -> list[tuple[PredictionFile, Path]]:
    """The data files to read: per rank and dataloader, batch files when present, else its epoch file."""
    groups: dict[tuple[int, int, int], list[tuple[PredictionFile, Path]]] = defaultdict(list)
    for file, path in files:
        if file.holds_data:
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


def _expected_samples(manifests: dict[tuple[int, int], dict[str, Any]], loader: int, folder: Path,
                      allow_incomplete: bool) -> tuple[int | None, bool]:
    """The dataset size the ranks recorded, and whether every data-parallel rank finished."""
    if not manifests:
        if allow_incomplete:
            return None, False
        raise PredictionReadError(f"{folder} has no rank manifest: the job did not finish (each rank writes its "
                                  "manifest last), or the writer that made these files writes none (a custom "
                                  "writer must call conformance.write_rank_manifest when a rank's predictions are "
                                  "complete). Re-run the job to resume it, or pass allow_incomplete=True to read "
                                  "what is there")
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
        raise PredictionReadError(f"{folder}: sample ids {listing(duplicated, 20)} were written more than once "
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
        raise PredictionReadError(f"{folder}: sample ids {listing(outside, 20)} lie outside the dataset of {expected}")
    missing = sorted(set(range(expected)) - present)
    if missing and not allow_incomplete:
        raise PredictionReadError(f"{folder}: {len(missing)} of {expected} samples have no prediction: ids "
                                  f"{listing(missing, 20)}")
