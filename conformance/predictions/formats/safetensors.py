"""The ``.safetensors`` format: an 8-byte header length, a JSON header (dtypes, shapes, data offsets and the string
metadata under ``__metadata__``), then the tensors' bytes back to back. Needs the ``safetensors`` package to read.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping
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
        encoded = _header(entries, metadata, range(len(entries)))
        stream.write(_LENGTH.pack(len(encoded)))
        stream.write(encoded)
        for entry in entries:
            stream.writelines(counted_segments(entry))

    def leading_data_offset(self, entries: list[TensorEntry], leading: int, metadata: Mapping[str, str]) -> int:
        """Room for the longest header these entries can have: every size and offset at 20 digits."""
        widest = [TensorEntry(entry.name, entry.dtype, (_WIDEST,) * len(entry.shape), ()) for entry in entries]
        return _LENGTH.size + len(_header(widest, metadata, range(len(entries)), widest_offsets=True))

    def write_after_leading(self, stream: BinaryIO, entries: list[TensorEntry], leading: int, leading_crc32: int,
                            metadata: Mapping[str, str]) -> None:
        """The leading entry's data comes first in the data section; the header fills the room reserved for it
        (safetensors allows the data in any order and spaces after the header)."""
        room = self.leading_data_offset(entries, leading, metadata) - _LENGTH.size
        order = [leading, *(index for index in range(len(entries)) if index != leading)]
        for index in order[1:]:
            stream.writelines(counted_segments(entries[index]))
        encoded = _header(entries, metadata, order)
        if len(encoded) > room:
            raise RuntimeError(f"kit bug: a safetensors header of {len(encoded)} bytes exceeds the {room} reserved")
        stream.seek(0)
        stream.write(_LENGTH.pack(room))
        stream.write(encoded + b" " * (room - len(encoded)))
        stream.seek(0, 2)

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

_WIDEST = 2**64 - 1


def _header(entries: list[TensorEntry], metadata: Mapping[str, str], data_order: Iterable[int], *,
            widest_offsets: bool = False) -> bytes:
    """The JSON header, padded to a multiple of 8 bytes; the entries' data lie in ``data_order``."""
    header: dict[str, Any] = {METADATA_KEY: dict(metadata)} if metadata else {}
    offsets, offset = {}, 0
    for index in data_order:
        offsets[index] = [_WIDEST, _WIDEST] if widest_offsets else [offset, offset + entries[index].nbytes]
        offset += entries[index].nbytes
    for index, entry in enumerate(entries):
        header[entry.name] = {"dtype": STORABLE_DTYPES[entry.dtype], "shape": list(entry.shape),
                              "data_offsets": offsets[index]}
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return encoded + b" " * (-len(encoded) % 8)
