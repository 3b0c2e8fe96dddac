"""What an attached recipe's checkpoint folder holds, in whatever layout its trainer writes: every DCP folder (one
with ``.metadata``) read by DCP, every ``torch.save`` file read weights-only, every safetensors and JSON file; other
files (configs, logs) are not state and are skipped. The values are then checked as a loop checkpoint's are."""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from conformance.runs.backend import CheckpointUnreadable
from conformance.runs.loop.checkpoint import is_dcp_checkpoint, read_checkpoint
from conformance.runs.loop.checkpoint_contents import checkpoint_problems, leaves
from conformance.training.recordstore import RecordStore

__all__ = ["attached_checkpoint_problems", "folder_values"]

_ZIP, _PICKLE = b"PK\x03\x04", b"\x80"
#: The suffix of the data files torch.distributed.checkpoint's FileSystemWriter writes beside its .metadata.
_DCP_DATA_SUFFIX = ".distcp"


def attached_checkpoint_problems(folder: Path, records: Sequence[RecordStore], stop_step: int
                                 ) -> tuple[str, list[str]]:
    """(what was verified, every problem) of the checkpoint folder written after ``stop_step`` by a run whose
    ranks recorded ``records``; raises :class:`CheckpointUnreadable` when a state file cannot be read safely."""
    values, read, skipped = folder_values(folder)
    listing = f"read {', '.join(read) or 'nothing'}" + (f"; not state, skipped: {', '.join(skipped)}" if skipped else "")
    if not values:
        return f"checkpoint folder {folder.name}: no state files", [
            (f"it holds no DCP folder, torch.save, safetensors or JSON file ({listing}): save the checkpoint in "
            "checkpoint_dir")]
    problems = checkpoint_problems(values, records, stop_step)
    return (f"checkpoint folder {folder.name}: {len(values)} values verified ({listing})",
            problems + ([f"({listing})"] if problems else []))


def folder_values(folder: Path) -> tuple[dict[str, Any], list[str], list[str]]:
    """(every value under ``folder`` by its file's relative path and its flattened key, the DCP folders and files
    read, the files skipped as no state), relative paths."""
    values: dict[str, Any] = {}
    dcp_folders = sorted(path for path in [folder, *folder.rglob("*")] if path.is_dir() and is_dcp_checkpoint(path))
    read, skipped = [], []
    for path in dcp_folders:
        values.update(_prefixed(path, folder, _read(path, read_checkpoint)))
        read.append(f"{_relative(path, folder)}/ (DCP)")
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or _is_dcp_part(path, dcp_folders):
            continue
        reader = _reader(path)
        if reader is None:
            skipped.append(_relative(path, folder))
            continue
        values.update(_prefixed(path, folder, dict(leaves(_read(path, reader)))))
        read.append(_relative(path, folder))
    return values, read, skipped


def _is_dcp_part(path: Path, dcp_folders: list[Path]) -> bool:
    """Whether ``path`` is a file of DCP's own in one of ``dcp_folders`` (its metadata or a data file); any other
    file there (a trainer's extra state beside the DCP files) is read on its own."""
    return path.parent in dcp_folders and (path.name == ".metadata" or path.suffix == _DCP_DATA_SUFFIX)


def _relative(path: Path, folder: Path) -> str:
    return path.relative_to(folder).as_posix() if path != folder else "."


def _reader(path: Path) -> Any:
    """How to read ``path`` as state, judged by its first bytes (None: not a state file)."""
    with path.open("rb") as file:
        head = file.read(9)
    if head.startswith((_ZIP, _PICKLE)):
        return _torch_file
    if len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < path.stat().st_size:
        return load_file
    if head.lstrip()[:1] in (b"{", b"[") and path.suffix == ".json":
        return lambda file: json.loads(file.read_text())
    return None


def _torch_file(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)


def _read(path: Path, read: Any) -> Any:
    try:
        return read(path)
    except Exception as exc:
        raise CheckpointUnreadable(
            f"{path.name} in the checkpoint cannot be read with weights-only loading: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}. Store state as tensors and plain Python values (no "
            "numpy arrays or custom objects)") from exc


def _prefixed(path: Path, folder: Path, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` keyed under the file's path (its dots made underscores, so that a key's last part is its own)."""
    prefix = path.relative_to(folder).as_posix().replace(".", "_")
    return {f"{prefix}.{key}": value for key, value in values.items()}
