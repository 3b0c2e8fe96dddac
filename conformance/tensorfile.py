"""Write flat ``{name: tensor}`` files as ``.pt`` (torch's zip format) or ``.safetensors``, streaming their bytes.

Both writers take each tensor as a :class:`TensorEntry`: its dtype, its shape and an iterable of byte segments
whose concatenation is the tensor in C order. A tensor therefore never has to exist in memory as a whole (the
epoch writer streams a collation of many batches this way). The ``.pt`` files load with
``torch.load(weights_only=True)`` (and ``mmap=True``: records are 64-byte aligned); they hold a dict of the tensors
plus a ``"__metadata__"`` dict of strings. Nothing is pickled but that skeleton of plain types and tensor
references, so writing skips ``torch.save``'s per-storage overhead.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import torch

__all__ = ["FORMATS", "METADATA_KEY", "TensorEntry", "crc32", "tensor_bytes", "tensor_entry", "write_tensor_file"]

#: File formats and their extensions.
FORMATS = {"pt": ".pt", "safetensors": ".safetensors"}
#: Where the string metadata lives inside a ``.pt`` file (safetensors has its own ``__metadata__``).
METADATA_KEY = "__metadata__"

_SAFETENSORS_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}
_PT_STORAGE_TYPES = {
    torch.float64: "DoubleStorage", torch.float32: "FloatStorage", torch.float16: "HalfStorage",
    torch.bfloat16: "BFloat16Storage", torch.int64: "LongStorage", torch.int32: "IntStorage",
    torch.int16: "ShortStorage", torch.int8: "CharStorage", torch.uint8: "ByteStorage", torch.bool: "BoolStorage",
}
_ALIGNMENT = 64

try:  # CRC-32 at about 10 GB/s instead of zlib's 1.5 GB/s; the same checksum
    from isal.isal_zlib import crc32
except ImportError:  # pragma: no cover - depends on the environment
    from zlib import crc32


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a file: dtype, shape, and byte segments that concatenate to its C-order data."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    segments: Iterable[Any]  # bytes-like objects

    @property
    def nbytes(self) -> int:
        numel = 1
        for size in self.shape:
            numel *= size
        return numel * torch.empty((), dtype=self.dtype).element_size()


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The C-order bytes of a CPU tensor, without copying when it is already contiguous."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


def tensor_entry(name: str, tensor: torch.Tensor) -> TensorEntry:
    """A :class:`TensorEntry` for an in-memory tensor."""
    tensor = tensor.detach().cpu()
    _check_dtype(name, tensor.dtype)
    return TensorEntry(name, tensor.dtype, tuple(tensor.shape), (tensor_bytes(tensor),))


def write_tensor_file(stream: BinaryIO, file_format: str, entries: list[TensorEntry],
                      metadata: Mapping[str, str]) -> None:
    """Write ``entries`` and string ``metadata`` to the seekable binary ``stream`` in ``file_format``."""
    for entry in entries:
        _check_dtype(entry.name, entry.dtype)
    if file_format == "pt":
        _write_pt(stream, entries, metadata)
    elif file_format == "safetensors":
        _write_safetensors(stream, entries, metadata)
    else:
        raise ValueError(f"unknown file format {file_format!r}; choose one of {sorted(FORMATS)}")


def _check_dtype(name: str, dtype: torch.dtype) -> None:
    if dtype not in _SAFETENSORS_DTYPES:
        raise TypeError(f"prediction entry {name!r} has dtype {dtype}, which the writer does not store; "
                        f"convert it to one of {sorted(str(d) for d in _SAFETENSORS_DTYPES)} in predict_step")


def _copy_segments(stream: Any, entry: TensorEntry) -> None:
    written = 0
    for segment in entry.segments:
        stream.write(segment)
        written += memoryview(segment).nbytes
    if written != entry.nbytes:
        raise ValueError(f"tensor {entry.name!r} of shape {entry.shape} needs {entry.nbytes} bytes, got {written}")


# --- safetensors -------------------------------------------------------------------------------------------------


def _write_safetensors(stream: BinaryIO, entries: list[TensorEntry], metadata: Mapping[str, str]) -> None:
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for entry in entries:
        header[entry.name] = {"dtype": _SAFETENSORS_DTYPES[entry.dtype], "shape": list(entry.shape),
                              "data_offsets": [offset, offset + entry.nbytes]}
        offset += entry.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    stream.write(struct.pack("<Q", len(encoded)))
    stream.write(encoded)
    for entry in entries:
        _copy_segments(stream, entry)


# --- torch zip (.pt) ---------------------------------------------------------------------------------------------


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
            return ("storage", getattr(torch, _PT_STORAGE_TYPES[obj.entry.dtype]), obj.key, "cpu", numel)
        return None


def _write_pt(stream: BinaryIO, entries: list[TensorEntry], metadata: Mapping[str, str]) -> None:
    storages = [_StorageRef(str(index), entry) for index, entry in enumerate(entries)]
    skeleton: dict[str, Any] = {storage.entry.name: _TensorRef(storage) for storage in storages}
    skeleton[METADATA_KEY] = dict(metadata)
    pickled = io.BytesIO()
    _SkeletonPickler(pickled, protocol=2).dump(skeleton)
    archive = _StoredZip(stream)
    archive.add("archive/data.pkl", [pickled.getvalue()])
    archive.add("archive/byteorder", [b"little"])
    for storage in storages:
        archive.add(f"archive/data/{storage.key}", _counted(storage.entry))
    archive.add("archive/version", [b"3\n"])
    archive.close()


def _counted(entry: TensorEntry) -> Iterator[Any]:
    """``entry``'s segments, checking that they add up to its size."""
    written = 0
    for segment in entry.segments:
        written += memoryview(segment).nbytes
        yield segment
    if written != entry.nbytes:
        raise ValueError(f"tensor {entry.name!r} of shape {entry.shape} needs {entry.nbytes} bytes, got {written}")


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
