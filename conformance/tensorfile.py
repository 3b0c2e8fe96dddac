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
import zipfile
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import torch

__all__ = ["FORMATS", "METADATA_KEY", "TensorEntry", "tensor_bytes", "tensor_entry", "write_tensor_file"]

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
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so identical content gives identical files


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
    with zipfile.ZipFile(stream, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        _write_record(archive, stream, "archive/data.pkl", pickled.getvalue())
        _write_record(archive, stream, "archive/byteorder", b"little")
        for storage in storages:
            info = _aligned_info(stream, f"archive/data/{storage.key}", zip64=True)
            with archive.open(info, "w", force_zip64=True) as out:
                _copy_segments(out, storage.entry)
        _write_record(archive, stream, "archive/version", b"3\n")


def _aligned_info(stream: BinaryIO, name: str, *, zip64: bool = False) -> zipfile.ZipInfo:
    """A stored-record header padded (extra field 'FB', as torch does) so the record's data is 64-byte aligned.

    ``zip64``: the header will also carry zipfile's 20-byte zip64 extra field (streamed records of unknown size).
    """
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    data_start = stream.tell() + 30 + len(name.encode()) + 4 + (20 if zip64 else 0)
    padding = -data_start % _ALIGNMENT
    info.extra = struct.pack("<HH", 0x4246, padding) + b"Z" * padding
    return info


def _write_record(archive: zipfile.ZipFile, stream: BinaryIO, name: str, data: bytes) -> None:
    archive.writestr(_aligned_info(stream, name), data)
