"""A pickle-free byte format for one record: a JSON skeleton followed by the raw bytes of its tensors.

Layout: 8-byte little-endian header length, the UTF-8 JSON header ``{"tree": ..., "tensors": [...]}``, then each
tensor's bytes in order, every part padded to a multiple of 64 bytes so tensors can alias the buffer. Decoding never executes code from the data and costs one ``json.loads`` plus one
``torch.frombuffer`` per tensor, an order of magnitude less than ``torch.load(weights_only=True)`` on small records.

Values: tensors (dense, any dtype, any device: stored from the CPU), dicts (any hashable plain keys), lists,
tuples, str, bytes, int, float, complex, bool and None. Anything else raises ``TypeError``.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import torch

__all__ = ["decode", "encode", "encode_parts"]

_HEADER_SIZE = struct.Struct("<Q")
_ALIGNMENT = 64
_DTYPES = {str(dtype).removeprefix("torch."): dtype for dtype in vars(torch).values() if isinstance(dtype, torch.dtype)}
#: Tensors smaller than this are copied into a shared part instead of being a part of their own.
_GATHER_BELOW = 64 << 10


def encode(value: Any) -> bytes:
    """``value`` in this module's format."""
    return b"".join(encode_parts(value))


def encode_parts(value: Any) -> list[bytes | bytearray | memoryview]:
    """:func:`encode` as consecutive parts to write, without copying large CPU tensors (write them before they
    change); small tensors and the padding are gathered into shared parts, so a state of many small tensors is a
    few parts."""
    tensors: list[torch.Tensor] = []
    tree = _encode(value, tensors)
    payloads = [_tensor_bytes(tensor) for tensor in tensors]
    specs = [{"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape), "nbytes": len(b)}
             for t, b in zip(tensors, payloads)]
    header = json.dumps({"tree": tree, "tensors": specs}).encode()
    header += b" " * (-(_HEADER_SIZE.size + len(header)) % _ALIGNMENT)
    parts: list[bytes | bytearray | memoryview] = []
    gathered = bytearray(_HEADER_SIZE.pack(len(header)) + header)
    for payload in payloads:
        if len(payload) >= _GATHER_BELOW:
            parts += [gathered, payload]
            gathered = bytearray()
        else:
            gathered += payload
        gathered += bytes(-len(payload) % _ALIGNMENT)
    return [*parts, gathered] if gathered else parts


def decode(data: bytes | bytearray | memoryview) -> Any:
    """The value :func:`encode` turned into ``data``; tensors come back on the CPU.

    Tensors of a ``bytearray`` or a writable memoryview share its memory (payloads are 64-byte aligned); read-only
    data is copied first.
    """
    writable = isinstance(data, bytearray) or (isinstance(data, memoryview) and not data.readonly)
    buffer = memoryview(data) if writable else memoryview(bytearray(data))
    (header_size,) = _HEADER_SIZE.unpack_from(buffer)
    header = json.loads(bytes(buffer[_HEADER_SIZE.size : _HEADER_SIZE.size + header_size]))
    offset = _HEADER_SIZE.size + header_size
    tensors = []
    for spec in header["tensors"]:
        dtype = _DTYPES.get(spec["dtype"])
        if dtype is None:
            raise ValueError(f"unknown tensor dtype {spec['dtype']!r} in a record header")
        size = spec["nbytes"]
        flat = torch.frombuffer(buffer[offset : offset + size], dtype=torch.uint8) if size else torch.empty(0)
        tensors.append(flat.view(dtype).reshape(spec["shape"]) if size else torch.empty(spec["shape"], dtype=dtype))
        offset += size + (-size % _ALIGNMENT)
    if offset != len(buffer):
        raise ValueError(f"{len(buffer) - offset} bytes beyond the last tensor of a record: the data is corrupt")
    return _decode(header["tree"], tensors)


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    if tensor.layout != torch.strided or tensor.is_quantized:
        raise TypeError(f"cannot store a {tensor.layout} / quantized tensor; convert it to a dense tensor first")
    flat = tensor.detach()
    if flat.device.type != "cpu":
        flat = flat.cpu()
    flat = flat.reshape(-1)  # a copy only where the tensor is not contiguous
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


def _encode(value: Any, tensors: list[torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):  # first: most leaves of states are tensors
        tensors.append(value)
        return {"$tensor": len(tensors) - 1}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {"$dict": [[_encode(key, tensors), _encode(item, tensors)] for key, item in value.items()]}
    if isinstance(value, list):
        return [_encode(item, tensors) for item in value]
    if isinstance(value, tuple):
        return {"$tuple": [_encode(item, tensors) for item in value]}
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, complex):
        return {"$complex": [value.real, value.imag]}
    raise TypeError(f"cannot store a {type(value).__qualname__} in a record file")


def _decode(tree: Any, tensors: list[torch.Tensor]) -> Any:
    if isinstance(tree, list):
        return [_decode(item, tensors) for item in tree]
    if not isinstance(tree, dict):
        return tree
    (tag, payload), = tree.items()
    if tag == "$tensor":
        return tensors[payload]
    if tag == "$dict":
        return {_decode(key, tensors): _decode(item, tensors) for key, item in payload}
    if tag == "$tuple":
        return tuple(_decode(item, tensors) for item in payload)
    if tag == "$bytes":
        return base64.b64decode(payload)
    if tag == "$complex":
        return complex(*payload)
    raise ValueError(f"unknown tag {tag!r} in a record file")
