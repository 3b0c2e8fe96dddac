"""What a prediction file format is to the kit: a name and a suffix, how its files are loaded back into rows, and
how their integrity is verified. Tensor-file formats (one file per batch or epoch) also say how they are written.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import torch

from conformance.errors import PredictionReadError
from conformance.predictions.collate import CollationDims
from conformance.predictions.formats._tensors import TensorEntry, check_storable
from conformance.sample_ids import SAMPLE_ID_KEYS

__all__ = ["METADATA_KEY", "FileFormat", "StoredPart", "TensorFileFormat"]

#: Where a tensor file keeps its string metadata (safetensors' own header field; a dict entry in ``.pt`` files).
METADATA_KEY = "__metadata__"


@dataclass(frozen=True)
class StoredPart:
    """Rows read from one batch file, epoch file or parquet row group."""

    path: Path
    kind: str  # "dict" or "tensor": the shape of the prediction that was stored
    tensors: dict[str, torch.Tensor]
    sample_ids: torch.Tensor
    dims: CollationDims
    dataloader_idx: int
    pad_value: float = 0.0  # what its writer padded shorter sequences with
    batch_idx: Any = None  # the batch indices the file stores, when it stores them
    #: Written by the kit's writers (or following their contract): its folder must have rank manifests.
    kit_written: bool = True


class FileFormat(abc.ABC):
    """A prediction file format; the registry in :mod:`conformance.predictions.formats` holds one of each."""

    #: The name writers take (``format="pt"``) and the suffix of its files.
    name: ClassVar[str]
    suffix: ClassVar[str]
    #: One file per rank and shard holding a row group per batch, beside a shard manifest (parquet), instead of one
    #: file per batch or epoch.
    sharded: ClassVar[bool] = False

    @abc.abstractmethod
    def load(self, path: Path) -> list[StoredPart]:
        """The rows of one file, without unpickling objects; any error is the file's problem."""

    @abc.abstractmethod
    def verify(self, path: Path) -> list[str]:
        """Problems with the file's own integrity beyond loading it (checksums, sizes), one sentence each."""


class TensorFileFormat(FileFormat):
    """A format of flat ``{name: tensor}`` files with string metadata: what :class:`PredictionWriter` writes."""

    def write(self, stream: BinaryIO, entries: list[TensorEntry], metadata: Mapping[str, str]) -> None:
        """Write ``entries`` and string ``metadata`` to the seekable binary ``stream``; refuses unstorable dtypes."""
        for entry in entries:
            check_storable(entry.name, entry.dtype)
        self.write_entries(stream, entries, metadata)

    @abc.abstractmethod
    def write_entries(self, stream: BinaryIO, entries: list[TensorEntry], metadata: Mapping[str, str]) -> None:
        """Write entries of storable dtypes (see :data:`STORABLE_DTYPES`) and the metadata to ``stream``."""

    def leading_data_offset(self, entries: list[TensorEntry], leading: int, metadata: Mapping[str, str]) -> int | None:
        """Where the data of ``entries[leading]`` starts in a file whose other parts are written after that data, or
        None when the format cannot be written that way (the default).

        Lets a writer append a tensor's bytes batch by batch straight into the file it finishes later (the epoch
        file), instead of copying them there. Only the entries' names, dtypes and numbers of dims are final; their
        sizes are not, so the offset may not depend on them.
        """
        return None

    def write_after_leading(self, stream: BinaryIO, entries: list[TensorEntry], leading: int, leading_crc32: int,
                            metadata: Mapping[str, str]) -> None:
        """Complete a file laid out by :meth:`leading_data_offset`: ``stream`` holds a hole of that many bytes, then
        the data of ``entries[leading]`` (CRC-32 ``leading_crc32``), and is positioned at its end; the segments of
        ``entries[leading]`` are not read."""
        raise NotImplementedError(f"the {self.name!r} format writes no leading data")

    @abc.abstractmethod
    def load_tensors(self, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """The tensors and the string metadata of one file."""

    def load(self, path: Path) -> list[StoredPart]:
        tensors, metadata = self.load_tensors(path)
        return [_part_from_tensors(path, tensors, metadata)]


def _part_from_tensors(path: Path, tensors: dict[str, Any], metadata: Mapping[str, str]) -> StoredPart:
    """The rows of a tensor file: the prediction's tensors, ``sample_ids`` and ``batch_idx``.

    Files of the seed's writer (``torch.save`` of the prediction dict plus ``batch_idx``, no ``sample_ids``) are
    read when the dataset index can be recovered: from ``batch_indices`` or from an ``idx``-like key.
    """
    foreign = sorted(f"{key!r} ({type(value).__qualname__})" for key, value in tensors.items()
                     if not isinstance(value, torch.Tensor) and key != "batch_idx")
    if foreign:
        raise PredictionReadError(f"{path} holds entries that are not tensors: {', '.join(foreign)}; a prediction "
                                  "file stores tensors only")
    kit_written = "sample_ids" in tensors
    ids = tensors.pop("sample_ids") if kit_written else _recovered_sample_ids(path, tensors)
    if ids.is_floating_point() or ids.dim() != 1:
        raise PredictionReadError(f"{path}: its sample ids must be a 1-d integer tensor, got {ids.dtype} of shape "
                                  f"{tuple(ids.shape)}")
    dims = CollationDims(json.loads(metadata.get("batch_dims", "{}")), json.loads(metadata.get("seq_dims", "{}")))
    batch_idx = tensors.pop("batch_idx", None)
    return StoredPart(path, metadata.get("kind", "dict"), tensors, ids.to(torch.int64), dims,
                      int(metadata.get("dataloader_idx", "0")), float(metadata.get("pad_value", "0.0")), batch_idx,
                      kit_written)


def _recovered_sample_ids(path: Path, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """The dataset indices of a seed writer's file: ``batch_indices`` (dropped), else an ``idx``-like key (kept: it
    is part of the prediction)."""
    if "batch_indices" in tensors:
        return tensors.pop("batch_indices")
    key = next((key for key in SAMPLE_ID_KEYS if key in tensors), None)
    if key is None:
        raise PredictionReadError(
            f"{path} has no 'sample_ids' entry and no dataset index to recover them from ('batch_indices' or one of "
            f"{list(SAMPLE_ID_KEYS)}), so its rows cannot be placed in dataset order: write predictions with "
            "conformance.PredictionWriter, or return each sample's dataset index from predict_step")
    return tensors[key].reshape(-1)
