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

    def leading_data_offset(self, entries: list[TensorEntry], leading: int, metadata: Mapping[str, str]) -> int:
        """The leading record's local header comes first, at offset 0."""
        return len(_StoredZip.local_header(_record_name(leading), 0))

    def write_after_leading(self, stream: BinaryIO, entries: list[TensorEntry], leading: int, leading_crc32: int,
                            metadata: Mapping[str, str]) -> None:
        _write_archive(stream, entries, metadata, leading=(leading, leading_crc32))

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


def _record_name(index: int) -> str:
    """The archive record of the storage of entry ``index``."""
    return f"archive/data/{index}"


def _write_archive(stream: BinaryIO, entries: list[TensorEntry], metadata: Mapping[str, str], *,
                   leading: tuple[int, int] | None = None) -> None:
    """Write the archive at the stream's position; ``leading`` = (index, CRC-32) of an entry whose record already
    starts the file (see :meth:`TorchZipFormat.leading_data_offset`) and ends where the stream is."""
    storages = [_StorageRef(str(index), entry) for index, entry in enumerate(entries)]
    skeleton: dict[str, Any] = {storage.entry.name: _TensorRef(storage) for storage in storages}
    skeleton[METADATA_KEY] = dict(metadata)
    pickled = io.BytesIO()
    _SkeletonPickler(pickled, protocol=2).dump(skeleton)
    archive = _StoredZip(stream)
    archive.add("archive/data.pkl", [pickled.getvalue()])
    archive.add("archive/byteorder", [b"little"])
    for index, entry in enumerate(entries):
        if leading is not None and index == leading[0]:
            archive.add_written(_record_name(index), 0, entry.nbytes, leading[1])
        else:
            archive.add(_record_name(index), counted_segments(entry))
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

    @classmethod
    def local_header(cls, name: str, offset: int, crc: int = 0, size: int = 0) -> bytes:
        """The local header of a record at ``offset``, padded so that its data starts aligned."""
        encoded = name.encode()
        data_start = offset + cls._LOCAL.size + len(encoded) + 20 + 4
        padding = -data_start % _ALIGNMENT
        extra = struct.pack("<HHQQ", 1, 16, size, size) + struct.pack("<HH", 0x4246, padding) + b"Z" * padding
        return cls._LOCAL.pack(0x04034B50, cls._VERSION, 0, 0, 0, cls._DOS_DATE, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                               len(encoded), len(extra)) + encoded + extra

    def add(self, name: str, segments: Iterable[Any]) -> None:
        """Append a record of ``segments``; its header gets the CRC-32 and size once the data is written."""
        offset = self.stream.tell()
        self.stream.write(self.local_header(name, offset))
        crc, size = 0, 0
        for segment in segments:
            crc = crc32(segment, crc)
            size += self.stream.write(segment)
        self.add_written(name, offset, size, crc)

    def add_written(self, name: str, offset: int, size: int, crc: int) -> None:
        """Register a record whose data is already in place after a local header at ``offset``, and fill in that
        header; the stream returns to where it was."""
        end = self.stream.tell()
        self.stream.seek(offset)
        self.stream.write(self.local_header(name, offset, crc, size))
        self.stream.seek(end)
        self.records.append((name.encode(), crc, size, offset))

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
