"""The rank manifest: the JSON file each writing rank writes last, ``predictions__rank_{g}__dp_rank_{d}.manifest.json``.

It marks the rank's job as finished and tells the reader how many samples each predict dataloader had, so missing
predictions are found. Required keys (anything else is kept for information)::

    {"dp_rank": 0,                                   # this rank's data-parallel rank
     "dp_size": 2,                                   # the number of data-parallel ranks of the job
     "dataloaders": {"0": {"num_samples": 45}}}      # per predict dataloader: dataset size, or null if unsized

A writer that is not the kit's calls :func:`write_rank_manifest` at the end of ``on_predict_end``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from conformance.errors import PredictionReadError
from conformance.predictions.atomic import write_json
from conformance.predictions.file_names import MANIFEST_SUFFIX, PredictionFile, file_name

__all__ = ["rank_manifest_path", "read_rank_manifest", "write_rank_manifest"]

_REQUIRED = ("dp_rank", "dp_size", "dataloaders")


def write_rank_manifest(output_dir: str | Path, *, global_rank: int, dp_rank: int, dp_size: int,
                        dataloaders: Mapping[int, Mapping[str, Any]], fsync: bool = False, **extra: Any) -> Path:
    """Write this rank's manifest (atomically) into ``output_dir`` and return its path.

    ``dataloaders`` maps each predict dataloader's index to at least ``{"num_samples": dataset size or None}``;
    ``extra`` keys are stored as they are.
    """
    unsized = [index for index, entry in dataloaders.items() if "num_samples" not in entry]
    if unsized:
        raise ValueError(f"dataloaders {unsized} have no 'num_samples': give each its dataset size (None if unsized)")
    content = {**extra, "global_rank": global_rank, "dp_rank": dp_rank, "dp_size": dp_size,
               "dataloaders": {str(index): dict(entry) for index, entry in dataloaders.items()}}
    path = rank_manifest_path(output_dir, global_rank, dp_rank)
    write_json(path, content, fsync=fsync)
    return path


def rank_manifest_path(output_dir: str | Path, global_rank: int, dp_rank: int) -> Path:
    """Where a rank's manifest lies."""
    return Path(output_dir) / file_name(PredictionFile(global_rank, dp_rank, MANIFEST_SUFFIX))


def read_rank_manifest(path: Path) -> dict[str, Any]:
    """A rank manifest, validated; :class:`PredictionReadError` naming what is wrong otherwise."""
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PredictionReadError(f"{path} is not a readable rank manifest ({exc}); it is written last by each rank, "
                                  "so this output was damaged after the job") from exc
    missing = [key for key in _REQUIRED if not isinstance(content, dict) or key not in content]
    if missing:
        raise PredictionReadError(f"{path} lacks {missing}: a rank manifest needs {list(_REQUIRED)} (see "
                                  "conformance.write_rank_manifest)")
    loaders = content["dataloaders"]
    if not isinstance(loaders, dict) or not all(isinstance(entry, dict) and "num_samples" in entry
                                                for entry in loaders.values()):
        raise PredictionReadError(f"{path}: 'dataloaders' must map each dataloader index to "
                                  "{'num_samples': int or null}, got " + repr(loaders)[:200])
    return content
