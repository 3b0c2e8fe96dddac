"""Names of prediction files: built by the writers, parsed by the reader and the layout check.

The names of the ``.pt`` layout are those of BioNeMo's PredictionWriter, so its readers keep working::

    [subdir_{n}/]predictions__rank_{global_rank}__dp_rank_{dp_rank}__batch_{batch_idx}.pt   (batch interval)
    predictions__rank_{global_rank}__dp_rank_{dp_rank}.pt                                   (epoch interval)

With several predict dataloaders every name gains ``__dataloader_{k}`` after the dp rank. The suffix is that of a
registered format (:mod:`conformance.predictions.formats`): ``.safetensors`` beside ``.pt``; sharded formats name
``...__shard_{s}.parquet`` files, each with ``...__shard_{s}.manifest.json``. Every writing rank finishes with one
``predictions__rank_{g}__dp_rank_{d}.manifest.json``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from conformance.predictions.formats import all_formats, format_of

__all__ = ["MANIFEST_SUFFIX", "PredictionFile", "file_name", "is_subdir", "parse_file_name", "subdir_name"]

#: The suffix of rank and shard manifests.
MANIFEST_SUFFIX = ".manifest.json"
_NAME = (r"predictions__rank_(?P<rank>\d+)__dp_rank_(?P<dp_rank>\d+)(?:__dataloader_(?P<dataloader>\d+))?"
         r"(?:__batch_(?P<batch>\d+)|__shard_(?P<shard>\d+))?(?P<suffix>{suffixes})")
_SUBDIR = re.compile(r"subdir_\d+")


@dataclass(frozen=True)
class PredictionFile:
    """What a prediction file's name says about it."""

    rank: int
    dp_rank: int
    suffix: str  # a registered format's suffix, or ".manifest.json"
    dataloader_idx: int | None = None
    batch_idx: int | None = None
    shard: int | None = None

    @property
    def holds_data(self) -> bool:
        """Whether this is a data file (batch, epoch or shard), not a manifest."""
        return self.suffix != MANIFEST_SUFFIX

    @property
    def kind(self) -> str:
        """``batch``, ``epoch``, ``shard`` (data files), ``shard_manifest`` or ``rank_manifest``."""
        if self.suffix == MANIFEST_SUFFIX:
            return "shard_manifest" if self.shard is not None else "rank_manifest"
        if self.batch_idx is not None:
            return "batch"
        return "shard" if self.shard is not None else "epoch"


def file_name(file: PredictionFile) -> str:
    """The file name that :func:`parse_file_name` reads back as ``file``."""
    name = f"predictions__rank_{file.rank}__dp_rank_{file.dp_rank}"
    if file.dataloader_idx is not None:
        name += f"__dataloader_{file.dataloader_idx}"
    if file.batch_idx is not None:
        name += f"__batch_{file.batch_idx}"
    if file.shard is not None:
        name += f"__shard_{file.shard}"
    return name + file.suffix


def parse_file_name(path: Path) -> PredictionFile | None:
    """The parsed name of a prediction file, or None for any other name."""
    suffixes = "|".join(re.escape(suffix) for suffix in [MANIFEST_SUFFIX, *(f.suffix for f in all_formats())])
    match = re.fullmatch(_NAME.format(suffixes=suffixes), path.name)
    if match is None:
        return None
    number = {key: int(value) if value is not None else None for key, value in match.groupdict().items()
              if key != "suffix"}
    parsed = PredictionFile(number["rank"], number["dp_rank"], match["suffix"], number["dataloader"],
                            number["batch"], number["shard"])
    if file_name(parsed) != path.name:  # e.g. leading zeros: two names for one file
        return None
    return parsed if _made_by_writers(parsed) else None


def _made_by_writers(file: PredictionFile) -> bool:
    """Whether the kit's writers make this combination (the pattern also matches e.g. ``__batch_3.manifest.json``,
    which :attr:`PredictionFile.kind` would call a rank manifest)."""
    if file.suffix == MANIFEST_SUFFIX:
        return file.batch_idx is None and (file.shard is not None or file.dataloader_idx is None)
    file_format = format_of(file.suffix)
    return file_format is not None and file_format.sharded == (file.shard is not None)


def subdir_name(batch_idx: int, files_per_subdir: int) -> str:
    """The sub-folder of a batch file: ``subdir_{batch_idx // files_per_subdir}``."""
    return f"subdir_{batch_idx // files_per_subdir}"


def is_subdir(path: Path) -> bool:
    """Whether ``path`` is named like a ``files_per_subdir`` folder."""
    return bool(_SUBDIR.fullmatch(path.name))
