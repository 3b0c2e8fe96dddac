"""The ``.pt`` format: torch's zip archive, written by the kit without ``torch.save`` and read with
``torch.load(weights_only=True)``.

A file holds a dict of the tensors plus a ``"__metadata__"`` dict of strings. Nothing is pickled but that skeleton
of plain types and tensor references, so writing skips ``torch.save``'s per-storage overhead; records are stored
uncompressed and 64-byte aligned, so the files also load with ``mmap=True``, and each carries the CRC-32 of its
records, which :meth:`TorchZipFormat.verify` checks.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch

from conformance.predictions.formats._base import METADATA_KEY, TensorFileFormat
from conformance.predictions.formats._tensors import TensorEntry, counted_segments, crc32

__all__ = ["FORMAT", "TorchZipFormat"]

_STORAGE_TYPES = {
    torch.float64: "DoubleStorage", torch.float32: "FloatStorage", torch.float16: "HalfStorage",
    torch.bfloat16: "BFloat16Storage", torch.int64: "LongStorage", torch.int32: "IntStorage",
    torch.int16: "ShortStorage", torch.int8: "CharStorage", torch.uint8: "ByteStorage", torch.bool: "BoolStorage",
}
_ALIGNMENT = 64


class TorchZipFormat(TensorFileFormat):
    """``.pt`` files that ``torch.load(weights_only=True)`` reads."""

    name = "pt"
    suffix = ".pt"

    def write_entries(self, stream: BinaryIO, entries: list[TensorEntry], metadata: Mapping[str, str]) -> None:
        _write_archive(stream, entries, metadata)

    def load_tensors(self, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(loaded, dict):
            raise TypeError(f"holds a {type(loaded).__qualname__}, not a dict of tensors")
        metadata = loaded.pop(METADATA_KEY, {})
        return loaded, metadata

    def verify(self, path: Path) -> list[str]:
        try:
            with zipfile.ZipFile(path) as archive:
                damaged = archive.testzip()
        except (OSError, zipfile.BadZipFile) as exc:
            return [f"{path} is not a valid zip archive: {exc}"]
        return [f"{path}: record {damaged} does not match its CRC-32"] if damaged else []


FORMAT = TorchZipFormat()


class _StorageRef:
    """Stands for the storage of one tensor while the skeleton is pickled."""

    def __init__(self, key: str, entry: TensorEntry) -> None:
        self.key = key
        self.entry = entry


class _TensorRef:
    """Pickles as the call that rebuilds a contiguous tensor from its storage (what torch.save emits)."""

    def __init__(self, storage: _StorageRef) -> None:
        self.storage = storage

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        shape = self.storage.entry.shape
        stride, running = [], 1
        for size in reversed(shape):
            stride.append(running)
            running *= size
        return torch._utils._rebuild_tensor_v2, (self.storage, 0, shape, tuple(reversed(stride)), False, OrderedDict())


class _SkeletonPickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, _StorageRef):
            numel = obj.entry.nbytes // max(1, torch.empty((), dtype=obj.entry.dtype).element_size())
            return ("storage", getattr(torch, _STORAGE_TYPES[obj.entry.dtype]), obj.key, "cpu", numel)
        return None


def _write_archive(stream: BinaryIO, entries: list[TensorEntry], metadata: Mapping[str, str]) -> None:
    storages = [_StorageRef(str(index), entry) for index, entry in enumerate(entries)]
    skeleton: dict[str, Any] = {storage.entry.name: _TensorRef(storage) for storage in storages}
    skeleton[METADATA_KEY] = dict(metadata)
    pickled = io.BytesIO()
    _SkeletonPickler(pickled, protocol=2).dump(skeleton)
    archive = _StoredZip(stream)
    archive.add("archive/data.pkl", [pickled.getvalue()])
    archive.add("archive/byteorder", [b"little"])
    for storage in storages:
        archive.add(f"archive/data/{storage.key}", counted_segments(storage.entry))
    archive.add("archive/version", [b"3\n"])
    archive.close()


class _StoredZip:
    """A zip64 archive of stored (uncompressed) records whose data start 64-byte aligned, as torch writes them.

    Written by hand rather than with ``zipfile`` so the CRC-32 can come from a fast implementation (isal) when
    installed; zipfile's zlib CRC-32 took more time than writing the bytes.
    """

    _LOCAL = struct.Struct("<IHHHHHIIIHH")
    _CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
    _VERSION = 45  # zip64
    _DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01: identical content gives identical files

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.records: list[tuple[bytes, int, int, int]] = []  # name, crc, size, header offset

    def add(self, name: str, segments: Iterable[Any]) -> None:
        encoded, offset = name.encode(), self.stream.tell()
        data_start = offset + self._LOCAL.size + len(encoded) + 20 + 4
        padding = -data_start % _ALIGNMENT
        extra = struct.pack("<HHQQ", 1, 16, 0, 0) + struct.pack("<HH", 0x4246, padding) + b"Z" * padding
        self.stream.write(self._LOCAL.pack(0x04034B50, self._VERSION, 0, 0, 0, self._DOS_DATE, 0, 0xFFFFFFFF,
                                           0xFFFFFFFF, len(encoded), len(extra)))
        self.stream.write(encoded + extra)
        crc, size = 0, 0
        for segment in segments:
            crc = crc32(segment, crc)
            size += self.stream.write(segment)
        end = self.stream.tell()
        self.stream.seek(offset + 14)
        self.stream.write(struct.pack("<I", crc))
        self.stream.seek(offset + self._LOCAL.size + len(encoded) + 4)
        self.stream.write(struct.pack("<QQ", size, size))
        self.stream.seek(end)
        self.records.append((encoded, crc, size, offset))

    def close(self) -> None:
        """Write the central directory and the zip64 end records."""
        directory_start = self.stream.tell()
        for encoded, crc, size, offset in self.records:
            extra = struct.pack("<HHQQQ", 1, 24, size, size, offset)
            self.stream.write(self._CENTRAL.pack(0x02014B50, self._VERSION, self._VERSION, 0, 0, 0, self._DOS_DATE,
                                                 crc, 0xFFFFFFFF, 0xFFFFFFFF, len(encoded), len(extra), 0, 0, 0, 0,
                                                 0xFFFFFFFF))
            self.stream.write(encoded + extra)
        end_record = self.stream.tell()
        count, directory_size = len(self.records), end_record - directory_start
        self.stream.write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, self._VERSION, self._VERSION, 0, 0, count,
                                      count, directory_size, directory_start))
        self.stream.write(struct.pack("<IIQI", 0x07064B50, 0, end_record, 1))
        self.stream.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, min(count, 0xFFFF), min(count, 0xFFFF),
                                      0xFFFFFFFF, 0xFFFFFFFF, 0))
