"""The ``.safetensors`` format: an 8-byte header length, a JSON header (dtypes, shapes, data offsets and the string
metadata under ``__metadata__``), then the tensors' bytes back to back. Needs the ``safetensors`` package to read.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch

from conformance.predictions.formats._base import METADATA_KEY, TensorFileFormat
from conformance.predictions.formats._tensors import STORABLE_DTYPES, TensorEntry, counted_segments

__all__ = ["FORMAT", "SafetensorsFormat"]

_LENGTH = struct.Struct("<Q")


class SafetensorsFormat(TensorFileFormat):
    """``.safetensors`` files, readable by the safetensors library and every tool built on it."""

    name = "safetensors"
    suffix = ".safetensors"

    def write_entries(self, stream: BinaryIO, entries: list[TensorEntry], metadata: Mapping[str, str]) -> None:
        header: dict[str, Any] = {METADATA_KEY: dict(metadata)} if metadata else {}
        offset = 0
        for entry in entries:
            header[entry.name] = {"dtype": STORABLE_DTYPES[entry.dtype], "shape": list(entry.shape),
                                  "data_offsets": [offset, offset + entry.nbytes]}
            offset += entry.nbytes
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)
        stream.write(_LENGTH.pack(len(encoded)))
        stream.write(encoded)
        for entry in entries:
            stream.writelines(counted_segments(entry))

    def load_tensors(self, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as stream:
            tensors = {key: stream.get_tensor(key) for key in stream.keys()}  # noqa: SIM118 - not a dict
            return tensors, stream.metadata() or {}

    def verify(self, path: Path) -> list[str]:
        """The header's data offsets must tile the data section exactly, which must end the file."""
        with open(path, "rb") as stream:
            (length,) = _LENGTH.unpack(stream.read(_LENGTH.size))
            try:
                header = json.loads(stream.read(length))
            except ValueError as exc:
                return [f"{path} has an unreadable safetensors header: {exc}"]
        spans = sorted(tuple(spec["data_offsets"]) for name, spec in header.items() if name != METADATA_KEY)
        data_size = path.stat().st_size - _LENGTH.size - length
        end = 0
        for start, stop in spans:
            if start != end:
                return [f"{path}: the tensors' data offsets leave a gap or overlap at byte {end}"]
            end = stop
        return [] if end == data_size else [f"{path} holds {data_size} data bytes, its header describes {end}"]


FORMAT = SafetensorsFormat()
