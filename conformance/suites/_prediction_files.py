"""What PredictionWriterConformance checks in a prediction folder's files: names, ranks, stored batch indices,
subdirs, each format's own integrity, leftovers, and that every file is readable without unpickling objects."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from conformance.errors import PredictionReadError
from conformance.predictions.atomic import is_temporary
from conformance.predictions.file_names import PredictionFile, parse_file_name, subdir_name
from conformance.predictions.formats import format_of, load_part
from conformance.predictions.reader import find_prediction_files
from conformance.runs.lightning.predict import PredictLog

__all__ = ["layout_problems", "subdir_problems", "unreadable_files", "unsafe_file_problems"]


def layout_problems(folder: Path, logs: Sequence[PredictLog]) -> list[str]:
    """Problems with the names and bookkeeping of a finished run's files (``logs``: one per rank, in rank order);
    the first rank of each model replica writes its replica's files, the replica's other ranks write none."""
    try:
        files = find_prediction_files(folder)
    except PredictionReadError as exc:
        return [str(exc)]
    problems = [f"{path} is an unfinished temporary file left in a finished run's output"
                for path in folder.rglob("*") if is_temporary(path)]
    manifests = Counter(file.rank for file, _ in files if file.kind == "rank_manifest")
    data = [(file, path) for file, path in files if file.holds_data]
    if not any(log.replica_first for log in logs):
        problems.append(f"{folder.name}: no rank of the run is the first of a model replica, so no rank's files "
                        "could be checked")
    strangers = sorted({file.rank for file, _ in files} - {log.rank for log in logs})
    if strangers:
        problems.append(f"{folder.name}: files carry ranks {strangers}, which the run did not have")
    for log in logs:
        rank = log.rank
        if not log.replica_first:
            written = manifests[rank] + sum(file.rank == rank for file, _ in data)
            if written:
                problems.append(f"{folder.name}: rank {rank} wrote {written} files, but it is not the first rank of "
                                f"its model replica (data-parallel rank {log.data_parallel_rank}), whose outputs are "
                                "copies of that rank's: write on tensor/context-parallel rank 0 of the last stage only")
            continue
        if manifests[rank] != 1:
            problems.append(f"{folder.name}: rank {rank} has {manifests[rank]} rank manifests (expected 1)")
        own = [(file, path) for file, path in data if file.rank == rank]
        if not own:
            problems.append(f"{folder.name}: no data file carries rank {rank} in its name")
        if any(file.dp_rank != log.data_parallel_rank for file, _ in own):
            problems.append(f"{folder.name}: files of rank {rank} do not name its data-parallel rank "
                            f"{log.data_parallel_rank}")
        batch_files = sorted(file.batch_idx for file, _ in own if file.kind == "batch")
        if batch_files and batch_files != sorted(log.computed_batches):
            problems.append(f"{folder.name}: rank {rank} has batch files {batch_files[:10]}... for the computed "
                            f"batches {sorted(log.computed_batches)[:10]}...")
    for file, path in data:
        problems += _stored_batch_problems(file, path)
    return problems


def _stored_batch_problems(file: PredictionFile, path: Path) -> list[str]:
    """Whether a data file passes its format's own verification and stores the batch indices its name claims."""
    problems = format_of(path).verify(path)
    if file.kind == "shard":
        return problems
    try:
        [part] = load_part(path)
    except PredictionReadError as exc:
        return [*problems, str(exc)]
    if not isinstance(part.batch_idx, torch.Tensor):
        return [*problems, f"{path} stores no batch_idx tensor: rows cannot be traced back to their batch"]
    stored = sorted(set(part.batch_idx.reshape(-1).tolist()))
    if file.kind == "batch" and stored != [file.batch_idx]:  # a scalar, [b], or b once per row
        return [*problems, f"{path} is named batch {file.batch_idx} but its batch_idx holds {stored}"]
    return problems


def subdir_problems(folder: Path, files_per_subdir: int) -> list[str]:
    """Batch files must sit in ``subdir_{batch_idx // files_per_subdir}``, at most that many per rank and folder."""
    problems = []
    per_folder: Counter[tuple[str, int]] = Counter()
    for path in folder.rglob("predictions__*"):
        file = parse_file_name(path)
        if file is None or file.kind != "batch":
            continue
        wanted = subdir_name(file.batch_idx, files_per_subdir)
        if path.parent.name != wanted or path.parent.parent != folder:
            problems.append(f"{path.relative_to(folder)} should be in {wanted}/")
        per_folder[(path.parent.name, file.rank)] += 1
    problems += [f"{name}/ holds {count} files of rank {rank}, more than {files_per_subdir}"
                 for (name, rank), count in per_folder.items() if count > files_per_subdir]
    if not per_folder:
        problems.append(f"{folder.name} holds no batch files")
    return problems


def unreadable_files(folder: Path) -> list[str]:
    """Problems reading each data file and manifest of ``folder`` on its own."""
    try:
        files = find_prediction_files(folder) if folder.exists() else []
    except PredictionReadError as exc:
        return [str(exc)]
    problems = []
    for file, path in files:
        try:
            if file.holds_data:
                load_part(path)
            else:
                json.loads(path.read_text())
        except (PredictionReadError, ValueError) as exc:
            problems.append(f"{path}: {exc}")
    return problems


def unsafe_file_problems(folder: Path) -> list[str]:
    """Files that cannot be read safely, or whose format a reader cannot know, in a finished run's output."""
    problems = unreadable_files(folder)
    try:
        known = {path for _, path in find_prediction_files(folder)}
    except PredictionReadError:
        return problems
    for path in folder.rglob("*"):
        if path.is_file() and path not in known:
            problems.append(f"{path.relative_to(folder)} is not a prediction file or manifest of a known format; "
                            "a reader cannot know it is safe to load")
    return problems
