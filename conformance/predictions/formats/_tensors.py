"""Tensors as streams of bytes, shared by the tensor-file formats: :class:`TensorEntry`, the storable dtypes and a
fast CRC-32.

A writer hands a format each tensor as a :class:`TensorEntry`: its dtype, its shape and an iterable of byte
segments whose concatenation is the tensor in C order. A tensor therefore never has to exist in memory as a whole
(the epoch writer streams a collation of many batches this way).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["STORABLE_DTYPES", "TensorEntry", "check_storable", "counted_segments", "crc32", "tensor_bytes",
           "tensor_entry"]

#: The dtypes every tensor-file format stores, with their safetensors names.
STORABLE_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}

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
    check_storable(name, tensor.dtype)
    return TensorEntry(name, tensor.dtype, tuple(tensor.shape), (tensor_bytes(tensor),))


def check_storable(name: str, dtype: torch.dtype) -> None:
    """Raise ``TypeError`` naming the entry and the fix when ``dtype`` cannot be stored."""
    if dtype not in STORABLE_DTYPES:
        raise TypeError(f"prediction entry {name!r} has dtype {dtype}, which the writer does not store; "
                        f"convert it to one of {sorted(str(d) for d in STORABLE_DTYPES)} in predict_step")


def counted_segments(entry: TensorEntry) -> Iterator[Any]:
    """``entry``'s segments, checking that they add up to its size."""
    written = 0
    for segment in entry.segments:
        written += memoryview(segment).nbytes
        yield segment
    if written != entry.nbytes:
        raise ValueError(f"tensor {entry.name!r} of shape {entry.shape} needs {entry.nbytes} bytes, got {written}")
